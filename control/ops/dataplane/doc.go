// Package dataplane is the control side of ober's pinned BPF dataplane:
// what the CLI (and later the daemon) does to it, built from the loader's
// primitives. It attaches and detaches the programs with the checks and
// roll-backs an operator expects, syncs whitelists from hostlists (parse,
// resolve, diff, one atomic swap), and reports the dataplane's state in a
// stable JSON shape.
//
// Functions that attach or read interfaces act in the calling thread's
// network namespace, as the loader does.
package dataplane
