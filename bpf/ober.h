/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ober.h: the contract between the BPF programs and the Go loader.
 *
 * Everything the Go side must agree on lives here: limits, flags, the
 * counter reasons, map key/value layouts and the flow hash. The Go
 * reference model (loader/model.go) mirrors this file; the generated Go
 * types come from these structs, so a layout change shows up as a
 * compile error there rather than as silent corruption.
 */
#ifndef OBER_H
#define OBER_H

#include <linux/types.h>

/* Instances are the per-CPU HAProxy processes of one node. */
#define OBER_MAX_INSTANCES 64
/* A listener is a set of sockets, one per instance, that serves one or
 * more (VIP, proto, port) services: every VIP on :443 can share one.
 * Socket key: listener * OBER_MAX_INSTANCES + instance. The first
 * OBER_LOW_LISTENERS have their sockets in ober_sockets, as in releases
 * that had no more; the others in ober_sockets_hi. A pinned sockmap cannot
 * grow, and its sockets cannot be moved from user space (a lookup gives a
 * cookie, not the socket), so a node upgraded with running instances keeps
 * its ober_sockets and gets ober_sockets_hi beside it. */
#define OBER_MAX_LISTENERS 4096
#define OBER_LOW_LISTENERS 256
#define OBER_LOW_SOCKETS (OBER_LOW_LISTENERS * OBER_MAX_INSTANCES)
#define OBER_HIGH_SOCKETS ((OBER_MAX_LISTENERS - OBER_LOW_LISTENERS) * OBER_MAX_INSTANCES)
/* VIP and service rows of one table: a port range takes one row per port
 * (up to 1024), so 1,000 single-port services and a few dozen full ranges,
 * in both families, fit. The table allocates as it fills. */
#define OBER_MAX_SERVICES 65536
#define OBER_MAX_WHITELISTS 8
#define OBER_MAX_WHITELIST_ENTRIES (1 << 20)
/* Per-service access lists: slot 0 is "no list", so ids are 1..MAX-1.
 * A list is an LPM trie of prefix -> verdict that allocates as it fills;
 * 65536 entries cost about 10 MB of kernel memory. */
#define OBER_MAX_ACCESS_LISTS 4096
#define OBER_MAX_ACCESS_ENTRIES 65536
/* Largest Maglev table; slot 0 holds M, slot 1 the hash seed. */
#define OBER_MAGLEV_MAX 16777213
#define OBER_MAGLEV_HDR 2
#define OBER_MAGLEV_DEFAULT 65537
#define OBER_NO_INSTANCE 0xffffffffu

/* IPv6 extension headers skipped before giving up (counted malformed). */
#define OBER_MAX_EXTHDRS 6
/* VLAN tags parsed. A frame with more is only looked through, up to
 * OBER_MAX_VLAN_PEEK tags, for its IP destination: the kernel may still
 * deliver it through stacked VLAN devices, so one for a VIP must not
 * pass unpoliced. */
#define OBER_MAX_VLANS 2
#define OBER_MAX_VLAN_PEEK 8

/* Nodes of a cluster sharing the VIPs, for the drain handoff. */
#define OBER_MAX_NODES 16

/* ober_config.flags */
#define OBER_CFG_STEER 0x1   /* redirect flows to their instance's CPU */
#define OBER_CFG_HANDOFF 0x2 /* a node drains or joins: hand orphans to their owners, record new flows */

/* ober_svc_val.flags on a service entry (proto != 0). */
#define OBER_SVC_WHITELIST 0x1 /* only sources in whitelist `wl` may enter */
#define OBER_SVC_REJECT 0x2    /* answer refused TCP (whitelist or access list) with RST, not silence */
#define OBER_SVC_DISPATCH 0x4  /* flows go to instance sockets (Maglev) */
/* ober_svc_val.flags on a VIP entry (proto == 0, port == 0). */
#define OBER_VIP_HOST 0x100 /* a host address: ports without a service pass */

/*
 * Why a packet got its verdict. Counters are keyed by reason and XDP
 * action together, because some reasons end in more than one action
 * (an allowed first fragment passes, a non-first one is dropped).
 */
enum ober_reason {
	OBER_R_NOT_VIP = 0,    /* not IP, or destination not a VIP: pass */
	OBER_R_PASS = 1,       /* for a VIP and allowed, not steered */
	OBER_R_STEERED = 2,    /* redirected to its instance's CPU */
	OBER_R_NO_SERVICE = 3, /* VIP, but no service on that proto/port */
	OBER_R_WL_DROP = 4,    /* whitelisted service, source not listed */
	OBER_R_WL_REJECT = 5,  /* as above, answered with a TCP RST */
	OBER_R_FRAGMENT = 6,   /* IP fragment, see README "Fragments" */
	OBER_R_MALFORMED = 7,  /* bad or truncated headers */
	/* Drain handoff, see struct ober_handoff. */
	OBER_R_HANDOFF_FORWARDED = 8,  /* orphan sent to the node that owns its flow (TX, redirect) */
	OBER_R_HANDOFF_RECEIVED = 9,   /* decapsulated from a node and delivered */
	OBER_R_HANDOFF_NO_TARGET = 10, /* orphan whose recorded owner is this node: pass */
	OBER_R_HANDOFF_NO_ROUTE = 11,  /* orphan, the FIB has no route or neighbour: pass */
	OBER_R_HANDOFF_TOO_BIG = 12,   /* orphan, encapsulated it exceeds the MTU: pass */
	OBER_R_HANDOFF_UNKNOWN = 13,   /* orphan of no recorded flow: drop (the client resends) */
	OBER_R_HANDOFF_LIMITED = 14,   /* orphan over the forwarding rate: drop */
	OBER_R_ACCESS_DENIED = 15,     /* the service's access list denies the source: drop, or RST (tx) with reject */
	OBER_R_MAX = 16,
};
/* Counter rows kept for reasons, more than there were: a new reason must
 * not change the size of the pinned counter map, which would make every
 * node's pins incompatible with the upgrade. access_denied took the last
 * spare row; the next reason needs a counter map of a new name. */
#define OBER_R_SLOTS 16

/* XDP actions are 0..4 (ABORTED, DROP, PASS, TX, REDIRECT). */
#define OBER_ACTIONS 5
#define OBER_COUNTER_KEYS (OBER_R_SLOTS * OBER_ACTIONS)

struct ober_config {
	__u32 flags;
	__u32 _pad;
};

/*
 * One key type serves VIPs and services so that one map, swapped as a
 * whole, holds both: no packet sees a VIP without its services.
 * IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d).
 */
struct ober_svc_key {
	__u8 addr[16];
	__be16 port; /* network order, as on the wire; 0 for a VIP entry */
	__u8 proto;  /* IPPROTO_TCP/UDP; 0 for a VIP entry */
	__u8 _pad;
};

struct ober_svc_val {
	__u32 listener; /* the sockets of this service (OBER_MAX_LISTENERS) */
	__u16 flags;
	__u8 whitelist; /* index into ober_whitelists */
	__u8 _pad;
	__u32 access;   /* slot of ober_access; 0: the service has no access list */
	__u32 _spare;   /* zero: room for a field without another table layout */
};

/*
 * Which destinations are surely no VIP nor host address, so that the XDP
 * program passes host traffic without a lookup in the services table. A
 * destination hashes (ober_vip_slot) to one of OBER_VIP_SLOTS bits; a set
 * bit says that no VIP row of the live table hashes there. A clear bit
 * says nothing: the table decides, so an all-zero map (a fresh pin, an
 * upgrade) costs lookups and never admits a packet unpoliced. The loader
 * keeps it a subset of the truth across a table swap: it clears the new
 * VIPs' bits before the swap and sets the old ones' after.
 */
#define OBER_VIP_SLOT_BITS 16
#define OBER_VIP_SLOTS (1u << OBER_VIP_SLOT_BITS)

struct ober_vip_absent {
	__u64 words[OBER_VIP_SLOTS / 64];
};

/* The destination's address as four host-order words of its bytes, IPv4
 * mapped; Fibonacci hashing of their xor. The Go side reads the same
 * bytes the same way. */
static __always_inline __u32 ober_vip_slot(const __u32 *a)
{
	return ((a[0] ^ a[1] ^ a[2] ^ a[3]) * 0x9e3779b1u) >> (32 - OBER_VIP_SLOT_BITS);
}

/*
 * Whitelist LPM key. The family byte comes first so that the families
 * never alias: an IPv6 "::/0" must not admit every IPv4 source, as it
 * would if IPv4 were stored IPv4-mapped. prefixlen counts its 8 bits.
 */
struct ober_lpm_key {
	__u32 prefixlen;
	__u8 family; /* 4 or 6 */
	__u8 addr[16]; /* IPv4 in addr[0..3] */
	__u8 _pad[3];
};

/*
 * An access list's value for a prefix (key struct ober_lpm_key): the
 * verdict of the first rule that matches the prefix's addresses. Anything
 * but ALLOW denies, and so does an address no entry covers, or a list
 * that was never set.
 */
#define OBER_ACCESS_DENY 0
#define OBER_ACCESS_ALLOW 1

struct ober_instance {
	__u32 cpu;
	__u32 flags; /* OBER_INST_CPU: cpu is valid */
};
#define OBER_INST_CPU 0x1

struct ober_counter {
	__u64 packets;
	__u64 bytes;
};

struct ober_assign {
	__u64 flows;     /* connections given to this instance */
	__u64 fallback;  /* of those, given because the preferred slot was empty */
};
/* ober_assigned has one extra row counting lookups that found no socket. */
#define OBER_ASSIGN_NONE OBER_MAX_INSTANCES

/*
 * Drain handoff. Nodes announce the same VIPs; when one drains or joins,
 * the routers move established connections between nodes, whose kernels
 * would answer them with RST. While some node is in such a transition
 * (OBER_CFG_HANDOFF), a segment for a dispatched service that is neither
 * SYN nor RST and that matches no connection here (an orphan) is looked
 * up in ober_owners, the flows every node recorded and sent the others:
 * found, it goes once, inside an IPv4 header from self, to the node that
 * owns it; not found, it is dropped, and the client's retransmission
 * finds the record the owner sends within milliseconds. A node
 * decapsulates what another of nodes[] sends to self and judges the inner
 * packet as if it had arrived itself, but never sends it on: the outer
 * header marks a segment already forwarded once. Forwards are rate
 * limited per CPU (a GCRA token bucket, ober_handoff_rl). Addresses are
 * IPv4 in network order; 0 is none. One entry, swapped whole.
 */
struct ober_handoff {
	__be32 self;   /* outer source of what we send, outer destination we take; 0: off */
	__u8 nnodes;   /* entries of nodes[] in use */
	__u8 _pad[3];
	__be32 nodes[OBER_MAX_NODES]; /* every node: the outer sources accepted */
	/* Forwarding rate per CPU: one forward per interval_ns, with bursts
	 * of up to burst_ns / interval_ns + 1; interval_ns 0: no limit. */
	__u64 interval_ns;
	__u64 burst_ns;
};

/* A flow as a client's segment carries it: ober_owners' key, and what
 * sk_lookup records of a new connection while a node is in transition. */
struct ober_flow {
	__u8 saddr[16]; /* the client, IPv4-mapped for IPv4 */
	__u8 daddr[16]; /* the VIP */
	__be16 sport;
	__be16 dport;
};

/* ober_owners holds at most this many flows; the inner map allocates as
 * it fills (BPF_F_NO_PREALLOC). */
#define OBER_MAX_OWNED_FLOWS (1 << 20)

/* Book-keeping for the Go side only; the programs never read it. */
struct ober_wl_meta {
	__u64 generation;
	__u32 entries;
	__u32 _pad;
};

/*
 * Flow hash: Bob Jenkins' lookup3 final mix over 32-bit words, as the
 * kernel's jhash2. The words are the packet's bytes read as host-order
 * u32: source address, destination address, then (sport | dport << 16)
 * with both ports as the raw network-order u16 from the header. IPv4
 * hashes 3 words, IPv6 9. The Go model reads the same bytes the same way.
 */
#define OBER_JHASH_INIT 0xdeadbeefu

static __always_inline __u32 ober_rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

#define __ober_jhash_mix(a, b, c)                \
	do {                                     \
		a -= c; a ^= ober_rol32(c, 4); c += b;  \
		b -= a; b ^= ober_rol32(a, 6); a += c;  \
		c -= b; c ^= ober_rol32(b, 8); b += a;  \
		a -= c; a ^= ober_rol32(c, 16); c += b; \
		b -= a; b ^= ober_rol32(a, 19); a += c; \
		c -= b; c ^= ober_rol32(b, 4); b += a;  \
	} while (0)

#define __ober_jhash_final(a, b, c)               \
	do {                                      \
		c ^= b; c -= ober_rol32(b, 14);  \
		a ^= c; a -= ober_rol32(c, 11);  \
		b ^= a; b -= ober_rol32(a, 25);  \
		c ^= b; c -= ober_rol32(b, 16);  \
		a ^= c; a -= ober_rol32(c, 4);   \
		b ^= a; b -= ober_rol32(a, 14);  \
		c ^= b; c -= ober_rol32(b, 24);  \
	} while (0)

static __always_inline __u32 ober_hash_v4(__u32 saddr, __u32 daddr, __u32 ports, __u32 seed)
{
	__u32 a, b, c;

	a = b = c = OBER_JHASH_INIT + (3 << 2) + seed;
	a += saddr;
	b += daddr;
	c += ports;
	__ober_jhash_final(a, b, c);
	return c;
}

static __always_inline __u32 ober_hash_v6(const __u32 *s, const __u32 *d, __u32 ports, __u32 seed)
{
	__u32 a, b, c;

	a = b = c = OBER_JHASH_INIT + (9 << 2) + seed;
	a += s[0]; b += s[1]; c += s[2];
	__ober_jhash_mix(a, b, c);
	a += s[3]; b += d[0]; c += d[1];
	__ober_jhash_mix(a, b, c);
	a += d[2]; b += d[3]; c += ports;
	__ober_jhash_final(a, b, c);
	return c;
}

#endif /* OBER_H */
