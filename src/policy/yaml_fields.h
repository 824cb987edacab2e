// Small helpers shared by the two YAML front ends that report diagnostics
// with a field path: the policy parser (src/policy/parser.cc) and the
// manifest parser (src/workload/manifest.cc). Header-only so the libFuzzer
// build of the policy parser needs no extra source. Pure, thread-safe.
#pragma once

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
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

}  // namespace membrane::policy::yaml_fields
