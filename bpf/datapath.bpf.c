// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * membrane's datapath: one object for all endpoints, two tc programs per
 * pod veth (host side):
 *
 *   from_endpoint  tc ingress  = packets leaving the pod (pod egress)
 *   to_endpoint    tc egress   = packets from the host stack into the pod
 *
 * Endpoint specifics come from maps keyed by ifindex, so a new endpoint or
 * policy never recompiles or reloads anything. See shared/datapath.h for
 * the map contract and lib/policy.h for the policy lookup order.
 *
 * from_endpoint, in order: endpoint by ifindex, parse, anti-spoofing,
 * service load-balancing (DNAT, lib/lb.h; only for destinations in the
 * service CIDR), conntrack (ICMP errors: RELATED check first), destination
 * endpoint by IP, egress policy of the source and ingress policy of a local
 * destination (skipped for replies and RELATED), conntrack commit, reverse
 * NAT of service replies, then delivery: bpf_redirect_peer into a local
 * destination, the host stack otherwise, or the L7 proxy (below).
 *
 * Established TCP allow path cost: endpoint lookup, config (array, inlined),
 * one CT lookup + two atomic adds, endpoint-by-IP lookup, one policy lookup
 * per enforced direction, metrics adds.
 *
 * L7 proxy redirect: intended packet path
 * ---------------------------------------
 * A policy entry with proxy_port P != 0 (an L7 rule) sends the flow to the
 * proxy listening on P in the host network namespace:
 *  1. Client pod A -> server B:80, B's ingress (or A's egress) entry has P.
 *     A's from_endpoint allows L3/L4, sets MB_CT_F_PROXY_REDIRECT and
 *     proxy_port in the flow's CT entry, sets
 *       skb->mark = MB_MARK_MAGIC_TO_PROXY | P << 16   (P host order)
 *     counts EGRESS forwarded, emits a REDIRECTED verdict for new flows and
 *     returns TC_ACT_OK: the packet enters the host stack from A's veth.
 *     (INGRESS forwarded is counted when the proxy's packet enters B.)
 *  2. The agent's iptables rule (mangle PREROUTING: mark 0x200/0xf00 with
 *     port P in the high 16 bits -> TPROXY --on-port P, plus an ip rule
 *     fwmark 0x200/0xf00 -> a table with `local default dev lo`) hands the
 *     connection to the proxy's IP_TRANSPARENT socket; the original
 *     destination is the socket's local address.
 *  3. The proxy applies the L7 rules and connects to B:80 with SO_MARK =
 *     mb_mark_encode(MB_MARK_MAGIC_PROXY_INGRESS, identity(A)) (or
 *     _PROXY_EGRESS for egress L7; all 25 identity bits, CIDR identities
 *     included). B's to_endpoint takes the source identity from that mark;
 *     for PROXY_INGRESS an entry with a proxy port is not redirected again.
 *     The CT entry of this upstream flow gets MB_CT_F_PROXY_REDIRECT too.
 *  4. B's replies on a PROXY_REDIRECT flow (CT REPLY) are marked
 *     MB_MARK_MAGIC_TO_PROXY (port 0) and go to the host stack
 *     (TC_ACT_OK), never straight into A: with a transparent upstream
 *     (A's address) the tuple is the client's, and the proxy owns it.
 *  5. The proxy's responses to A (source B:80) enter A via to_endpoint as
 *     CT replies and pass.
 * Traffic entering a pod from the stack (to_endpoint) that hits a proxy
 * entry without coming from the proxy is hair-pinned into the stack again
 * (bpf_redirect ingress of the same veth, destination MAC = the veth's)
 * with the TO_PROXY mark; from_endpoint passes such a packet. A packet
 * still carrying TO_PROXY when it reaches to_endpoint was not taken by
 * TPROXY (no proxy, no rule): dropped 178, the L7 policy fails closed.
 */
#include "lib/common.h"
#include "lib/conntrack.h"
#include "lib/events.h"
#include "lib/lb.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/policy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Counts and reports a drop once, then drops. */
static __always_inline int mb_drop(const struct mb_flow *f, __u8 reason, __u8 direction)
{
	mb_metrics_add(reason, direction, f->len);
	mb_event_emit(f, MB_EVENT_DROP, reason, direction, MB_MATCH_NONE, 0);
	return TC_ACT_SHOT;
}

static __always_inline void mb_trace(const struct mb_flow *f, __u32 cfg_flags, __u8 point,
				     __u8 direction)
{
	if (cfg_flags & MB_CFG_F_TRACE_EVENTS)
		mb_event_emit(f, MB_EVENT_TRACE, point, direction, MB_MATCH_NONE, 0);
}

/* Conntrack update or create after the policy allowed the packet. */
static __always_inline int mb_ct_commit(const struct mb_flow *f, struct mb_ct_entry *ct,
					__u32 ep_id)
{
	__u64 now = bpf_ktime_get_boot_ns();

	if (ct) {
		mb_ct_update(ct, f, now);
		return 0;
	}
	return mb_ct_create(f, ep_id, now);
}

static __always_inline __u32 mb_to_proxy_mark(__u16 proxy_port_be)
{
	return MB_MARK_MAGIC_TO_PROXY | ((__u32)bpf_ntohs(proxy_port_be) << 16);
}

SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	struct mb_endpoint_info *ep, *dst_ep = NULL;
	struct mb_datapath_config *cfg;
	struct mb_ct_entry *ct = NULL;
	struct mb_lb_state lb;
	struct mb_flow f = {};
	__u32 ifindex = skb->ifindex;
	__u16 egress_proxy = 0, ingress_proxy = 0;
	__u32 cfg_flags;
	int ret, lb_ret = 0;

	f.ifindex = ifindex;
	f.len = skb->len;
	/*
	 * to_endpoint's hairpin (host -> pod traffic for the ingress L7 proxy,
	 * below) re-enters here: straight to the stack, where TPROXY takes it.
	 * A pod cannot forge this: veth scrubs skb->mark when a packet crosses
	 * network namespaces.
	 */
	if ((skb->mark & MB_MARK_MAGIC_MASK) == MB_MARK_MAGIC_TO_PROXY && (skb->mark >> 16))
		return TC_ACT_OK;
	ep = bpf_map_lookup_elem(&mb_lxc_v1, &ifindex);
	if (!ep) /* not (yet) an endpoint: fail closed */
		return mb_drop(&f, MB_DROP_EP_NOT_READY, MB_DIR_EGRESS);
	f.ep_id = ep->ep_id;
	f.src_identity = ep->identity;

	ret = mb_parse(skb, &f);
	if (ret < 0)
		return mb_drop(&f, -ret, MB_DIR_EGRESS);
	if (ret == MB_L3_ARP) {
		mb_metrics_add(MB_REASON_FORWARDED, MB_DIR_EGRESS, f.len);
		return TC_ACT_OK;
	}
	if (f.tuple.saddr != ep->ipv4)
		return mb_drop(&f, MB_DROP_INVALID_SIP, MB_DIR_EGRESS);

	cfg = mb_config();
	cfg_flags = cfg ? cfg->flags : 0;

	/* Services first: conntrack and policy see the backend. */
	if ((f.tuple.proto == IPPROTO_TCP || f.tuple.proto == IPPROTO_UDP) &&
	    mb_lb_candidate(cfg, f.tuple.daddr)) {
		lb_ret = mb_lb_dnat(skb, &f, &lb);
		if (lb_ret < 0)
			return mb_drop(&f, -lb_ret, MB_DIR_EGRESS);
	}

	if (f.tuple.proto == IPPROTO_ICMP && mb_ct_icmp_related(skb, &f))
		f.ct_state = MB_CT_RELATED;
	else
		ct = mb_ct_lookup(&f.tuple, &f.ct_state);

	dst_ep = mb_lookup_ep_by_ip(f.tuple.daddr);
	if (dst_ep) {
		f.dst_identity = dst_ep->identity;
		f.dst_ep_id = dst_ep->ep_id;
	} else if (ct && f.ct_state == MB_CT_REPLY) {
		/* Saves the LPM walk: a reply goes back to the flow's originator. */
		f.dst_identity = ct->src_identity;
	} else {
		f.dst_identity = mb_ipcache_identity(f.tuple.daddr);
	}

	/* Replies and RELATED belong to a flow some policy already allowed. */
	if (f.ct_state == MB_CT_NEW || f.ct_state == MB_CT_ESTABLISHED) {
		ret = mb_policy_check(&f, ep->ep_id, ep->flags, f.dst_identity, MB_DIR_EGRESS,
				      cfg_flags, &egress_proxy);
		if (ret)
			return mb_drop(&f, ret, MB_DIR_EGRESS);
		/*
		 * Local destination: its ingress policy runs here, because
		 * bpf_redirect_peer skips the destination veth's tc egress.
		 */
		if (dst_ep) {
			ret = mb_policy_check(&f, dst_ep->ep_id, dst_ep->flags, f.src_identity,
					      MB_DIR_INGRESS, cfg_flags, &ingress_proxy);
			if (ret)
				return mb_drop(&f, ret, MB_DIR_INGRESS);
		}
		/* Egress L7 first; its proxy's upstream then meets B's ingress. */
		f.proxy_port = egress_proxy ? egress_proxy : ingress_proxy;
	}

	if (f.ct_state != MB_CT_RELATED) {
		ret = mb_ct_commit(&f, ct, ep->ep_id);
		if (ret)
			return mb_drop(&f, -ret, MB_DIR_EGRESS);
	}
	if (lb_ret > 0)
		mb_lb_commit(&f, &lb, ep->ep_id,
			     ct ? ct->flags : mb_ct_next_flags(0, f.tuple.proto, f.tcp_flags, 0));

	mb_metrics_add(MB_REASON_FORWARDED, MB_DIR_EGRESS, f.len);

	if (f.proxy_port) {
		skb->mark = mb_to_proxy_mark(f.proxy_port);
		mb_trace(&f, cfg_flags, MB_TRACE_TO_PROXY,
			 egress_proxy ? MB_DIR_EGRESS : MB_DIR_INGRESS);
		return TC_ACT_OK;
	}
	if (ct && f.ct_state == MB_CT_REPLY) {
		/* Server side of a proxied flow: the proxy owns the client's tuple. */
		if (ct->flags & MB_CT_F_PROXY_REDIRECT) {
			skb->mark = MB_MARK_MAGIC_TO_PROXY;
			mb_trace(&f, cfg_flags, MB_TRACE_TO_PROXY, MB_DIR_EGRESS);
			return TC_ACT_OK;
		}
		if (ct->rev_nat_id) {
			ret = mb_lb_rev_nat(skb, &f, ct->rev_nat_id);
			if (ret)
				return mb_drop(&f, -ret, MB_DIR_EGRESS);
		}
	}

	if (!dst_ep) {
		mb_trace(&f, cfg_flags, MB_TRACE_TO_STACK, MB_DIR_EGRESS);
		return TC_ACT_OK;
	}

	/* Deliver straight into the destination pod, as its gateway would. */
	if (bpf_skb_store_bytes(skb, 0, dst_ep->mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, dst_ep->node_mac, ETH_ALEN, 0) < 0)
		return mb_drop(&f, MB_DROP_WRITE_ERROR, MB_DIR_INGRESS);
	mb_metrics_add(MB_REASON_FORWARDED, MB_DIR_INGRESS, f.len);
	mb_trace(&f, cfg_flags, MB_TRACE_TO_ENDPOINT, MB_DIR_INGRESS);
	return bpf_redirect_peer(dst_ep->ifindex, 0);
}

SEC("tc")
int to_endpoint(struct __sk_buff *skb)
{
	struct mb_endpoint_info *ep;
	struct mb_datapath_config *cfg;
	struct mb_ct_entry *ct = NULL;
	struct mb_flow f = {};
	__u32 ifindex = skb->ifindex;
	__u32 cfg_flags, mark, magic;
	__u16 proxy_port = 0;
	int ret;

	f.ifindex = ifindex;
	f.len = skb->len;
	ep = bpf_map_lookup_elem(&mb_lxc_v1, &ifindex);
	if (!ep)
		return mb_drop(&f, MB_DROP_EP_NOT_READY, MB_DIR_INGRESS);
	f.ep_id = ep->ep_id;
	f.dst_identity = ep->identity;
	f.dst_ep_id = ep->ep_id;

	ret = mb_parse(skb, &f);
	if (ret < 0)
		return mb_drop(&f, -ret, MB_DIR_INGRESS);
	if (ret == MB_L3_ARP) {
		mb_metrics_add(MB_REASON_FORWARDED, MB_DIR_INGRESS, f.len);
		return TC_ACT_OK;
	}

	cfg = mb_config();
	cfg_flags = cfg ? cfg->flags : 0;
	if (f.tuple.proto == IPPROTO_ICMP && mb_ct_icmp_related(skb, &f))
		f.ct_state = MB_CT_RELATED;
	else
		ct = mb_ct_lookup(&f.tuple, &f.ct_state);

	/* Identity carried in the mark (set by whoever classified the packet). */
	mark = skb->mark;
	magic = mark & MB_MARK_MAGIC_MASK;
	if (magic == MB_MARK_MAGIC_IDENTITY || magic == MB_MARK_MAGIC_PROXY_INGRESS ||
	    magic == MB_MARK_MAGIC_PROXY_EGRESS)
		f.src_identity = mb_mark_identity(mark);
	else if (ct && f.ct_state == MB_CT_REPLY)
		f.src_identity = ct->dst_identity; /* reply from the flow's peer: no LPM walk */
	else
		f.src_identity = mb_ipcache_identity(f.tuple.saddr);
	f.from_proxy = magic == MB_MARK_MAGIC_PROXY_INGRESS || magic == MB_MARK_MAGIC_PROXY_EGRESS;

	if (f.ct_state == MB_CT_NEW || f.ct_state == MB_CT_ESTABLISHED) {
		/* Meant for the proxy but not taken by TPROXY: fail closed. */
		if (magic == MB_MARK_MAGIC_TO_PROXY)
			return mb_drop(&f, MB_DROP_PROXY_LOOKUP_FAILED, MB_DIR_INGRESS);
		ret = mb_policy_check(&f, ep->ep_id, ep->flags, f.src_identity, MB_DIR_INGRESS,
				      cfg_flags, &proxy_port);
		if (ret)
			return mb_drop(&f, ret, MB_DIR_INGRESS);
		/* The ingress proxy's own upstream: its L7 check is done. */
		if (magic != MB_MARK_MAGIC_PROXY_INGRESS)
			f.proxy_port = proxy_port;
	}
	if (f.ct_state != MB_CT_RELATED) {
		ret = mb_ct_commit(&f, ct, ep->ep_id);
		if (ret)
			return mb_drop(&f, -ret, MB_DIR_INGRESS);
	}

	if (f.proxy_port) {
		/*
		 * Hairpin into the host stack through the veth's ingress: the
		 * destination MAC becomes the veth's own (else the stack sees
		 * PACKET_OTHERHOST and drops it); from_endpoint passes it on
		 * (mark), TPROXY takes it. The agent sets accept_local on the
		 * veth: the source may be the node's own (gateway) address.
		 */
		if (bpf_skb_store_bytes(skb, 0, ep->node_mac, ETH_ALEN, 0) < 0)
			return mb_drop(&f, MB_DROP_WRITE_ERROR, MB_DIR_INGRESS);
		skb->mark = mb_to_proxy_mark(f.proxy_port);
		mb_trace(&f, cfg_flags, MB_TRACE_TO_PROXY, MB_DIR_INGRESS);
		return bpf_redirect(ifindex, BPF_F_INGRESS);
	}
	if (ct && f.ct_state == MB_CT_REPLY && ct->rev_nat_id) {
		ret = mb_lb_rev_nat(skb, &f, ct->rev_nat_id);
		if (ret)
			return mb_drop(&f, -ret, MB_DIR_INGRESS);
	}

	mb_metrics_add(MB_REASON_FORWARDED, MB_DIR_INGRESS, f.len);
	mb_trace(&f, cfg_flags, MB_TRACE_TO_ENDPOINT, MB_DIR_INGRESS);
	return TC_ACT_OK;
}
