// Typed access to JSON object members for src/cni's decoders, with the
// member's path in every message ("stdin config: prevResult.ips[0].address:
// must be a string, got number"). Internal to src/cni.
//
// Codes: a member of the wrong JSON type is 6 (DecodeFailure); a required
// member that is absent is 7 (InvalidConfig). Pure; not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "src/cni/spec.h"

namespace membrane::cni::fields {

// "<where>.<key>" ("<key>" when where is empty).
std::string memberPath(const std::string& where, std::string_view key);
// "<where>[<i>]".
std::string indexPath(const std::string& where, size_t i);
// "string", "number", "object", ... for messages.
std::string_view typeName(const Json& j);

// Code 6 unless 'j' is an object: "<where>: must be a JSON object, got <type>".
Status requireObject(const Json& j, const std::string& where);

// The member 'key' of object 'obj' (absent or null = nullopt / nullptr).
Result<std::optional<std::string>> optString(const Json& obj, std::string_view key, const std::string& where);
Result<std::string> reqString(const Json& obj, std::string_view key, const std::string& where);
Result<std::optional<int64_t>> optInt(const Json& obj, std::string_view key, const std::string& where);
Result<std::optional<bool>> optBool(const Json& obj, std::string_view key, const std::string& where);
// nullptr when absent or null; code 6 when present with another type.
Result<const Json*> optObject(const Json& obj, std::string_view key, const std::string& where);
Result<const Json*> optArray(const Json& obj, std::string_view key, const std::string& where);
// An array of strings (absent = empty).
Result<std::vector<std::string>> optStrings(const Json& obj, std::string_view key, const std::string& where);

// r, with "<ctx>: " in front of its error message (the code is kept).
template <typename T>
Result<T> context(Result<T> r, const std::string& ctx) {
  if (r.ok()) return r;
  return r.error().wrap(ctx);
}

}  // namespace membrane::cni::fields
