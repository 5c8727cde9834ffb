// Package vrrp moves the node's VIPs among the ober nodes with VRRPv3, by
// rendering keepalived's configuration and supervising keepalived as a
// child process.
//
// Ownership is computed, not negotiated: Plan gives VIP i to
// nodes[i % len(nodes)] and orders the backups after it, from the
// configured address list alone, so every node derives the same picture
// without name resolution. keepalived only executes it: priorities make the
// owner win, preempt_delay lets a recovered owner settle before it takes
// its VIP back.
//
// Health reaches keepalived through a track file (weight 0: any nonzero
// value is FAULT) that ober rewrites the moment its health changes;
// keepalived watches it with inotify, so a faulty master sends priority 0
// at once and a backup takes over after its skew time (tens of
// milliseconds with the 100ms default advert interval), without any
// polling script. States come back through keepalived's notify FIFO, in
// order, not from its log.
//
// ober does not trust keepalived to clean up after itself: keepalived
// killed with SIGKILL leaves its VIPs on the interface while a peer takes
// them over. The supervisor removes this node's VIP addresses whenever
// keepalived exits, when it reports BACKUP, FAULT or STOP for an instance,
// and before it starts keepalived.
//
// Security: VRRPv3 (RFC 5798) has no authentication at all; v2's
// auth_pass is gone from the protocol and keepalived rejects it for
// version 3. Anyone on the segment who can send IP protocol 112 can take a
// VIP. The rendered configuration therefore sends adverts unicast to the
// configured nodes and makes keepalived drop adverts from any other
// source (vrrp_check_unicast_src); keep the segment to the nodes (a VLAN,
// switch ACLs for protocol 112). The XDP program could later drop protocol
// 112 from sources outside the node list.
//
// Network namespaces: everything happens in the network namespace of the
// thread that calls Start (the process's namespace in production, where
// `ip netns exec` moves the whole daemon). keepalived is started from a
// thread locked into that namespace, and netlink calls go through a handle
// bound to it, so the package also works when only one goroutine has
// entered a namespace, as the tests do.
package vrrp
