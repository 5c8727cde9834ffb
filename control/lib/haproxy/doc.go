// Package haproxy renders, checks and talks to the HAProxy instances ober
// runs: one process per CPU, each with one thread, fed by XDP Maglev
// steering.
//
// ober creates every listening socket itself and passes it to HAProxy as
// an inherited descriptor, so a rendered configuration binds "fd@N"
// rather than addresses. HAProxy looks at those descriptors while it
// parses (getsockname, socket type), even under -c; a closed descriptor
// or a datagram socket makes the check fail. Check therefore hands
// HAProxy a placeholder socket for every fd@N. HAProxy calls listen() on
// an inherited socket itself, so a bound socket that is not listening yet
// works too.
//
// An instance holds many services: a frontend per service (tls, http,
// tcp, TLS passthrough routed by SNI) and a backend per priority tier of
// each pool (TierBackend). HAProxy checks no server: ober's own checks
// decide, and a server's state and weight reach HAProxy in the rendered
// file when an instance starts and through the runtime API afterwards.
//
// The rendered text targets HAProxy 2.6 (Debian 12) and uses newer
// directives only where FeaturesFor says the running release has them.
//
// Runtime is a small client of the stats socket (the runtime API): "show
// info", "show stat", server states and weights, and any other command.
package haproxy
