// Pieces of resolution shared with trace.cc (not a public API): which
// identities a peer rule selects and which L4 keys its ports produce, exactly
// as map entries are computed.
#pragma once

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "membrane/identity.h"
#include "membrane/policy.h"

namespace membrane::policy::detail {

// proto << 16 | port; 0 = any protocol; proto << 16 alone = every port of proto.
using L4 = uint32_t;
inline constexpr L4 kAnyL4 = 0;
inline L4 makeL4(uint8_t proto, uint16_t port) { return (uint32_t{proto} << 16) | port; }
inline L4 protoOnly(L4 l4) { return l4 & 0xffff0000u; }

// The identities a peer rule selects; 0 = every peer (entity all, or an
// L4-only rule without peer fields). Empty = the rule allows/denies nothing.
std::set<uint32_t> peerIdentities(const PeerRule& pr, const std::vector<identity::IdentityRef>& identities);

// The L4 keys of a peer rule (toPorts and icmps), each with "needs the L7
// proxy". {kAnyL4} when the rule has no ports.
std::vector<std::pair<L4, bool>> l4Keys(const PeerRule& pr);

// Whether a packet's (proto, port) is covered by L4 key `key`.
inline bool l4Covers(L4 key, uint8_t proto, uint16_t port) {
  const L4 pkt = makeL4(proto, port);
  return key == kAnyL4 || key == pkt || key == protoOnly(pkt);
}

}  // namespace membrane::policy::detail
