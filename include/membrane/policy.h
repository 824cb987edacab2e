// Policy model and parser: CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy
// and Kubernetes NetworkPolicy, from YAML or JSON text, into one normalized
// model (Cilium's api.Rule). Resolution to map entries is in policy_repository.h,
// JSON output (as `cilium policy get` shows it) in policy_json.h.
//
// All types are plain values; not thread-safe (copy or lock).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "membrane/labels.h"
#include "membrane/result.h"

namespace membrane::policy {

// ---------------------------------------------------------------------------
// Selectors (Kubernetes LabelSelector with Cilium's key sources).

enum class SelectorOp { In, NotIn, Exists, DoesNotExist };

// One requirement on a label. Keys are normalized with a source: a key given
// without one ("org") gets source "any" (matches the key from every source),
// as Cilium does; "k8s:org", "reserved:host" keep theirs.
struct Requirement {
  std::string source;               // "any", "k8s", "reserved", ...
  std::string key;
  SelectorOp op = SelectorOp::In;
  std::vector<std::string> values;  // In/NotIn only; sorted, unique
  bool operator==(const Requirement&) const = default;
};

// matchLabels and matchExpressions, kept apart only for faithful printing:
// both are ANDed. An empty selector matches every label set.
struct Selector {
  std::vector<Requirement> match_labels;       // op In with one value; sorted by (source, key)
  std::vector<Requirement> match_expressions;  // in input order

  bool empty() const { return match_labels.empty() && match_expressions.empty(); }
  bool matches(const labels::LabelSet& labels) const;
  // True if some requirement is on `key` with source `source` or `any`.
  bool constrains(std::string_view source, std::string_view key) const;
  // True if some requirement has source "reserved".
  bool mentionsReserved() const { return mentionsSource(labels::kSourceReserved); }
  // True if some requirement has exactly this source (not `any`).
  bool mentionsSource(std::string_view source) const;
  // Adds (or replaces) matchLabels source:key=value.
  void addMatchLabel(std::string_view source, std::string_view key, std::string_view value);
  bool operator==(const Selector&) const = default;
};

// ---------------------------------------------------------------------------
// Peers and ports.

enum class Entity { All, World, Cluster, Host, Init, Health, RemoteNode, Unmanaged, KubeApiserver, None };
std::string_view entityName(Entity e);

enum class Protocol : uint8_t { Any = 0, ICMP = 1, TCP = 6, UDP = 17, SCTP = 132 };
std::string_view protocolName(Protocol p);  // "ANY", "TCP", ...
// Cilium's ICMPv4 type names ("EchoRequest" -> 8, "Echo" -> 8, ...).
std::optional<uint8_t> icmpTypeByName(std::string_view name);
// The Cilium name of an ICMPv4 type ("EchoRequest" for 8), "" if it has none.
std::string_view icmpTypeName(uint8_t type);

// One `ports[]` item. port 0 = every port: with protocol ANY everything, with
// a protocol every port of it (a protocol-only rule, map key {id|0, proto, 0}).
// ANY with a port means TCP, UDP and SCTP on that port (Cilium).
// A named port ("http") has name set and port == end_port == 0; it is
// resolved per endpoint at realization (policy_repository.h, NamedPorts).
struct PortProtocol {
  uint16_t port = 0;
  uint16_t end_port = 0;  // 0 = single port; else inclusive range end (> port)
  Protocol protocol = Protocol::Any;
  std::string name;       // named port (IANA_SVC_NAME); empty = numeric
  bool operator==(const PortProtocol&) const = default;
};

// Kubernetes' IANA_SVC_NAME rule for container port names: 1-15 characters
// of a-z, 0-9 and '-', at least one letter, no '-' at either end and no
// "--". OK, or EINVAL saying which rule the name breaks.
Status validatePortName(std::string_view name);

// `headerMatches[]`: name[: value] the request must carry; `mismatch` says
// what happens when it does not: "" (the rule does not match), LOG (it
// matches, the access log flags it), ADD (append "name: value"), DELETE (drop
// the fields of that name), REPLACE (drop them, append "name: value"). The
// parser refuses edits of framing fields (Host, Content-Length, ...) and
// Cilium's `secret` (membrane has no Kubernetes secrets; give `value`).
struct HeaderMatchRule {
  std::string name, value;
  std::string mismatch;  // "", LOG, ADD, DELETE, REPLACE
  bool operator==(const HeaderMatchRule&) const = default;
};

struct HttpRule {
  std::string method, path, host;    // extended regexes; empty = any
  std::vector<std::string> headers;  // "Name: value" or "Name" (must be present)
  std::vector<HeaderMatchRule> header_matches;
  bool operator==(const HttpRule&) const = default;
};

// A `toPorts[]` item. Empty `ports` = all ports. Non-empty `http` => traffic
// on these ports goes through the L7 proxy.
struct PortRule {
  std::vector<PortProtocol> ports;
  std::vector<HttpRule> http;
  bool operator==(const PortRule&) const = default;
};

// fromCIDR/toCIDR/fromCIDRSet/toCIDRSet/ipBlock, IPv4. `cidr` is normalized
// (host bits cleared is NOT required by Cilium; we keep the canonical network).
struct CidrRule {
  std::string cidr;                 // "10.0.0.0/8"
  std::vector<std::string> except;  // each inside `cidr`
  bool operator==(const CidrRule&) const = default;
};

// One element of ingress[] / ingressDeny[] / egress[] / egressDeny[].
// Peers are the union of endpoints, entities and cidrs. If all three are
// empty: with ports (or icmps) it is an L4-only rule (any peer); without them
// it allows nothing (`ingress: [{}]` only turns on default deny).
// The L4 part is the union of to_ports and icmp_types; both empty = all L4.
struct PeerRule {
  std::vector<Selector> endpoints;  // normalized: namespace label added for namespaced policies
  std::vector<Entity> entities;
  std::vector<CidrRule> cidrs;
  std::vector<PortRule> to_ports;
  // `icmps[].fields[].type` (IPv4), in input order, unique. As in Cilium the
  // type is the ICMP "port": type 0 (EchoReply) therefore means every ICMP type.
  std::vector<uint8_t> icmp_types;
  bool operator==(const PeerRule&) const = default;
};

enum class Direction : uint8_t { Ingress = 1, Egress = 2 };  // MB_DIR_INGRESS / MB_DIR_EGRESS

struct Rule {
  Selector endpoint_selector;  // normalized (namespaced: pod namespace label added)
  std::string description;
  labels::LabelSet labels;     // derived-from/name/namespace labels + spec labels
  std::vector<PeerRule> ingress, ingress_deny, egress, egress_deny;
  // Whether the rule has a policy section for the direction: CNP non-empty
  // ingress/ingressDeny (egress...), NetworkPolicy policyTypes. A selected
  // endpoint becomes default-deny in that direction unless enableDefaultDeny
  // says false.
  bool has_ingress = false;
  bool has_egress = false;
  std::optional<bool> default_deny_ingress;  // enableDefaultDeny.ingress
  std::optional<bool> default_deny_egress;
  bool operator==(const Rule&) const = default;
};

enum class Kind { CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy };
std::string_view kindName(Kind k);

struct Policy {
  Kind kind = Kind::CiliumNetworkPolicy;
  std::string name;
  std::string namespace_name;  // empty for clusterwide policies
  std::vector<Rule> rules;
  labels::LabelSet labels;     // metadata.labels (k8s source)
  uint32_t cookie = 0;         // set by Repository::import; 0 = not imported

  // "ns/name", or "name" when clusterwide.
  std::string displayName() const;
  bool operator==(const Policy&) const = default;
};

// ---------------------------------------------------------------------------
// Parser.

struct Diagnostic {
  std::string file;
  int line = 0;    // 1-based; 0 if unknown
  int column = 0;  // 1-based; 0 if unknown
  std::string path;  // e.g. "spec.ingress[0].toPorts[0].ports[0].port"; empty for syntax errors
  std::string message;
  bool operator==(const Diagnostic&) const = default;
};

// "file:line:col: path: message" (path part omitted when empty).
std::string formatDiagnostic(const Diagnostic& d);

struct ParseResult {
  std::vector<Policy> policies;        // empty whenever diagnostics is non-empty
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return diagnostics.empty(); }
};

// Parses YAML (one or more documents) or JSON (an object, an array of
// objects, or a `List` with `items`). All or nothing: any error yields no
// policies, and every error found is reported. Never throws.
ParseResult parsePolicies(std::string_view text, const std::string& filename);

}  // namespace membrane::policy
