// Package wizard is `ober config`: it asks an operator for the few
// answers a node needs (HA mode, interfaces, VIPs, routers or VRRP
// peers, backends, TLS, plain HTTP and its whitelists), on a terminal or
// from flags, and turns them into ober.yaml.
//
// The file is edited as a YAML node tree rather than regenerated, so the
// keys the wizard does not ask about, and the operator's comments, stay
// as they were. The result is checked with control/config exactly as
// `ober run` loads it before anything is written, and written atomically
// beside a backup of the previous file.
package wizard
