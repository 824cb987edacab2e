/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * THE ONLY definitions of what crosses the kernel <-> user space boundary:
 * map keys and values, event records, drop reasons, marks and flags.
 * Included by bpf/<program>.bpf.c (kernel C) and by src/kernel (C++). Layouts are
 * fixed with explicit padding and checked with static asserts on both sides.
 *
 * Map names carry a layout version (_v1). A layout change gets a new name so
 * that a new agent never misreads a map pinned by an old one.
 *
 * Byte order: IPv4 addresses and L4 ports are kept in NETWORK byte order in
 * every key and value (that is how the program reads them off the packet);
 * identities, ids, counters and flags are host order.
 */
#ifndef MEMBRANE_BPF_SHARED_DATAPATH_H
#define MEMBRANE_BPF_SHARED_DATAPATH_H

#include <linux/types.h>

#ifdef __cplusplus
#define MB_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define MB_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* ---------------------------------------------------------------------------
 * Map names (as pinned under <bpf-root>/, e.g. /sys/fs/bpf/membrane/).
 * BPF object names are limited to 15 characters, hence the short forms.
 */
#define MB_MAP_ENDPOINTS "mb_lxc_v1"     /* ifindex  -> endpoint_info   */
#define MB_MAP_ENDPOINTS_BY_IP "mb_lxcip_v1" /* ipv4   -> endpoint_info   */
#define MB_MAP_IPCACHE "mb_ipcache_v1"   /* LPM prefix -> remote_info   */
#define MB_MAP_POLICY "mb_policy_v1"     /* policy_key -> policy_value (per-CPU) */
#define MB_MAP_CT "mb_ct4_v2"            /* ct_key     -> ct_entry (v2: +backend, rev_nat_id) */
#define MB_MAP_METRICS "mb_metrics_v1"   /* metrics_key -> metrics_value (per-CPU) */
#define MB_MAP_EVENTS "mb_events_v1"     /* ring buffer of events        */
#define MB_MAP_CONFIG "mb_config_v1"     /* [0] -> datapath_config       */
#define MB_MAP_SERVICES "mb_svc_v1"      /* service_key -> service_info  */
#define MB_MAP_BACKENDS "mb_backend_v1"  /* backend_key -> backend_info  */
#define MB_MAP_REVNAT "mb_revnat_v1"     /* rev_nat_id (u16) -> revnat_info */
/* Names earlier builds pinned; removed by cleanup (Datapath::removePins). */
#define MB_MAP_CT_LEGACY_V1 "mb_ct4_v1"

#define MB_ENDPOINTS_MAX 4096
#define MB_IPCACHE_MAX 524288
#define MB_POLICY_MAX 262144
#define MB_CT_MAX 262144
#define MB_METRICS_MAX 1024
#define MB_EVENTS_BYTES (4 * 1024 * 1024)
#define MB_SERVICES_MAX 4096
#define MB_BACKENDS_MAX 65536

/* ---------------------------------------------------------------------------
 * Reserved identities (Cilium's numbers). Allocated identities start at 256.
 */
enum mb_reserved_identity {
	MB_ID_UNKNOWN = 0,
	MB_ID_HOST = 1,
	MB_ID_WORLD = 2,
	MB_ID_UNMANAGED = 3,
	MB_ID_HEALTH = 4,
	MB_ID_INIT = 5,
	MB_ID_REMOTE_NODE = 6,
	MB_ID_KUBE_APISERVER = 7,
	MB_ID_MIN_ALLOCATED = 256,
};

/* ---------------------------------------------------------------------------
 * Traffic direction, as in Cilium's metrics map (METRIC_INGRESS/EGRESS) and
 * the `direction` label (UNKNOWN, INGRESS, EGRESS, SERVICE).
 * Also used as the direction field of policy keys.
 */
enum mb_direction {
	MB_DIR_UNKNOWN = 0,
	MB_DIR_INGRESS = 1,
	MB_DIR_EGRESS = 2,
	MB_DIR_SERVICE = 3,
};

/* ---------------------------------------------------------------------------
 * Drop reasons: Cilium's numeric codes (pkg/monitor/api/drop.go), positive.
 * Reason 0 in the metrics map means "forwarded". The exporter turns a code
 * into Cilium's string (src/metrics/drop_reason.cc holds the table).
 */
enum mb_drop_reason {
	MB_REASON_FORWARDED = 0,
	MB_DROP_INVALID_SIP = 132,      /* "Invalid source ip" */
	MB_DROP_POLICY = 133,           /* "Policy denied" */
	MB_DROP_INVALID = 134,          /* "Invalid packet" */
	MB_DROP_CT_INVALID_HDR = 135,   /* "CT: Truncated or invalid header" */
	MB_DROP_CT_UNKNOWN_PROTO = 137, /* "CT: Unknown L4 protocol" */
	MB_DROP_UNKNOWN_L3 = 139,       /* "Unsupported L3 protocol" */
	MB_DROP_WRITE_ERROR = 141,      /* "Error writing to packet" */
	MB_DROP_UNKNOWN_L4 = 142,       /* "Unknown L4 protocol" */
	MB_DROP_UNKNOWN_TARGET = 150,   /* "Unknown L3 target address" */
	MB_DROP_UNROUTABLE = 151,       /* "Stale or unroutable IP" */
	MB_DROP_CT_CREATE_FAILED = 155, /* "CT: Map insertion failed" */
	MB_DROP_FRAG_NOSUPPORT = 157,   /* "IP fragmentation not supported" */
	MB_DROP_NO_SERVICE = 158,       /* "Service backend not found" */
	MB_DROP_UNKNOWN_CT = 163,       /* "Unknown connection tracking state" */
	MB_DROP_NO_CONFIG = 165,        /* "No configuration available to perform policy decision" */
	MB_DROP_INVALID_IDENTITY = 171, /* "Invalid identity" */
	MB_DROP_PROXY_LOOKUP_FAILED = 178, /* "Socket lookup failed" */
	MB_DROP_PROXY_SET_FAILED = 179, /* "Socket assign failed" */
	MB_DROP_POLICY_DENY = 181,      /* "Policy denied by denylist" */
	MB_DROP_EP_NOT_READY = 203,     /* "Endpoint policy program not available" */
};

/* ---------------------------------------------------------------------------
 * skb->mark conventions (Cilium's magic values, bpf/lib/common.h).
 */
#define MB_MARK_MAGIC_MASK 0x0F00
#define MB_MARK_MAGIC_TO_PROXY 0x0200        /* | proxy_port << 16 */
#define MB_MARK_MAGIC_PROXY_INGRESS 0x0A00   /* | identity         */
#define MB_MARK_MAGIC_PROXY_EGRESS 0x0B00    /* | identity         */
#define MB_MARK_MAGIC_HOST 0x0C00
#define MB_MARK_MAGIC_IDENTITY 0x0F00        /* | identity         */

/* An identity in a mark (MB_MARK_MAGIC_IDENTITY, _PROXY_INGRESS,
 * _PROXY_EGRESS): identity bits 0-15 in mark bits 16-31 and bits 16-23 in
 * mark bits 0-7 (Cilium's layout), bit 24 in mark bit 12 (membrane: local
 * scope, the CIDR identities 1 << 24 | n). 25 bits in all: every identity the
 * agent hands out fits (cluster scope < 1 << 24, local scope < 1 << 25); a
 * larger one must be refused before it is encoded, never truncated (a
 * truncated CIDR identity 0x01000001 would read as 1, the host). The only
 * encoder and decoder: BPF, the agent and membrane-proxy all use these. */
#define MB_MARK_IDENTITY_MAX 0x1FFFFFFU
static inline __u32 mb_mark_encode(__u32 magic, __u32 identity)
{
	return magic | ((identity & 0xFFFFU) << 16) | ((identity >> 16) & 0xFFU) | (((identity >> 24) & 1U) << 12);
}
static inline __u32 mb_mark_identity(__u32 mark)
{
	return (mark >> 16) | ((mark & 0xFFU) << 16) | (((mark >> 12) & 1U) << 24);
}

/* ---------------------------------------------------------------------------
 * Endpoints. One value type, two maps: by host-side veth ifindex (the program
 * attached to that veth finds "its" endpoint) and by IPv4 (is a destination
 * local, and where to deliver it).
 */
#define MB_EP_F_INGRESS_ENFORCED (1U << 0) /* default-deny ingress (a rule selects it) */
#define MB_EP_F_EGRESS_ENFORCED (1U << 1)  /* default-deny egress */
#define MB_EP_F_INGRESS_AUDIT (1U << 2)    /* would-be ingress drops are forwarded */
#define MB_EP_F_EGRESS_AUDIT (1U << 3)
#define MB_EP_F_HOST (1U << 4)             /* the host itself, not a pod */
#define MB_EP_F_PROTO_WILDCARD (1U << 5)   /* policy has {id|0, proto, 0} entries: look up tiers 3-4 */

struct mb_endpoint_info {
	__u32 ep_id;        /* endpoint id (policy keys, events) */
	__u32 identity;     /* security identity of the endpoint */
	__u32 ifindex;      /* host-side veth ifindex (redirect target) */
	__u32 flags;        /* MB_EP_F_* */
	__u32 ipv4;         /* network order */
	__u8 mac[6];        /* pod-side (eth0) MAC */
	__u8 node_mac[6];   /* host-side veth MAC (the pod's gateway) */
	__u32 pad[2];       /* room for IPv6 later without a layout bump */
};
MB_STATIC_ASSERT(sizeof(struct mb_endpoint_info) == 40, "mb_endpoint_info layout");

struct mb_endpoint_ip_key {
	__u32 ipv4;         /* network order */
	__u8 family;        /* 4 (v6 later) */
	__u8 pad[3];
};
MB_STATIC_ASSERT(sizeof(struct mb_endpoint_ip_key) == 8, "mb_endpoint_ip_key layout");

/* ---------------------------------------------------------------------------
 * ipcache: LPM trie, prefix -> identity. prefixlen counts bits after the
 * `prefixlen` field: 32 fixed bits (pad, cluster_id, family) + IP prefix
 * length. Miss => world (2).
 */
#define MB_IPCACHE_STATIC_PREFIX 32
struct mb_ipcache_key {
	__u32 prefixlen;    /* MB_IPCACHE_STATIC_PREFIX + prefix length */
	__u16 pad;
	__u8 cluster_id;
	__u8 family;        /* 4 (v6 later) */
	__u32 ip[4];        /* network order; v4 uses ip[0] */
};
MB_STATIC_ASSERT(sizeof(struct mb_ipcache_key) == 24, "mb_ipcache_key layout");

struct mb_remote_info {
	__u32 identity;
	__u32 tunnel_endpoint; /* network order; 0 = local/none (multi-node later) */
	__u16 node_id;
	__u8 flags;
	__u8 pad;
};
MB_STATIC_ASSERT(sizeof(struct mb_remote_info) == 12, "mb_remote_info layout");

/* ---------------------------------------------------------------------------
 * Policy: one global per-CPU hash keyed by endpoint. Lookup order for a
 * packet of (endpoint, direction, peer identity, proto, dport), first match:
 *   1. {identity, proto, dport}   L3+L4       (match type L3-L4)
 *   2. {0,        proto, dport}   L4-only     (L4-Only)
 *   3. {identity, proto, 0}       L3+proto    (L3-Proto)    \ only looked up when the
 *   4. {0,        proto, 0}       proto-only  (Proto-Only)  / endpoint has MB_EP_F_PROTO_WILDCARD
 *   5. {identity, 0,     0}       L3-only     (L3-Only)
 *   6. {0,        0,     0}       allow-all   (all)
 * For ICMP the "dport" is the ICMP type (`icmps` rules), stored like a port:
 * htons(type). A packet whose dport is 0 (ICMP type 0 = echo reply, port-less
 * protocols) starts at tier 3 (its tier 1-2 keys would be the tier 3-4 keys).
 * ICMP errors (types 3, 11, 12) whose embedded IPv4+L4 header belongs to a
 * conntrack flow (either direction) are RELATED and skip policy, as Cilium's
 * CT_RELATED; other ICMP errors go through policy with their type.
 * A matched entry with proxy_port != 0 redirects the flow to the L7 proxy
 * (see the packet path comment in bpf/datapath.bpf.c).
 * Deny-over-allow precedence is resolved in user space (the policy engine
 * writes a deny at every more specific key an allow would otherwise hit), so
 * the datapath stays first-match. Miss in an enforced direction => drop 133.
 * Per-CPU so that the per-entry packet/byte counters are uncontended.
 */
#define MB_POLICY_F_DENY (1U << 0)

struct mb_policy_key {
	__u32 ep_id;
	__u32 identity;     /* peer identity; 0 = any */
	__u16 dport;        /* network order; 0 = any (ICMP: htons(type)) */
	__u8 proto;         /* IPPROTO_*; 0 = any */
	__u8 direction;     /* MB_DIR_INGRESS / MB_DIR_EGRESS */
};
MB_STATIC_ASSERT(sizeof(struct mb_policy_key) == 12, "mb_policy_key layout");

struct mb_policy_value {
	__u16 proxy_port;   /* network order; 0 = no L7 redirect */
	__u8 flags;         /* MB_POLICY_F_* */
	__u8 pad;
	__u32 cookie;       /* which rule produced the entry (attribution) */
	__u64 packets;      /* per-CPU hit counters, updated by the datapath */
	__u64 bytes;
};
MB_STATIC_ASSERT(sizeof(struct mb_policy_value) == 24, "mb_policy_value layout");

/* ---------------------------------------------------------------------------
 * Conntrack (IPv4). LRU hash keyed by the flow's ORIGINAL direction tuple.
 * A packet is looked up as-is (hit => ESTABLISHED) and reversed (hit =>
 * REPLY). Replies skip policy; forward packets of established flows are
 * re-checked against policy (so revoking an allow cuts the flow, as in
 * Cilium). ICMP echo uses the echo id as both ports so the reply reverses
 * onto the same key.
 *
 * Services: a flow to a service VIP has TWO entries:
 *   - the SERVICE entry, key {client, VIP, sport, vport, proto,
 *     flags = MB_CT_KEY_F_SERVICE}: backend_ip/backend_port = the chosen
 *     backend, rev_nat_id = the service; only its expiry is maintained (it
 *     pins established flows to their backend);
 *   - the flow entry keyed by the post-DNAT tuple {client, backend, ...} with
 *     rev_nat_id != 0: replies on it get their source rewritten to the VIP
 *     (mb_revnat_v1[rev_nat_id]).
 * Lifetimes are CLOCK_BOOTTIME ns (bpf_ktime_get_boot_ns);
 * the agent deletes expired entries (GC); LRU eviction is the last resort.
 */
#define MB_CT_F_RX_CLOSING (1U << 0)
#define MB_CT_F_TX_CLOSING (1U << 1)
#define MB_CT_F_SEEN_NON_SYN (1U << 2)
#define MB_CT_F_PROXY_REDIRECT (1U << 3)

#define MB_CT_LIFETIME_TCP_NS (21600ULL * 1000000000ULL)
#define MB_CT_LIFETIME_SYN_NS (60ULL * 1000000000ULL)
#define MB_CT_LIFETIME_NONTCP_NS (60ULL * 1000000000ULL)
#define MB_CT_CLOSE_TIMEOUT_NS (10ULL * 1000000000ULL)

struct mb_ct_key {
	__u32 saddr;        /* network order, original direction */
	__u32 daddr;
	__u16 sport;        /* network order */
	__u16 dport;
	__u8 proto;
	__u8 flags;         /* MB_CT_KEY_F_* (0 for flow entries) */
	__u16 pad;
};
MB_STATIC_ASSERT(sizeof(struct mb_ct_key) == 16, "mb_ct_key layout");

#define MB_CT_KEY_F_SERVICE (1U << 0) /* service entry: {client, VIP} -> backend */

struct mb_ct_entry {
	__u64 expires_ns;   /* CLOCK_BOOTTIME */
	__u64 tx_packets;   /* original direction */
	__u64 tx_bytes;
	__u64 rx_packets;   /* reply direction */
	__u64 rx_bytes;
	__u32 src_identity; /* identity of the flow's originator */
	__u32 dst_identity;
	__u16 flags;        /* MB_CT_F_* */
	__u8 tx_flags_seen; /* TCP flags seen, original direction */
	__u8 rx_flags_seen;
	__u16 ep_id;        /* endpoint that created the entry */
	__u16 proxy_port;   /* network order; set with MB_CT_F_PROXY_REDIRECT */
	__u32 backend_ip;   /* SERVICE entry: chosen backend (network order) */
	__u16 backend_port; /* SERVICE entry: network order */
	__u16 rev_nat_id;   /* 0 = no service; else the service (mb_revnat_v1 key) */
};
MB_STATIC_ASSERT(sizeof(struct mb_ct_entry) == 64, "mb_ct_entry layout");

/* ---------------------------------------------------------------------------
 * Services (ClusterIP), load-balanced in from_endpoint before conntrack and
 * policy. A service has backend_count backends in slots 0..count-1 of
 * mb_backend_v1 under its id (= rev_nat_id). New flows pick slot
 * hash(5-tuple) % count; established flows keep their backend (conntrack
 * SERVICE entry). count 0 => drop 158. Only TCP and UDP are translated.
 * Update order (Datapath::upsertService): new backend slots, then the
 * service entry with the new count, then stale slots are deleted.
 */
struct mb_service_key {
	__u32 vip;          /* network order */
	__u16 port;         /* network order */
	__u8 proto;         /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};
MB_STATIC_ASSERT(sizeof(struct mb_service_key) == 8, "mb_service_key layout");

struct mb_service_info {
	__u16 backend_count;
	__u16 rev_nat_id;   /* service id, >= 1 */
	__u8 flags;         /* reserved (0) */
	__u8 pad[3];
};
MB_STATIC_ASSERT(sizeof(struct mb_service_info) == 8, "mb_service_info layout");

struct mb_backend_key {
	__u16 rev_nat_id;   /* service id */
	__u16 slot;         /* 0..backend_count-1 */
};
MB_STATIC_ASSERT(sizeof(struct mb_backend_key) == 4, "mb_backend_key layout");

struct mb_backend_info {
	__u32 ip;           /* network order */
	__u16 port;         /* network order */
	__u16 pad;
};
MB_STATIC_ASSERT(sizeof(struct mb_backend_info) == 8, "mb_backend_info layout");

/* mb_revnat_v1 key: __u16 rev_nat_id. */
struct mb_revnat_info {
	__u32 vip;          /* network order */
	__u16 port;         /* network order */
	__u16 pad;
};
MB_STATIC_ASSERT(sizeof(struct mb_revnat_info) == 8, "mb_revnat_info layout");

/* ---------------------------------------------------------------------------
 * Metrics: per-CPU hash {reason, direction} -> {packets, bytes}.
 * reason 0 = forwarded; otherwise an mb_drop_reason code.
 */
struct mb_metrics_key {
	__u8 reason;
	__u8 direction;     /* mb_direction */
	__u16 pad[3];
};
MB_STATIC_ASSERT(sizeof(struct mb_metrics_key) == 8, "mb_metrics_key layout");

struct mb_metrics_value {
	__u64 packets;
	__u64 bytes;
};
MB_STATIC_ASSERT(sizeof(struct mb_metrics_value) == 16, "mb_metrics_value layout");

/* ---------------------------------------------------------------------------
 * Runtime configuration (array map, one element), so that modes change
 * without recompiling or reloading anything.
 */
/* Events nobody reads cost the datapath (ring buffer reserve/submit) and the
 * agent (decoding): the agent sets TRACE_EVENTS only while a `membrane
 * monitor` client wants trace events (and --trace-events allows them), and
 * NO_ALLOWED_VERDICTS while nobody wants policy verdicts. Drop and audit
 * events, and every counter, do not depend on them. Zero = everything on. */
#define MB_CFG_F_TRACE_EVENTS (1U << 0)  /* emit trace events for forwarded packets */
#define MB_CFG_F_POLICY_ALWAYS (1U << 1) /* --enable-policy=always */
#define MB_CFG_F_POLICY_NEVER (1U << 2)  /* --enable-policy=never */
#define MB_CFG_F_AUDIT (1U << 3)         /* --policy-audit-mode */
#define MB_CFG_F_NO_ALLOWED_VERDICTS (1U << 4) /* no FORWARDED/REDIRECTED verdict events */

struct mb_datapath_config {
	__u32 flags;        /* MB_CFG_F_* */
	__u32 host_ipv4;    /* network order: the pods' gateway address */
	__u32 pod_cidr;     /* network order */
	__u32 pod_cidr_len;
	/* Destinations in this prefix are looked up in mb_svc_v1; svc_cidr_len
	 * 0 = unknown: every destination is looked up (correct, one lookup more
	 * per packet). */
	__u32 svc_cidr;     /* network order */
	__u32 svc_cidr_len;
	__u32 pad[2];
};
MB_STATIC_ASSERT(sizeof(struct mb_datapath_config) == 32, "mb_datapath_config layout");

/* ---------------------------------------------------------------------------
 * Events (ring buffer). Every record starts with mb_event_hdr; `type`
 * follows Cilium's monitor message types.
 */
enum mb_event_type {
	MB_EVENT_DROP = 1,
	MB_EVENT_TRACE = 4,
	MB_EVENT_POLICY_VERDICT = 5,
};

/* Trace observation points (subset of Cilium's). */
enum mb_trace_point {
	MB_TRACE_TO_ENDPOINT = 0,
	MB_TRACE_TO_STACK = 3,
	MB_TRACE_FROM_ENDPOINT = 5,
	MB_TRACE_TO_PROXY = 1,
};

/* Policy match types (Cilium's numbering). */
enum mb_match_type {
	MB_MATCH_NONE = 0,
	MB_MATCH_L3_ONLY = 1,
	MB_MATCH_L3_L4 = 2,
	MB_MATCH_L4_ONLY = 3,
	MB_MATCH_ALL = 4,
	MB_MATCH_L3_PROTO = 5,
	MB_MATCH_PROTO_ONLY = 6,
};

/* Verdicts in policy-verdict events. */
enum mb_verdict {
	MB_VERDICT_FORWARDED = 1,
	MB_VERDICT_DROPPED = 2,
	MB_VERDICT_AUDIT = 4,
	MB_VERDICT_REDIRECTED = 5,
};

struct mb_event {
	__u8 type;          /* mb_event_type */
	__u8 subtype;       /* DROP: reason; TRACE: observation point; VERDICT: mb_verdict */
	__u8 direction;     /* mb_direction */
	__u8 match_type;    /* VERDICT: mb_match_type */
	__u32 ep_id;        /* endpoint whose program saw the packet */
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 dst_ep_id;    /* 0 if not a local endpoint */
	__u32 saddr;        /* network order */
	__u32 daddr;
	__u16 sport;        /* network order; ICMP: echo id */
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 ct_state;      /* 0 new, 1 established, 2 reply, 3 related (ICMP error) */
	__u32 len;          /* skb length */
	__u32 cookie;       /* VERDICT: policy entry cookie */
	__u64 ts_ns;        /* CLOCK_BOOTTIME */
};
MB_STATIC_ASSERT(sizeof(struct mb_event) == 56, "mb_event layout");

#endif /* MEMBRANE_BPF_SHARED_DATAPATH_H */
