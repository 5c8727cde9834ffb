// Package whitelist is the whitelist transaction: one change of one or
// more lists, applied to the dataplane's tries with compare-and-swap, to
// HAProxy's copies in the running instances and their files, and to
// ober.yaml, all or nothing. `ober sync` is its command.
//
// A transaction has two steps. Plan parses and resolves every list,
// edits the configuration file in memory and checks that it still loads
// and that the daemon would take each list, and works out each list's
// change against the live one: it changes nothing, so that a dry run, a
// confirmation prompt and a failure all leave the node as it was. Apply
// then writes the new file beside the old, swaps HAProxy's copies, then
// the tries (each only if it is still what Plan read), then renames the
// file into place, putting back whatever it changed if a later step
// fails. Lock serialises it with the daemon's reload.
package whitelist
