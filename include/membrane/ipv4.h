// IPv4 addresses as text: the one formatter (issue 10). A bare uint32_t
// address is ambiguous (the agent computes in host order; sockaddr_in, BPF
// map keys and netlink hold network order), so the byte order is in the name:
// a network-order address is printed as ipv4HostOrderToString(ntohl(be)).
#pragma once

#include <cstdint>
#include <string>

namespace membrane {

// Dotted quad of an address in HOST byte order: 0x0a000001 -> "10.0.0.1".
inline std::string ipv4HostOrderToString(uint32_t ip_host_order) {
  std::string s;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (shift != 24) s += '.';
    s += std::to_string((ip_host_order >> shift) & 0xff);
  }
  return s;
}

}  // namespace membrane
