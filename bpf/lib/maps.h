/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map definitions. Names are exactly the MB_MAP_* strings of
 * shared/datapath.h (the variable name becomes the BPF object name and the
 * pin file name). Everything is pinned by name under the agent's bpf root
 * so that state survives agent restarts and a new load reuses it.
 */
#ifndef MEMBRANE_BPF_LIB_MAPS_H
#define MEMBRANE_BPF_LIB_MAPS_H

#include "lib/common.h"

/* host-side veth ifindex -> endpoint */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct mb_endpoint_info);
	__uint(max_entries, MB_ENDPOINTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lxc_v1 SEC(".maps");

/* endpoint IPv4 -> endpoint ("is the destination local?") */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mb_endpoint_ip_key);
	__type(value, struct mb_endpoint_info);
	__uint(max_entries, MB_ENDPOINTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_lxcip_v1 SEC(".maps");

/* prefix -> identity; LPM tries must be created with BPF_F_NO_PREALLOC */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct mb_ipcache_key);
	__type(value, struct mb_remote_info);
	__uint(max_entries, MB_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_ipcache_v1 SEC(".maps");

/*
 * Per-CPU so the per-entry hit counters need no atomics; NO_PREALLOC
 * because 256k preallocated per-CPU values would pin ~6 MiB per CPU.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct mb_policy_key);
	__type(value, struct mb_policy_value);
	__uint(max_entries, MB_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_policy_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct mb_ct_key);
	__type(value, struct mb_ct_entry);
	__uint(max_entries, MB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_ct4_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct mb_metrics_key);
	__type(value, struct mb_metrics_value);
	__uint(max_entries, MB_METRICS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_metrics_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MB_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_events_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct mb_datapath_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_config_v1 SEC(".maps");

/* Services: read by the datapath, written only by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mb_service_key);
	__type(value, struct mb_service_info);
	__uint(max_entries, MB_SERVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_svc_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct mb_backend_key);
	__type(value, struct mb_backend_info);
	__uint(max_entries, MB_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_backend_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct mb_revnat_info);
	__uint(max_entries, MB_SERVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mb_revnat_v1 SEC(".maps");

/*
 * The runtime config. An ARRAY element always exists (the verifier inlines
 * the lookup to pointer arithmetic); the NULL check is for the verifier and
 * yields all-zero defaults.
 */
static __always_inline struct mb_datapath_config *mb_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mb_config_v1, &zero);
}

/* Identity of a remote address: ipcache LPM lookup, miss => world. */
static __always_inline __u32 mb_ipcache_identity(__u32 addr)
{
	struct mb_ipcache_key key = {
		.prefixlen = MB_IPCACHE_STATIC_PREFIX + 32,
		.family = 4,
		.ip = { addr },
	};
	struct mb_remote_info *info = bpf_map_lookup_elem(&mb_ipcache_v1, &key);

	return info ? info->identity : MB_ID_WORLD;
}

static __always_inline struct mb_endpoint_info *mb_lookup_ep_by_ip(__u32 addr)
{
	struct mb_endpoint_ip_key key = { .ipv4 = addr, .family = 4 };

	return bpf_map_lookup_elem(&mb_lxcip_v1, &key);
}

#endif /* MEMBRANE_BPF_LIB_MAPS_H */
