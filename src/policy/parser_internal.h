// The policy parser's parts (not a public API; the entry point is
// parsePolicies() in membrane/policy.h). One Parser walks a yaml-cpp node
// tree into the policy model; its members are defined by responsibility:
//   parser.cc                 parsePolicies(): UTF-8 and syntax checks, document and
//                             List iteration, objects (kind, apiVersion, metadata)
//   parser_diagnostics.cc     diagnostics and the typed readers every part uses
//   parser_selectors.cc       endpoint/label selectors (matchLabels, matchExpressions)
//   parser_peers.cc           Cilium peers: endpoints, entities, CIDR and CIDRSet
//   parser_ports.cc           toPorts, port/protocol, ICMP types, L7 HTTP rules
//   parser_cilium.cc          CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy rules
//   parser_network_policy.cc  Kubernetes NetworkPolicy, translated to the same model
//
// Shared contracts:
// - Every problem is reported through error() with the node it is at (line
//   and column) and its field path ("spec.ingress[0].toPorts[1]"), exactly
//   once, by the part that finds it; a caller that gets "failed" back
//   (false / nullopt) adds no diagnostic of its own.
// - A part returning bool returns false iff it reported at least one
//   problem; it may have filled its output partially, so callers drop the
//   output on false. optional-returning parts return nothing iff they
//   reported.
// - yaml-cpp throws; every Parser member runs inside the try block of
//   parsePolicies(), so no exception leaves the parser.
// - Not thread-safe: one Parser per parsePolicies() call.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "membrane/policy.h"
#include "membrane/policy_repository.h"
#include "src/policy/yaml_fields.h"

namespace membrane::policy::detail {

using yaml_fields::index;
using yaml_fields::join;
using yaml_fields::suggest;
using yaml_fields::typeName;
using yaml_fields::Fields;

// What a mapping may contain (see Parser::fields).
struct ObjectSpec {
  std::vector<std::string_view> known;
  // Recognised Cilium fields we do not implement: field -> message.
  std::vector<std::pair<std::string_view, std::string_view>> unsupported;
};

// Non-empty and only '0'-'9' (no sign, no spaces).
inline bool isDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

class Parser {
 public:
  explicit Parser(std::string file) : file_(std::move(file)) {}

  std::vector<Diagnostic>& diagnostics() { return diags_; }
  std::vector<Policy>& policies() { return policies_; }

  // parser_diagnostics.cc: a diagnostic at `at`'s line and column with `path`.
  void error(const YAML::Node& at, const std::string& path, std::string message);
  // A YAML syntax error at a 0-based mark, with no path.
  void syntaxError(int line, int column, std::string message);

  // parser.cc: one YAML document: a policy object, a JSON array of them, or
  // a `kind: List`. Valid policies are appended to policies().
  void document(const YAML::Node& doc);

 private:
  // ---- parser_diagnostics.cc: typed readers ---------------------------

  // Checks that `n` is a mapping (null counts as empty) with only known
  // fields; reports unknown, unsupported and duplicate fields.
  std::optional<Fields> fields(const YAML::Node& n, const std::string& path, const ObjectSpec& spec);
  // A list (null = empty). Reports and returns false on a wrong type.
  bool isList(const YAML::Node& n, const std::string& path);
  std::optional<std::string> string(const YAML::Node& n, const std::string& path);
  std::optional<bool> boolean(const YAML::Node& n, const std::string& path);

  // ---- parser.cc: objects ---------------------------------------------

  void list(const YAML::Node& doc);
  void object(const YAML::Node& n, const std::string& path);
  bool metadata(const YAML::Node& n, const std::string& path, bool namespaced, Policy& p);
  void derivedLabels(const Policy& p, Rule& r);

  // ---- parser_selectors.cc --------------------------------------------

  bool selectorKey(const YAML::Node& at, const std::string& path, const std::string& text,
                   std::string_view default_source, std::string& source, std::string& key);
  // Keys without a "source:" prefix get `default_source` (Cilium: any;
  // Kubernetes selectors: k8s).
  std::optional<Selector> selector(const YAML::Node& n, const std::string& path,
                                   std::string_view default_source = labels::kSourceAny);
  std::optional<Requirement> requirement(const YAML::Node& n, const std::string& path,
                                         std::string_view default_source);

  // ---- parser_cilium.cc -----------------------------------------------

  bool ciliumRule(const YAML::Node& n, const std::string& path, const Policy& p, Rule& r);
  bool ruleLabels(const YAML::Node& n, const std::string& path, Rule& r);

  // ---- parser_peers.cc ------------------------------------------------

  // One ingress/ingressDeny/egress/egressDeny item: its peers and, through
  // parser_ports.cc, its toPorts and icmps.
  bool peerRule(const YAML::Node& n, const std::string& path, Direction dir, bool deny, const Policy& p,
                PeerRule& pr);
  bool entities(const YAML::Node& n, const std::string& path, PeerRule& pr);
  // An IPv4 CIDR `text` (given at `at`) as its network, host order with the
  // host bits cleared, and its prefix length; reports a malformed or IPv6 one.
  std::optional<std::pair<uint32_t, int>> network(const YAML::Node& at, const std::string& path,
                                                  const std::string& text);
  std::optional<CidrRule> cidrRule(const YAML::Node& at, const std::string& path, const std::string& text);
  // fromCIDRSet / toCIDRSet item and NetworkPolicy ipBlock: {<cidr_field>, except[]}.
  std::optional<CidrRule> cidrSet(const YAML::Node& n, const std::string& path, const ObjectSpec& spec,
                                  std::string_view cidr_field);

  // ---- parser_ports.cc ------------------------------------------------

  // A port-like number (string or number in the input) in [0, 65535].
  std::optional<uint16_t> portNumber(const YAML::Node& n, const std::string& path, std::string_view what);
  bool toPorts(const YAML::Node& n, const std::string& path, bool deny, PeerRule& pr);
  std::optional<PortProtocol> portProtocol(const YAML::Node& n, const std::string& path, Protocol default_proto,
                                           const ObjectSpec& spec);
  bool icmps(const YAML::Node& n, const std::string& path, PeerRule& pr);
  std::optional<uint8_t> icmpField(const YAML::Node& n, const std::string& path);
  bool l7Rules(const YAML::Node& n, const std::string& path, PortRule& rule);
  bool headerMatches(const YAML::Node& l, const std::string& lpath, HttpRule& h);

  // ---- parser_network_policy.cc ---------------------------------------

  bool networkPolicySpec(const YAML::Node& n, const std::string& path, const Policy& p, Rule& r);
  bool networkPolicyRule(const YAML::Node& n, const std::string& path, bool in, const Policy& p, PeerRule& pr);

  std::string file_;
  std::vector<Diagnostic> diags_;
  std::vector<Policy> policies_;
  std::map<std::string, std::string> defined_at_;  // "Kind/ns/name" -> "file:line:col" of its metadata.name
};

}  // namespace membrane::policy::detail
