#include "src/kvstore/etcd_json.h"

#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>

namespace membrane::kvstore::etcdjson {

using nlohmann::json;

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// json::parse without exceptions: discarded (= invalid) on any syntax error.
Result<json> parseObject(std::string_view body, std::string_view what) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return Error::invalid(fmt::format("etcd {} answer is not a JSON object: '{}'", what, body.substr(0, 200)));
  return j;
}

const json* member(const json& j, const char* name) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(name);
  return it == j.end() ? nullptr : &*it;
}

// An int64 field: the gateway writes strings ("12"); numbers are accepted.
// Absent = 0 (proto3 default).
Result<int64_t> int64Field(const json& j, const char* name) {
  const json* f = member(j, name);
  if (f == nullptr || f->is_null()) return int64_t{0};
  if (f->is_number_integer()) return f->get<int64_t>();
  if (f->is_string()) {
    const auto& s = f->get_ref<const std::string&>();
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && p == s.data() + s.size() && !s.empty()) return v;
  }
  return Error::invalid(fmt::format("etcd answer: field '{}' is not an int64: {}", name, f->dump()));
}

bool boolField(const json& j, const char* name) {
  const json* f = member(j, name);
  return f != nullptr && f->is_boolean() && f->get<bool>();
}

std::string stringField(const json& j, const char* name) {
  const json* f = member(j, name);
  return (f != nullptr && f->is_string()) ? f->get<std::string>() : std::string();
}

// A base64 `bytes` field; absent = "".
Result<std::string> bytesField(const json& j, const char* name) {
  const json* f = member(j, name);
  if (f == nullptr || f->is_null()) return std::string();
  if (!f->is_string()) return Error::invalid(fmt::format("etcd answer: field '{}' is not a string", name));
  auto d = base64Decode(f->get_ref<const std::string&>());
  if (!d.ok()) return d.error().wrap(fmt::format("etcd answer: field '{}'", name));
  return d;
}

Result<int64_t> headerRevision(const json& j) {
  const json* h = member(j, "header");
  if (h == nullptr) return Error::invalid("etcd answer has no header");
  return int64Field(*h, "revision");
}

Result<KeyValue> keyValue(const json& j) {
  if (!j.is_object()) return Error::invalid("etcd answer: a key-value is not an object");
  KeyValue kv;
  MB_ASSIGN(kv.key, bytesField(j, "key"));
  MB_ASSIGN(kv.value, bytesField(j, "value"));
  MB_ASSIGN(kv.create_revision, int64Field(j, "create_revision"));
  MB_ASSIGN(kv.mod_revision, int64Field(j, "mod_revision"));
  MB_ASSIGN(kv.version, int64Field(j, "version"));
  MB_ASSIGN(kv.lease, int64Field(j, "lease"));
  return kv;
}

Result<std::vector<KeyValue>> keyValues(const json& j) {
  std::vector<KeyValue> out;
  const json* kvs = member(j, "kvs");
  if (kvs == nullptr || kvs->is_null()) return out;
  if (!kvs->is_array()) return Error::invalid("etcd answer: 'kvs' is not an array");
  for (const json& e : *kvs) {
    MB_ASSIGN(KeyValue kv, keyValue(e));
    out.push_back(std::move(kv));
  }
  return out;
}

std::string int64String(int64_t v) { return std::to_string(v); }

json compareJson(const Compare& c) {
  static constexpr const char* kTargets[] = {"VERSION", "CREATE", "MOD", "VALUE"};
  static constexpr const char* kOps[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
  json j = {{"target", kTargets[static_cast<int>(c.target)]},
            {"result", kOps[static_cast<int>(c.op)]},
            {"key", base64Encode(c.key)}};
  if (c.prefix) j["range_end"] = base64Encode(prefixEnd(c.key));
  switch (c.target) {
    case Compare::Target::Version: j["version"] = int64String(c.number); break;
    case Compare::Target::CreateRevision: j["create_revision"] = int64String(c.number); break;
    case Compare::Target::ModRevision: j["mod_revision"] = int64String(c.number); break;
    case Compare::Target::Value: j["value"] = base64Encode(c.value); break;
  }
  return j;
}

json opJson(const TxnOp& op) {
  switch (op.kind) {
    case TxnOp::Kind::Put: {
      json p = {{"key", base64Encode(op.key)}, {"value", base64Encode(op.value)}};
      if (op.lease != kNoLease) p["lease"] = int64String(op.lease);
      return {{"request_put", p}};
    }
    case TxnOp::Kind::Delete: return {{"request_delete_range", {{"key", base64Encode(op.key)}}}};
    case TxnOp::Kind::DeletePrefix:
      return {{"request_delete_range", {{"key", base64Encode(op.key)}, {"range_end", base64Encode(prefixEnd(op.key))}}}};
    case TxnOp::Kind::Get: return {{"request_range", {{"key", base64Encode(op.key)}}}};
  }
  return json::object();
}

}  // namespace

std::string base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t n = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int s : {18, 12, 6, 0}) out.push_back(kAlphabet[(n >> s) & 63]);
  }
  if (size_t rest = bytes.size() - i; rest > 0) {
    uint32_t n = uint8_t(bytes[i]) << 16;
    if (rest == 2) n |= uint8_t(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

Result<std::string> base64Decode(std::string_view text) {
  // Padding is optional; anything else outside the alphabet is an error.
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return Error::invalid(fmt::format("invalid base64 length {}", text.size()));
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = base64Value(c);
    if (v < 0) return Error::invalid(fmt::format("invalid base64 character '{}'", c));
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string rangeRequest(const std::string& key, const std::string& range_end, Consistency c, int64_t limit,
                         int64_t revision) {
  json j = {{"key", base64Encode(key)}};
  if (!range_end.empty()) j["range_end"] = base64Encode(range_end);
  if (c == Consistency::Serializable) j["serializable"] = true;
  if (limit > 0) j["limit"] = int64String(limit);
  if (revision > 0) j["revision"] = int64String(revision);
  return j.dump();
}

std::string putRequest(const std::string& key, const std::string& value, LeaseId lease) {
  json j = {{"key", base64Encode(key)}, {"value", base64Encode(value)}};
  if (lease != kNoLease) j["lease"] = int64String(lease);
  return j.dump();
}

std::string deleteRangeRequest(const std::string& key, const std::string& range_end) {
  json j = {{"key", base64Encode(key)}};
  if (!range_end.empty()) j["range_end"] = base64Encode(range_end);
  return j.dump();
}

std::string txnRequest(const Txn& t) {
  json j = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const auto& c : t.compares) j["compare"].push_back(compareJson(c));
  for (const auto& op : t.success) j["success"].push_back(opJson(op));
  for (const auto& op : t.failure) j["failure"].push_back(opJson(op));
  return j.dump();
}

std::string leaseGrantRequest(int64_t ttl_seconds) { return json{{"TTL", int64String(ttl_seconds)}}.dump(); }
std::string leaseIdRequest(LeaseId lease) { return json{{"ID", int64String(lease)}}.dump(); }

std::string lockRequest(const std::string& name, LeaseId lease) {
  return json{{"name", base64Encode(name)}, {"lease", int64String(lease)}}.dump();
}

std::string unlockRequest(const std::string& owner_key) { return json{{"key", base64Encode(owner_key)}}.dump(); }

std::string compactionRequest(int64_t revision) {
  return json{{"revision", int64String(revision)}, {"physical", true}}.dump();
}

std::string watchCreateRequest(const std::string& key, const std::string& range_end, int64_t start_revision) {
  json c = {{"key", base64Encode(key)}, {"range_end", base64Encode(range_end)}};
  if (start_revision != 0) c["start_revision"] = int64String(start_revision);
  return json{{"create_request", c}}.dump();
}

Result<ListResult> parseRange(std::string_view body, bool* more) {
  MB_ASSIGN(json j, parseObject(body, "range"));
  if (more != nullptr) *more = boolField(j, "more");
  ListResult out;
  MB_ASSIGN(out.revision, headerRevision(j));
  MB_ASSIGN(out.kvs, keyValues(j));
  return out;
}

Result<int64_t> parseRevision(std::string_view body) {
  MB_ASSIGN(json j, parseObject(body, "write"));
  return headerRevision(j);
}

Result<int64_t> parseDeleted(std::string_view body) {
  MB_ASSIGN(json j, parseObject(body, "deleterange"));
  return int64Field(j, "deleted");
}

Result<TxnResult> parseTxn(std::string_view body) {
  MB_ASSIGN(json j, parseObject(body, "txn"));
  TxnResult out;
  MB_ASSIGN(out.revision, headerRevision(j));
  out.succeeded = boolField(j, "succeeded");
  const json* responses = member(j, "responses");
  if (responses == nullptr || responses->is_null()) return out;
  if (!responses->is_array()) return Error::invalid("etcd txn answer: 'responses' is not an array");
  for (const json& r : *responses) {
    const json* range = member(r, "response_range");
    if (range == nullptr) {
      out.gets.emplace_back();
      continue;
    }
    MB_ASSIGN(auto kvs, keyValues(*range));
    out.gets.push_back(kvs.empty() ? std::nullopt : std::optional<KeyValue>(std::move(kvs.front())));
  }
  return out;
}

Result<Lease> parseLeaseGrant(std::string_view body) {
  MB_ASSIGN(json j, parseObject(body, "lease grant"));
  if (std::string e = stringField(j, "error"); !e.empty()) return Error(EIO, "etcd lease grant: " + e);
  Lease l;
  MB_ASSIGN(l.id, int64Field(j, "ID"));
  MB_ASSIGN(l.ttl_seconds, int64Field(j, "TTL"));
  if (l.id == kNoLease) return Error::invalid("etcd lease grant answer has no lease ID");
  return l;
}

Result<int64_t> parseKeepAlive(std::string_view body) {
  // A stream call: {"result":{...,"ID","TTL"}}; no TTL = the lease is gone.
  MB_ASSIGN(json j, parseObject(body, "lease keepalive"));
  const json* r = member(j, "result");
  if (r == nullptr) {
    if (const json* e = member(j, "error"); e != nullptr)
      return Error(EIO, fmt::format("etcd lease keepalive: {}", e->dump()));
    return Error::invalid("etcd lease keepalive answer has no result");
  }
  MB_ASSIGN(int64_t ttl, int64Field(*r, "TTL"));
  if (ttl <= 0) return Error::notFound("etcd lease keepalive: lease expired or revoked");
  return ttl;
}

Result<std::string> parseLock(std::string_view body) {
  MB_ASSIGN(json j, parseObject(body, "lock"));
  MB_ASSIGN(std::string key, bytesField(j, "key"));
  if (key.empty()) return Error::invalid("etcd lock answer has no key");
  return key;
}

int errnoForGrpcCode(int grpc_code) {
  switch (grpc_code) {
    case 3: return EINVAL;          // InvalidArgument
    case 4: return ETIMEDOUT;       // DeadlineExceeded
    case 5: return ENOENT;          // NotFound (lease not found)
    case 6: return EEXIST;          // AlreadyExists
    case 7: return EACCES;          // PermissionDenied
    case 8: return ENOSPC;          // ResourceExhausted (quota, too many requests)
    case 11: return ERANGE;         // OutOfRange (compacted / future revision)
    case 14: return ECONNREFUSED;   // Unavailable (no leader)
    case 16: return EACCES;         // Unauthenticated
    default: return EIO;
  }
}

GatewayError parseError(std::string_view body) {
  GatewayError out;
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    out.message = std::string(body.substr(0, 200));
    return out;
  }
  out.message = stringField(j, "message");
  if (out.message.empty()) out.message = stringField(j, "error");
  auto code = int64Field(j, "code");
  out.grpc_code = code.ok() ? static_cast<int>(*code) : 0;
  out.errno_code = errnoForGrpcCode(out.grpc_code);
  // The v3lock service wraps every error as Unknown (2), "lease not found" included.
  if (out.message.find("requested lease not found") != std::string::npos) out.errno_code = ENOENT;
  return out;
}

Status JsonObjectFramer::feed(std::string_view bytes, std::vector<std::string>& out) {
  if (failed_) return Error::invalid("watch stream: framing failed earlier");
  for (char c : bytes) {
    if (depth_ == 0) {
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
      if (c != '{') {
        failed_ = true;
        return Error::invalid(fmt::format("watch stream: unexpected byte 0x{:02x} between JSON objects", uint8_t(c)));
      }
    }
    buf_.push_back(c);
    if (buf_.size() > max_) {
      failed_ = true;
      return Error::invalid(fmt::format("watch stream: JSON object larger than {} bytes", max_));
    }
    if (in_string_) {
      if (escape_) escape_ = false;
      else if (c == '\\') escape_ = true;
      else if (c == '"') in_string_ = false;
      continue;
    }
    if (c == '"') in_string_ = true;
    else if (c == '{') depth_++;
    else if (c == '}' && --depth_ == 0) {
      out.push_back(std::move(buf_));
      buf_.clear();
    }
  }
  return okStatus();
}

Result<WatchMessage> parseWatchMessage(std::string_view object) {
  MB_ASSIGN(json j, parseObject(object, "watch"));
  WatchMessage m;
  const json* r = member(j, "result");
  if (r == nullptr) {
    const json* e = member(j, "error");
    if (e == nullptr) return Error::invalid("etcd watch message has neither result nor error");
    m.kind = WatchMessage::Kind::Error;
    m.reason = e->is_object() ? stringField(*e, "message") : (e->is_string() ? e->get<std::string>() : e->dump());
    return m;
  }
  if (const json* h = member(*r, "header"); h != nullptr) {
    MB_ASSIGN(m.revision, int64Field(*h, "revision"));
  }
  MB_ASSIGN(m.compact_revision, int64Field(*r, "compact_revision"));
  if (boolField(*r, "canceled")) {
    m.kind = m.compact_revision > 0 ? WatchMessage::Kind::Compacted : WatchMessage::Kind::Canceled;
    m.reason = stringField(*r, "cancel_reason");
    return m;
  }
  if (boolField(*r, "created")) {
    m.kind = WatchMessage::Kind::Created;
    return m;
  }
  const json* events = member(*r, "events");
  if (events == nullptr || events->is_null()) return m;  // progress notification
  if (!events->is_array()) return Error::invalid("etcd watch message: 'events' is not an array");
  for (const json& e : *events) {
    Event ev;
    std::string type = stringField(e, "type");
    if (type == "DELETE") ev.type = Event::Type::Delete;
    else if (type.empty() || type == "PUT") ev.type = Event::Type::Put;
    else return Error::invalid(fmt::format("etcd watch message: unknown event type '{}'", type));
    const json* kv = member(e, "kv");
    if (kv == nullptr) return Error::invalid("etcd watch message: event without kv");
    MB_ASSIGN(ev.kv, keyValue(*kv));
    m.events.push_back(std::move(ev));
  }
  m.kind = m.events.empty() ? WatchMessage::Kind::Progress : WatchMessage::Kind::Events;
  return m;
}

}  // namespace membrane::kvstore::etcdjson
