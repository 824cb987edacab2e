#include "src/cni/json_fields.h"

#include <cstdint>

#include <fmt/format.h>

namespace membrane::cni::fields {

std::string memberPath(const std::string& where, std::string_view key) {
  return where.empty() ? std::string(key) : fmt::format("{}.{}", where, key);
}

std::string indexPath(const std::string& where, size_t i) { return fmt::format("{}[{}]", where, i); }

std::string_view typeName(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "object";
    case Json::value_t::array: return "array";
    case Json::value_t::string: return "string";
    case Json::value_t::boolean: return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "integer";
    case Json::value_t::number_float: return "number";
    default: return "value";
  }
}

namespace {

Error wrongType(const std::string& path, std::string_view want, const Json& got) {
  if (path.empty()) return cniError(Code::DecodeFailure, fmt::format("must be {}, got {}", want, typeName(got)));
  return cniError(Code::DecodeFailure, fmt::format("{}: must be {}, got {}", path, want, typeName(got)));
}

// The member or nullptr when absent or null.
const Json* member(const Json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace

Status requireObject(const Json& j, const std::string& where) {
  if (!j.is_object()) return wrongType(where, "a JSON object", j);
  return okStatus();
}

Result<std::optional<std::string>> optString(const Json& obj, std::string_view key, const std::string& where) {
  const Json* m = member(obj, key);
  if (!m) return std::optional<std::string>();
  if (!m->is_string()) return wrongType(memberPath(where, key), "a string", *m);
  return std::optional<std::string>(m->get<std::string>());
}

Result<std::string> reqString(const Json& obj, std::string_view key, const std::string& where) {
  MB_ASSIGN(auto s, optString(obj, key, where));
  if (!s) return cniError(Code::InvalidConfig, fmt::format("{}: required, missing", memberPath(where, key)));
  return std::move(*s);
}

Result<std::optional<int64_t>> optInt(const Json& obj, std::string_view key, const std::string& where) {
  const Json* m = member(obj, key);
  if (!m) return std::optional<int64_t>();
  // An unsigned beyond int64 is not an integer anyone means here.
  if (m->is_number_unsigned() && m->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    return cniError(Code::InvalidConfig, fmt::format("{}: {} is out of range", memberPath(where, key), m->dump()));
  if (m->is_number_integer()) return std::optional<int64_t>(m->get<int64_t>());
  return wrongType(memberPath(where, key), "an integer", *m);
}

Result<std::optional<bool>> optBool(const Json& obj, std::string_view key, const std::string& where) {
  const Json* m = member(obj, key);
  if (!m) return std::optional<bool>();
  if (!m->is_boolean()) return wrongType(memberPath(where, key), "true or false", *m);
  return std::optional<bool>(m->get<bool>());
}

Result<const Json*> optObject(const Json& obj, std::string_view key, const std::string& where) {
  const Json* m = member(obj, key);
  if (m && !m->is_object()) return wrongType(memberPath(where, key), "a JSON object", *m);
  return m;
}

Result<const Json*> optArray(const Json& obj, std::string_view key, const std::string& where) {
  const Json* m = member(obj, key);
  if (m && !m->is_array()) return wrongType(memberPath(where, key), "an array", *m);
  return m;
}

Result<std::vector<std::string>> optStrings(const Json& obj, std::string_view key, const std::string& where) {
  MB_ASSIGN(const Json* arr, optArray(obj, key, where));
  std::vector<std::string> out;
  if (!arr) return out;
  std::string path = memberPath(where, key);
  for (size_t i = 0; i < arr->size(); ++i) {
    const Json& e = (*arr)[i];
    if (!e.is_string()) return wrongType(indexPath(path, i), "a string", e);
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace membrane::cni::fields
