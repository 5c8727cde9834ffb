// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The cheapest possible XDP program. Benchmarks run it beside ober_xdp so
 * that the figures show what ober's decision costs on top of the fixed
 * cost of running any program at all.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int floor_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}
