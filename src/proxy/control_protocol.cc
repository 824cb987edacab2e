#include "src/proxy/control_protocol.h"

#include <string_view>

#include <fmt/format.h>

namespace membrane::proxy {
namespace {

using nlohmann::json;

// Reads fields of one reply; the first problem wins and names the field's
// full path (e.g. "connections.accepted", "upstream_reply_seconds[1].buckets[0].le").
class Reader {
 public:
  explicit Reader(std::string_view what) : what_(what) {}

  const json* at(const json& obj, const std::string& path, const char* key, json::value_t type, const char* tname) {
    const std::string where = path.empty() ? key : path + "." + key;
    if (!status_.ok()) return nullptr;
    if (!obj.is_object()) return fail(path.empty() ? "(the reply)" : path, "is " + std::string(obj.type_name()), "object");
    auto it = obj.find(key);
    if (it == obj.end()) return fail(where, "is missing", nullptr);
    const bool ok = type == json::value_t::number_float ? it->is_number()
                    : type == json::value_t::number_unsigned ? it->is_number_unsigned()
                                                              : it->type() == type;
    if (!ok) return fail(where, "is " + std::string(it->type_name()), tname);
    return &*it;
  }
  void get(const json& obj, const std::string& path, const char* key, uint64_t& out) {
    if (auto* v = at(obj, path, key, json::value_t::number_unsigned, "an unsigned integer")) out = v->get<uint64_t>();
  }
  void get(const json& obj, const std::string& path, const char* key, double& out) {
    if (auto* v = at(obj, path, key, json::value_t::number_float, "a number")) out = v->get<double>();
  }
  void get(const json& obj, const std::string& path, const char* key, std::string& out) {
    if (auto* v = at(obj, path, key, json::value_t::string, "a string")) out = v->get<std::string>();
  }
  const json* object(const json& obj, const std::string& path, const char* key) {
    return at(obj, path, key, json::value_t::object, "an object");
  }
  const json* array(const json& obj, const std::string& path, const char* key) {
    return at(obj, path, key, json::value_t::array, "an array");
  }
  template <class T>
  Result<T> result(T value) const {
    if (!status_.ok()) return status_.error();
    return value;
  }

 private:
  const json* fail(const std::string& where, const std::string& is, const char* expected) {
    status_ = Error::invalid(fmt::format("membrane-proxy {} reply: field {} {}{}{} (are membraned and membrane-proxy "
                                         "from the same build? restart membrane-proxy after an upgrade)",
                                         what_, where, is, expected ? ", expected " : "", expected ? expected : ""));
    return nullptr;
  }
  std::string_view what_;
  Status status_ = okStatus();
};

}  // namespace

json toJson(const StatsReply& s) {
  json series = json::array();
  for (const auto& h : s.upstream_reply_seconds) {
    json buckets = json::array();
    for (const auto& [le, count] : h.buckets) buckets.push_back({{"le", le}, {"count", count}});
    series.push_back({{"error", h.error},
                      {"protocol_l7", h.protocol_l7},
                      {"scope", h.scope},
                      {"buckets", buckets},
                      {"count", h.count},
                      {"sum", h.sum}});
  }
  return json{{"received", s.received},
              {"forwarded", s.forwarded},
              {"denied", s.denied},
              {"parse_errors", s.parse_errors},
              {"redirects", {{"http", s.redirects_http}}},
              {"upstream_reply_seconds", series},
              {"connections",
               {{"accepted", s.connections_accepted},
                {"active", s.connections_active},
                {"rejected", s.connections_rejected}}},
              {"timeouts", {{"header", s.timeouts_header}, {"idle", s.timeouts_idle}}},
              {"upstream_connect_errors", s.upstream_connect_errors},
              {"config", {{"revision", s.config_revision}, {"loads", s.config_loads}, {"errors", s.config_errors}}},
              {"buffers", {{"in_use", s.buffers_in_use}, {"peak", s.buffers_peak}}}};
}

Result<StatsReply> statsFromJson(const json& j) {
  Reader r("/v1/stats");
  StatsReply s;
  r.get(j, "", "received", s.received);
  r.get(j, "", "forwarded", s.forwarded);
  r.get(j, "", "denied", s.denied);
  r.get(j, "", "parse_errors", s.parse_errors);
  if (auto* o = r.object(j, "", "redirects")) r.get(*o, "redirects", "http", s.redirects_http);
  if (auto* a = r.array(j, "", "upstream_reply_seconds")) {
    for (size_t i = 0; i < a->size(); ++i) {
      const std::string path = fmt::format("upstream_reply_seconds[{}]", i);
      LatencySeries h;
      r.get((*a)[i], path, "error", h.error);
      r.get((*a)[i], path, "protocol_l7", h.protocol_l7);
      r.get((*a)[i], path, "scope", h.scope);
      r.get((*a)[i], path, "count", h.count);
      r.get((*a)[i], path, "sum", h.sum);
      if (auto* b = r.array((*a)[i], path, "buckets")) {
        for (size_t k = 0; k < b->size(); ++k) {
          const std::string bpath = fmt::format("{}.buckets[{}]", path, k);
          double le = 0;
          uint64_t count = 0;
          r.get((*b)[k], bpath, "le", le);
          r.get((*b)[k], bpath, "count", count);
          h.buckets.emplace_back(le, count);
        }
      }
      s.upstream_reply_seconds.push_back(std::move(h));
    }
  }
  if (auto* o = r.object(j, "", "connections")) {
    r.get(*o, "connections", "accepted", s.connections_accepted);
    r.get(*o, "connections", "active", s.connections_active);
    r.get(*o, "connections", "rejected", s.connections_rejected);
  }
  if (auto* o = r.object(j, "", "timeouts")) {
    r.get(*o, "timeouts", "header", s.timeouts_header);
    r.get(*o, "timeouts", "idle", s.timeouts_idle);
  }
  r.get(j, "", "upstream_connect_errors", s.upstream_connect_errors);
  if (auto* o = r.object(j, "", "config")) {
    r.get(*o, "config", "revision", s.config_revision);
    r.get(*o, "config", "loads", s.config_loads);
    r.get(*o, "config", "errors", s.config_errors);
  }
  if (auto* o = r.object(j, "", "buffers")) {
    r.get(*o, "buffers", "in_use", s.buffers_in_use);
    r.get(*o, "buffers", "peak", s.buffers_peak);
  }
  return r.result(std::move(s));
}

json toJson(const ConfigReply& c) { return {{"revision", c.revision}}; }

Result<ConfigReply> configReplyFromJson(const json& j) {
  Reader r("PUT /v1/config");
  ConfigReply c;
  r.get(j, "", "revision", c.revision);
  return r.result(c);
}

json toJson(const ErrorReply& e) { return {{"error", e.error}}; }

Result<ErrorReply> errorReplyFromJson(const json& j) {
  Reader r("error");
  ErrorReply e;
  r.get(j, "", "error", e.error);
  return r.result(std::move(e));
}

json toJson(const HealthReply& h) { return {{"status", h.status}, {"revision", h.revision}}; }

Result<HealthReply> healthReplyFromJson(const json& j) {
  Reader r("/v1/healthz");
  HealthReply h;
  r.get(j, "", "status", h.status);
  r.get(j, "", "revision", h.revision);
  return r.result(std::move(h));
}

}  // namespace membrane::proxy
