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
 */
#include "lib/common.h"
#include "lib/conntrack.h"
#include "lib/events.h"
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

SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	struct mb_endpoint_info *ep, *dst_ep = NULL;
	struct mb_ct_entry *ct;
	struct mb_flow f = {};
	__u32 ifindex = skb->ifindex;
	__u32 cfg_flags;
	int ret;

	f.ifindex = ifindex;
	f.len = skb->len;
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

	cfg_flags = mb_config_flags();
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

	/* Replies belong to a flow some policy already allowed. */
	if (f.ct_state != MB_CT_REPLY) {
		ret = mb_policy_check(&f, ep->ep_id, ep->flags, f.dst_identity, MB_DIR_EGRESS,
				      cfg_flags);
		if (ret)
			return mb_drop(&f, ret, MB_DIR_EGRESS);
		/*
		 * Local destination: its ingress policy runs here, because
		 * bpf_redirect_peer skips the destination veth's tc egress.
		 */
		if (dst_ep) {
			ret = mb_policy_check(&f, dst_ep->ep_id, dst_ep->flags, f.src_identity,
					      MB_DIR_INGRESS, cfg_flags);
			if (ret)
				return mb_drop(&f, ret, MB_DIR_INGRESS);
		}
	}

	ret = mb_ct_commit(&f, ct, ep->ep_id);
	if (ret)
		return mb_drop(&f, -ret, MB_DIR_EGRESS);

	mb_metrics_add(MB_REASON_FORWARDED, MB_DIR_EGRESS, f.len);
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
	struct mb_ct_entry *ct;
	struct mb_flow f = {};
	__u32 ifindex = skb->ifindex;
	__u32 cfg_flags, mark;
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

	cfg_flags = mb_config_flags();
	ct = mb_ct_lookup(&f.tuple, &f.ct_state);

	/* Identity carried in the mark (set by whoever classified the packet). */
	mark = skb->mark;
	if ((mark & MB_MARK_MAGIC_MASK) == MB_MARK_MAGIC_IDENTITY)
		f.src_identity = mark >> 16;
	else if (ct && f.ct_state == MB_CT_REPLY)
		f.src_identity = ct->dst_identity; /* reply from the flow's peer: no LPM walk */
	else
		f.src_identity = mb_ipcache_identity(f.tuple.saddr);
	if (f.ct_state != MB_CT_REPLY) {
		ret = mb_policy_check(&f, ep->ep_id, ep->flags, f.src_identity, MB_DIR_INGRESS,
				      cfg_flags);
		if (ret)
			return mb_drop(&f, ret, MB_DIR_INGRESS);
	}
	ret = mb_ct_commit(&f, ct, ep->ep_id);
	if (ret)
		return mb_drop(&f, -ret, MB_DIR_INGRESS);

	mb_metrics_add(MB_REASON_FORWARDED, MB_DIR_INGRESS, f.len);
	mb_trace(&f, cfg_flags, MB_TRACE_TO_ENDPOINT, MB_DIR_INGRESS);
	return TC_ACT_OK;
}
