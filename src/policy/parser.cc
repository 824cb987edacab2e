// Policy parser: yaml-cpp node tree -> policy model, with a diagnostic (file,
// line, column, path) for every problem. yaml-cpp throws; every call into it
// is inside the try block of parsePolicies() so nothing escapes. This file
// holds the entry point and the document level (documents, Lists, objects,
// metadata); parser_internal.h lists the other parts.
#include <algorithm>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "membrane/policy.h"
#include "src/policy/parser_internal.h"
#include "src/policy/yaml_fields.h"

namespace membrane::policy::detail {

namespace {

constexpr std::string_view kCiliumApiVersion = "cilium.io/v2";
constexpr std::string_view kNetworkingApiVersion = "networking.k8s.io/v1";

}  // namespace

void Parser::document(const YAML::Node& doc) {
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

void Parser::list(const YAML::Node& doc) {
  auto f = fields(doc, "", {{"apiVersion", "kind", "items", "metadata"}, {}});
  if (!f) return;
  auto it = f->find("items");
  if (it == f->end()) return;
  const YAML::Node& items = it->second.value;
  if (!isList(items, "items")) return;
  for (size_t i = 0; i < items.size(); ++i) object(items[i], index("items", i));
}

void Parser::object(const YAML::Node& n, const std::string& path) {
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

bool Parser::metadata(const YAML::Node& n, const std::string& path, bool namespaced, Policy& p) {
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
void Parser::derivedLabels(const Policy& p, Rule& r) {
  r.labels.add(labels::kSourceK8s, "io.cilium.k8s.policy.derived-from", kindName(p.kind));
  r.labels.add(labels::kSourceK8s, "io.cilium.k8s.policy.name", p.name);
  if (!p.namespace_name.empty()) r.labels.add(labels::kSourceK8s, "io.cilium.k8s.policy.namespace", p.namespace_name);
}

}  // namespace membrane::policy::detail

namespace membrane::policy {

namespace {

using detail::Parser;
using yaml_fields::looksLikeJson;
using yaml_fields::stuckDocument;

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
