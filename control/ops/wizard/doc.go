// Package wizard is `ober config`: it asks an operator for the few
// answers a node needs (HA mode, interfaces, VIPs, routers or VRRP
// peers, backends, TLS, plain HTTP and its whitelists), on a terminal or
// from flags, and turns them into ober.yaml.
//
// The file is edited in place rather than regenerated, with the editor
// `ober sync` uses too (control/lib/yamledit): the keys the wizard does
// not ask about, and the operator's comments, stay as they were, byte
// for byte. The result is checked with control/config exactly as
// `ober run` loads it before anything is written, and written atomically
// beside a backup of the previous file.
package wizard
