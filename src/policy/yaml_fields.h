// Small helpers shared by the two YAML front ends that report diagnostics
// with a field path: the policy parser (src/policy/parser*.cc) and the
// manifest parser (src/workload/manifest.cc). Header-only so the libFuzzer
// build of the policy parser needs no extra source. Pure, thread-safe.
#pragma once

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

namespace membrane::policy::yaml_fields {

// "spec.ingress" + "toPorts" -> "spec.ingress.toPorts" (no leading dot at the root).
inline std::string join(const std::string& path, std::string_view field) {
  return path.empty() ? std::string(field) : path + "." + std::string(field);
}
// "spec.ingress" + 2 -> "spec.ingress[2]".
inline std::string index(const std::string& path, size_t i) { return fmt::format("{}[{}]", path, i); }

// What a node is, for "expected a mapping, got a list".
inline std::string_view typeName(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return "a scalar";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "nothing";
  }
}

// Case-insensitive Levenshtein distance (field names are short: O(|a|·|b|) is fine).
inline size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The closest candidate within distance 2 (a case-insensitive match is 0), for
// "did you mean …?"; nothing when no candidate is that close.
inline std::optional<std::string_view> suggest(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::optional<std::string_view> best;
  size_t best_d = 3;
  for (auto c : candidates)
    if (size_t d = editDistance(word, c); d < best_d) best_d = d, best = c;
  return best;
}

// JSON text (first non-blank byte '{' or '['): loaded as one document, tabs allowed.
inline bool looksLikeJson(std::string_view text) {
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    return c == '{' || c == '[';
  }
  return false;
}

// yaml-cpp 0.7 loops forever, allocating an empty document per turn, when a
// token it cannot start a node with (a ',' after a top-level flow collection
// or quoted scalar: `{a: b},`) follows a document's root node: the token is
// never consumed. This pass walks the documents with a no-op handler and
// stops when a document starts where the previous one did. Returns the mark
// of the stuck token, or nothing when the input is safe for YAML::LoadAll
// (which may still throw ordinary syntax errors).
class DocumentWalker : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { start = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
  YAML::Mark start;
};

inline std::optional<YAML::Mark> stuckDocument(const std::string& input) {
  std::istringstream in(input);
  YAML::Parser parser(in);
  DocumentWalker walker;
  int previous = -1;
  while (parser.HandleNextDocument(walker)) {
    if (walker.start.pos == previous) return walker.start;
    previous = walker.start.pos;
  }
  return std::nullopt;
}

// A mapping's fields by name: the key node (for diagnostics at the name) and the value.
struct Field {
  YAML::Node key;
  YAML::Node value;
};
using Fields = std::map<std::string, Field, std::less<>>;

// What a mapping may contain.
struct FieldRules {
  const std::vector<std::string_view>& known;    // returned
  const std::vector<std::string_view>& ignored;  // accepted and dropped (Kubernetes fields with no meaning here)
  // Recognised fields that are not implemented: name -> message ("" = "<name> is not supported yet").
  const std::vector<std::pair<std::string_view, std::string_view>>& unsupported;
};

// Checks that `n` is a mapping (null counts as empty) of known fields and
// returns them; reports each non-string name, unsupported, unknown ("did you
// mean", else the known fields) and duplicate field through `error(at, path,
// message)` and then returns nothing. Both YAML front ends use this.
inline std::optional<Fields> checkFields(
    const YAML::Node& n, const std::string& path, const FieldRules& rules,
    const std::function<void(const YAML::Node&, const std::string&, std::string)>& error) {
  Fields out;
  if (n.IsNull()) return out;
  if (!n.IsMap()) {
    error(n, path, fmt::format("expected a mapping, got {}", typeName(n)));
    return std::nullopt;
  }
  auto has = [](const std::vector<std::string_view>& v, std::string_view name) {
    return std::find(v.begin(), v.end(), name) != v.end();
  };
  bool ok = true;
  for (auto it = n.begin(); it != n.end(); ++it) {
    const YAML::Node k = it->first;  // a copy: yaml-cpp iterators yield temporaries
    if (!k.IsScalar()) {
      error(k, path, fmt::format("field names must be strings, got {}", typeName(k)));
      ok = false;
      continue;
    }
    const std::string& name = k.Scalar();
    const std::string fpath = join(path, name);
    if (has(rules.ignored, name)) continue;
    auto unsup = std::find_if(rules.unsupported.begin(), rules.unsupported.end(),
                              [&](const auto& p) { return p.first == name; });
    if (unsup != rules.unsupported.end()) {
      error(k, fpath, unsup->second.empty() ? fmt::format("{} is not supported yet", name) : std::string(unsup->second));
      ok = false;
      continue;
    }
    if (!has(rules.known, name)) {
      std::vector<std::string_view> all = rules.known;
      all.insert(all.end(), rules.ignored.begin(), rules.ignored.end());
      for (const auto& p : rules.unsupported) all.push_back(p.first);
      if (auto best = suggest(name, all))
        error(k, fpath, fmt::format("unknown field '{}' (did you mean '{}'?)", name, *best));
      else
        error(k, fpath, fmt::format("unknown field '{}' (known fields: {})", name, fmt::join(rules.known, ", ")));
      ok = false;
      continue;
    }
    if (out.count(name)) {
      error(k, fpath, fmt::format("duplicate field '{}'", name));
      ok = false;
      continue;
    }
    out.emplace(name, Field{k, it->second});
  }
  if (!ok) return std::nullopt;
  return out;
}

}  // namespace membrane::policy::yaml_fields
