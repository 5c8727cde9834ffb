// Package dataplane is the operator's side of ober's pinned BPF
// dataplane, behind `ober attach` and `ober detach`: it attaches and
// detaches the programs with the checks and roll-backs an operator
// expects, built from the loader's primitives. A running node's maps are
// written by its daemon alone (control/runtime/tables), the whitelists
// also by `ober sync` (control/lib/whitelist); what the dataplane holds
// is read for `ober status` and /status by control/api.
//
// Functions that attach or read interfaces act in the calling thread's
// network namespace, as the loader does.
package dataplane
