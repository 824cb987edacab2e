#include "src/kernel/packet_builder.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace membrane::kernel {
namespace {

// RFC 1071 ones' complement sum, continuing from `sum`.
uint32_t csumAdd(uint32_t sum, const uint8_t* p, size_t n) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += static_cast<uint32_t>(p[n - 1] << 8);
  return sum;
}

uint16_t csumFold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

void put16(uint8_t* p, uint16_t host) {
  p[0] = static_cast<uint8_t>(host >> 8);
  p[1] = static_cast<uint8_t>(host);
}

}  // namespace

uint32_t ipv4Be(const std::string& dotted) {
  in_addr a{};
  if (inet_pton(AF_INET, dotted.c_str(), &a) != 1) {
    std::fprintf(stderr, "ipv4Be: bad address '%s'\n", dotted.c_str());
    std::abort();
  }
  return a.s_addr;
}

PacketBuilder& PacketBuilder::eth(const MacAddr& src, const MacAddr& dst) {
  src_mac_ = src;
  dst_mac_ = dst;
  return *this;
}
PacketBuilder& PacketBuilder::ethertype(uint16_t type) {
  ethertype_ = type;
  return *this;
}
PacketBuilder& PacketBuilder::ipv4(const std::string& src, const std::string& dst) {
  ethertype_ = 0x0800;
  saddr_ = ipv4Be(src);
  daddr_ = ipv4Be(dst);
  return *this;
}
PacketBuilder& PacketBuilder::ttl(uint8_t ttl) {
  ttl_ = ttl;
  return *this;
}
PacketBuilder& PacketBuilder::fragment(uint16_t flags_and_offset) {
  frag_ = flags_and_offset;
  return *this;
}
PacketBuilder& PacketBuilder::tcp(uint16_t sport, uint16_t dport, uint8_t flags) {
  l4_ = L4::Tcp;
  proto_ = IPPROTO_TCP;
  sport_ = sport;
  dport_ = dport;
  tcp_flags_ = flags;
  return *this;
}
PacketBuilder& PacketBuilder::udp(uint16_t sport, uint16_t dport) {
  l4_ = L4::Udp;
  proto_ = IPPROTO_UDP;
  sport_ = sport;
  dport_ = dport;
  return *this;
}
PacketBuilder& PacketBuilder::icmpEcho(uint8_t type, uint16_t id, uint16_t seq) {
  l4_ = L4::Icmp;
  proto_ = IPPROTO_ICMP;
  icmp_type_ = type;
  sport_ = id;
  dport_ = seq;
  return *this;
}
PacketBuilder& PacketBuilder::icmpError(uint8_t type, uint8_t code, const std::vector<uint8_t>& inner) {
  l4_ = L4::Icmp;
  proto_ = IPPROTO_ICMP;
  icmp_type_ = type;
  icmp_code_ = code;
  sport_ = 0;
  dport_ = 0;
  inner_ = inner;
  return *this;
}
PacketBuilder& PacketBuilder::l4proto(uint8_t proto) {
  l4_ = L4::None;
  proto_ = proto;
  return *this;
}
PacketBuilder& PacketBuilder::payload(size_t bytes, uint8_t fill) {
  payload_ = bytes;
  fill_ = fill;
  return *this;
}

std::vector<uint8_t> PacketBuilder::build() const {
  std::vector<uint8_t> f(14);
  std::memcpy(&f[0], dst_mac_.data(), 6);
  std::memcpy(&f[6], src_mac_.data(), 6);
  put16(&f[12], ethertype_);
  if (ethertype_ != 0x0800) {
    f.resize(f.size() + payload_, fill_);
    return f;
  }
  size_t l4_len = 0;
  switch (l4_) {
    case L4::Tcp: l4_len = 20; break;
    case L4::Udp: l4_len = 8; break;
    case L4::Icmp: l4_len = 8; break;
    case L4::None: l4_len = 0; break;
  }
  const size_t ip_len = 20 + l4_len + inner_.size() + payload_;
  f.resize(14 + ip_len, 0);
  uint8_t* ip = &f[14];
  ip[0] = 0x45;
  put16(ip + 2, static_cast<uint16_t>(ip_len));
  put16(ip + 4, 0x1234);  // id
  put16(ip + 6, frag_);
  ip[8] = ttl_;
  ip[9] = proto_;
  std::memcpy(ip + 12, &saddr_, 4);
  std::memcpy(ip + 16, &daddr_, 4);
  put16(ip + 10, csumFold(csumAdd(0, ip, 20)));

  uint8_t* l4 = ip + 20;
  if (!inner_.empty()) std::memcpy(l4 + l4_len, inner_.data(), inner_.size());
  std::memset(l4 + l4_len + inner_.size(), fill_, payload_);
  const size_t seg_len = l4_len + inner_.size() + payload_;
  // Pseudo header for TCP/UDP checksums.
  uint32_t pseudo = csumAdd(0, ip + 12, 8);
  pseudo += proto_;
  pseudo += static_cast<uint32_t>(seg_len);
  switch (l4_) {
    case L4::Tcp:
      put16(l4, sport_);
      put16(l4 + 2, dport_);
      put16(l4 + 4, 0x0102);  // seq
      put16(l4 + 6, 0x0304);
      if (tcp_flags_ & kTcpAck) put16(l4 + 10, 0x0001);  // ack seq
      l4[12] = 5 << 4;                                    // data offset
      l4[13] = tcp_flags_;
      put16(l4 + 14, 64240);  // window
      put16(l4 + 16, csumFold(csumAdd(pseudo, l4, seg_len)));
      break;
    case L4::Udp: {
      put16(l4, sport_);
      put16(l4 + 2, dport_);
      put16(l4 + 4, static_cast<uint16_t>(seg_len));
      uint16_t c = csumFold(csumAdd(pseudo, l4, seg_len));
      put16(l4 + 6, c == 0 ? 0xffff : c);
      break;
    }
    case L4::Icmp:
      l4[0] = icmp_type_;
      l4[1] = icmp_code_;
      put16(l4 + 4, sport_);
      put16(l4 + 6, dport_);
      put16(l4 + 2, csumFold(csumAdd(0, l4, seg_len)));
      break;
    case L4::None:
      break;
  }
  return f;
}

bool checksumsValid(const std::vector<uint8_t>& f) {
  if (f.size() < 14 + 20 || f[12] != 0x08 || f[13] != 0x00) return false;
  const uint8_t* ip = &f[14];
  const size_t ihl = (ip[0] & 0x0f) * 4u;
  const size_t tot = static_cast<size_t>(ip[2] << 8 | ip[3]);
  if (ihl < 20 || tot < ihl || 14 + tot > f.size()) return false;
  if (csumFold(csumAdd(0, ip, ihl)) != 0) return false;
  const uint8_t* l4 = ip + ihl;
  const size_t seg = tot - ihl;
  uint32_t pseudo = csumAdd(0, ip + 12, 8) + ip[9] + static_cast<uint32_t>(seg);
  switch (ip[9]) {
    case IPPROTO_TCP: return seg >= 20 && csumFold(csumAdd(pseudo, l4, seg)) == 0;
    case IPPROTO_UDP:
      if (seg < 8) return false;
      if (l4[6] == 0 && l4[7] == 0) return true;
      return csumFold(csumAdd(pseudo, l4, seg)) == 0;
    case IPPROTO_ICMP: return seg >= 8 && csumFold(csumAdd(0, l4, seg)) == 0;
    default: return true;
  }
}

}  // namespace membrane::kernel
