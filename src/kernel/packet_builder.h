// PacketBuilder: Ethernet/IPv4/TCP/UDP/ICMP frames with correct checksums,
// for BPF_PROG_TEST_RUN fixtures and benchmarks. Pure value type, no kernel.
//
//   auto frame = PacketBuilder().ipv4("10.200.0.7", "10.200.0.5")
//                    .tcp(43122, 80, kTcpSyn).payload(10).build();
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace membrane::kernel {

using MacAddr = std::array<uint8_t, 6>;

inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;

// "10.0.0.1" -> network-order u32; aborts on a malformed literal (tests only).
uint32_t ipv4Be(const std::string& dotted);

// True if the frame's IPv4 header checksum and its TCP/UDP/ICMP checksum
// (UDP 0 = none) are correct, recomputed from scratch. For tests of
// rewriting programs (NAT).
bool checksumsValid(const std::vector<uint8_t>& frame);

class PacketBuilder {
 public:
  PacketBuilder& eth(const MacAddr& src, const MacAddr& dst);
  // Non-IPv4 ethertype (ARP 0x0806, IPv6 0x86DD): build() emits only the
  // Ethernet header plus payload.
  PacketBuilder& ethertype(uint16_t type);
  PacketBuilder& ipv4(const std::string& src, const std::string& dst);
  PacketBuilder& ttl(uint8_t ttl);
  PacketBuilder& fragment(uint16_t flags_and_offset);  // host order, e.g. 0x2000 (MF)
  PacketBuilder& tcp(uint16_t sport, uint16_t dport, uint8_t flags);
  PacketBuilder& udp(uint16_t sport, uint16_t dport);
  PacketBuilder& icmpEcho(uint8_t type, uint16_t id, uint16_t seq);  // type 8 request, 0 reply
  // ICMP error (type 3, 11, 12, ...) quoting `inner`: an IPv4 packet
  // WITHOUT its Ethernet header (e.g. build() of the offending frame minus
  // its first 14 bytes, or a prefix of it). Appended after the 8-byte header.
  PacketBuilder& icmpError(uint8_t type, uint8_t code, const std::vector<uint8_t>& inner);
  PacketBuilder& l4proto(uint8_t proto);  // raw protocol number, no L4 header
  PacketBuilder& payload(size_t bytes, uint8_t fill = 0xab);

  std::vector<uint8_t> build() const;

 private:
  enum class L4 { None, Tcp, Udp, Icmp };
  MacAddr src_mac_{0x02, 0, 0, 0, 0, 0x01};
  MacAddr dst_mac_{0x02, 0, 0, 0, 0, 0x02};
  uint16_t ethertype_ = 0x0800;
  uint32_t saddr_ = 0;
  uint32_t daddr_ = 0;
  uint8_t ttl_ = 64;
  uint16_t frag_ = 0;
  uint8_t proto_ = 0;
  L4 l4_ = L4::None;
  uint16_t sport_ = 0;
  uint16_t dport_ = 0;
  uint8_t tcp_flags_ = 0;
  uint8_t icmp_type_ = 0;
  uint8_t icmp_code_ = 0;
  std::vector<uint8_t> inner_;  // quoted packet of an ICMP error
  size_t payload_ = 0;
  uint8_t fill_ = 0xab;
};

}  // namespace membrane::kernel
