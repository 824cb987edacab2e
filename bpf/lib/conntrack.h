/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 conntrack over mb_ct4_v2 (LRU hash keyed by the ORIGINAL tuple).
 *
 * Concurrency: an entry is shared by all CPUs (a flow's two directions can
 * run on different CPUs at once), so packet/byte counters use
 * __sync_fetch_and_add (lock xadd) to stay exact. Lifetime and flags are
 * plain stores and written only when they change (flags) or move by more
 * than MB_CT_REFRESH_NS (expiry), so a steady flow costs two atomic adds per
 * packet and no other store: cheap, and few cache-line bounces.
 */
#ifndef MEMBRANE_BPF_LIB_CONNTRACK_H
#define MEMBRANE_BPF_LIB_CONNTRACK_H

#include "lib/maps.h"
#include "lib/parse.h"

#define MB_CT_REFRESH_NS (1000000000ULL)
#define MB_CT_F_CLOSING (MB_CT_F_RX_CLOSING | MB_CT_F_TX_CLOSING)

/*
 * Looks the packet up as-is (ESTABLISHED) and reversed (REPLY). Returns the
 * entry or NULL (NEW); *state is set in all cases.
 */
static __always_inline struct mb_ct_entry *
mb_ct_lookup(const struct mb_ct_key *tuple, __u8 *state)
{
	struct mb_ct_entry *e;
	struct mb_ct_key rev;

	e = bpf_map_lookup_elem(&mb_ct4_v2, tuple);
	if (e) {
		*state = MB_CT_ESTABLISHED;
		return e;
	}
	rev.saddr = tuple->daddr;
	rev.daddr = tuple->saddr;
	rev.sport = tuple->dport;
	rev.dport = tuple->sport;
	rev.proto = tuple->proto;
	rev.flags = 0;
	rev.pad = 0;
	e = bpf_map_lookup_elem(&mb_ct4_v2, &rev);
	*state = e ? MB_CT_REPLY : MB_CT_NEW;
	return e;
}

static __always_inline __u64 mb_ct_lifetime(__u8 proto, __u16 flags)
{
	if (proto != IPPROTO_TCP)
		return MB_CT_LIFETIME_NONTCP_NS;
	if (flags & MB_CT_F_CLOSING)
		return MB_CT_CLOSE_TIMEOUT_NS;
	if (flags & MB_CT_F_SEEN_NON_SYN)
		return MB_CT_LIFETIME_TCP_NS;
	return MB_CT_LIFETIME_SYN_NS;
}

/* TCP state flags after a packet with tcp_flags in the given direction. */
static __always_inline __u16 mb_ct_next_flags(__u16 flags, __u8 proto, __u8 tcp_flags,
					      int reply)
{
	if (proto != IPPROTO_TCP)
		return flags;
	/* A new SYN on a closing flow reopens it (port reuse). */
	if (!reply && mb_tcp_syn_only(tcp_flags) && (flags & MB_CT_F_CLOSING))
		flags &= ~(MB_CT_F_CLOSING | MB_CT_F_SEEN_NON_SYN);
	if (tcp_flags & (MB_TCP_FIN | MB_TCP_RST))
		flags |= reply ? MB_CT_F_RX_CLOSING : MB_CT_F_TX_CLOSING;
	if (!(tcp_flags & MB_TCP_SYN))
		flags |= MB_CT_F_SEEN_NON_SYN;
	return flags;
}

static __always_inline void mb_ct_update(struct mb_ct_entry *e, const struct mb_flow *f,
					 __u64 now)
{
	int reply = f->ct_state == MB_CT_REPLY;
	__u16 flags = e->flags;
	__u16 nflags = mb_ct_next_flags(flags, f->tuple.proto, f->tcp_flags, reply);
	__u64 expires = now + mb_ct_lifetime(f->tuple.proto, nflags);
	__u64 old = e->expires_ns;

	if (reply) {
		__sync_fetch_and_add(&e->rx_packets, 1);
		__sync_fetch_and_add(&e->rx_bytes, f->len);
		if ((e->rx_flags_seen | f->tcp_flags) != e->rx_flags_seen)
			e->rx_flags_seen |= f->tcp_flags;
	} else {
		__sync_fetch_and_add(&e->tx_packets, 1);
		__sync_fetch_and_add(&e->tx_bytes, f->len);
		if ((e->tx_flags_seen | f->tcp_flags) != e->tx_flags_seen)
			e->tx_flags_seen |= f->tcp_flags;
	}
	/*
	 * A forward packet the policy now redirects marks the flow for good; so
	 * does the proxy's own upstream flow (its replies must reach the proxy).
	 */
	if (!reply && (f->proxy_port || f->from_proxy)) {
		nflags |= MB_CT_F_PROXY_REDIRECT;
		if (f->proxy_port && e->proxy_port != f->proxy_port)
			e->proxy_port = f->proxy_port;
	}
	if (nflags != flags)
		e->flags = nflags;
	/* Shorter (FIN/RST) applies at once; longer only in 1 s steps. */
	if (expires < old || expires > old + MB_CT_REFRESH_NS)
		e->expires_ns = expires;
}

/* Creates the entry for a NEW flow. Returns 0 or -MB_DROP_CT_CREATE_FAILED. */
static __always_inline int mb_ct_create(const struct mb_flow *f, __u32 ep_id, __u64 now)
{
	struct mb_ct_entry e = {};
	int ret;

	e.flags = mb_ct_next_flags(0, f->tuple.proto, f->tcp_flags, 0);
	e.expires_ns = now + mb_ct_lifetime(f->tuple.proto, e.flags);
	e.tx_packets = 1;
	e.tx_bytes = f->len;
	e.tx_flags_seen = f->tcp_flags;
	e.src_identity = f->src_identity;
	e.dst_identity = f->dst_identity;
	e.ep_id = (__u16)ep_id;
	e.rev_nat_id = f->rev_nat_id;
	/*
	 * Redirected to the proxy, or the proxy's upstream (server side): the
	 * flag sends the flow's replies to the host stack, where the proxy owns
	 * the (spoofed client) tuple.
	 */
	if (f->proxy_port || f->from_proxy) {
		e.flags |= MB_CT_F_PROXY_REDIRECT;
		e.proxy_port = f->proxy_port;
	}
	/* NOEXIST: a racing CPU that created it first keeps its counters. */
	ret = bpf_map_update_elem(&mb_ct4_v2, &f->tuple, &e, BPF_NOEXIST);
	if (ret < 0 && ret != -EEXIST)
		return -MB_DROP_CT_CREATE_FAILED;
	return 0;
}

/*
 * ICMP error about a tracked flow (RELATED): the embedded packet's tuple is
 * looked up in both directions. Returns 1 if related, 0 otherwise.
 */
static __always_inline int mb_ct_icmp_related(struct __sk_buff *skb, const struct mb_flow *f)
{
	struct mb_ct_key inner;
	__u8 state;

	if (f->tuple.proto != IPPROTO_ICMP || !mb_icmp_is_error(f->icmp_type))
		return 0;
	if (mb_parse_icmp_inner(skb, f, &inner) < 0)
		return 0;
	return mb_ct_lookup(&inner, &state) != NULL;
}

/* Moves a SERVICE entry's expiry along with its flow (1 s steps, shorter at once). */
static __always_inline void mb_ct_touch(struct mb_ct_entry *e, __u64 expires)
{
	__u64 old = e->expires_ns;

	if (expires < old || expires > old + MB_CT_REFRESH_NS)
		e->expires_ns = expires;
}

#endif /* MEMBRANE_BPF_LIB_CONNTRACK_H */
