// The rule of a CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy
// (spec, or each item of specs): endpointSelector, default deny, rule
// labels, and its four peer rule lists.
#include <fmt/format.h>

#include "src/policy/parser_internal.h"

namespace membrane::policy::detail {

bool Parser::ciliumRule(const YAML::Node& n, const std::string& path, const Policy& p, Rule& r) {
  static const ObjectSpec spec{
      {"endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny", "labels", "enableDefaultDeny",
       "description"},
      {{"nodeSelector", "nodeSelector (host policies) is not supported yet"}, {"log", ""}}};
  auto f = fields(n, path, spec);
  if (!f) return false;
  bool ok = true;
  derivedLabels(p, r);
  if (auto it = f->find("endpointSelector"); it == f->end()) {
    error(n, join(path, "endpointSelector"), "missing required field 'endpointSelector'");
    ok = false;
  } else if (auto sel = selector(it->second.value, join(path, "endpointSelector"))) {
    r.endpoint_selector = std::move(*sel);
    // A namespaced policy only ever selects pods of its own namespace.
    if (!p.namespace_name.empty())
      r.endpoint_selector.addMatchLabel(labels::kSourceK8s, labels::kPodNamespaceLabel, p.namespace_name);
  } else {
    ok = false;
  }
  if (auto it = f->find("description"); it != f->end()) {
    if (auto d = string(it->second.value, join(path, "description"))) r.description = *d;
    else ok = false;
  }
  if (auto it = f->find("labels"); it != f->end()) ok &= ruleLabels(it->second.value, join(path, "labels"), r);
  if (auto it = f->find("enableDefaultDeny"); it != f->end()) {
    const std::string dpath = join(path, "enableDefaultDeny");
    if (auto d = fields(it->second.value, dpath, {{"ingress", "egress"}, {}})) {
      if (auto i = d->find("ingress"); i != d->end()) {
        r.default_deny_ingress = boolean(i->second.value, join(dpath, "ingress"));
        ok &= r.default_deny_ingress.has_value();
      }
      if (auto e = d->find("egress"); e != d->end()) {
        r.default_deny_egress = boolean(e->second.value, join(dpath, "egress"));
        ok &= r.default_deny_egress.has_value();
      }
    } else {
      ok = false;
    }
  }
  struct Section {
    const char* name;
    Direction dir;
    bool deny;
    std::vector<PeerRule>* out;
  };
  const Section sections[] = {{"ingress", Direction::Ingress, false, &r.ingress},
                              {"ingressDeny", Direction::Ingress, true, &r.ingress_deny},
                              {"egress", Direction::Egress, false, &r.egress},
                              {"egressDeny", Direction::Egress, true, &r.egress_deny}};
  for (const auto& s : sections) {
    auto it = f->find(s.name);
    if (it == f->end()) continue;
    const YAML::Node& list = it->second.value;
    const std::string lpath = join(path, s.name);
    if (!isList(list, lpath)) {
      ok = false;
      continue;
    }
    for (size_t i = 0; i < list.size(); ++i) {
      PeerRule pr;
      if (peerRule(list[i], index(lpath, i), s.dir, s.deny, p, pr)) s.out->push_back(std::move(pr));
      else ok = false;
    }
  }
  // Cilium: a non-empty ingress or ingressDeny list makes the rule an
  // ingress policy (`ingress: []` does not).
  r.has_ingress = !r.ingress.empty() || !r.ingress_deny.empty();
  r.has_egress = !r.egress.empty() || !r.egress_deny.empty();
  return ok;
}

bool Parser::ruleLabels(const YAML::Node& n, const std::string& path, Rule& r) {
  if (!isList(n, path)) return false;
  bool ok = true;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string ipath = index(path, i);
    auto f = fields(n[i], ipath, {{"key", "value", "source"}, {}});
    if (!f) {
      ok = false;
      continue;
    }
    labels::Label l{std::string(labels::kSourceUnspec), "", ""};
    if (auto it = f->find("key"); it == f->end()) {
      error(n[i], join(ipath, "key"), "missing required field 'key'");
      ok = false;
      continue;
    } else if (auto k = string(it->second.value, join(ipath, "key"))) {
      l.key = *k;
    } else {
      ok = false;
      continue;
    }
    if (auto it = f->find("value"); it != f->end()) {
      if (auto v = string(it->second.value, join(ipath, "value"))) l.value = *v;
      else ok = false;
    }
    if (auto it = f->find("source"); it != f->end()) {
      if (auto s = string(it->second.value, join(ipath, "source"))) l.source = *s;
      else ok = false;
    }
    r.labels.add(std::move(l));
  }
  return ok;
}

}  // namespace membrane::policy::detail
