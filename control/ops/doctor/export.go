package doctor

import (
	"context"

	"github.com/ober-ingress/ober/control/config"
)

// The checks below are also part of `ober test`, which reports the same
// verdicts for the same files and interfaces: one definition of "this
// certificate is fine" for both commands.

// CheckCerts checks every TLS service's certificate, one result per
// service, named "cert <service>".
func CheckCerts(env Env, cfg *config.Config) []Result {
	return checkCerts(env, cfg)
}

// CheckInterfaces checks each of node.interfaces: it exists in this
// network namespace, its driver, whether it has native XDP, and a virtio
// NIC's queues. The results are named "iface <name>" and "queues <name>".
func CheckInterfaces(ctx context.Context, env Env, cfg *config.Config) []Result {
	return checkInterfaces(ctx, env, cfg)
}

// CheckVRRP checks keepalived's version ("keepalived") and that
// ha.vrrp.interface exists and holds this node's address ("vrrp").
func CheckVRRP(ctx context.Context, env Env, v *config.VRRP) []Result {
	return checkVRRP(ctx, env, v)
}
