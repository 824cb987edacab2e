// Endpoint and label selectors: matchLabels and matchExpressions, with
// Cilium's "source:key" label keys.
#include <algorithm>

#include <fmt/format.h>

#include "src/policy/parser_internal.h"

namespace membrane::policy::detail {

// Splits "source:key" ("org" -> any:org) and validates the key.
bool Parser::selectorKey(const YAML::Node& at, const std::string& path, const std::string& text,
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

std::optional<Selector> Parser::selector(const YAML::Node& n, const std::string& path,
                                         std::string_view default_source) {
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

std::optional<Requirement> Parser::requirement(const YAML::Node& n, const std::string& path,
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

}  // namespace membrane::policy::detail
