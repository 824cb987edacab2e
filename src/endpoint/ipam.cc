#include "src/endpoint/ipam.h"

#include <arpa/inet.h>

#include <fmt/format.h>

namespace membrane::endpoint {

Result<uint32_t> parseIpv4(const std::string& text) {
  in_addr a{};
  if (inet_pton(AF_INET, text.c_str(), &a) != 1)
    return Error::invalid(fmt::format("'{}' is not an IPv4 address", text));
  return ntohl(a.s_addr);
}

Result<Cidr4> Cidr4::parse(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos)
    return Error::invalid(fmt::format("'{}' is not a CIDR (expected e.g. 10.200.0.0/16)", text));
  auto ip = parseIpv4(text.substr(0, slash));
  if (!ip) return ip.error().wrap(fmt::format("CIDR '{}'", text));
  int len = -1;
  try {
    size_t pos = 0;
    len = std::stoi(text.substr(slash + 1), &pos);
    if (pos != text.size() - slash - 1) len = -1;
  } catch (...) {
    len = -1;
  }
  if (len < 8 || len > 30)
    return Error::invalid(fmt::format("CIDR '{}': prefix length must be between 8 and 30", text));
  Cidr4 c;
  c.prefix_len = static_cast<uint8_t>(len);
  uint32_t mask = len == 0 ? 0 : ~0u << (32 - len);
  if ((*ip & ~mask) != 0)
    return Error::invalid(fmt::format("CIDR '{}' has host bits set (did you mean {}/{}?)", text,
                                      ipv4HostOrderToString(*ip & mask), len));
  c.network = *ip;
  return c;
}

bool Cidr4::contains(uint32_t ip) const {
  uint32_t mask = prefix_len == 0 ? 0 : ~0u << (32 - prefix_len);
  return (ip & mask) == network;
}

std::string Cidr4::toString() const { return fmt::format("{}/{}", ipv4HostOrderToString(network), prefix_len); }

Result<uint32_t> Ipam::allocate() {
  // Skip network (+0) and gateway (+1); stop before broadcast.
  for (uint32_t off = 2; off + 1 < cidr_.size(); ++off) {
    uint32_t ip = cidr_.network + off;
    if (!used_.count(ip)) {
      used_.insert(ip);
      return ip;
    }
  }
  return Error(ENOSPC, fmt::format("pod CIDR {} is exhausted ({} addresses in use); delete endpoints "
                                   "or start membraned with a larger --pod-cidr",
                                   cidr_.toString(), used_.size()));
}

Status Ipam::reserve(uint32_t ip) {
  if (!cidr_.contains(ip) || ip == cidr_.network || ip == gateway() || ip == cidr_.network + cidr_.size() - 1)
    return Error::invalid(fmt::format("{} is not an assignable address of pod CIDR {}", ipv4HostOrderToString(ip),
                                      cidr_.toString()));
  if (!used_.insert(ip).second) return Error::exists(fmt::format("{} is already assigned", ipv4HostOrderToString(ip)));
  return okStatus();
}

}  // namespace membrane::endpoint
