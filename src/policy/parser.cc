// Policy parser: yaml-cpp node tree -> policy model, with a diagnostic (file,
// line, column, path) for every problem. yaml-cpp throws; every call into it
// is inside the try block of parsePolicies() so nothing escapes.
#include <algorithm>
#include <arpa/inet.h>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "membrane/http_field.h"
#include "membrane/policy.h"
#include "membrane/policy_repository.h"
#include "src/policy/http_regex.h"
#include "src/policy/yaml_fields.h"

namespace membrane::policy {

namespace {

constexpr std::string_view kCiliumApiVersion = "cilium.io/v2";
constexpr std::string_view kNetworkingApiVersion = "networking.k8s.io/v1";

using yaml_fields::index;
using yaml_fields::join;
using yaml_fields::looksLikeJson;
using yaml_fields::stuckDocument;
using yaml_fields::suggest;
using yaml_fields::typeName;

using yaml_fields::Field;
using yaml_fields::Fields;

struct ObjectSpec {
  std::vector<std::string_view> known;
  // Recognised Cilium fields we do not implement: field -> message.
  std::vector<std::pair<std::string_view, std::string_view>> unsupported;
};

bool isDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Parses "a.b.c.d[/n]" into a normalized network. Returns an error message on failure.
std::variant<std::pair<uint32_t, int>, std::string> parseCidr(std::string_view text) {
  std::string s(text);
  if (s.find(':') != std::string::npos) return fmt::format("IPv6 CIDR '{}' is not supported yet", text);
  int len = 32;
  std::string addr = s;
  if (auto slash = s.find('/'); slash != std::string::npos) {
    addr = s.substr(0, slash);
    std::string plen = s.substr(slash + 1);
    if (!isDigits(plen) || plen.size() > 2 || std::stoi(plen) > 32)
      return fmt::format("invalid CIDR '{}': prefix length must be 0-32", text);
    len = std::stoi(plen);
  }
  in_addr a{};
  if (inet_pton(AF_INET, addr.c_str(), &a) != 1)
    return fmt::format("invalid CIDR '{}': '{}' is not an IPv4 address", text, addr);
  uint32_t host = ntohl(a.s_addr);
  uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - len);
  return std::make_pair(host & mask, len);
}

std::string formatCidr(uint32_t net, int len) {
  return fmt::format("{}.{}.{}.{}/{}", net >> 24, (net >> 16) & 0xff, (net >> 8) & 0xff, net & 0xff, len);
}

class Parser {
 public:
  explicit Parser(std::string file) : file_(std::move(file)) {}

  std::vector<Diagnostic>& diagnostics() { return diags_; }
  std::vector<Policy>& policies() { return policies_; }

  void error(const YAML::Node& at, const std::string& path, std::string message) {
    Diagnostic d;
    d.file = file_;
    const YAML::Mark m = at.Mark();
    d.line = m.line >= 0 ? m.line + 1 : 0;
    d.column = m.column >= 0 ? m.column + 1 : 0;
    d.path = path;
    d.message = std::move(message);
    diags_.push_back(std::move(d));
  }
  void syntaxError(int line, int column, std::string message) {
    diags_.push_back(Diagnostic{file_, line + 1, column + 1, "", std::move(message)});
  }

  void document(const YAML::Node& doc) {
    if (doc.IsNull()) return;  // empty document (e.g. trailing "---")
    if (doc.IsSequence()) {    // JSON array of objects
      for (size_t i = 0; i < doc.size(); ++i) object(doc[i], index("", i));
      return;
    }
    if (doc.IsMap()) {
      for (auto it = doc.begin(); it != doc.end(); ++it) {
        if (it->first.IsScalar() && it->first.Scalar() == "kind" && it->second.IsScalar() &&
            it->second.Scalar() == "List") {
          list(doc);
          return;
        }
      }
    }
    object(doc, "");
  }

 private:
  // ---- generic helpers --------------------------------------------------

  // Checks that `n` is a mapping (null counts as empty) with only known
  // fields; reports unknown, unsupported and duplicate fields.
  std::optional<Fields> fields(const YAML::Node& n, const std::string& path, const ObjectSpec& spec) {
    static const std::vector<std::string_view> kNone;
    return yaml_fields::checkFields(n, path, {spec.known, kNone, spec.unsupported},
                                    [this](const YAML::Node& at, const std::string& p, std::string msg) {
                                      error(at, p, std::move(msg));
                                    });
  }

  // A list (null = empty). Reports and returns false on a wrong type.
  bool isList(const YAML::Node& n, const std::string& path) {
    if (n.IsNull() || n.IsSequence()) return true;
    error(n, path, fmt::format("expected a list, got {}", typeName(n)));
    return false;
  }

  std::optional<std::string> string(const YAML::Node& n, const std::string& path) {
    if (n.IsScalar()) return n.Scalar();
    error(n, path, fmt::format("expected a string, got {}", typeName(n)));
    return std::nullopt;
  }

  std::optional<bool> boolean(const YAML::Node& n, const std::string& path) {
    if (n.IsScalar() && (n.Scalar() == "true" || n.Scalar() == "false")) return n.Scalar() == "true";
    error(n, path,
          n.IsScalar() ? fmt::format("expected true or false, got '{}'", n.Scalar())
                       : fmt::format("expected true or false, got {}", typeName(n)));
    return std::nullopt;
  }

  // A port-like number (string or number in the input) in [0, 65535].
  std::optional<uint16_t> portNumber(const YAML::Node& n, const std::string& path, std::string_view what) {
    if (!n.IsScalar()) {
      error(n, path, fmt::format("expected a string or number, got {}", typeName(n)));
      return std::nullopt;
    }
    const std::string& s = n.Scalar();
    if (s.empty()) return uint16_t{0};
    if (!isDigits(s)) {
      if (s.front() == '-' && isDigits(s.substr(1))) {
        error(n, path, fmt::format("{} {} is out of range (0-65535)", what, s));
      } else if (what == "port") {
        error(n, path, fmt::format("named port '{}' is not supported yet; use a number", s));
      } else {
        error(n, path, fmt::format("{} '{}' must be a number", what, s));
      }
      return std::nullopt;
    }
    if (s.size() > 5 || std::stoul(s) > 65535) {
      error(n, path, fmt::format("{} {} is out of range (0-65535)", what, s));
      return std::nullopt;
    }
    return static_cast<uint16_t>(std::stoul(s));
  }

  // ---- objects ----------------------------------------------------------

  void list(const YAML::Node& doc) {
    auto f = fields(doc, "", {{"apiVersion", "kind", "items", "metadata"}, {}});
    if (!f) return;
    auto it = f->find("items");
    if (it == f->end()) return;
    const YAML::Node& items = it->second.value;
    if (!isList(items, "items")) return;
    for (size_t i = 0; i < items.size(); ++i) object(items[i], index("items", i));
  }

  void object(const YAML::Node& n, const std::string& path) {
    auto f = fields(n, path, {{"apiVersion", "kind", "metadata", "spec", "specs", "status"}, {}});
    if (!f) return;
    auto kind_it = f->find("kind");
    if (kind_it == f->end()) {
      error(n, path, "missing required field 'kind'");
      return;
    }
    auto kind_s = string(kind_it->second.value, join(path, "kind"));
    if (!kind_s) return;
    Kind kind;
    std::string_view want_api;
    if (*kind_s == "CiliumNetworkPolicy") {
      kind = Kind::CiliumNetworkPolicy;
      want_api = kCiliumApiVersion;
    } else if (*kind_s == "CiliumClusterwideNetworkPolicy") {
      kind = Kind::CiliumClusterwideNetworkPolicy;
      want_api = kCiliumApiVersion;
    } else if (*kind_s == "NetworkPolicy") {
      kind = Kind::NetworkPolicy;
      want_api = kNetworkingApiVersion;
    } else {
      error(kind_it->second.value, join(path, "kind"),
            fmt::format("kind '{}' is not supported (expected CiliumNetworkPolicy, "
                        "CiliumClusterwideNetworkPolicy or NetworkPolicy)",
                        *kind_s));
      return;
    }
    auto api_it = f->find("apiVersion");
    if (api_it == f->end()) {
      error(n, path, "missing required field 'apiVersion'");
    } else if (auto api = string(api_it->second.value, join(path, "apiVersion")); api && *api != want_api) {
      error(api_it->second.value, join(path, "apiVersion"),
            fmt::format("apiVersion '{}' is not supported for {} (expected '{}')", *api, *kind_s, want_api));
    }

    Policy p;
    p.kind = kind;
    const bool namespaced = kind != Kind::CiliumClusterwideNetworkPolicy;
    auto meta_it = f->find("metadata");
    if (meta_it == f->end()) {
      error(n, join(path, "metadata"), "missing required field 'metadata'");
      return;
    }
    if (!metadata(meta_it->second.value, join(path, "metadata"), namespaced, p)) return;
    // One policy defined twice in one input. kubectl would apply both, the
    // last winning; that silently drops the first definition's rules, and a
    // dropped deny rule lets traffic through, so it is refused with both
    // places instead (after the rest of the document is checked too, so
    // every error shows at once).
    bool duplicate = false;
    {
      const YAML::Node name_node = meta_it->second.value["name"];
      const YAML::Mark m = name_node.Mark();
      const std::string where = fmt::format("{}:{}:{}", file_, m.line + 1, m.column + 1);
      auto [first, fresh] = defined_at_.try_emplace(fmt::format("{}/{}", *kind_s, p.displayName()), where);
      if (!fresh) {
        error(name_node, join(path, "metadata.name"),
              fmt::format("{} {} is defined twice (first at {}): kubectl would keep only the last definition, which "
                          "silently drops the rules of the other; merge the two or rename one",
                          *kind_s, p.displayName(), first->second));
        duplicate = true;
      }
    }

    if (kind == Kind::NetworkPolicy) {
      if (f->count("specs")) error(f->at("specs").key, join(path, "specs"), "NetworkPolicy has no 'specs'; use 'spec'");
      auto spec_it = f->find("spec");
      if (spec_it == f->end()) {
        error(n, join(path, "spec"), "missing required field 'spec'");
        return;
      }
      Rule r;
      if (networkPolicySpec(spec_it->second.value, join(path, "spec"), p, r)) p.rules.push_back(std::move(r));
    } else {
      auto spec_it = f->find("spec");
      auto specs_it = f->find("specs");
      if (spec_it == f->end() && specs_it == f->end()) {
        error(n, join(path, "spec"), "missing required field 'spec' (or 'specs')");
        return;
      }
      if (spec_it != f->end()) {
        Rule r;
        if (ciliumRule(spec_it->second.value, join(path, "spec"), p, r)) p.rules.push_back(std::move(r));
      }
      if (specs_it != f->end()) {
        const YAML::Node& specs = specs_it->second.value;
        const std::string spath = join(path, "specs");
        if (isList(specs, spath)) {
          for (size_t i = 0; i < specs.size(); ++i) {
            Rule r;
            if (ciliumRule(specs[i], index(spath, i), p, r)) p.rules.push_back(std::move(r));
          }
        }
      }
    }
    if (!duplicate) policies_.push_back(std::move(p));
  }

  bool metadata(const YAML::Node& n, const std::string& path, bool namespaced, Policy& p) {
    // Kubernetes metadata carries many server-side fields; only these matter here.
    static const ObjectSpec spec{{"name", "namespace", "labels", "annotations", "uid", "resourceVersion",
                                  "generation", "creationTimestamp", "managedFields", "generateName",
                                  "finalizers", "ownerReferences", "selfLink", "deletionTimestamp",
                                  "deletionGracePeriodSeconds"},
                                 {}};
    auto f = fields(n, path, spec);
    if (!f) return false;
    bool ok = true;
    if (auto it = f->find("name"); it == f->end()) {
      error(n, join(path, "name"), "missing required field 'name'");
      ok = false;
    } else if (auto name = string(it->second.value, join(path, "name"))) {
      if (name->empty() || name->size() > 253 ||
          !std::all_of(name->begin(), name->end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'; }) ||
          !std::isalnum(static_cast<unsigned char>(name->front())) ||
          !std::isalnum(static_cast<unsigned char>(name->back()))) {
        error(it->second.value, join(path, "name"),
              fmt::format("name '{}' must be a DNS subdomain: lowercase alphanumerics, '-' or '.', "
                          "starting and ending with an alphanumeric",
                          *name));
        ok = false;
      } else {
        p.name = *name;
      }
    } else {
      ok = false;
    }
    if (namespaced) {
      p.namespace_name = "default";
      if (auto it = f->find("namespace"); it != f->end()) {
        if (auto ns = string(it->second.value, join(path, "namespace"))) {
          bool valid = !ns->empty() && ns->size() <= 63 &&
                       std::all_of(ns->begin(), ns->end(),
                                   [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }) &&
                       ns->front() != '-' && ns->back() != '-';
          if (!valid) {
            error(it->second.value, join(path, "namespace"),
                  fmt::format("namespace '{}' must be a DNS label: at most 63 lowercase alphanumerics or '-', "
                              "starting and ending with an alphanumeric",
                              *ns));
            ok = false;
          } else {
            p.namespace_name = *ns;
          }
        } else {
          ok = false;
        }
      }
    }
    if (auto it = f->find("labels"); it != f->end()) {
      const YAML::Node& l = it->second.value;
      const std::string lpath = join(path, "labels");
      if (!l.IsNull() && !l.IsMap()) {
        error(l, lpath, fmt::format("expected a mapping, got {}", typeName(l)));
        ok = false;
      } else {
        for (auto li = l.begin(); li != l.end(); ++li) {
          auto k = string(li->first, lpath);
          auto v = string(li->second, join(lpath, k ? *k : ""));
          if (!k || !v) {
            ok = false;
            continue;
          }
          if (auto s = labels::validateKey(*k); !s) {
            error(li->first, join(lpath, *k), s.error().message);
            ok = false;
          } else if (auto s2 = labels::validateValue(*v); !s2) {
            error(li->second, join(lpath, *k), s2.error().message);
            ok = false;
          } else {
            p.labels.add(labels::kSourceK8s, *k, *v);
          }
        }
      }
    }
    return ok;
  }

  // Policy-derived rule labels, as Cilium attaches them.
  void derivedLabels(const Policy& p, Rule& r) {
    r.labels.add(labels::kSourceK8s, "io.cilium.k8s.policy.derived-from", kindName(p.kind));
    r.labels.add(labels::kSourceK8s, "io.cilium.k8s.policy.name", p.name);
    if (!p.namespace_name.empty()) r.labels.add(labels::kSourceK8s, "io.cilium.k8s.policy.namespace", p.namespace_name);
  }

  // ---- selectors --------------------------------------------------------

  // Splits "source:key" ("org" -> any:org) and validates the key.
  bool selectorKey(const YAML::Node& at, const std::string& path, const std::string& text,
                   std::string_view default_source, std::string& source, std::string& key) {
    source = std::string(default_source);
    key = text;
    if (auto colon = text.find(':'); colon != std::string::npos) {
      source = text.substr(0, colon);
      key = text.substr(colon + 1);
      if (source.empty()) {
        error(at, path, fmt::format("label key '{}': empty source before ':'", text));
        return false;
      }
    }
    if (auto s = labels::validateKey(key); !s) {
      error(at, path, fmt::format("label key '{}': {}", text, s.error().message));
      return false;
    }
    return true;
  }

  std::optional<Selector> selector(const YAML::Node& n, const std::string& path,
                                   std::string_view default_source = labels::kSourceAny) {
    auto f = fields(n, path, {{"matchLabels", "matchExpressions"}, {}});
    if (!f) return std::nullopt;
    Selector sel;
    bool ok = true;
    if (auto it = f->find("matchLabels"); it != f->end()) {
      const YAML::Node& ml = it->second.value;
      const std::string mpath = join(path, "matchLabels");
      if (!ml.IsNull() && !ml.IsMap()) {
        error(ml, mpath, fmt::format("expected a mapping, got {}", typeName(ml)));
        return std::nullopt;
      }
      for (auto li = ml.begin(); li != ml.end(); ++li) {
        auto k = string(li->first, mpath);
        if (!k) {
          ok = false;
          continue;
        }
        const std::string kpath = join(mpath, *k);
        auto v = li->second.IsNull() ? std::optional<std::string>("") : string(li->second, kpath);
        std::string source, key;
        if (!v || !selectorKey(li->first, kpath, *k, default_source, source, key)) {
          ok = false;
          continue;
        }
        if (auto s = labels::validateValue(*v); !s) {
          error(li->second, kpath, s.error().message);
          ok = false;
          continue;
        }
        sel.addMatchLabel(source, key, *v);
      }
    }
    if (auto it = f->find("matchExpressions"); it != f->end()) {
      const YAML::Node& me = it->second.value;
      const std::string mpath = join(path, "matchExpressions");
      if (!isList(me, mpath)) return std::nullopt;
      for (size_t i = 0; i < me.size(); ++i) {
        auto r = requirement(me[i], index(mpath, i), default_source);
        if (r) sel.match_expressions.push_back(std::move(*r));
        else ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return sel;
  }

  std::optional<Requirement> requirement(const YAML::Node& n, const std::string& path,
                                         std::string_view default_source) {
    auto f = fields(n, path, {{"key", "operator", "values"}, {}});
    if (!f) return std::nullopt;
    Requirement r;
    auto key_it = f->find("key");
    auto op_it = f->find("operator");
    if (key_it == f->end()) {
      error(n, join(path, "key"), "missing required field 'key'");
      return std::nullopt;
    }
    if (op_it == f->end()) {
      error(n, join(path, "operator"), "missing required field 'operator'");
      return std::nullopt;
    }
    auto k = string(key_it->second.value, join(path, "key"));
    if (!k || !selectorKey(key_it->second.value, join(path, "key"), *k, default_source, r.source, r.key))
      return std::nullopt;
    auto op = string(op_it->second.value, join(path, "operator"));
    if (!op) return std::nullopt;
    if (*op == "In") r.op = SelectorOp::In;
    else if (*op == "NotIn") r.op = SelectorOp::NotIn;
    else if (*op == "Exists") r.op = SelectorOp::Exists;
    else if (*op == "DoesNotExist") r.op = SelectorOp::DoesNotExist;
    else {
      error(op_it->second.value, join(path, "operator"),
            fmt::format("operator '{}' must be one of In, NotIn, Exists, DoesNotExist", *op));
      return std::nullopt;
    }
    if (auto v_it = f->find("values"); v_it != f->end()) {
      const YAML::Node& vals = v_it->second.value;
      const std::string vpath = join(path, "values");
      if (!isList(vals, vpath)) return std::nullopt;
      for (size_t i = 0; i < vals.size(); ++i) {
        auto v = string(vals[i], index(vpath, i));
        if (!v) return std::nullopt;
        if (auto s = labels::validateValue(*v); !s) {
          error(vals[i], index(vpath, i), s.error().message);
          return std::nullopt;
        }
        r.values.push_back(*v);
      }
    }
    std::sort(r.values.begin(), r.values.end());
    r.values.erase(std::unique(r.values.begin(), r.values.end()), r.values.end());
    const bool needs_values = r.op == SelectorOp::In || r.op == SelectorOp::NotIn;
    if (needs_values && r.values.empty()) {
      error(n, join(path, "values"), fmt::format("operator {} needs at least one value", *op));
      return std::nullopt;
    }
    if (!needs_values && !r.values.empty()) {
      error(f->at("values").key, join(path, "values"), fmt::format("operator {} takes no values", *op));
      return std::nullopt;
    }
    return r;
  }

  // ---- Cilium rules -----------------------------------------------------

  bool ciliumRule(const YAML::Node& n, const std::string& path, const Policy& p, Rule& r) {
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

  bool ruleLabels(const YAML::Node& n, const std::string& path, Rule& r) {
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

  bool peerRule(const YAML::Node& n, const std::string& path, Direction dir, bool deny, const Policy& p,
                PeerRule& pr) {
    const bool in = dir == Direction::Ingress;
    ObjectSpec spec;
    if (in) {
      spec.known = {"fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet", "toPorts"};
      spec.known.push_back("icmps");
      spec.unsupported = {{"fromRequires", ""}, {"fromGroups", ""}, {"fromNodes", ""}};
      if (!deny) spec.unsupported.push_back({"authentication", ""});
    } else {
      spec.known = {"toEndpoints", "toEntities", "toCIDR", "toCIDRSet", "toPorts"};
      spec.known.push_back("icmps");
      spec.unsupported = {{"toRequires", ""}, {"toServices", ""}, {"toGroups", ""}, {"toNodes", ""}};
      if (!deny) {
        spec.unsupported.push_back({"toFQDNs", ""});
        spec.unsupported.push_back({"authentication", ""});
      }
    }
    auto f = fields(n, path, spec);
    if (!f) return false;
    bool ok = true;
    const std::string eps = in ? "fromEndpoints" : "toEndpoints";
    const std::string ents = in ? "fromEntities" : "toEntities";
    const std::string cidr = in ? "fromCIDR" : "toCIDR";
    const std::string cidrset = in ? "fromCIDRSet" : "toCIDRSet";
    if (auto it = f->find(eps); it != f->end()) {
      const YAML::Node& l = it->second.value;
      const std::string lpath = join(path, eps);
      if (!isList(l, lpath)) return false;
      for (size_t i = 0; i < l.size(); ++i) {
        auto sel = selector(l[i], index(lpath, i));
        if (!sel) {
          ok = false;
          continue;
        }
        scopePeerSelector(*sel, p.namespace_name);
        pr.endpoints.push_back(std::move(*sel));
      }
    }
    if (auto it = f->find(ents); it != f->end()) ok &= entities(it->second.value, join(path, ents), pr);
    if (auto it = f->find(cidr); it != f->end()) {
      const YAML::Node& l = it->second.value;
      const std::string lpath = join(path, cidr);
      if (!isList(l, lpath)) return false;
      for (size_t i = 0; i < l.size(); ++i) {
        auto s = string(l[i], index(lpath, i));
        auto c = s ? cidrRule(l[i], index(lpath, i), *s) : std::nullopt;
        if (c) pr.cidrs.push_back(std::move(*c));
        else ok = false;
      }
    }
    if (auto it = f->find(cidrset); it != f->end()) {
      const YAML::Node& l = it->second.value;
      const std::string lpath = join(path, cidrset);
      if (!isList(l, lpath)) return false;
      for (size_t i = 0; i < l.size(); ++i) {
        auto c = cidrSet(l[i], index(lpath, i), {{"cidr", "except"}, {{"cidrGroupRef", ""}, {"cidrGroupSelector", ""}}},
                         "cidr");
        if (c) pr.cidrs.push_back(std::move(*c));
        else ok = false;
      }
    }
    if (auto it = f->find("toPorts"); it != f->end()) ok &= toPorts(it->second.value, join(path, "toPorts"), deny, pr);
    if (auto it = f->find("icmps"); it != f->end()) ok &= icmps(it->second.value, join(path, "icmps"), pr);
    return ok;
  }

  // icmps: [{fields: [{type: 8 | EchoRequest, family: IPv4}]}] (Cilium's ICMPRule).
  bool icmps(const YAML::Node& n, const std::string& path, PeerRule& pr) {
    if (!isList(n, path)) return false;
    bool ok = true;
    for (size_t i = 0; i < n.size(); ++i) {
      const std::string ipath = index(path, i);
      auto f = fields(n[i], ipath, {{"fields"}, {}});
      if (!f) {
        ok = false;
        continue;
      }
      auto it = f->find("fields");
      if (it == f->end()) continue;
      const YAML::Node& l = it->second.value;
      const std::string lpath = join(ipath, "fields");
      if (!isList(l, lpath)) {
        ok = false;
        continue;
      }
      for (size_t j = 0; j < l.size(); ++j) {
        auto t = icmpField(l[j], index(lpath, j));
        if (!t) {
          ok = false;
          continue;
        }
        if (std::find(pr.icmp_types.begin(), pr.icmp_types.end(), *t) == pr.icmp_types.end())
          pr.icmp_types.push_back(*t);
      }
    }
    return ok;
  }

  std::optional<uint8_t> icmpField(const YAML::Node& n, const std::string& path) {
    auto f = fields(n, path, {{"type", "family"}, {}});
    if (!f) return std::nullopt;
    if (auto it = f->find("family"); it != f->end()) {
      const std::string fpath = join(path, "family");
      auto fam = string(it->second.value, fpath);
      if (!fam) return std::nullopt;
      if (*fam == "IPv6") {
        error(it->second.value, fpath, "ICMPv6 is not supported yet (IPv6)");
        return std::nullopt;
      }
      if (*fam != "IPv4") {
        error(it->second.value, fpath, fmt::format("family '{}' must be IPv4 or IPv6", *fam));
        return std::nullopt;
      }
    }
    auto it = f->find("type");
    if (it == f->end()) {
      error(n, join(path, "type"), "missing required field 'type'");
      return std::nullopt;
    }
    const std::string tpath = join(path, "type");
    const YAML::Node& t = it->second.value;
    if (!t.IsScalar()) {
      error(t, tpath, fmt::format("expected an ICMP type number or name, got {}", typeName(t)));
      return std::nullopt;
    }
    const std::string& v = t.Scalar();
    if (isDigits(v)) {
      if (v.size() > 3 || std::stoul(v) > 255) {
        error(t, tpath, fmt::format("ICMP type {} is out of range (0-255)", v));
        return std::nullopt;
      }
      return static_cast<uint8_t>(std::stoul(v));
    }
    if (auto named = icmpTypeByName(v)) return *named;
    if (!v.empty() && v.front() == '-' && isDigits(v.substr(1))) {
      error(t, tpath, fmt::format("ICMP type {} is out of range (0-255)", v));
      return std::nullopt;
    }
    static const std::vector<std::string_view> kNames = {
        "EchoReply",        "DestinationUnreachable", "Redirect",  "EchoRequest",    "Echo",
        "RouterAdvertisement", "RouterSelection",     "TimeExceeded", "ParameterProblem", "Timestamp",
        "TimestampReply",   "Photuris",               "ExtendedEchoRequest", "ExtendedEchoReply"};
    auto sug = suggest(v, kNames);
    error(t, tpath,
          sug ? fmt::format("unknown ICMP type '{}' (did you mean '{}'?)", v, *sug)
              : fmt::format("unknown ICMP type '{}': give a number 0-255 or a name such as EchoRequest", v));
    return std::nullopt;
  }

  // Cilium adds the policy's namespace to peer selectors of namespaced
  // policies unless they say which namespace they mean. Selectors on
  // reserved labels are left alone: reserved identities have no namespace.
  static void scopePeerSelector(Selector& sel, const std::string& ns) {
    if (ns.empty()) return;
    if (sel.constrains(labels::kSourceK8s, labels::kPodNamespaceLabel) || sel.mentionsReserved()) return;
    sel.addMatchLabel(labels::kSourceK8s, labels::kPodNamespaceLabel, ns);
  }

  bool entities(const YAML::Node& n, const std::string& path, PeerRule& pr) {
    if (!isList(n, path)) return false;
    static const std::vector<std::pair<std::string_view, Entity>> kEntities = {
        {"all", Entity::All},          {"world", Entity::World},          {"world-ipv4", Entity::World},
        {"world-ipv6", Entity::World}, {"cluster", Entity::Cluster},      {"host", Entity::Host},
        {"init", Entity::Init},        {"health", Entity::Health},        {"remote-node", Entity::RemoteNode},
        {"unmanaged", Entity::Unmanaged}, {"kube-apiserver", Entity::KubeApiserver}, {"none", Entity::None}};
    bool ok = true;
    for (size_t i = 0; i < n.size(); ++i) {
      auto s = string(n[i], index(path, i));
      if (!s) {
        ok = false;
        continue;
      }
      auto it = std::find_if(kEntities.begin(), kEntities.end(), [&](const auto& e) { return e.first == *s; });
      if (it != kEntities.end()) {
        if (std::find(pr.entities.begin(), pr.entities.end(), it->second) == pr.entities.end())
          pr.entities.push_back(it->second);
        continue;
      }
      if (*s == "ingress") {
        error(n[i], index(path, i), "entity 'ingress' is not supported yet");
      } else {
        std::vector<std::string_view> names;
        for (const auto& e : kEntities) names.push_back(e.first);
        auto sug = suggest(*s, names);
        error(n[i], index(path, i),
              sug ? fmt::format("unknown entity '{}' (did you mean '{}'?)", *s, *sug)
                  : fmt::format("unknown entity '{}' (expected one of all, world, cluster, host, init, health, "
                                "remote-node, unmanaged, kube-apiserver, none)",
                                *s));
      }
      ok = false;
    }
    return ok;
  }

  std::optional<CidrRule> cidrRule(const YAML::Node& at, const std::string& path, const std::string& text) {
    auto parsed = parseCidr(text);
    if (auto* msg = std::get_if<std::string>(&parsed)) {
      error(at, path, *msg);
      return std::nullopt;
    }
    auto [net, len] = std::get<0>(parsed);
    return CidrRule{formatCidr(net, len), {}};
  }

  // fromCIDRSet / toCIDRSet item and NetworkPolicy ipBlock: {<cidr_field>, except[]}.
  std::optional<CidrRule> cidrSet(const YAML::Node& n, const std::string& path, const ObjectSpec& spec,
                                  std::string_view cidr_field) {
    auto f = fields(n, path, spec);
    if (!f) return std::nullopt;
    auto it = f->find(cidr_field);
    if (it == f->end()) {
      error(n, join(path, cidr_field), fmt::format("missing required field '{}'", cidr_field));
      return std::nullopt;
    }
    const std::string cpath = join(path, cidr_field);
    auto s = string(it->second.value, cpath);
    if (!s) return std::nullopt;
    auto parsed = parseCidr(*s);
    if (auto* msg = std::get_if<std::string>(&parsed)) {
      error(it->second.value, cpath, *msg);
      return std::nullopt;
    }
    auto [net, len] = std::get<0>(parsed);
    CidrRule out{formatCidr(net, len), {}};
    if (auto e = f->find("except"); e != f->end()) {
      const YAML::Node& l = e->second.value;
      const std::string epath = join(path, "except");
      if (!isList(l, epath)) return std::nullopt;
      for (size_t i = 0; i < l.size(); ++i) {
        auto es = string(l[i], index(epath, i));
        if (!es) return std::nullopt;
        auto ep = parseCidr(*es);
        if (auto* msg = std::get_if<std::string>(&ep)) {
          error(l[i], index(epath, i), *msg);
          return std::nullopt;
        }
        auto [enet, elen] = std::get<0>(ep);
        uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - len);
        if (elen < len || (enet & mask) != net) {
          error(l[i], index(epath, i),
                fmt::format("except '{}' is not contained in '{}'", *es, out.cidr));
          return std::nullopt;
        }
        out.except.push_back(formatCidr(enet, elen));
      }
    }
    return out;
  }

  bool toPorts(const YAML::Node& n, const std::string& path, bool deny, PeerRule& pr) {
    if (!isList(n, path)) return false;
    bool ok = true;
    for (size_t i = 0; i < n.size(); ++i) {
      const std::string ipath = index(path, i);
      ObjectSpec spec{{"ports", "rules"},
                      {{"terminatingTLS", ""}, {"originatingTLS", ""}, {"serverNames", ""}, {"listener", ""}}};
      auto f = fields(n[i], ipath, spec);
      if (!f) {
        ok = false;
        continue;
      }
      PortRule rule;
      bool item_ok = true;
      if (auto it = f->find("ports"); it != f->end()) {
        const YAML::Node& l = it->second.value;
        const std::string lpath = join(ipath, "ports");
        if (!isList(l, lpath)) {
          ok = false;
          continue;
        }
        for (size_t j = 0; j < l.size(); ++j) {
          auto pp = portProtocol(l[j], index(lpath, j), Protocol::Any, {{"port", "endPort", "protocol"}, {}});
          if (pp) rule.ports.push_back(*pp);
          else item_ok = false;
        }
      }
      if (auto it = f->find("rules"); it != f->end()) {
        const std::string rpath = join(ipath, "rules");
        if (deny) {
          error(it->second.key, rpath, "L7 rules are not allowed in deny rules");
          item_ok = false;
        } else if (!l7Rules(it->second.value, rpath, rule)) {
          item_ok = false;
        } else if (!rule.http.empty()) {
          if (rule.ports.empty()) {
            error(it->second.key, rpath, "L7 rules need at least one port in 'ports'");
            item_ok = false;
          }
          for (const auto& pp : rule.ports) {
            if (pp.port == 0 && pp.name.empty()) {
              error(it->second.key, rpath, "L7 rules can not be used when a port is 0 (all ports); give the port");
              item_ok = false;
              break;
            }
            if (pp.protocol != Protocol::TCP && pp.protocol != Protocol::Any) {
              error(it->second.key, rpath,
                    fmt::format("HTTP rules apply to TCP only, not {}", protocolName(pp.protocol)));
              item_ok = false;
              break;
            }
          }
        }
      }
      if (item_ok) pr.to_ports.push_back(std::move(rule));
      ok &= item_ok;
    }
    return ok;
  }

  std::optional<PortProtocol> portProtocol(const YAML::Node& n, const std::string& path, Protocol default_proto,
                                           const ObjectSpec& spec) {
    auto f = fields(n, path, spec);
    if (!f) return std::nullopt;
    PortProtocol pp;
    pp.protocol = default_proto;
    if (auto it = f->find("port"); it != f->end()) {
      const YAML::Node& pn = it->second.value;
      const std::string ppath = join(path, "port");
      if (pn.IsScalar() && !pn.Scalar().empty() && !isDigits(pn.Scalar()) && pn.Scalar().front() != '-') {
        // A named port (Kubernetes NetworkPolicy and Cilium): resolved per
        // endpoint against the ports its pod declares.
        auto valid = validatePortName(pn.Scalar());
        if (!valid.ok()) {
          error(pn, ppath, valid.error().message);
          return std::nullopt;
        }
        pp.name = pn.Scalar();
      } else {
        auto port = portNumber(pn, ppath, "port");
        if (!port) return std::nullopt;
        pp.port = *port;
      }
    }
    if (auto it = f->find("protocol"); it != f->end()) {
      const std::string ppath = join(path, "protocol");
      auto s = string(it->second.value, ppath);
      if (!s) return std::nullopt;
      if (*s == "TCP") pp.protocol = Protocol::TCP;
      else if (*s == "UDP") pp.protocol = Protocol::UDP;
      else if (*s == "SCTP") pp.protocol = Protocol::SCTP;
      else if (*s == "ICMP") pp.protocol = Protocol::ICMP;
      else if (*s == "ANY" || s->empty()) pp.protocol = Protocol::Any;
      else if (*s == "ICMPV6") {
        error(it->second.value, ppath, "protocol ICMPV6 is not supported yet (IPv6)");
        return std::nullopt;
      } else if (*s == "VRRP" || *s == "IGMP") {
        error(it->second.value, ppath, fmt::format("protocol {} is not supported yet", *s));
        return std::nullopt;
      } else {
        error(it->second.value, ppath,
              fmt::format("protocol '{}' must be one of TCP, UDP, SCTP, ICMP, ANY (upper case)", *s));
        return std::nullopt;
      }
    }
    if (auto it = f->find("endPort"); it != f->end()) {
      const std::string epath = join(path, "endPort");
      auto end = portNumber(it->second.value, epath, "endPort");
      if (!end) return std::nullopt;
      if (*end != 0 && !pp.name.empty()) {
        error(it->second.value, epath, fmt::format("endPort cannot be used with the named port '{}'", pp.name));
        return std::nullopt;
      }
      if (*end != 0 && pp.port == 0) {
        error(it->second.value, epath, "endPort needs a non-zero port");
        return std::nullopt;
      }
      if (*end != 0 && *end < pp.port) {
        error(it->second.value, epath, fmt::format("endPort {} is lower than port {}", *end, pp.port));
        return std::nullopt;
      }
      if (*end != 0 && uint32_t(*end) - pp.port + 1 > kMaxPortRange) {
        error(it->second.value, epath,
              fmt::format("port range {}-{} spans {} ports; at most {} are supported (one map entry per port)",
                          pp.port, *end, uint32_t(*end) - pp.port + 1, kMaxPortRange));
        return std::nullopt;
      }
      if (*end > pp.port) pp.end_port = *end;
    }
    return pp;
  }

  bool l7Rules(const YAML::Node& n, const std::string& path, PortRule& rule) {
    ObjectSpec spec{{"http"}, {{"kafka", ""}, {"dns", ""}, {"l7proto", ""}, {"l7", ""}}};
    auto f = fields(n, path, spec);
    if (!f) return false;
    auto it = f->find("http");
    if (it == f->end()) return true;
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(path, "http");
    if (!isList(l, lpath)) return false;
    bool ok = true;
    for (size_t i = 0; i < l.size(); ++i) {
      const std::string ipath = index(lpath, i);
      auto hf = fields(l[i], ipath, {{"method", "path", "host", "headers", "headerMatches"}, {}});
      if (!hf) {
        ok = false;
        continue;
      }
      HttpRule h;
      for (auto [name, out] : {std::pair<const char*, std::string*>{"method", &h.method},
                               {"path", &h.path},
                               {"host", &h.host}}) {
        auto fi = hf->find(name);
        if (fi == hf->end()) continue;
        auto s = string(fi->second.value, join(ipath, name));
        if (!s) {
          ok = false;
          continue;
        }
        if (auto err = checkHttpRegex(*s); !err.empty()) {
          error(fi->second.value, join(ipath, name), fmt::format("invalid regular expression '{}': {}", *s, err));
          ok = false;
          continue;
        }
        *out = *s;
      }
      if (auto fi = hf->find("headers"); fi != hf->end()) {
        const YAML::Node& hl = fi->second.value;
        const std::string hpath = join(ipath, "headers");
        if (!isList(hl, hpath)) {
          ok = false;
          continue;
        }
        for (size_t j = 0; j < hl.size(); ++j) {
          auto s = string(hl[j], index(hpath, j));
          if (s) h.headers.push_back(*s);
          else ok = false;
        }
      }
      if (auto fi = hf->find("headerMatches"); fi != hf->end()) {
        if (!headerMatches(fi->second.value, join(ipath, "headerMatches"), h)) ok = false;
      }
      rule.http.push_back(std::move(h));
    }
    return ok;
  }

  // Cilium's HeaderMatch: {mismatch, name, secret, value}.
  bool headerMatches(const YAML::Node& l, const std::string& lpath, HttpRule& h) {
    if (!isList(l, lpath)) return false;
    bool ok = true;
    for (size_t i = 0; i < l.size(); ++i) {
      const std::string ipath = index(lpath, i);
      auto f = fields(l[i], ipath,
                      {{"name", "value", "mismatch"},
                       {{"secret", "secret is not supported: membrane reads no Kubernetes secrets; put the value in 'value'"}}});
      if (!f) {
        ok = false;
        continue;
      }
      HeaderMatchRule m;
      bool item_ok = true;
      for (auto [name, out] : {std::pair<const char*, std::string*>{"name", &m.name},
                               {"value", &m.value},
                               {"mismatch", &m.mismatch}}) {
        auto fi = f->find(name);
        if (fi == f->end()) continue;
        auto s = string(fi->second.value, join(ipath, name));
        if (s) *out = *s;
        else item_ok = false;
      }
      if (!item_ok) {
        ok = false;
        continue;
      }
      const YAML::Node& at = l[i];
      if (m.name.empty()) {
        error(at, join(ipath, "name"), "required: the name of the header field to match");
        ok = false;
        continue;
      }
      if (!http::isFieldName(m.name)) {
        error(f->at("name").value, join(ipath, "name"), fmt::format("'{}' is not an HTTP field name", m.name));
        ok = false;
      }
      if (!http::isFieldValue(m.value)) {
        error(f->at("value").value, join(ipath, "value"),
              "control characters or leading/trailing whitespace are not allowed in a header value");
        ok = false;
      }
      if (!m.mismatch.empty() && m.mismatch != "LOG" && m.mismatch != "ADD" && m.mismatch != "DELETE" &&
          m.mismatch != "REPLACE") {
        error(f->at("mismatch").value, join(ipath, "mismatch"),
              fmt::format("unknown mismatch action '{}' (LOG, ADD, DELETE or REPLACE; leave it out to deny)",
                          m.mismatch));
        ok = false;
      } else if ((m.mismatch == "ADD" || m.mismatch == "DELETE" || m.mismatch == "REPLACE") &&
                 http::isFramingField(m.name)) {
        error(f->at("mismatch").value, join(ipath, "mismatch"),
              fmt::format("'{}' frames or routes the request: it can be matched, not changed by {}", m.name,
                          m.mismatch));
        ok = false;
      }
      h.header_matches.push_back(std::move(m));
    }
    return ok;
  }

  // ---- Kubernetes NetworkPolicy -----------------------------------------

  // Translates a K8s label selector used as namespaceSelector into
  // requirements on the pod's namespace labels, as Cilium does: every key K
  // becomes k8s:io.cilium.k8s.namespace.labels.K (endpoints carry those, see
  // labels::endpointLabels), and the peer must be a pod (has a namespace).
  static void addNamespaceSelector(const Selector& ns_sel, Selector& out) {
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

  bool networkPolicySpec(const YAML::Node& n, const std::string& path, const Policy& p, Rule& r) {
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

  bool networkPolicyRule(const YAML::Node& n, const std::string& path, bool in, const Policy& p, PeerRule& pr) {
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

  std::string file_;
  std::vector<Diagnostic> diags_;
  std::vector<Policy> policies_;
  std::map<std::string, std::string> defined_at_;  // "Kind/ns/name" -> "file:line:col" of its metadata.name
};

// Offset of the first byte that is not part of valid UTF-8 (YAML and JSON
// text is Unicode; yaml-cpp does not check, and JSON output of the policy
// would fail later), or npos.
size_t invalidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return i;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return i;
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates, beyond U+10FFFF.
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return std::string_view::npos;
}



}  // namespace

ParseResult parsePolicies(std::string_view text, const std::string& filename) {
  ParseResult out;
  if (size_t bad = invalidUtf8(text); bad != std::string_view::npos) {
    const std::string_view before = text.substr(0, bad);
    const int line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
    const size_t nl = before.rfind('\n');
    const int column = 1 + static_cast<int>(nl == std::string_view::npos ? bad : bad - nl - 1);
    out.diagnostics.push_back(Diagnostic{filename, line, column, "",
                                         fmt::format("invalid UTF-8 (byte 0x{:02x}): policy files must be UTF-8 text",
                                                     static_cast<unsigned char>(text[bad]))});
    return out;
  }
  Parser parser(filename);
  std::string input(text);
  // JSON allows tabs between tokens, YAML's scanner can reject them; JSON
  // strings cannot contain raw tabs, so replacing them keeps every column.
  if (looksLikeJson(input)) std::replace(input.begin(), input.end(), '\t', ' ');
  try {
    if (auto stuck = stuckDocument(input)) {
      const char c = stuck->pos >= 0 && static_cast<size_t>(stuck->pos) < input.size() ? input[stuck->pos] : '?';
      parser.syntaxError(stuck->line, stuck->column,
                         fmt::format("unexpected '{}' after the end of the document's top-level value", c));
      out.diagnostics = std::move(parser.diagnostics());
      return out;
    }
    std::vector<YAML::Node> docs = YAML::LoadAll(input);
    for (const auto& doc : docs) parser.document(doc);
  } catch (const YAML::ParserException& e) {
    parser.syntaxError(e.mark.line, e.mark.column, e.msg);
  } catch (const YAML::Exception& e) {
    parser.syntaxError(e.mark.line, e.mark.column, e.msg);
  } catch (const std::exception& e) {
    parser.diagnostics().push_back(Diagnostic{filename, 0, 0, "", std::string("internal error: ") + e.what()});
  }
  if (parser.diagnostics().empty() && parser.policies().empty())
    parser.diagnostics().push_back(Diagnostic{filename, 1, 1, "", "no policy found"});
  out.diagnostics = std::move(parser.diagnostics());
  if (out.diagnostics.empty()) out.policies = std::move(parser.policies());
  return out;
}

}  // namespace membrane::policy
