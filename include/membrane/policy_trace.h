// Policy trace (`membrane policy trace`, Cilium's `cilium policy trace`):
// would traffic from endpoint labels `src` to `dst` be allowed, and which
// rules (by policy name and namespace) decide it.
//
// Pure: (policies, labels, known identities) in, a report out. The verdict
// with a port is the datapath's own (resolvePolicies + verdict(), deny over
// allow across policies); the per-rule lines explain it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/identity.h"
#include "membrane/labels.h"
#include "membrane/policy.h"
#include "membrane/policy_repository.h"
#include "membrane/result.h"

namespace membrane::policy {

// A destination port/protocol ("80/TCP"). For ICMP the port is the type.
struct PortProto {
  uint16_t port = 0;
  Protocol protocol = Protocol::TCP;
  bool operator==(const PortProto&) const = default;
};
// "80", "80/TCP", "53/udp", "8/ICMP". No protocol = TCP. ANY is rejected (a
// packet has one protocol). Errors (EINVAL) quote the input.
Result<PortProto> parsePortProto(std::string_view text);
std::string formatPortProto(const PortProto& p);  // "80/TCP"

enum class TraceVerdict {
  Allowed,        // an allow rule matches
  Denied,         // a deny rule matches (drop reason 181)
  DefaultDenied,  // enforced, no rule matches (drop reason 133)
  NotEnforced,    // no default deny in this direction, no deny rule matches: allowed
};
std::string_view traceVerdictName(TraceVerdict v);  // "allowed", "denied", "default-denied", "not-enforced"

// One peer rule (ingress[i], egressDeny[j], ...) of a selecting rule, and
// whether it matches the traced flow.
struct TracePeerRule {
  std::string section;  // "ingress", "ingressDeny", "egress", "egressDeny"
  size_t index = 0;     // position in that section
  bool deny = false;
  std::string peers;    // "labels {...}", "entities [world]", "CIDR 10.0.0.0/8 except [...]", "any peer", joined by "; "
  std::string ports;    // "[80/TCP, ICMP type 8]"; "" = every port
  bool peer_match = false;
  bool port_match = false;  // always true without a traced port
  bool matches() const { return peer_match && port_match; }
};

// A rule (spec or specs[i]) of a policy whose endpointSelector selects the
// traced endpoint and that has a section for the direction.
struct TraceRule {
  std::string policy;  // "ns/name" ("name" when clusterwide)
  Kind kind = Kind::CiliumNetworkPolicy;
  size_t rule_index = 0;
  std::string selector;  // endpointSelector, as JSON
  std::vector<TracePeerRule> peer_rules;
};

struct TraceDirection {
  Direction direction = Direction::Ingress;
  labels::LabelSet subject;  // dst for ingress, src for egress
  labels::LabelSet peer;
  uint32_t peer_identity = 0;  // the identity the peer's packets carry
  bool enforced = false;       // default deny in this direction
  TraceVerdict verdict = TraceVerdict::NotEnforced;
  std::vector<TraceRule> rules;  // selecting rules, in policy order
  size_t rules_total = 0;        // rules of all policies (for "1/3 rules selected")
  // The policy and peer rule that decided an Allowed/Denied verdict, e.g.
  // "default/rule1" and "ingress[0]"; empty otherwise.
  std::string decided_by;
  std::string decided_rule;
  bool allowed() const { return verdict == TraceVerdict::Allowed || verdict == TraceVerdict::NotEnforced; }
};

struct TraceResult {
  labels::LabelSet src, dst;
  std::optional<PortProto> port;  // none: L3 only (ports of matching rules are listed)
  TraceDirection egress;          // src's egress towards dst
  TraceDirection ingress;         // dst's ingress from src
  bool allowed() const { return egress.allowed() && ingress.allowed(); }
};

// Traces src -> dst. `identities` are the node's known identities; src/dst
// whose label sets have no identity there get a temporary one (cluster
// scope, or local scope when they carry cidr: labels; {reserved:world} etc.
// are the reserved numbers). Without `port` the verdict is L3 only: allowed
// if an allow rule's peers match (whatever its ports), denied if a deny rule
// without port restriction matches. `dst_ports` are the destination
// endpoint's declared named ports: a named port (`port: http`) resolves
// against them in both directions (ingress: the subject is dst; egress: the
// peer is dst), as in resolvePolicies.
TraceResult trace(const std::vector<Policy>& policies, const labels::LabelSet& src, const labels::LabelSet& dst,
                  const std::vector<identity::IdentityRef>& identities, std::optional<PortProto> port,
                  const std::vector<NamedPort>& dst_ports = {});

// The report in the style of `cilium policy trace`:
//   Tracing From: [k8s:class=xwing, ...] => To: [k8s:class=deathstar, ...] Ports: [80/TCP]
//   Resolving egress policy for [...] ... Egress verdict: allowed (not enforced)
//   Resolving ingress policy for [...]
//   * Rule {...} of CiliumNetworkPolicy default/rule1: selected
//       Allows from labels {...} on ports [80/TCP]
//         No label match for [...]
//   1/1 rules selected
//   Found no allow rule
//   Ingress verdict: denied (default deny)
//   Final verdict: DENIED
std::string formatTrace(const TraceResult& r);

// {"text": formatTrace(r), "verdict": "allowed"|"denied", "src": [labels],
//  "dst": [labels], "dport": "80/TCP" (absent when L3 only),
//  "egress": {...}, "ingress": {...}} with per direction "verdict"
// (traceVerdictName), "allowed", "enforced", "peer_identity", "decided_by",
// "decided_rule", "rules_total" and "rules": [{"policy", "kind", "rule",
// "selector", "peer_rules": [{"section", "index", "deny", "peers", "ports",
// "peer_match", "port_match"}]}]. This is the whole answer of
// GET /v1/policy/trace.
nlohmann::json toJson(const TraceResult& r);

}  // namespace membrane::policy
