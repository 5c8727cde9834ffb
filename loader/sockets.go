package loader

import "net"

// ListenConfig returns a net.ListenConfig whose sockets the sockmap
// accepts. Go makes listeners MPTCP where the kernel has it, and a
// sockmap refuses MPTCP sockets ("operation not supported").
//
// Give IPv4 and IPv6 services separate listeners: the kernel makes an
// IPv6 socket bound to a specific address v6-only, bpf_sk_assign refuses
// a v6-only socket for an IPv4 connection, and the dual-stack alternative
// (binding [::]) would expose the socket on every address of the node.
func ListenConfig() net.ListenConfig {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc
}
