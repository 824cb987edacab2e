// The L7 (HTTP) part of the policy, as membrane-proxy's config (docs/l7.md
// "Config"): pure, no I/O, unit-tested without root.
//
// The policy engine resolves the HTTP rule sets (policy_repository.h,
// EndpointPolicy::l7: per endpoint, direction and TCP port, with the peer
// identities each rule is for); this only translates them: every such port
// becomes a redirect, a rule for every peer has no identity restriction.
// Named ports resolve as for the map entries: ingress from the endpoint's own
// `named_ports` (by endpoint IPv4, host order), egress from the peers' (of
// every endpoint given here).
// Deny rules never reach the proxy: the datapath drops before redirecting.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/identity.h"
#include "membrane/labels.h"
#include "membrane/policy.h"
#include "membrane/policy_repository.h"
#include "membrane/result.h"

namespace membrane::daemon {

struct L7Endpoint {
  uint32_t ipv4 = 0;  // host order
  uint32_t identity = 0;
  labels::LabelSet labels;
};

struct L7Ports {
  uint16_t ingress = 0;  // proxy listener port for ingress redirects
  uint16_t egress = 0;
};

// membrane-proxy config JSON: revision, listeners (both ports), endpoints with
// rules, and identities (every endpoint's IP plus `extra_identities`, e.g. the
// node's gateway -> host (1)), and prefixes: every local-scope (CIDR) identity
// in `identities` as {"cidr": its own prefix, "identity"} — what the ipcache
// LPM maps — so the proxy resolves toCIDR/world destinations like the datapath.
nlohmann::json buildProxyConfig(uint64_t revision, const L7Ports& ports, const std::vector<policy::Policy>& policies,
                                const std::vector<L7Endpoint>& endpoints,
                                const std::vector<identity::IdentityRef>& identities,
                                const std::vector<std::pair<uint32_t, uint32_t>>& extra_identities,
                                const std::map<uint32_t, std::vector<policy::NamedPort>>& named_ports = {});

// "START-END" (--proxy-port-range): ingress = START, egress = START+1.
// EINVAL with the flag name and what is wrong.
Result<L7Ports> parseProxyPortRange(const std::string& range);

// Number of (endpoint, direction, port) redirects in a config built above.
size_t countRedirects(const nlohmann::json& config);

}  // namespace membrane::daemon
