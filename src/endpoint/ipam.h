// IPv4 address allocation from the node's pod CIDR (pure; not thread-safe:
// the caller holds the agent lock).
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "membrane/ipv4.h"  // ipv4HostOrderToString: the addresses here are host order
#include "membrane/result.h"

namespace membrane::endpoint {

struct Cidr4 {
  uint32_t network = 0;  // host byte order
  uint8_t prefix_len = 0;

  // Parses "10.200.0.0/16". Host bits must be zero; prefix 8..30.
  static Result<Cidr4> parse(const std::string& text);
  // Number of addresses; 64-bit because a /0 (a default-constructed Cidr4) has 2^32.
  uint64_t size() const { return prefix_len >= 32 ? 1u : (uint64_t{1} << (32 - prefix_len)); }
  bool contains(uint32_t ip) const;
  std::string toString() const;
};

Result<uint32_t> parseIpv4(const std::string& text);  // host byte order

// Hands out addresses of a CIDR: never the network address, the broadcast
// address or the gateway (network + 1, which lives on the host device).
class Ipam {
 public:
  explicit Ipam(Cidr4 cidr) : cidr_(cidr) {}

  const Cidr4& cidr() const { return cidr_; }
  uint32_t gateway() const { return cidr_.network + 1; }

  // Lowest free address; error (ENOSPC) "pod CIDR 10.200.0.0/16 is exhausted" when none is left.
  Result<uint32_t> allocate();
  // Marks a specific address as used (restore after restart). EEXIST if taken, EINVAL if outside.
  Status reserve(uint32_t ip);
  void release(uint32_t ip) { used_.erase(ip); }
  size_t used() const { return used_.size(); }
  size_t capacity() const { return cidr_.size() > 3 ? cidr_.size() - 3 : 0; }

 private:
  Cidr4 cidr_;
  std::set<uint32_t> used_;
};

}  // namespace membrane::endpoint
