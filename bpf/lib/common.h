/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Includes and small helpers shared by every bpf/lib header. UAPI headers
 * plus libbpf's helper headers only: tc programs need no CO-RE/vmlinux.h.
 */
#ifndef MEMBRANE_BPF_LIB_COMMON_H
#define MEMBRANE_BPF_LIB_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "shared/datapath.h"

#ifndef EEXIST
#define EEXIST 17
#endif

#define MB_TCP_FIN 0x01
#define MB_TCP_SYN 0x02
#define MB_TCP_RST 0x04
#define MB_TCP_ACK 0x10

#define MB_ICMP_ECHOREPLY 0
#define MB_ICMP_ECHO 8
#define MB_ICMP_DEST_UNREACH 3
#define MB_ICMP_TIME_EXCEEDED 11
#define MB_ICMP_PARAMETERPROB 12

#define MB_IP_MF 0x2000
#define MB_IP_OFFSET 0x1FFF

/* Conntrack lookup result (also mb_event.ct_state). */
enum mb_ct_state {
	MB_CT_NEW = 0,
	MB_CT_ESTABLISHED = 1,
	MB_CT_REPLY = 2,
	MB_CT_RELATED = 3, /* ICMP error about a tracked flow */
};

/*
 * Everything the programs learn about one packet. Lives on the stack and is
 * passed by pointer to the __always_inline helpers, so the verifier sees one
 * flat function.
 */
struct mb_flow {
	struct mb_ct_key tuple; /* as on the wire (network order) */
	__u32 ep_id;            /* endpoint whose program runs */
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 dst_ep_id;        /* 0: destination is not a local endpoint */
	__u32 len;              /* skb->len */
	__u16 policy_dport;     /* network order; ICMP: htons(type); 0 for port-less protocols */
	__u16 l4_off;           /* offset of the L4 header in the frame */
	__u16 rev_nat_id;       /* != 0: DNATed to a service backend (new CT entries get it) */
	__u16 proxy_port;       /* network order; != 0: policy redirects to the L7 proxy */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 ct_state;          /* enum mb_ct_state */
	__u8 from_proxy;        /* sent by the L7 proxy's upstream socket (mark PROXY_INGRESS/EGRESS) */
};

#endif /* MEMBRANE_BPF_LIB_COMMON_H */
