/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ring buffer events (struct mb_event). A full ring buffer loses the event,
 * never the packet nor a counter: counters live in the metrics map.
 */
#ifndef MEMBRANE_BPF_LIB_EVENTS_H
#define MEMBRANE_BPF_LIB_EVENTS_H

#include "lib/maps.h"

static __always_inline void mb_event_emit(const struct mb_flow *f, __u8 type, __u8 subtype,
					  __u8 direction, __u8 match_type, __u32 cookie)
{
	struct mb_event *e = bpf_ringbuf_reserve(&mb_events_v1, sizeof(*e), 0);

	if (!e)
		return;
	e->type = type;
	e->subtype = subtype;
	e->direction = direction;
	e->match_type = match_type;
	e->ep_id = f->ep_id;
	e->ifindex = f->ifindex;
	e->src_identity = f->src_identity;
	e->dst_identity = f->dst_identity;
	e->dst_ep_id = f->dst_ep_id;
	e->saddr = f->tuple.saddr;
	e->daddr = f->tuple.daddr;
	e->sport = f->tuple.sport;
	e->dport = f->tuple.dport;
	e->proto = f->tuple.proto;
	e->tcp_flags = f->tcp_flags;
	e->icmp_type = f->icmp_type;
	e->ct_state = f->ct_state;
	e->len = f->len;
	e->cookie = cookie;
	e->ts_ns = bpf_ktime_get_boot_ns();
	/* flags 0: adaptive wakeup, the consumer is only woken when it caught up. */
	bpf_ringbuf_submit(e, 0);
}

#endif /* MEMBRANE_BPF_LIB_EVENTS_H */
