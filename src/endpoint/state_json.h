// Checked reads of the agent's JSON state files (endpoints/<id>.json,
// namespaces.json, policy.json, workloads.json). A state file can be damaged
// or edited by hand; every error here names the field by its path in the file
// ("instances[2].spec.containers[0].name: expected a string, got a number")
// and nothing throws, so the agent can say which file and field to fix
// instead of dying on an exception. Header-only, pure, thread-safe.
#pragma once

#include <array>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "membrane/result.h"

namespace membrane::endpoint::state {

using Json = nlohmann::json;

// "pods" + "spec" -> "pods.spec"; the root is "" (messages then say "top level").
inline std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}
inline std::string index(const std::string& path, size_t i) { return fmt::format("{}[{}]", path, i); }

// What a value is, for "expected a string, got a number".
inline std::string_view kindOf(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return "a list";
    case Json::value_t::string: return "a string";
    case Json::value_t::boolean: return "true/false";
    case Json::value_t::number_float: return "a fractional number";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "a number";
    default: return "something else";
  }
}

inline Error typeError(const std::string& path, std::string_view want, const Json& got) {
  return Error::invalid(fmt::format("{}: expected {}, got {}", path.empty() ? "top level" : path, want, kindOf(got)));
}

// The text of a state file as a JSON object: EINVAL for text that is not
// JSON (empty, truncated) or whose top level is not an object.
inline Result<Json> parseObject(std::string_view text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::parse_error& e) {
    return Error::invalid(fmt::format("not valid JSON (truncated or damaged?): parse error at byte {}", e.byte));
  } catch (const Json::exception& e) {
    // out_of_range (a number no double holds) is not a parse_error. Its
    // what() starts with "[json.exception.out_of_range.406] ".
    std::string_view what = e.what();
    if (auto at = what.find("] "); at != std::string_view::npos) what.remove_prefix(at + 2);
    return Error::invalid(fmt::format("not valid JSON (truncated or damaged?): {}", what));
  }
  if (!j.is_object()) return typeError("", "an object", j);
  return j;
}

template <typename T>
struct IsVector : std::false_type {};
template <typename U>
struct IsVector<std::vector<U>> : std::true_type {};
template <typename T>
struct IsStringMap : std::false_type {};
template <typename U>
struct IsStringMap<std::map<std::string, U>> : std::true_type {};

// j as T (at path, for messages). T: Json (anything), std::string, bool, an
// integer type (range-checked), std::vector<U>, std::map<std::string, U>.
template <typename T>
Result<T> as(const Json& j, const std::string& path) {
  if constexpr (std::is_same_v<T, Json>) {
    return j;
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!j.is_string()) return typeError(path, "a string", j);
    return j.get<std::string>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) return typeError(path, "true or false", j);
    return j.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    const auto lo = std::numeric_limits<T>::min();
    const auto hi = std::numeric_limits<T>::max();
    const std::string want = fmt::format("a number ({}-{})", lo, hi);
    if (!j.is_number_integer()) return typeError(path, want, j);
    const bool fits = j.is_number_unsigned()
                          ? j.get<uint64_t>() <= static_cast<uint64_t>(hi)
                          : j.get<int64_t>() >= static_cast<int64_t>(lo) &&
                                (j.get<int64_t>() < 0 || static_cast<uint64_t>(j.get<int64_t>()) <= static_cast<uint64_t>(hi));
    if (!fits) return Error::invalid(fmt::format("{}: {} is out of range ({}-{})", path, j.dump(), lo, hi));
    return j.get<T>();
  } else if constexpr (IsVector<T>::value) {
    if (!j.is_array()) return typeError(path, "a list", j);
    T out;
    for (size_t i = 0; i < j.size(); ++i) {
      auto v = as<typename T::value_type>(j[i], index(path, i));
      if (!v) return v.error();
      out.push_back(std::move(*v));
    }
    return out;
  } else if constexpr (IsStringMap<T>::value) {
    if (!j.is_object()) return typeError(path, "an object", j);
    T out;
    for (auto it = j.begin(); it != j.end(); ++it) {
      auto v = as<typename T::mapped_type>(it.value(), join(path, it.key()));
      if (!v) return v.error();
      out.emplace(it.key(), std::move(*v));
    }
    return out;
  } else {
    static_assert(sizeof(T) == 0, "state::as: unsupported type");
  }
}

// Field `key` of the object `obj` (at path); a missing field is an error.
template <typename T>
Result<T> field(const Json& obj, const std::string& path, std::string_view key) {
  if (!obj.is_object()) return typeError(path, "an object", obj);
  auto it = obj.find(std::string(key));
  if (it == obj.end())
    return Error::invalid(fmt::format("{}: missing field '{}'", path.empty() ? "top level" : path, key));
  return as<T>(*it, join(path, key));
}

// Field `key` of the object `obj`, or `fallback` when absent or null.
template <typename T>
Result<T> field(const Json& obj, const std::string& path, std::string_view key, T fallback) {
  if (!obj.is_object()) return typeError(path, "an object", obj);
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return fallback;
  return as<T>(*it, join(path, key));
}

// The words of a closed set (an enum class) as the API and the state files
// spell them: one table per enum gives its toString/parse pair, so the words
// are written once. `what` names the set in errors ("pod phase").
template <typename E, size_t N>
struct Names {
  std::string_view what;
  std::array<std::pair<E, std::string_view>, N> words;

  // Every enumerator is in the table (a missing one is a programming error).
  std::string_view toString(E e) const {
    for (const auto& [v, w] : words)
      if (v == e) return w;
    MB_CHECK(false && "enumerator missing from its Names table");
    return {};
  }
  // EINVAL "unknown pod phase 'Crashed' (expected Pending, Running or Failed)"
  // for a word not in the table (case-sensitive, as Kubernetes and Cilium are).
  Result<E> parse(std::string_view s) const {
    for (const auto& [v, w] : words)
      if (w == s) return v;
    std::string expected;
    for (size_t i = 0; i < N; ++i)
      expected += fmt::format("{}{}", i == 0 ? "" : i + 1 == N ? " or " : ", ", words[i].second);
    return Error::invalid(fmt::format("unknown {} '{}' (expected {})", what, s, expected));
  }
};

// Field `key` of `obj` as one of names' words (fallback when absent or null);
// errors name the field: "instances[0].phase: unknown pod phase 'Crashed' (...)".
template <typename E, size_t N>
Result<E> enumField(const Json& obj, const std::string& path, std::string_view key, const Names<E, N>& names,
                    E fallback) {
  if (!obj.is_object()) return typeError(path, "an object", obj);
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return fallback;
  auto word = as<std::string>(*it, join(path, key));
  if (!word) return word.error();
  auto v = names.parse(*word);
  if (!v) return v.error().wrap(join(path, key));
  return *v;
}

}  // namespace membrane::endpoint::state
