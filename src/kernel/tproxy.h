// Host plumbing that hands L7-redirected packets to membrane-proxy (iptables
// TPROXY variant, reference/cilium-datapath.md §2.2 A; why not bpf_sk_assign:
// docs/l7.md "Host plumbing").
//
//   ip rule  priority <rule_priority> fwmark 0x200/0xf00 lookup <table>
//   ip route local 0.0.0.0/0 dev lo table <table>
//   iptables -t mangle: PREROUTING -j <chain>; in <chain>, per proxy port P:
//     -p tcp -m mark --mark (P<<16 | 0x200) -j TPROXY --on-ip 0.0.0.0 --on-port P --tproxy-mark 0x200
//
// The datapath marks packets for the proxy 0x200 | P<<16 (new and established
// client->proxy segments) or 0x200 alone (server replies to the proxy's
// transparent upstream socket, delivered locally by the ip rule and found by
// the established-socket lookup).
//
// Every name/number is per agent (flags), so two agents on one host never
// touch each other's state. install() is idempotent (re-running it converges
// to exactly this state, touching only what differs); remove() removes exactly what install() creates,
// ignores what is already gone and reports the first real failure.
//
// Runs `ip` and `iptables` (Debian's iproute2 / iptables, nft backend): the
// TPROXY target has no stable netlink API short of nftables' own encoding.
// Not thread-safe per config; needs CAP_NET_ADMIN.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bpf/shared/datapath.h"
#include "membrane/result.h"

namespace membrane::kernel {

struct TproxyConfig {
  uint32_t table = 2004;          // routing table with `local 0.0.0.0/0 dev lo`
  uint32_t rule_priority = 9;     // ip rule priority (Cilium: 9)
  std::string chain = "MEMBRANE_PRE_mangle";  // iptables mangle chain (<= 28 chars)
  std::vector<uint16_t> ports;    // proxy listener ports
};

// Checks names and numbers; EINVAL with the field at fault.
Status validateTproxyConfig(const TproxyConfig& cfg);

// Installs (or re-converges) the plumbing above by check-then-add: an object
// that is already right is not touched, so re-running it under live L7 flows
// (agent restart) never opens a moment without the rule or the TPROXY rules;
// a chain whose rules differ is replaced in one iptables-restore transaction.
// `changes` (optional) lists what it changed (empty when all was in place).
// On failure, what this call created is removed again.
Status installTproxy(const TproxyConfig& cfg, std::vector<std::string>* changes = nullptr);

// Removes the rule, the table's route and the chain (jump included).
Status removeTproxy(const TproxyConfig& cfg);

// The mark the datapath puts on packets for proxy port `port`.
constexpr uint32_t toProxyMark(uint16_t port) { return MB_MARK_MAGIC_TO_PROXY | (uint32_t{port} << 16); }
// "0x200/0xf00": the fwmark/mask of the ip rule and the iptables MARK rule.
std::string toProxyMarkMask();

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};
// Runs argv (no shell), waits for it; exit_code -1 if it could not start.
CommandResult runCommand(const std::vector<std::string>& argv);

}  // namespace membrane::kernel
