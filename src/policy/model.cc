#include <algorithm>

#include <fmt/format.h>

#include "membrane/policy.h"

namespace membrane::policy {

namespace {

// The labels a requirement looks at: the exact source, or every source for `any`.
std::vector<const labels::Label*> candidates(const Requirement& r, const labels::LabelSet& set) {
  if (r.source == labels::kSourceAny) return set.findAnySource(r.key);
  std::vector<const labels::Label*> out;
  if (const auto* l = set.find(r.source, r.key)) out.push_back(l);
  return out;
}

bool requirementMatches(const Requirement& r, const labels::LabelSet& set) {
  auto found = candidates(r, set);
  auto in_values = [&](const labels::Label* l) {
    return std::find(r.values.begin(), r.values.end(), l->value) != r.values.end();
  };
  switch (r.op) {
    case SelectorOp::In:
      return std::any_of(found.begin(), found.end(), in_values);
    case SelectorOp::NotIn:  // Kubernetes: also true when the label is absent
      return std::none_of(found.begin(), found.end(), in_values);
    case SelectorOp::Exists:
      return !found.empty();
    case SelectorOp::DoesNotExist:
      return found.empty();
  }
  return false;
}

}  // namespace

bool Selector::matches(const labels::LabelSet& set) const {
  for (const auto& r : match_labels)
    if (!requirementMatches(r, set)) return false;
  for (const auto& r : match_expressions)
    if (!requirementMatches(r, set)) return false;
  return true;
}

bool Selector::constrains(std::string_view source, std::string_view key) const {
  auto on = [&](const Requirement& r) {
    return r.key == key && (r.source == source || r.source == labels::kSourceAny);
  };
  return std::any_of(match_labels.begin(), match_labels.end(), on) ||
         std::any_of(match_expressions.begin(), match_expressions.end(), on);
}

bool Selector::mentionsSource(std::string_view source) const {
  auto on = [&](const Requirement& r) { return r.source == source; };
  return std::any_of(match_labels.begin(), match_labels.end(), on) ||
         std::any_of(match_expressions.begin(), match_expressions.end(), on);
}

void Selector::addMatchLabel(std::string_view source, std::string_view key, std::string_view value) {
  Requirement r{std::string(source), std::string(key), SelectorOp::In, {std::string(value)}};
  auto it = std::lower_bound(match_labels.begin(), match_labels.end(), r, [](const auto& a, const auto& b) {
    return std::tie(a.source, a.key) < std::tie(b.source, b.key);
  });
  if (it != match_labels.end() && it->source == r.source && it->key == r.key) {
    *it = std::move(r);
    return;
  }
  match_labels.insert(it, std::move(r));
}

std::string_view entityName(Entity e) {
  switch (e) {
    case Entity::All: return "all";
    case Entity::World: return "world";
    case Entity::Cluster: return "cluster";
    case Entity::Host: return "host";
    case Entity::Init: return "init";
    case Entity::Health: return "health";
    case Entity::RemoteNode: return "remote-node";
    case Entity::Unmanaged: return "unmanaged";
    case Entity::KubeApiserver: return "kube-apiserver";
    case Entity::None: return "none";
  }
  return "?";
}

std::string_view protocolName(Protocol p) {
  switch (p) {
    case Protocol::Any: return "ANY";
    case Protocol::ICMP: return "ICMP";
    case Protocol::TCP: return "TCP";
    case Protocol::UDP: return "UDP";
    case Protocol::SCTP: return "SCTP";
  }
  return "?";
}

namespace {
// Cilium's pkg/policy/api/icmp.go icmpIpv4TypeNameToCode.
constexpr std::pair<std::string_view, uint8_t> kIcmpTypes[] = {
    {"EchoReply", 0},           {"DestinationUnreachable", 3}, {"Redirect", 5},
    {"EchoRequest", 8},         {"Echo", 8},                   {"RouterAdvertisement", 9},
    {"RouterSelection", 10},    {"TimeExceeded", 11},          {"ParameterProblem", 12},
    {"Timestamp", 13},          {"TimestampReply", 14},        {"Photuris", 40},
    {"ExtendedEchoRequest", 42}, {"ExtendedEchoReply", 43}};
}  // namespace

std::optional<uint8_t> icmpTypeByName(std::string_view name) {
  for (const auto& [n, t] : kIcmpTypes)
    if (n == name) return t;
  return std::nullopt;
}

std::string_view icmpTypeName(uint8_t type) {
  for (const auto& [n, t] : kIcmpTypes)
    if (t == type) return n;
  return "";
}

std::string_view kindName(Kind k) {
  switch (k) {
    case Kind::CiliumNetworkPolicy: return "CiliumNetworkPolicy";
    case Kind::CiliumClusterwideNetworkPolicy: return "CiliumClusterwideNetworkPolicy";
    case Kind::NetworkPolicy: return "NetworkPolicy";
  }
  return "?";
}

std::string Policy::displayName() const {
  return namespace_name.empty() ? name : namespace_name + "/" + name;
}

std::string formatDiagnostic(const Diagnostic& d) {
  if (d.path.empty()) return fmt::format("{}:{}:{}: {}", d.file, d.line, d.column, d.message);
  return fmt::format("{}:{}:{}: {}: {}", d.file, d.line, d.column, d.path, d.message);
}

Status validatePortName(std::string_view name) {
  auto bad = [&](const char* why) {
    return Error::invalid(fmt::format("port name '{}' is invalid: {} (IANA_SVC_NAME: 1-15 characters a-z, 0-9, "
                                      "'-', at least one letter, no '-' at either end, no '--')",
                                      name, why));
  };
  if (name.empty()) return bad("empty");
  if (name.size() > 15) return bad("longer than 15 characters");
  bool letter = false;
  for (char c : name) {
    if (c >= 'a' && c <= 'z') letter = true;
    else if (!(c >= '0' && c <= '9') && c != '-') return bad("only a-z, 0-9 and '-' are allowed");
  }
  if (!letter) return bad("it needs at least one letter");
  if (name.front() == '-' || name.back() == '-') return bad("it starts or ends with '-'");
  if (name.find("--") != std::string_view::npos) return bad("it contains '--'");
  return okStatus();
}

}  // namespace membrane::policy
