// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ober's dataplane: an XDP program that polices and steers packets to the
 * node's VIPs, and an sk_lookup program that hands each new connection to
 * the HAProxy instance the same Maglev table picks.
 *
 * Both are stateless: the decision depends only on the packet and the
 * maps, so the Go reference model (loader/model.go) can predict it, and
 * correctness never depends on steering (the kernel's established-socket
 * table keeps a connection on its instance whatever the table says).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ober.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

char __license[] SEC("license") = "Dual BSD/GPL";

/* ober_orphan looks struct ober_flow up in the room of the socket tuple. */
_Static_assert(sizeof(struct ober_flow) == sizeof(((struct bpf_sock_tuple *)0)->ipv6) &&
		       __builtin_offsetof(struct ober_flow, sport) ==
			       __builtin_offsetof(struct bpf_sock_tuple, ipv6.sport),
	       "struct ober_flow must be laid out as bpf_sock_tuple.ipv6");

/* ---- maps ---------------------------------------------------------- */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ober_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_config SEC(".maps");

/*
 * Slot 0 holds the live VIP+service table; the loader swaps it whole.
 * Named apart from the earlier layout's ober_services (8-byte values, 16384
 * preallocated rows), whose table the loader copies over on an upgrade.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		/* Sizes, not __type: clang 14 emits nested map key types as
		 * forward declarations, which loaders cannot size. */
		__uint(key_size, sizeof(struct ober_svc_key));
		__uint(value_size, sizeof(struct ober_svc_val));
		__uint(max_entries, OBER_MAX_SERVICES);
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} ober_service_set SEC(".maps");

/* Destinations that are surely not the node's (struct ober_vip_absent);
 * written by the loader around every swap of ober_service_set. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ober_vip_absent);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_vip_absent SEC(".maps");

/* One slot per whitelist; a sync builds a new trie and swaps the slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, OBER_MAX_WHITELISTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(key_size, sizeof(struct ober_lpm_key));
		__uint(value_size, sizeof(__u32));
		__uint(max_entries, OBER_MAX_WHITELIST_ENTRIES);
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} ober_whitelists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ober_wl_meta);
	__uint(max_entries, OBER_MAX_WHITELISTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_wl_meta SEC(".maps");

/* One slot per access list (struct ober_svc_val.access), each an LPM trie
 * of prefix -> OBER_ACCESS_*; a change builds a new trie and swaps the
 * slot. An empty slot denies everyone. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, OBER_MAX_ACCESS_LISTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(key_size, sizeof(struct ober_lpm_key));
		__uint(value_size, sizeof(__u32));
		__uint(max_entries, OBER_MAX_ACCESS_ENTRIES);
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} ober_access SEC(".maps");

/*
 * The Maglev table with its size and seed in front, so that one swap
 * changes all three together. BPF_F_INNER_MAP lets the size vary.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__type(key, __u32);
		__type(value, __u32);
		__uint(max_entries, OBER_MAGLEV_DEFAULT + OBER_MAGLEV_HDR);
		__uint(map_flags, BPF_F_INNER_MAP);
	});
} ober_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct ober_instance);
	__uint(max_entries, OBER_MAX_INSTANCES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_instances SEC(".maps");

/* The loader sets max_entries to the number of possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_cpumap SEC(".maps");

/* Listeners below OBER_LOW_LISTENERS. Key: listener * OBER_MAX_INSTANCES
 * + instance. Its size and type are those of every earlier release: the
 * running instances' sockets stay in it across an upgrade. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, OBER_LOW_SOCKETS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_sockets SEC(".maps");

/* The other listeners, keyed the same way. A hash rather than an array:
 * its keys are only the sockets it holds, so the loader lists them without
 * looking up each of the 245,760 slots (a sockmap's key walk visits every
 * slot, empty or not). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, OBER_HIGH_SOCKETS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_sockets_hi SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ober_counter);
	__uint(max_entries, OBER_COUNTER_KEYS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ober_counter);
	__uint(max_entries, OBER_MAX_INSTANCES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_steered SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ober_assign);
	__uint(max_entries, OBER_MAX_INSTANCES + 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_assigned SEC(".maps");

/*
 * The flows of the other nodes while one is in transition: key struct
 * ober_flow, value the owner's address (__be32). The daemon fills the
 * live inner map as the nodes send their records and swaps in an empty
 * one when the transition is over.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(key_size, sizeof(struct ober_flow));
		__uint(value_size, sizeof(__be32));
		__uint(max_entries, OBER_MAX_OWNED_FLOWS);
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} ober_owners SEC(".maps");

/* Per CPU, the GCRA's theoretical arrival time of the next forward. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_handoff_rl SEC(".maps");

/* New connections sk_lookup dispatched while a node is in transition
 * (struct ober_flow each), for the daemon to send to the other nodes. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_new_flows SEC(".maps");

/* The drain-handoff set (struct ober_handoff), swapped whole like the
 * services. The template's one entry is only the inner map's shape. Named
 * apart from the earlier layout's ober_handoff, whose pins an upgrade
 * leaves alone rather than adopting them with the wrong inner shape. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(key_size, sizeof(__u32));
		__uint(value_size, sizeof(struct ober_handoff));
		__uint(max_entries, 1);
	});
} ober_handoff_set SEC(".maps");

/*
 * Non-zero on a CPU while its XDP program asks the kernel whether a flow
 * has a socket. That lookup runs ober_sk_lookup when it reaches the
 * listeners; the program then still picks the instance's listener (the
 * SYN-cookie check needs it) but counts no connection, since none is made.
 * The lookup runs to completion on the asking CPU, and in the packet path
 * with bottom halves off, so no other packet's lookup sees the flag. (A
 * BPF_PROG_TEST_RUN can be preempted in between: at worst a connection
 * then goes uncounted.)
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ober_probing SEC(".maps");

/* ---- shared helpers ------------------------------------------------ */

#define ober_barrier_var(v) asm volatile("" : "+r"(v))

static __always_inline void count(__u32 reason, int action, __u64 len)
{
	__u32 key = reason * OBER_ACTIONS + (__u32)action;
	struct ober_counter *c = bpf_map_lookup_elem(&ober_counters, &key);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __always_inline struct ober_svc_val *lookup_svc(void *table, const __u32 *addr, __be16 port, __u8 proto)
{
	struct ober_svc_key key = {};

	__builtin_memcpy(key.addr, addr, 16);
	key.port = port;
	key.proto = proto;
	return bpf_map_lookup_elem(table, &key);
}

/* Returns the instance for a flow hash, or OBER_NO_INSTANCE. */
static __always_inline __u32 maglev_pick(void *table, __u32 hash)
{
	__u32 k = 0;
	__u32 *m = bpf_map_lookup_elem(table, &k);
	__u32 *inst;

	/* BPF defines x % 0 as x, so an empty table must be caught here. */
	if (!m || *m == 0)
		return OBER_NO_INSTANCE;
	k = OBER_MAGLEV_HDR + hash % *m;
	inst = bpf_map_lookup_elem(table, &k);
	return inst ? *inst : OBER_NO_INSTANCE;
}

static __always_inline __u32 maglev_seed(void *table)
{
	__u32 k = 1;
	__u32 *seed = bpf_map_lookup_elem(table, &k);

	return seed ? *seed : 0;
}

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* ---- XDP ----------------------------------------------------------- */

/*
 * The XDP program is split in two so the verifier's work stays small: the
 * entry point parses L2/L3 (the IPv6 extension-header walk can end in many
 * states) and passes what it learned as scalars to ober_decide, a global
 * function the verifier checks once, whatever state it is called from.
 * ober_decide does every table lookup itself, so one packet sees one
 * VIP/service table even while the loader swaps it. The drain handoff's
 * two halves, ober_orphan (send) and ober_rx (receive), are global
 * functions too, off the path of every other packet.
 */

enum frag_kind {
	FRAG_NONE = 0,
	FRAG_FIRST = 1, /* offset 0, more fragments follow */
	FRAG_LATER = 2, /* offset > 0: no L4 header */
};

/* ober_decide's `meta` argument. */
#define META_L3OFF_MASK 0xff
#define META_PROTO_SHIFT 8
#define META_V6 (1u << 16)
#define META_FRAG_SHIFT 17 /* 2 bits of enum frag_kind */
#define META_EXTHDRS (1u << 19)
#define META_BAD_L3 (1u << 20)  /* IP header fields make no sense */
#define META_V4MAPPED (1u << 21) /* IPv6 with an IPv4-mapped address */

/* TCP flags the handoff looks at. */
#define TCPF_SYN 0x02
#define TCPF_RST 0x04

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline int verdict(__u64 len, __u32 reason, int action)
{
	count(reason, action, len);
	return action;
}

/*
 * Rewrites a refused TCP segment into the RST that answers it (RFC 9293
 * 3.10.7.1) and bounces it out the interface it came in on. IP options
 * become NOPs rather than being echoed; the segment's payload and TCP
 * options are cut off. Checksums are summed in 32-bit words, which folds
 * to the same ones' complement sum as 16-bit words.
 */
static __always_inline int reply_rst(struct xdp_md *ctx, __u32 l3off, __u32 hlen, __u32 l4len, int v6,
				     __u8 tcpflags, __u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 seq, ack, paylen, newlen, i;
	__u64 sum = 0;
	__u8 *tcp;

	/* Bounds the verifier can see; the parser guarantees them anyway. */
	if (l3off > 14 + 4 * OBER_MAX_VLANS || hlen > 60)
		return -1;
	tcp = data + l3off + hlen;
	if ((void *)(tcp + 20) > data_end)
		return -1;
	seq = *(__u32 *)(tcp + 4);
	ack = *(__u32 *)(tcp + 8);
	paylen = l4len - (__u32)(tcp[12] >> 4) * 4;

	newlen = l3off + hlen + 20;
	if ((__u64)newlen < len && bpf_xdp_adjust_tail(ctx, (int)newlen - (int)len))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	/* Ethernet: back to where it came from; VLAN tags stay as they are. */
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];
	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	if (!v6) {
		struct iphdr *ip = data + l3off;
		__u32 *w = (__u32 *)ip;
		__be32 a;

		if ((void *)(ip + 1) > data_end)
			return -1;
		a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
		ip->tos = 0;
		ip->tot_len = bpf_htons(hlen + 20);
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000); /* DF */
		ip->ttl = 64;
		ip->check = 0;
		/* Unrolled: constant offsets keep the verifier's work small. The
		 * parser already proved hlen bytes are there; this re-proves it
		 * after the tail adjustment in terms the verifier follows. */
#pragma unroll
		for (i = 0; i < 15; i++) {
			if (i * 4 < hlen && (void *)(w + i + 1) <= data_end) {
				if (i >= 5)
					w[i] = 0x01010101; /* IPOPT_NOP */
				sum += w[i];
			}
		}
		ip->check = csum_fold(sum);
		sum = (__u64)ip->saddr + ip->daddr;
	} else {
		struct ipv6hdr *ip6 = data + l3off;
		struct in6_addr a;
		__u32 *w;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		a = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
		*(__be32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(20);
		ip6->hop_limit = 64;
		w = (__u32 *)&ip6->saddr;
		for (i = 0; i < 8; i++)
			sum += w[i];
	}
	sum += bpf_htons(IPPROTO_TCP) + bpf_htons(20);

	tcp = data + l3off + hlen;
	if ((void *)(tcp + 20) > data_end)
		return -1;
	__u16 sport = *(__u16 *)tcp;
	*(__u16 *)tcp = *(__u16 *)(tcp + 2);
	*(__u16 *)(tcp + 2) = sport;
	if (tcpflags & 0x10) { /* ACK: take the sequence number it expects */
		*(__u32 *)(tcp + 4) = ack;
		*(__u32 *)(tcp + 8) = 0;
		tcp[13] = 0x04; /* RST */
	} else {
		__u32 n = bpf_ntohl(seq) + paylen + (tcpflags & 0x02 ? 1 : 0) + (tcpflags & 0x01 ? 1 : 0);
		*(__u32 *)(tcp + 4) = 0;
		*(__u32 *)(tcp + 8) = bpf_htonl(n);
		tcp[13] = 0x14; /* RST|ACK */
	}
	tcp[12] = 5 << 4;
	*(__u16 *)(tcp + 14) = 0; /* window */
	*(__u16 *)(tcp + 16) = 0; /* checksum */
	*(__u16 *)(tcp + 18) = 0; /* urgent */
	sum += (__u64) * (__u32 *)tcp + *(__u32 *)(tcp + 4) + *(__u32 *)(tcp + 8) + *(__u32 *)(tcp + 12) +
	       *(__u32 *)(tcp + 16);
	*(__u16 *)(tcp + 16) = csum_fold(sum);
	return 0;
}

/*
 * A source check refused the packet: a drop counted as drop_reason, or,
 * on a service with reject, the RST that answers it, counted as
 * reject_reason. Never answered: a RST, a fragment, or a packet whose
 * extension headers the answer would have to echo; those are dropped.
 */
static __always_inline int refuse(struct xdp_md *ctx, __u32 meta, __u32 l3hlen, __u32 l4len, __u8 proto,
				  __u8 tcpflags, __u16 sflags, __u64 len, __u32 drop_reason, __u32 reject_reason)
{
	__u32 l3off = meta & META_L3OFF_MASK;
	__u32 frag = (meta >> META_FRAG_SHIFT) & 3;

	if ((sflags & OBER_SVC_REJECT) && proto == IPPROTO_TCP && frag == FRAG_NONE && !(meta & META_EXTHDRS) &&
	    !(tcpflags & TCPF_RST)) {
		if (reply_rst(ctx, l3off, l3hlen, l4len, !!(meta & META_V6), tcpflags, len) == 0)
			return verdict(len, reject_reason, XDP_TX);
		return verdict(len, OBER_R_MALFORMED, XDP_DROP);
	}
	return verdict(len, drop_reason, XDP_DROP);
}

static __always_inline int is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* bpf_skc_lookup_tcp for the flow of a segment, with ober_probing set
 * around it (see there). */
static __always_inline struct bpf_sock *probe_socket(struct xdp_md *ctx, struct bpf_sock_tuple *tup, __u32 size)
{
	__u32 k = 0;
	__u32 *probing = bpf_map_lookup_elem(&ober_probing, &k);
	struct bpf_sock *sk;

	if (probing)
		*probing = 1;
	sk = bpf_skc_lookup_tcp(ctx, tup, size, BPF_F_CURRENT_NETNS, 0);
	if (probing)
		*probing = 0;
	return sk;
}

/*
 * Whether this CPU may forward one more orphan now: a GCRA token bucket,
 * one forward per interval_ns with bursts of burst_ns / interval_ns + 1.
 * The per-CPU state needs no lock: XDP runs one packet at a time per CPU.
 */
static __always_inline int handoff_allow(const struct ober_handoff *h)
{
	__u32 k = 0;
	__u64 *tat, now, t;

	if (!h->interval_ns)
		return 1;
	tat = bpf_map_lookup_elem(&ober_handoff_rl, &k);
	if (!tat)
		return 0;
	now = bpf_ktime_get_ns();
	t = *tat > now ? *tat : now;
	if (t - now > h->burst_ns)
		return 0;
	*tat = t + h->interval_ns;
	return 1;
}

/*
 * Drain handoff, sending side: is this TCP segment an orphan, and if so,
 * to the node that owns its flow with it. Returns -1 to let the caller
 * carry on with the packet untouched (a connection here owns it, or the
 * handoff set this packet sees is off); otherwise the action, counted.
 * Only packets that arrived directly come here: one decapsulated here was
 * forwarded once already and goes no further.
 */
__attribute__((noinline)) int ober_orphan(struct xdp_md *ctx, __u32 meta, __u32 l3hlen, __u32 l4len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	__u32 l3off = meta & META_L3OFF_MASK;
	int v6 = !!(meta & META_V6);
	struct bpf_sock_tuple tup = {};
	struct bpf_fib_lookup fib = {};
	struct ober_handoff *h;
	struct bpf_sock *sk;
	__u32 k = 0, ilen, i;
	__be32 src, target, *owner;
	int local = 0, tw = 0;
	__u64 sum = 0;
	__u8 *ip, *l4, tos;
	void *set, *owners;
	long rc;

	/* Widened behind a barrier, as in ober_rx. */
	__u64 hl = l3hlen;
	ober_barrier_var(hl);
	if (l3off > 14 + 4 * OBER_MAX_VLANS || hl > 0xfff)
		return -1;
	set = bpf_map_lookup_elem(&ober_handoff_set, &k);
	h = set ? bpf_map_lookup_elem(set, &k) : NULL;
	/* The config flag said on; the set this packet sees decides. */
	if (!h || !h->self)
		return -1;
	src = h->self;

	ip = data + l3off;
	l4 = ip + hl;
	if ((void *)(l4 + 20) > data_end)
		return -1; /* ober_decide checked all this: not reached */
	/* A listener owns no flow, unless the segment completes one of its
	 * SYN-cookie handshakes: that ACK must reach it here. */
	if (v6) {
		struct ipv6hdr *ip6 = (void *)ip;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(tup.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(tup.ipv6.daddr, &ip6->daddr, 16);
		tup.ipv6.sport = *(__be16 *)l4;
		tup.ipv6.dport = *(__be16 *)(l4 + 2);
		tos = (__u8)(ip[0] << 4 | ip[1] >> 4); /* the traffic class */
		sk = probe_socket(ctx, &tup, sizeof(tup.ipv6));
		if (sk) {
			tw = sk->state == BPF_TCP_TIME_WAIT;
			local = sk->state != BPF_TCP_LISTEN ||
				bpf_tcp_check_syncookie(sk, ip6, sizeof(*ip6), (struct tcphdr *)l4, 20) == 0;
			bpf_sk_release(sk);
		}
	} else {
		struct iphdr *ip4 = (void *)ip;

		if ((void *)(ip4 + 1) > data_end)
			return -1;
		tup.ipv4.saddr = ip4->saddr;
		tup.ipv4.daddr = ip4->daddr;
		tup.ipv4.sport = *(__be16 *)l4;
		tup.ipv4.dport = *(__be16 *)(l4 + 2);
		tos = ip4->tos;
		sk = probe_socket(ctx, &tup, sizeof(tup.ipv4));
		if (sk) {
			tw = sk->state == BPF_TCP_TIME_WAIT;
			local = sk->state != BPF_TCP_LISTEN ||
				bpf_tcp_check_syncookie(sk, ip4, sizeof(*ip4), (struct tcphdr *)l4, 20) == 0;
			bpf_sk_release(sk);
		}
	}
	/* A TIME_WAIT socket is an earlier connection of the tuple that this
	 * node closed first. A record that names another node is newer: that
	 * node took the tuple's SYN since (a client reuses its ports within
	 * the minute a TIME_WAIT lasts), so the segment is its. Without such
	 * a record the kernel handles the segment, as for any local socket. */
	if (local && !tw)
		return -1;

	/* An orphan. The kernel would answer it with RST; the node the
	 * routers sent it to before may still have its connection. The
	 * tuple's room becomes the record's key (struct ober_flow is laid out
	 * as the IPv6 tuple, with IPv4 mapped): the call chain's 512 bytes of
	 * stack have none to spare for a copy. */
	if (!v6) {
		__be32 sa = tup.ipv4.saddr, da = tup.ipv4.daddr;
		__be16 sp = tup.ipv4.sport, dp = tup.ipv4.dport;

		__builtin_memset(&tup, 0, sizeof(tup));
		tup.ipv6.saddr[2] = bpf_htonl(0xffff);
		tup.ipv6.saddr[3] = sa;
		tup.ipv6.daddr[2] = bpf_htonl(0xffff);
		tup.ipv6.daddr[3] = da;
		tup.ipv6.sport = sp;
		tup.ipv6.dport = dp;
	}
	owners = bpf_map_lookup_elem(&ober_owners, &k);
	owner = owners ? bpf_map_lookup_elem(owners, &tup) : NULL;
	if (!owner || !*owner)
		return tw ? -1 : verdict(len, OBER_R_HANDOFF_UNKNOWN, XDP_DROP);
	target = *owner;
	if (target == src)
		return tw ? -1 : verdict(len, OBER_R_HANDOFF_NO_TARGET, XDP_PASS);
	if (!handoff_allow(h))
		return verdict(len, OBER_R_HANDOFF_LIMITED, XDP_DROP);
	ilen = l3hlen + l4len; /* the inner packet: the IP packet as it came */
	fib.family = AF_INET;
	fib.l4_protocol = v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
	fib.tot_len = ilen + 20;
	fib.ifindex = ctx->ingress_ifindex;
	fib.ipv4_src = src;
	fib.ipv4_dst = target;
	/* Checks the MTU before the neighbour: a packet too big is counted
	 * too big even where the next hop is unresolved. */
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return verdict(len, OBER_R_HANDOFF_TOO_BIG, XDP_PASS);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return verdict(len, OBER_R_HANDOFF_NO_ROUTE, XDP_PASS);

	/* The new frame is Ethernet, the outer header, the inner packet, and
	 * nothing after it: VLAN tags and Ethernet padding stay behind. The
	 * head only fails to move without XDP's standard headroom; the packet
	 * is then untouched, and unsendable. */
	if (bpf_xdp_adjust_head(ctx, (int)l3off - 34))
		return verdict(len, OBER_R_HANDOFF_NO_ROUTE, XDP_PASS);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if ((__u64)(data_end - data) > 34 + ilen && bpf_xdp_adjust_tail(ctx, (int)(34 + ilen) - (int)(data_end - data)))
		return verdict(len, OBER_R_MALFORMED, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	struct iphdr *oh = data + sizeof(*eth);
	__u32 *w = (__u32 *)oh;
	if ((void *)(oh + 1) > data_end)
		return verdict(len, OBER_R_MALFORMED, XDP_DROP);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	*(__u8 *)oh = 0x45; /* version 4, 20 bytes */
	/* DSCP as the inner packet's, ECN not-ECT: the decapsulation does not
	 * carry congestion marks over (RFC 6040, compatibility mode). */
	oh->tos = tos & 0xfc;
	oh->tot_len = bpf_htons(ilen + 20);
	oh->id = 0;
	oh->frag_off = bpf_htons(0x4000); /* DF: the path must carry it whole */
	oh->ttl = 64;
	oh->protocol = v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
	oh->check = 0;
	oh->saddr = src;
	oh->daddr = target;
	for (i = 0; i < 5; i++)
		sum += w[i];
	oh->check = csum_fold(sum);
	if (fib.ifindex == ctx->ingress_ifindex)
		return verdict(len, OBER_R_HANDOFF_FORWARDED, XDP_TX);
	return verdict(len, OBER_R_HANDOFF_FORWARDED, bpf_redirect(fib.ifindex, 0));
}

/*
 * Everything after parsing: is it for a VIP, may it enter, and where does
 * it go. l3hlen is the IP header's length with options or extension
 * headers; l4len the L4 bytes the IP header declares.
 *
 * rx is non-zero (the outer source) for a packet decapsulated by ober_rx.
 * Such a packet is judged as if it had arrived itself, except that it
 * must be well-formed and for a VIP or host address (else it is dropped),
 * that its delivery counts as handoff_received, and that it is never an
 * orphan to send on: a segment is forwarded at most once.
 */
__attribute__((noinline)) int ober_decide(struct xdp_md *ctx, __u32 meta, __u32 l3hlen, __u32 l4len, __u64 rx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	__u32 l3off = meta & META_L3OFF_MASK;
	__u8 proto = (meta >> META_PROTO_SHIFT) & 0xff;
	__u32 frag = (meta >> META_FRAG_SHIFT) & 3;
	int v6 = !!(meta & META_V6);
	__u32 saddr[4] = {}, daddr[4] = {};
	__u32 ports, hash, inst, k = 0;
	__u8 tcpflags = 0;
	void *table;
	__u8 *l4;
	/* What a delivered packet counts as, and what a bad one gets. */
	__u32 passed = rx ? OBER_R_HANDOFF_RECEIVED : OBER_R_PASS;
	__u32 steered = rx ? OBER_R_HANDOFF_RECEIVED : OBER_R_STEERED;
	int badpass = rx ? XDP_DROP : XDP_PASS;

	if (l3off > 14 + 4 * OBER_MAX_VLANS)
		return verdict(len, OBER_R_MALFORMED, badpass);
	if (v6) {
		struct ipv6hdr *ip6 = data + l3off;

		if ((void *)(ip6 + 1) > data_end)
			return verdict(len, OBER_R_MALFORMED, badpass);
		__builtin_memcpy(daddr, &ip6->daddr, 16);
		__builtin_memcpy(saddr, &ip6->saddr, 16);
	} else {
		struct iphdr *ip = data + l3off;

		if ((void *)(ip + 1) > data_end)
			return verdict(len, OBER_R_MALFORMED, badpass);
		daddr[2] = saddr[2] = bpf_htonl(0xffff);
		daddr[3] = ip->daddr;
		saddr[3] = ip->saddr;
	}

	/* A decapsulated packet is a well-formed one for an address this
	 * program polices (a VIP or a host address), or nothing: handoff is no
	 * way into the node's other addresses. Its destination is only worth
	 * looking up once its header makes sense. */
	if (rx && (meta & (META_BAD_L3 | META_V4MAPPED)))
		return verdict(len, OBER_R_MALFORMED, XDP_DROP);
	/* Host traffic ends here, without a lookup in the table. */
	struct ober_vip_absent *absent = bpf_map_lookup_elem(&ober_vip_absent, &k);
	__u32 slot = ober_vip_slot(daddr);
	if (absent && (absent->words[slot / 64] >> (slot % 64)) & 1)
		return verdict(len, OBER_R_NOT_VIP, rx ? XDP_DROP : XDP_PASS);
	table = bpf_map_lookup_elem(&ober_service_set, &k);
	if (!table)
		return verdict(len, OBER_R_NOT_VIP, rx ? XDP_DROP : XDP_PASS);

	/* A well-formed TCP or UDP packet that is no later fragment passes
	 * every check below that comes before the service's row, so its row
	 * is looked up first: for a service, that one lookup is all, since
	 * every row's address has a VIP row in the same table
	 * (ValidateServices). Only a packet without a row, or one the checks
	 * may refuse, looks up its destination's VIP row. */
	struct ober_svc_val *svc = NULL;
	__u32 l4off = l3off + l3hlen;
	int looked = 0;
	/* Widened once, behind a barrier: clang would otherwise drop the mask
	 * the verifier needs to bound the pointer. */
	__u64 l4w = l4off & 0xfff;
	ober_barrier_var(l4w);
	if (!(meta & (META_BAD_L3 | META_V4MAPPED)) && frag != FRAG_LATER &&
	    (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && l4off <= 0xfff) {
		l4 = data + l4w;
		if ((void *)(l4 + 8) <= data_end && l4len >= 8) {
			if (proto == IPPROTO_TCP) {
				if ((void *)(l4 + 20) <= data_end && l4len >= 20) {
					__u32 doff = (__u32)(l4[12] >> 4) * 4;

					if (doff >= 20 && doff <= l4len) {
						tcpflags = l4[13];
						looked = 1;
					}
				}
			} else {
				looked = 1;
			}
			if (looked) {
				ports = *(__u32 *)l4;
				svc = lookup_svc(table, daddr, (__be16)(ports >> 16), proto);
			}
		}
	}
	if (svc)
		goto service;

	struct ober_svc_val *vip = lookup_svc(table, daddr, 0, 0);
	if (!vip)
		return verdict(len, OBER_R_NOT_VIP, rx ? XDP_DROP : XDP_PASS);

	/* From here on the packet is for a VIP or one of the node's addresses. */
	int host = vip->flags & OBER_VIP_HOST;
	/* A host address is the node's own: only listed services are policed. */
	int fail = host ? XDP_PASS : XDP_DROP;
	int bad = rx ? XDP_DROP : fail;

	/* The checks passed and the service's row is not there. */
	if (looked)
		return verdict(len, host ? passed : OBER_R_NO_SERVICE, fail);
	/* IPv4-mapped addresses never belong on the wire (RFC 4942 2.1.3); here
	 * they would alias IPv4 VIPs and IPv4 whitelist entries. */
	if (meta & META_V4MAPPED)
		return verdict(len, OBER_R_MALFORMED, XDP_DROP);
	if (meta & META_BAD_L3)
		return verdict(len, OBER_R_MALFORMED, bad);
	/* An IPv6 later fragment joins whatever datagram its source,
	 * destination and ID name, whatever next header it is labelled with,
	 * so the label proves nothing: it is dropped like a TCP one. (IPv4
	 * keys reassembly by protocol too: an ICMP-labelled fragment there can
	 * only complete an ICMP datagram, and passes with ICMP.) */
	if (v6 && frag == FRAG_LATER)
		return verdict(len, OBER_R_FRAGMENT, fail);
	if (proto == (v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP))
		return verdict(len, passed, XDP_PASS); /* PMTU, ping, NDP */
	if (frag == FRAG_LATER)
		return verdict(len, OBER_R_FRAGMENT, fail);
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return verdict(len, host ? passed : OBER_R_NO_SERVICE, fail);

	/* A TCP or UDP header the fast path above could not read. */
	if (l4off > 0xfff)
		return verdict(len, OBER_R_MALFORMED, bad);
	l4 = data + (l4off & 0xfff);
	if ((void *)(l4 + 8) > data_end || l4len < 8 ||
	    (proto == IPPROTO_TCP && ((void *)(l4 + 20) > data_end || l4len < 20))) {
		/* RFC 1858: a first fragment too short for the L4 header hides it. */
		if (frag == FRAG_FIRST)
			return verdict(len, OBER_R_FRAGMENT, fail);
		return verdict(len, OBER_R_MALFORMED, bad);
	}
	return verdict(len, OBER_R_MALFORMED, bad); /* the TCP data offset */

service:;
	/* Both source checks must admit: the whitelist (http services), then
	 * the service's own access list. Each is one LPM lookup of the same
	 * key, built only when a check needs it. */
	__u16 sflags = svc->flags;
	__u32 access = svc->access;
	if ((sflags & OBER_SVC_WHITELIST) || access) {
		struct ober_lpm_key lk = {};
		__u32 wl = svc->whitelist;
		void *trie;

		if (v6) {
			lk.prefixlen = 8 + 128;
			lk.family = 6;
			__builtin_memcpy(lk.addr, saddr, 16);
		} else {
			lk.prefixlen = 8 + 32;
			lk.family = 4;
			__builtin_memcpy(lk.addr, &saddr[3], 4);
		}
		if (sflags & OBER_SVC_WHITELIST) {
			trie = bpf_map_lookup_elem(&ober_whitelists, &wl);
			if (!trie || !bpf_map_lookup_elem(trie, &lk))
				return refuse(ctx, meta, l3hlen, l4len, proto, tcpflags, sflags, len, OBER_R_WL_DROP,
					      OBER_R_WL_REJECT);
		}
		if (access) {
			__u32 *allow;

			trie = bpf_map_lookup_elem(&ober_access, &access);
			allow = trie ? bpf_map_lookup_elem(trie, &lk) : NULL;
			if (!allow || *allow != OBER_ACCESS_ALLOW)
				return refuse(ctx, meta, l3hlen, l4len, proto, tcpflags, sflags, len, OBER_R_ACCESS_DENIED,
					      OBER_R_ACCESS_DENIED);
		}
	}

	if (frag == FRAG_FIRST)
		return verdict(len, OBER_R_FRAGMENT, XDP_PASS);
	if (!(svc->flags & OBER_SVC_DISPATCH))
		return verdict(len, passed, XDP_PASS);

	struct ober_config *cfg = bpf_map_lookup_elem(&ober_config, &k);
	/* Drain handoff: only a segment in the middle of a flow can be an
	 * orphan; a SYN starts a flow here and a RST for an unknown one is
	 * answered by nobody. Off, this costs a flag test on a lookup the
	 * steering makes anyway. */
	if (!rx && proto == IPPROTO_TCP && !(tcpflags & (TCPF_SYN | TCPF_RST)) && cfg &&
	    (cfg->flags & OBER_CFG_HANDOFF)) {
		int action = ober_orphan(ctx, meta, l3hlen, l4len);

		if (action >= 0)
			return action;
	}
	if (!cfg || !(cfg->flags & OBER_CFG_STEER))
		return verdict(len, passed, XDP_PASS);
	void *mag = bpf_map_lookup_elem(&ober_maglev, &k);
	if (!mag)
		return verdict(len, passed, XDP_PASS);
	if (v6)
		hash = ober_hash_v6(saddr, daddr, ports, maglev_seed(mag));
	else
		hash = ober_hash_v4(saddr[3], daddr[3], ports, maglev_seed(mag));
	inst = maglev_pick(mag, hash);
	struct ober_instance *in = bpf_map_lookup_elem(&ober_instances, &inst);
	if (!in || !(in->flags & OBER_INST_CPU))
		return verdict(len, passed, XDP_PASS);

	int action;
	__u32 cpu = in->cpu;
	/* Already on the instance's CPU: the cpumap hop would only cost. */
	if (cpu == bpf_get_smp_processor_id()) {
		action = XDP_PASS;
	} else {
		action = bpf_redirect_map(&ober_cpumap, cpu, XDP_PASS);
		if (action != XDP_REDIRECT)
			return verdict(len, passed, XDP_PASS); /* no cpumap entry */
	}
	struct ober_counter *sc = bpf_map_lookup_elem(&ober_steered, &inst);
	if (sc) {
		sc->packets++;
		sc->bytes += len;
	}
	return verdict(len, steered, action);
}

/* The parsers pass rx on to ober_decide: the outer source of a packet
 * ober_rx decapsulated, 0 for any other. */
static __always_inline int parse_v4(struct xdp_md *ctx, __u32 l3off, __u64 rx)
{
	__u32 meta = 0;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + l3off;

	meta |= l3off;
	if ((void *)(ip + 1) > data_end)
		return verdict(data_end - data, OBER_R_MALFORMED, rx ? XDP_DROP : XDP_PASS);

	__u32 hlen = (__u32)ip->ihl * 4;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || hlen < 20 || tot < hlen || (void *)ip + tot > data_end)
		return ober_decide(ctx, meta | META_BAD_L3, 0, 0, rx);

	__u16 fo = bpf_ntohs(ip->frag_off);
	if (fo & 0x1fff)
		meta |= FRAG_LATER << META_FRAG_SHIFT;
	else if (fo & 0x2000)
		meta |= FRAG_FIRST << META_FRAG_SHIFT;
	meta |= (__u32)ip->protocol << META_PROTO_SHIFT;
	return ober_decide(ctx, meta, hlen, tot - hlen, rx);
}

static __always_inline int parse_v6(struct xdp_md *ctx, __u32 l3off, __u64 rx)
{
	__u32 meta = 0;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + l3off;
	int i;

	meta |= l3off | META_V6;
	if ((void *)(ip6 + 1) > data_end)
		return verdict(data_end - data, OBER_R_MALFORMED, rx ? XDP_DROP : XDP_PASS);
	if (is_v4mapped((__u32 *)&ip6->daddr) || is_v4mapped((__u32 *)&ip6->saddr))
		meta |= META_V4MAPPED;

	__u32 end = 40 + (__u32)bpf_ntohs(ip6->payload_len);
	if (ip6->version != 6 || (void *)ip6 + end > data_end)
		return ober_decide(ctx, meta | META_BAD_L3, 0, 0, rx);

	__u32 off = 40;
	__u8 nh = ip6->nexthdr;
	for (i = 0; i < OBER_MAX_EXTHDRS; i++) {
		__u8 *h;
		__u32 len;

		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		    nh != IPPROTO_FRAGMENT && nh != IPPROTO_AH)
			break;
		if (off > 1024 || off + 8 > end)
			return ober_decide(ctx, meta | META_BAD_L3, 0, 0, rx);
		h = (__u8 *)ip6 + (off & 0x7ff);
		if ((void *)(h + 8) > data_end)
			return ober_decide(ctx, meta | META_BAD_L3, 0, 0, rx);
		meta |= META_EXTHDRS;
		if (nh == IPPROTO_FRAGMENT) {
			__u16 fo = bpf_ntohs(*(__be16 *)(h + 2));

			len = 8;
			if (fo & 0xfff8) {
				/* A later fragment holds only data: no header follows.
				 * It overrides a first-fragment header before it (one
				 * is all RFC 8200 allows; this is what the model does). */
				meta = (meta & ~(3u << META_FRAG_SHIFT)) | FRAG_LATER << META_FRAG_SHIFT;
				nh = h[0];
				off += len;
				goto done;
			}
			if (fo & 1)
				meta |= FRAG_FIRST << META_FRAG_SHIFT;
		} else if (nh == IPPROTO_AH) {
			len = ((__u32)h[1] + 2) * 4;
		} else {
			len = ((__u32)h[1] + 1) * 8;
		}
		nh = h[0];
		off += len;
	}
	if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS || nh == IPPROTO_FRAGMENT ||
	    nh == IPPROTO_AH)
		return ober_decide(ctx, meta | META_BAD_L3, 0, 0, rx); /* chain too long */
done:
	if (off > end)
		return ober_decide(ctx, meta | META_BAD_L3, 0, 0, rx);
	meta |= (__u32)nh << META_PROTO_SHIFT;
	return ober_decide(ctx, meta, off, end - off, rx);
}

/* What ober_rx tells the entry point about a packet it decapsulated. */
struct rx_info {
	__u64 rx;     /* ober_decide's rx (the outer source); 0: not decapsulated */
	__be16 proto; /* the inner packet's ethertype */
	__u16 _pad[3];
};

/*
 * Drain handoff, receiving side: an IPv4 packet from one of the nodes to
 * this one, carrying IPv4 (protocol 4) or IPv6 (41). The outer header goes
 * and info says how to parse the inner packet, which is then judged as if
 * it had arrived itself. (The entry point parses it, not this function:
 * one call deeper, ober_decide and ober_orphan would overflow the 512
 * bytes of stack a call chain may have.) Returns -1, info->rx set for a
 * packet decapsulated; -1, the packet untouched and info->rx 0, for
 * anything else (spoofed, fragmented, handoff off), which then takes the
 * path it always took; or an action, counted.
 */
__attribute__((noinline)) int ober_rx(struct xdp_md *ctx, __u32 l3off, struct rx_info *info)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 l2[14 + 4 * OBER_MAX_VLANS];
	struct ober_handoff *h;
	__u32 k = 0, hlen, tot, i;
	int node = 0;
	__be16 type;
	__be32 src;
	__u8 proto;
	void *set;

	/* Widened once, behind a barrier: clang would otherwise widen the
	 * argument afresh for the pointer, without the bounds checked here. */
	__u64 off = l3off;
	ober_barrier_var(off);
	if (off < 14 || off > 14 + 4 * OBER_MAX_VLANS)
		return -1;
	struct iphdr *ip = data + off;
	if ((void *)(ip + 1) > data_end || data + sizeof(l2) > data_end)
		return -1;
	hlen = (__u32)ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	proto = ip->protocol;
	/* A fragment cannot be decapsulated alone: it goes on as any packet. */
	if (ip->version != 4 || hlen < 20 || tot < hlen || (void *)ip + tot > data_end ||
	    (ip->frag_off & bpf_htons(0x3fff)) || (proto != IPPROTO_IPIP && proto != IPPROTO_IPV6))
		return -1;
	set = bpf_map_lookup_elem(&ober_handoff_set, &k);
	h = set ? bpf_map_lookup_elem(set, &k) : NULL;
	src = ip->saddr;
	if (!info || !h || !h->self || ip->daddr != h->self || src == h->self)
		return -1;
	for (i = 0; i < OBER_MAX_NODES; i++) {
		if (i < h->nnodes && h->nodes[i] == src)
			node = 1;
	}
	if (!node)
		return -1;

	/* Out with the outer header; the Ethernet header and VLAN tags stay,
	 * the last type field now naming the inner protocol. */
	type = proto == IPPROTO_IPIP ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	__builtin_memcpy(l2, data, sizeof(l2));
	/* Cannot fail: the frame keeps at least its Ethernet header. */
	if (bpf_xdp_adjust_head(ctx, (int)hlen))
		return verdict(data_end - data, OBER_R_MALFORMED, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + l3off > data_end || data + 14 > data_end)
		return verdict(data_end - data, OBER_R_MALFORMED, XDP_DROP);
	__builtin_memcpy(data, l2, 12);
	if (l3off == 14) {
		*(__be16 *)(data + 12) = type;
	} else {
		if (data + 18 > data_end)
			return verdict(data_end - data, OBER_R_MALFORMED, XDP_DROP);
		__builtin_memcpy(data + 12, l2 + 12, 4);
		if (l3off == 18) {
			*(__be16 *)(data + 16) = type;
		} else {
			if (data + 22 > data_end)
				return verdict(data_end - data, OBER_R_MALFORMED, XDP_DROP);
			__builtin_memcpy(data + 16, l2 + 16, 4);
			*(__be16 *)(data + 20) = type;
		}
	}
	info->rx = src;
	info->proto = type;
	return -1;
}

/*
 * A frame with more VLAN tags than the parser takes (OBER_MAX_VLANS): the
 * kernel may still deliver it through stacked VLAN devices, so it is
 * looked through, up to OBER_MAX_VLAN_PEEK tags, for its IP destination.
 * One for a VIP or a host address is dropped as malformed, since it could
 * not be policed; any other passes untouched. A frame with more tags still
 * cannot be checked, and is dropped. proto is the ethertype after the
 * tags the parser took.
 */
__attribute__((noinline)) int ober_deep_vlan(struct xdp_md *ctx, __u32 proto)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	__u32 daddr[4] = {}, k = 0, off = 14 + 4 * OBER_MAX_VLANS;
	void *table;
	int i;

	for (i = OBER_MAX_VLANS; i < OBER_MAX_VLAN_PEEK; i++) {
		struct vlan_hdr *vh = data + off;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return verdict(len, OBER_R_MALFORMED, XDP_PASS);
		proto = vh->proto;
		off += sizeof(*vh);
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return verdict(len, OBER_R_MALFORMED, XDP_DROP);
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;

		if ((void *)(ip + 1) > data_end)
			return verdict(len, OBER_R_MALFORMED, XDP_PASS);
		daddr[2] = bpf_htonl(0xffff);
		daddr[3] = ip->daddr;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end)
			return verdict(len, OBER_R_MALFORMED, XDP_PASS);
		__builtin_memcpy(daddr, &ip6->daddr, 16);
	} else {
		return verdict(len, OBER_R_NOT_VIP, XDP_PASS);
	}
	table = bpf_map_lookup_elem(&ober_service_set, &k);
	if (table && lookup_svc(table, daddr, 0, 0))
		return verdict(len, OBER_R_MALFORMED, XDP_DROP);
	return verdict(len, OBER_R_NOT_VIP, XDP_PASS);
}

SEC("xdp")
int ober_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 l3off = sizeof(*eth);
	__u16 proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return verdict(data_end - data, OBER_R_MALFORMED, XDP_PASS);
	proto = eth->h_proto;
	for (i = 0; i < OBER_MAX_VLANS; i++) {
		struct vlan_hdr *vh = data + l3off;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return verdict(data_end - data, OBER_R_MALFORMED, XDP_PASS);
		proto = vh->proto;
		l3off += sizeof(*vh);
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return ober_deep_vlan(ctx, proto);
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + l3off;

		/* Drain handoff traffic from another node; the test is all it
		 * costs every other packet. */
		if ((void *)(ip + 1) <= data_end && (ip->protocol == IPPROTO_IPIP || ip->protocol == IPPROTO_IPV6)) {
			struct rx_info info = {};
			int action = ober_rx(ctx, l3off, &info);

			if (action >= 0)
				return action;
			if (info.rx) {
				if (info.proto == bpf_htons(ETH_P_IP))
					return parse_v4(ctx, l3off, info.rx);
				return parse_v6(ctx, l3off, info.rx);
			}
		}
		return parse_v4(ctx, l3off, 0);
	}
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_v6(ctx, l3off, 0);
	return verdict(data_end - data, OBER_R_NOT_VIP, XDP_PASS);
}

/* ---- sk_lookup ----------------------------------------------------- */

static __always_inline void count_assign(__u32 idx, int fallback)
{
	__u32 k = 0;
	__u32 *probing = bpf_map_lookup_elem(&ober_probing, &k);
	struct ober_assign *a;

	if (probing && *probing)
		return; /* the XDP program's orphan check, not a connection */
	a = bpf_map_lookup_elem(&ober_assigned, &idx);

	if (a) {
		a->flows++;
		if (fallback)
			a->fallback++;
	}
}

/*
 * While a node is in transition, a new connection this node owns goes into
 * ober_new_flows for the daemon to tell the other nodes, which then hand
 * its segments back here should the routers move it. Not for the XDP
 * program's orphan check, which makes no connection.
 */
static __always_inline void record_flow(const __u32 *remote, const __u32 *local, __be16 sport, __be16 dport)
{
	__u32 k = 0;
	__u32 *probing = bpf_map_lookup_elem(&ober_probing, &k);
	struct ober_config *cfg = bpf_map_lookup_elem(&ober_config, &k);
	struct ober_flow f;

	if (!cfg || !(cfg->flags & OBER_CFG_HANDOFF) || (probing && *probing))
		return;
	__builtin_memcpy(f.saddr, remote, 16);
	__builtin_memcpy(f.daddr, local, 16);
	f.sport = sport;
	f.dport = dport;
	bpf_ringbuf_output(&ober_new_flows, &f, sizeof(f), 0);
}

SEC("sk_lookup")
int ober_sk_lookup(struct bpf_sk_lookup *ctx)
{
	__u32 local[4] = {}, remote[4] = {};
	__u32 k = 0, ports, hash, inst, start, listener, i;
	struct ober_svc_val *svc;
	void *table, *mag;

	if (ctx->family == AF_INET) {
		__u32 l = ctx->local_ip4, r = ctx->remote_ip4;

		/* Keep clang from merging these loads with the IPv6 ones into a
		 * computed context pointer, which the verifier refuses. */
		ober_barrier_var(l);
		ober_barrier_var(r);
		local[2] = remote[2] = bpf_htonl(0xffff);
		local[3] = l;
		remote[3] = r;
	} else if (ctx->family == AF_INET6) {
		__u32 l0 = ctx->local_ip6[0], l1 = ctx->local_ip6[1], l2 = ctx->local_ip6[2], l3 = ctx->local_ip6[3];
		__u32 r0 = ctx->remote_ip6[0], r1 = ctx->remote_ip6[1], r2 = ctx->remote_ip6[2], r3 = ctx->remote_ip6[3];

		ober_barrier_var(l0);
		ober_barrier_var(l1);
		ober_barrier_var(l2);
		ober_barrier_var(l3);
		ober_barrier_var(r0);
		ober_barrier_var(r1);
		ober_barrier_var(r2);
		ober_barrier_var(r3);
		local[0] = l0;
		local[1] = l1;
		local[2] = l2;
		local[3] = l3;
		remote[0] = r0;
		remote[1] = r1;
		remote[2] = r2;
		remote[3] = r3;
	} else {
		return SK_PASS;
	}

	table = bpf_map_lookup_elem(&ober_service_set, &k);
	if (!table)
		return SK_PASS;
	svc = lookup_svc(table, local, bpf_htons(ctx->local_port), ctx->protocol);
	if (!svc || !(svc->flags & OBER_SVC_DISPATCH) || svc->listener >= OBER_MAX_LISTENERS)
		return SK_PASS;
	listener = svc->listener;

	inst = OBER_NO_INSTANCE;
	mag = bpf_map_lookup_elem(&ober_maglev, &k);
	if (mag) {
		/* remote_port is network order, local_port host order. */
		ports = (__u32)ctx->remote_port | ((__u32)bpf_htons(ctx->local_port) << 16);
		if (ctx->family == AF_INET)
			hash = ober_hash_v4(remote[3], local[3], ports, maglev_seed(mag));
		else
			hash = ober_hash_v6(remote, local, ports, maglev_seed(mag));
		inst = maglev_pick(mag, hash);
	}

	/* The preferred instance first, then the next live one after it. */
	start = inst < OBER_MAX_INSTANCES ? inst : 0;
	for (i = 0; i < OBER_MAX_INSTANCES; i++) {
		__u32 idx = (start + i) & (OBER_MAX_INSTANCES - 1);
		__u32 key = listener * OBER_MAX_INSTANCES + idx;
		struct bpf_sock *sk;
		long err;

		if (listener < OBER_LOW_LISTENERS)
			sk = bpf_map_lookup_elem(&ober_sockets, &key);
		else
			sk = bpf_map_lookup_elem(&ober_sockets_hi, &key);

		if (!sk)
			continue;
		err = bpf_sk_assign(ctx, sk, 0);
		bpf_sk_release(sk);
		if (err)
			continue;
		count_assign(idx, idx != inst);
		if (ctx->protocol == IPPROTO_TCP)
			record_flow(remote, local, ctx->remote_port, bpf_htons(ctx->local_port));
		return SK_PASS;
	}
	count_assign(OBER_ASSIGN_NONE, 0);
	return SK_PASS;
}
