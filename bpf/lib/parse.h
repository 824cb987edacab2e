/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing: Ethernet -> IPv4 -> L4 ports/flags into struct mb_flow.
 */
#ifndef MEMBRANE_BPF_LIB_PARSE_H
#define MEMBRANE_BPF_LIB_PARSE_H

#include "lib/common.h"

#define MB_L3_OFF ETH_HLEN
#define MB_IP_MIN_END (ETH_HLEN + sizeof(struct iphdr))

enum mb_l3 {
	MB_L3_IPV4 = 0,
	MB_L3_ARP = 1,
};

/*
 * Makes the Ethernet + fixed IPv4 header directly accessible. On veths the
 * headers are practically always linear; the pull only runs for odd skbs
 * and costs nothing otherwise. Returns 0 or a negative drop reason.
 */
static __always_inline int mb_ensure_l3(struct __sk_buff *skb, __u32 need)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + need <= data_end)
		return 0;
	if (skb->len < need)
		return -MB_DROP_INVALID;
	if (bpf_skb_pull_data(skb, need) < 0)
		return -MB_DROP_INVALID;
	return 0;
}

/*
 * Parses the frame into f->tuple etc. Returns MB_L3_IPV4, MB_L3_ARP or a
 * negative drop reason (134 truncated/bad header, 139 not IPv4/ARP,
 * 157 fragment).
 */
static __always_inline int mb_parse(struct __sk_buff *skb, struct mb_flow *f)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 l4_off, ihl_bytes;
	__u16 proto;
	int ret;

	ret = mb_ensure_l3(skb, ETH_HLEN);
	if (ret)
		return ret;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return -MB_DROP_INVALID;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_ARP))
		return MB_L3_ARP;
	if (proto != bpf_htons(ETH_P_IP))
		return -MB_DROP_UNKNOWN_L3;

	ret = mb_ensure_l3(skb, MB_IP_MIN_END);
	if (ret)
		return ret;
	/* The pull may have moved the data: reload the packet pointers. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return -MB_DROP_INVALID;
	if (ip->version != 4 || ip->ihl < 5)
		return -MB_DROP_INVALID;
	ihl_bytes = ip->ihl * 4;
	if (bpf_ntohs(ip->tot_len) < ihl_bytes ||
	    ETH_HLEN + (__u32)bpf_ntohs(ip->tot_len) > skb->len)
		return -MB_DROP_INVALID;
	/* No reassembly: only the first fragment carries ports. Fail closed. */
	if (ip->frag_off & bpf_htons(MB_IP_MF | MB_IP_OFFSET))
		return -MB_DROP_FRAG_NOSUPPORT;

	f->tuple.saddr = ip->saddr;
	f->tuple.daddr = ip->daddr;
	f->tuple.proto = ip->protocol;
	l4_off = ETH_HLEN + ihl_bytes;
	f->l4_off = (__u16)l4_off;

	/*
	 * L4 headers are copied with bpf_skb_load_bytes: the offset depends on
	 * ihl, and a copy avoids variable-offset packet bounds proofs and works
	 * on non-linear skbs too.
	 */
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		__u8 hdr[14];

		if (bpf_skb_load_bytes(skb, l4_off, hdr, sizeof(hdr)) < 0)
			return -MB_DROP_INVALID;
		__builtin_memcpy(&f->tuple.sport, &hdr[0], 2);
		__builtin_memcpy(&f->tuple.dport, &hdr[2], 2);
		f->tcp_flags = hdr[13];
		f->policy_dport = f->tuple.dport;
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__u16 ports[2];

		if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) < 0)
			return -MB_DROP_INVALID;
		f->tuple.sport = ports[0];
		f->tuple.dport = ports[1];
		f->policy_dport = ports[1];
		break;
	}
	case IPPROTO_ICMP: {
		__u8 hdr[8];

		if (bpf_skb_load_bytes(skb, l4_off, hdr, sizeof(hdr)) < 0)
			return -MB_DROP_INVALID;
		f->icmp_type = hdr[0];
		/* Echo id in both ports: the reply reverses onto the same CT key. */
		if (hdr[0] == MB_ICMP_ECHO || hdr[0] == MB_ICMP_ECHOREPLY) {
			__builtin_memcpy(&f->tuple.sport, &hdr[4], 2);
			f->tuple.dport = f->tuple.sport;
		}
		/* `icmps` rules: the type is the policy "port". */
		f->policy_dport = bpf_htons((__u16)hdr[0]);
		break;
	}
	default:
		break;
	}
	return MB_L3_IPV4;
}

static __always_inline int mb_icmp_is_error(__u8 type)
{
	return type == MB_ICMP_DEST_UNREACH || type == MB_ICMP_TIME_EXCEEDED ||
	       type == MB_ICMP_PARAMETERPROB;
}

/*
 * Tuple of the IPv4 packet embedded in an ICMP error (RFC 792: its IP header
 * plus at least 8 bytes of L4), in our conntrack convention (echo id as both
 * ports). Returns 0, or -1 if it is not there.
 */
static __always_inline int mb_parse_icmp_inner(struct __sk_buff *skb, const struct mb_flow *f,
					       struct mb_ct_key *inner)
{
	__u32 off = (__u32)f->l4_off + 8;
	struct iphdr ip;
	__u8 l4[8];

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	off += ip.ihl * 4;
	if (off > 0xffff || bpf_skb_load_bytes(skb, off, l4, sizeof(l4)) < 0)
		return -1;
	inner->saddr = ip.saddr;
	inner->daddr = ip.daddr;
	inner->proto = ip.protocol;
	inner->sport = 0;
	inner->dport = 0;
	inner->flags = 0;
	inner->pad = 0;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		__builtin_memcpy(&inner->sport, &l4[0], 2);
		__builtin_memcpy(&inner->dport, &l4[2], 2);
		break;
	case IPPROTO_ICMP:
		if (l4[0] == MB_ICMP_ECHO || l4[0] == MB_ICMP_ECHOREPLY) {
			__builtin_memcpy(&inner->sport, &l4[4], 2);
			inner->dport = inner->sport;
		}
		break;
	default:
		break;
	}
	return 0;
}

/* TCP flag byte of a packet: SYN without ACK. */
static __always_inline int mb_tcp_syn_only(__u8 flags)
{
	return (flags & (MB_TCP_SYN | MB_TCP_ACK)) == MB_TCP_SYN;
}

#endif /* MEMBRANE_BPF_LIB_PARSE_H */
