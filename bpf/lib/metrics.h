/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-CPU {reason, direction} -> {packets, bytes} counters. tc programs do
 * not nest on one CPU (BH disabled), so plain adds on this CPU's slot are
 * exact without atomics.
 */
#ifndef MEMBRANE_BPF_LIB_METRICS_H
#define MEMBRANE_BPF_LIB_METRICS_H

#include "lib/maps.h"

static __always_inline void mb_metrics_add(__u8 reason, __u8 direction, __u32 len)
{
	struct mb_metrics_key key = { .reason = reason, .direction = direction };
	struct mb_metrics_value *v = bpf_map_lookup_elem(&mb_metrics_v1, &key);
	struct mb_metrics_value init = { .packets = 1, .bytes = len };

	if (v) {
		v->packets += 1;
		v->bytes += len;
		return;
	}
	/*
	 * First packet for this key: an update from BPF writes only this CPU's
	 * slot (others start at 0). If another CPU created the key meanwhile,
	 * NOEXIST fails and we add to our slot of its element instead.
	 */
	if (bpf_map_update_elem(&mb_metrics_v1, &key, &init, BPF_NOEXIST) == 0)
		return;
	v = bpf_map_lookup_elem(&mb_metrics_v1, &key);
	if (v) {
		v->packets += 1;
		v->bytes += len;
	}
}

#endif /* MEMBRANE_BPF_LIB_METRICS_H */
