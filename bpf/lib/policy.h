/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * L3/L4 policy over mb_policy_v1 (one global per-CPU hash keyed by endpoint).
 *
 * Lookup order, first match wins (deny-over-allow is already resolved by the
 * policy engine when it writes the map):
 *   1. {ep, identity, proto, dport}  L3+L4       (L3-L4)
 *   2. {ep, 0,        proto, dport}  L4-only     (L4-Only)
 *   3. {ep, identity, proto, 0}      L3+proto    (L3-Proto)   \ only with
 *   4. {ep, 0,        proto, 0}      proto-only  (Proto-Only) / MB_EP_F_PROTO_WILDCARD
 *   5. {ep, identity, 0,     0}      L3-only     (L3-Only)
 *   6. {ep, 0,        0,     0}      allow-all   (all)
 * A packet with dport 0 (ICMP echo reply, port-less protocols) starts at 3:
 * its tier 1-2 keys are the tier 3-4 keys, so nothing is looked up twice.
 * The common case (an L3+L4 allow) costs one lookup; endpoints without
 * proto-wildcard entries never pay for tiers 3-4.
 */
#ifndef MEMBRANE_BPF_LIB_POLICY_H
#define MEMBRANE_BPF_LIB_POLICY_H

#include "lib/events.h"
#include "lib/maps.h"

static __always_inline struct mb_policy_value *
mb_policy_lookup(__u32 ep_id, __u32 ep_flags, __u32 identity, __u16 dport, __u8 proto,
		 __u8 direction, __u8 *match_type)
{
	struct mb_policy_key key = {
		.ep_id = ep_id,
		.identity = identity,
		.dport = dport,
		.proto = proto,
		.direction = direction,
	};
	struct mb_policy_value *v;

	if (dport) {
		v = bpf_map_lookup_elem(&mb_policy_v1, &key);
		if (v) {
			*match_type = MB_MATCH_L3_L4;
			return v;
		}
		key.identity = 0;
		v = bpf_map_lookup_elem(&mb_policy_v1, &key);
		if (v) {
			*match_type = MB_MATCH_L4_ONLY;
			return v;
		}
	}
	if (proto && (!dport || (ep_flags & MB_EP_F_PROTO_WILDCARD))) {
		key.identity = identity;
		key.dport = 0;
		v = bpf_map_lookup_elem(&mb_policy_v1, &key);
		if (v) {
			*match_type = MB_MATCH_L3_PROTO;
			return v;
		}
		key.identity = 0;
		v = bpf_map_lookup_elem(&mb_policy_v1, &key);
		if (v) {
			*match_type = MB_MATCH_PROTO_ONLY;
			return v;
		}
	}
	key.identity = identity;
	key.dport = 0;
	key.proto = 0;
	v = bpf_map_lookup_elem(&mb_policy_v1, &key);
	if (v) {
		*match_type = MB_MATCH_L3_ONLY;
		return v;
	}
	key.identity = 0;
	v = bpf_map_lookup_elem(&mb_policy_v1, &key);
	if (v) {
		*match_type = MB_MATCH_ALL;
		return v;
	}
	*match_type = MB_MATCH_NONE;
	return NULL;
}

/*
 * Policy decision of endpoint (ep_id, ep_flags) for the flow in `direction`
 * against peer identity `peer`. Returns 0 (forward) or a positive drop
 * reason (133 no match, 181 deny entry). On forward, *proxy_port is the
 * matched entry's L7 proxy port (network order, 0 = none). Audit mode turns
 * a drop into a forward with an AUDIT verdict. Emits POLICY_VERDICT events
 * for drops and for decisions on NEW flows (REDIRECTED for proxy entries).
 */
static __always_inline int mb_policy_check(const struct mb_flow *f, __u32 ep_id, __u32 ep_flags,
					   __u32 peer, __u8 direction, __u32 cfg_flags,
					   __u16 *proxy_port)
{
	__u32 enforced_flag, audit_flag, cookie = 0;
	struct mb_policy_value *v;
	__u8 match_type;
	int reason = 0;

	*proxy_port = 0;
	if (direction == MB_DIR_INGRESS) {
		enforced_flag = MB_EP_F_INGRESS_ENFORCED;
		audit_flag = MB_EP_F_INGRESS_AUDIT;
	} else {
		enforced_flag = MB_EP_F_EGRESS_ENFORCED;
		audit_flag = MB_EP_F_EGRESS_AUDIT;
	}
	if (cfg_flags & MB_CFG_F_POLICY_NEVER)
		return 0;
	if (!(ep_flags & enforced_flag) && !(cfg_flags & MB_CFG_F_POLICY_ALWAYS))
		return 0;

	v = mb_policy_lookup(ep_id, ep_flags, peer, f->policy_dport, f->tuple.proto, direction,
			     &match_type);
	if (v) {
		/* Per-CPU value: plain adds are exact (no nesting on a CPU). */
		v->packets += 1;
		v->bytes += f->len;
		cookie = v->cookie;
		if (v->flags & MB_POLICY_F_DENY)
			reason = MB_DROP_POLICY_DENY;
		else
			*proxy_port = v->proxy_port;
	} else {
		reason = MB_DROP_POLICY;
	}

	if (reason) {
		if ((ep_flags & audit_flag) || (cfg_flags & MB_CFG_F_AUDIT)) {
			if (f->ct_state == MB_CT_NEW)
				mb_event_emit(f, MB_EVENT_POLICY_VERDICT, MB_VERDICT_AUDIT, direction,
					      match_type, cookie);
			return 0;
		}
		mb_event_emit(f, MB_EVENT_POLICY_VERDICT, MB_VERDICT_DROPPED, direction, match_type,
			      cookie);
		return reason;
	}
	if (f->ct_state == MB_CT_NEW && !(cfg_flags & MB_CFG_F_NO_ALLOWED_VERDICTS))
		mb_event_emit(f, MB_EVENT_POLICY_VERDICT,
			      *proxy_port ? MB_VERDICT_REDIRECTED : MB_VERDICT_FORWARDED, direction,
			      match_type, cookie);
	return 0;
}

#endif /* MEMBRANE_BPF_LIB_POLICY_H */
