// Kubernetes NetworkPolicy, translated to the same model as Cilium's rules
// (podSelector and namespaceSelector become k8s: label selectors, ipBlock a
// CIDR set, policyTypes the rule's directions).
#include <fmt/format.h>

#include "src/policy/parser_internal.h"

namespace membrane::policy::detail {

namespace {

// Translates a K8s label selector used as namespaceSelector into
// requirements on the pod's namespace labels, as Cilium does: every key K
// becomes k8s:io.cilium.k8s.namespace.labels.K (endpoints carry those, see
// labels::endpointLabels), and the peer must be a pod (has a namespace).
void addNamespaceSelector(const Selector& ns_sel, Selector& out) {
  out.match_expressions.push_back(
      Requirement{std::string(labels::kSourceK8s), std::string(labels::kPodNamespaceLabel), SelectorOp::Exists, {}});
  auto translate = [](Requirement r) {
    r.source = std::string(labels::kSourceK8s);
    r.key = std::string(labels::kNamespaceLabelsPrefix) + r.key;
    return r;
  };
  for (const auto& r : ns_sel.match_labels) {
    auto t = translate(r);
    out.addMatchLabel(t.source, t.key, t.values.front());
  }
  for (const auto& r : ns_sel.match_expressions) out.match_expressions.push_back(translate(r));
}

}  // namespace

bool Parser::networkPolicySpec(const YAML::Node& n, const std::string& path, const Policy& p, Rule& r) {
  auto f = fields(n, path, {{"podSelector", "policyTypes", "ingress", "egress"}, {}});
  if (!f) return false;
  bool ok = true;
  derivedLabels(p, r);
  if (auto it = f->find("podSelector"); it != f->end()) {
    auto sel = selector(it->second.value, join(path, "podSelector"), labels::kSourceK8s);
    if (sel) r.endpoint_selector = std::move(*sel);
    else ok = false;
  }
  r.endpoint_selector.addMatchLabel(labels::kSourceK8s, labels::kPodNamespaceLabel, p.namespace_name);

  bool types_given = false, type_ingress = false, type_egress = false;
  if (auto it = f->find("policyTypes"); it != f->end()) {
    types_given = true;
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(path, "policyTypes");
    if (!isList(l, lpath)) return false;
    for (size_t i = 0; i < l.size(); ++i) {
      auto s = string(l[i], index(lpath, i));
      if (!s) ok = false;
      else if (*s == "Ingress") type_ingress = true;
      else if (*s == "Egress") type_egress = true;
      else {
        error(l[i], index(lpath, i), fmt::format("policy type '{}' must be Ingress or Egress", *s));
        ok = false;
      }
    }
  }
  // Kubernetes: without policyTypes, Ingress always, Egress if there is an egress section.
  r.has_ingress = types_given ? type_ingress : true;
  r.has_egress = types_given ? type_egress : f->count("egress") > 0;

  for (bool in : {true, false}) {
    const char* section = in ? "ingress" : "egress";
    auto it = f->find(section);
    if (it == f->end()) continue;
    if (!(in ? r.has_ingress : r.has_egress)) continue;  // ignored by Kubernetes too
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(path, section);
    if (!isList(l, lpath)) {
      ok = false;
      continue;
    }
    for (size_t i = 0; i < l.size(); ++i) {
      PeerRule pr;
      if (networkPolicyRule(l[i], index(lpath, i), in, p, pr)) (in ? r.ingress : r.egress).push_back(std::move(pr));
      else ok = false;
    }
  }
  return ok;
}

bool Parser::networkPolicyRule(const YAML::Node& n, const std::string& path, bool in, const Policy& p, PeerRule& pr) {
  const char* peers_field = in ? "from" : "to";
  auto f = fields(n, path, {{peers_field, "ports"}, {}});
  if (!f) return false;
  bool ok = true;
  bool any_peer = false;
  if (auto it = f->find(peers_field); it != f->end()) {
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(path, peers_field);
    if (!isList(l, lpath)) return false;
    for (size_t i = 0; i < l.size(); ++i) {
      any_peer = true;
      const std::string ipath = index(lpath, i);
      auto pf = fields(l[i], ipath, {{"podSelector", "namespaceSelector", "ipBlock"}, {}});
      if (!pf) {
        ok = false;
        continue;
      }
      if (auto ib = pf->find("ipBlock"); ib != pf->end()) {
        if (pf->size() > 1) {
          error(l[i], ipath, "ipBlock cannot be combined with podSelector or namespaceSelector");
          ok = false;
          continue;
        }
        auto c = cidrSet(ib->second.value, join(ipath, "ipBlock"), {{"cidr", "except"}, {}}, "cidr");
        if (c) pr.cidrs.push_back(std::move(*c));
        else ok = false;
        continue;
      }
      if (pf->empty()) {
        error(l[i], ipath, "a peer needs podSelector, namespaceSelector or ipBlock");
        ok = false;
        continue;
      }
      Selector sel;
      if (auto ps = pf->find("podSelector"); ps != pf->end()) {
        auto s = selector(ps->second.value, join(ipath, "podSelector"), labels::kSourceK8s);
        if (!s) {
          ok = false;
          continue;
        }
        sel = std::move(*s);
      }
      if (auto ns = pf->find("namespaceSelector"); ns != pf->end()) {
        auto s = selector(ns->second.value, join(ipath, "namespaceSelector"), labels::kSourceK8s);
        if (!s) {
          ok = false;
          continue;
        }
        addNamespaceSelector(*s, sel);
      } else {
        sel.addMatchLabel(labels::kSourceK8s, labels::kPodNamespaceLabel, p.namespace_name);
      }
      pr.endpoints.push_back(std::move(sel));
    }
  }
  // Kubernetes: an absent or empty from/to list means every peer.
  if (!any_peer) pr.entities.push_back(Entity::All);
  if (auto it = f->find("ports"); it != f->end()) {
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(path, "ports");
    if (!isList(l, lpath)) return false;
    PortRule rule;
    for (size_t i = 0; i < l.size(); ++i) {
      auto pp = portProtocol(l[i], index(lpath, i), Protocol::TCP, {{"port", "endPort", "protocol"}, {}});
      if (pp) rule.ports.push_back(*pp);
      else ok = false;
    }
    if (!rule.ports.empty()) pr.to_ports.push_back(std::move(rule));
  }
  return ok;
}

}  // namespace membrane::policy::detail
