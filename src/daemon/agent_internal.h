// Helpers the agent's handler files share (agent.cc, *_handlers.cc,
// proxy_supervision.cc, policy_queries.cc). Internal to membraned.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "src/daemon/config.h"
#include "src/daemon/l7_policy.h"
#include "src/daemon/proxy_manager.h"
#include "src/kernel/tproxy.h"

namespace membrane::daemon {

// A decimal id from a URL ("42"); nullopt for anything else (at most 9 digits).
std::optional<uint32_t> parseId(const std::string& s);
// "TCP", "UDP", "ICMP", "SCTP", "ANY" (0), "?" (other).
const char* protoName(uint8_t p);
// CLOCK_BOOTTIME in ns: the clock of the datapath's conntrack expiry times.
uint64_t boottimeNs();
// The proxy manager's and the TPROXY plumbing's settings from the agent's.
ProxyManagerConfig proxyManagerConfig(const Config& cfg);
kernel::TproxyConfig tproxyConfig(const Config& cfg, const L7Ports& ports);

}  // namespace membrane::daemon
