/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Services (ClusterIP): backend selection, DNAT of requests and reverse NAT
 * of replies, over mb_svc_v1 / mb_backend_v1 / mb_revnat_v1 and the
 * conntrack SERVICE entries (see shared/datapath.h).
 *
 * Checksums are fixed incrementally with bpf_l3/l4_csum_replace, which also
 * handles CHECKSUM_PARTIAL skbs from the pod's TX offload (only the
 * pseudo-header part is patched then) and UDP's "no checksum" 0
 * (BPF_F_MARK_MANGLED_0 leaves it 0 and never produces 0).
 */
#ifndef MEMBRANE_BPF_LIB_LB_H
#define MEMBRANE_BPF_LIB_LB_H

#include "lib/conntrack.h"
#include "lib/maps.h"

#define MB_IP_CSUM_OFF (ETH_HLEN + 10)
#define MB_IP_SADDR_OFF (ETH_HLEN + 12)
#define MB_IP_DADDR_OFF (ETH_HLEN + 16)

/* Is daddr in the service CIDR? Unknown CIDR (len 0) => look it up. */
static __always_inline int mb_lb_candidate(const struct mb_datapath_config *cfg, __u32 daddr)
{
	__u32 len, mask;

	if (!cfg || !cfg->svc_cidr_len)
		return 1;
	len = cfg->svc_cidr_len;
	if (len > 32)
		len = 32;
	mask = bpf_htonl(~0U << (32 - len));
	return (daddr & mask) == cfg->svc_cidr;
}

/* murmur3's finalizer over the tuple: spreads flows evenly over slots. */
static __always_inline __u32 mb_lb_hash(const struct mb_ct_key *t)
{
	__u32 h = t->saddr ^ (t->daddr * 0x9e3779b1U) ^
		  ((((__u32)t->sport << 16) | t->dport) * 0x85ebca6bU) ^ t->proto;

	h ^= h >> 16;
	h *= 0x85ebca6bU;
	h ^= h >> 13;
	h *= 0xc2b2ae35U;
	h ^= h >> 16;
	return h;
}

/*
 * Rewrites the IPv4 address at addr_off and the L4 port at port_off (both
 * network order), fixing the IP and TCP/UDP checksums. Returns 0 or -1.
 */
static __always_inline int mb_nat_rewrite(struct __sk_buff *skb, const struct mb_flow *f,
					  __u32 addr_off, __u32 old_addr, __u32 new_addr,
					  __u32 port_off, __u16 old_port, __u16 new_port)
{
	__u64 csum_flags;
	__u32 csum_off;

	if (f->tuple.proto == IPPROTO_TCP) {
		csum_off = (__u32)f->l4_off + 16;
		csum_flags = 0;
	} else if (f->tuple.proto == IPPROTO_UDP) {
		csum_off = (__u32)f->l4_off + 6;
		csum_flags = BPF_F_MARK_MANGLED_0;
	} else {
		return -1;
	}
	if (old_addr != new_addr) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
					csum_flags | BPF_F_PSEUDO_HDR | sizeof(new_addr)) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, MB_IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) < 0)
			return -1;
	}
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port,
					csum_flags | sizeof(new_port)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -1;
	}
	return 0;
}

/* What from_endpoint must remember about a load-balanced packet. */
struct mb_lb_state {
	struct mb_ct_key svc_key;     /* SERVICE entry key (pre-DNAT tuple) */
	struct mb_ct_entry *svc_ct;   /* existing SERVICE entry, or NULL: create one */
	struct mb_backend_info backend;
};

/*
 * If the packet goes to a service VIP: picks the backend (the flow's
 * SERVICE entry, else hash % backend_count), DNATs the packet and f->tuple
 * to it and sets f->rev_nat_id. Returns 1 translated, 0 not a service, or a
 * negative drop reason (158 no backend, 141 rewrite failed).
 */
static __always_inline int mb_lb_dnat(struct __sk_buff *skb, struct mb_flow *f,
				      struct mb_lb_state *lb)
{
	struct mb_service_key sk = {
		.vip = f->tuple.daddr,
		.port = f->tuple.dport,
		.proto = f->tuple.proto,
	};
	struct mb_service_info *svc;
	struct mb_backend_info *b;
	struct mb_backend_key bk;
	struct mb_ct_entry *e;

	svc = bpf_map_lookup_elem(&mb_svc_v1, &sk);
	if (!svc)
		return 0;
	if (!svc->backend_count)
		return -MB_DROP_NO_SERVICE;

	lb->svc_key = f->tuple;
	lb->svc_key.flags = MB_CT_KEY_F_SERVICE;
	lb->svc_key.pad = 0;
	e = bpf_map_lookup_elem(&mb_ct4_v2, &lb->svc_key);
	/* A SERVICE entry of an older incarnation of the VIP is re-chosen. */
	if (e && e->rev_nat_id == svc->rev_nat_id) {
		lb->svc_ct = e;
		lb->backend.ip = e->backend_ip;
		lb->backend.port = e->backend_port;
	} else {
		lb->svc_ct = NULL;
		bk.rev_nat_id = svc->rev_nat_id;
		bk.slot = (__u16)(mb_lb_hash(&f->tuple) % svc->backend_count);
		b = bpf_map_lookup_elem(&mb_backend_v1, &bk);
		if (!b)
			return -MB_DROP_NO_SERVICE;
		lb->backend = *b;
	}
	if (mb_nat_rewrite(skb, f, MB_IP_DADDR_OFF, f->tuple.daddr, lb->backend.ip,
			   (__u32)f->l4_off + 2, f->tuple.dport, lb->backend.port) < 0)
		return -MB_DROP_WRITE_ERROR;
	f->tuple.daddr = lb->backend.ip;
	f->tuple.dport = lb->backend.port;
	f->policy_dport = lb->backend.port;
	f->rev_nat_id = svc->rev_nat_id;
	return 1;
}

/*
 * After the flow entry was committed: creates the SERVICE entry of a new
 * service flow, or moves an existing one's expiry with its flow.
 */
static __always_inline void mb_lb_commit(const struct mb_flow *f, struct mb_lb_state *lb,
					 __u32 ep_id, __u16 flow_ct_flags)
{
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 expires = now + mb_ct_lifetime(f->tuple.proto, flow_ct_flags);
	struct mb_ct_entry e = {};

	if (lb->svc_ct) {
		mb_ct_touch(lb->svc_ct, expires);
		return;
	}
	e.expires_ns = expires;
	e.src_identity = f->src_identity;
	e.dst_identity = f->dst_identity;
	e.ep_id = (__u16)ep_id;
	e.backend_ip = lb->backend.ip;
	e.backend_port = lb->backend.port;
	e.rev_nat_id = f->rev_nat_id;
	/* ANY: replaces a stale entry of an older incarnation of the VIP. A
	 * failure only costs stickiness (the next packet hashes the same). */
	bpf_map_update_elem(&mb_ct4_v2, &lb->svc_key, &e, BPF_ANY);
}

/*
 * Reply of a load-balanced flow: source backend -> VIP:port. A missing
 * mapping (service deleted meanwhile) leaves the packet as is. Returns 0 or
 * a negative drop reason.
 */
static __always_inline int mb_lb_rev_nat(struct __sk_buff *skb, struct mb_flow *f, __u16 id)
{
	struct mb_revnat_info *r = bpf_map_lookup_elem(&mb_revnat_v1, &id);

	if (!r)
		return 0;
	if (mb_nat_rewrite(skb, f, MB_IP_SADDR_OFF, f->tuple.saddr, r->vip, f->l4_off,
			   f->tuple.sport, r->port) < 0)
		return -MB_DROP_WRITE_ERROR;
	f->tuple.saddr = r->vip;
	f->tuple.sport = r->port;
	return 0;
}

#endif /* MEMBRANE_BPF_LIB_LB_H */
