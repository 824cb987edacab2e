// libFuzzer target for the API's request path (issue 10): bytes as a client
// would send them -> MessageParser (llhttp, limits, pipelining) -> target
// split and query decoding -> Router -> stub handlers that read the JSON body
// the way membraned's handlers do (json::parse without exceptions, typed
// field access guarded by type checks). The agent's real handlers need root
// and a datapath; the stubs cover the same body shapes (endpoint create,
// policy import, endpoint config patch, manifests). Any crash, sanitizer
// report or exception escaping a handler is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "src/api/http_message.h"
#include "src/api/http_parser.h"
#include "src/api/router.h"

namespace {

using membrane::api::MessageParser;
using membrane::api::Request;
using membrane::api::Response;
using membrane::api::Router;
using json = nlohmann::json;

Response parseObject(const Request& r, json* out) {
  *out = json::parse(r.body, nullptr, false);
  if (out->is_discarded() || !out->is_object()) return Response::error(400, "body must be a JSON object");
  return Response{};
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Router makeRouter() {
  Router r;
  r.add("GET", "/v1/healthz", [](const Request&) { return Response::json(200, {{"status", "ok"}}); });
  r.add("GET", "/v1/endpoint", [](const Request& q) {
    return Response::json(200, {{"namespace", q.queryValue("namespace")}, {"n", q.queryValues("label").size()}});
  });
  r.add("PUT", "/v1/endpoint", [](const Request& q) {
    json j;
    if (auto e = parseObject(q, &j); e.status != 200) return e;
    json labels = json::array();
    if (auto it = j.find("labels"); it != j.end() && it->is_array())
      for (const auto& l : *it)
        if (l.is_string()) labels.push_back(l);
    return Response::json(201, {{"name", str(j, "name")}, {"labels", labels}});
  });
  r.add("GET", "/v1/endpoint/{id}", [](const Request& q) { return Response::json(200, {{"id", q.param("id")}}); });
  r.add("DELETE", "/v1/endpoint/{id}", [](const Request& q) { return Response::json(200, {{"id", q.param("id")}}); });
  r.add("PATCH", "/v1/endpoint/{id}/config", [](const Request& q) {
    json j;
    if (auto e = parseObject(q, &j); e.status != 200) return e;
    json out = json::object();
    for (const auto& [k, v] : j.items())
      if (v.is_boolean() || v.is_string()) out[k] = v;
    return Response::json(200, out);
  });
  r.add("PUT", "/v1/policy", [](const Request& q) {
    json j;
    if (auto e = parseObject(q, &j); e.status != 200) return e;
    std::string content = str(j, "content");
    return Response::json(200, {{"source", str(j, "source")}, {"bytes", content.size()}});
  });
  r.add("PUT", "/v1/apply", [](const Request& q) {
    json j;
    if (auto e = parseObject(q, &j); e.status != 200) return e;
    size_t n = 0;
    if (auto it = j.find("files"); it != j.end() && it->is_array())
      for (const auto& f : *it)
        if (f.is_object() && f.contains("content") && f["content"].is_string()) ++n;
    return Response::json(200, {{"files", n}});
  });
  r.add("GET", "/v1/policy/wait", [](const Request& q) {
    return Response::json(200, {{"revision", q.queryValue("revision")}, {"timeout", q.queryValue("timeout")}});
  });
  r.add("PUT", "/v1/namespace/{name}", [](const Request& q) {
    json j;
    if (auto e = parseObject(q, &j); e.status != 200) return e;
    return Response::json(200, {{"name", q.param("name")}});
  });
  r.add("DELETE", "/v1/pods/{namespace}/{name}", [](const Request& q) {
    return Response::json(200, {{"ns", q.param("namespace")}, {"name", q.param("name")}});
  });
  return r;
}

const Router& router() {
  static const Router r = makeRouter();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Small limits so the 413/431 paths are reachable by mutation.
  MessageParser p(MessageParser::Type::Request, {2048, 4096});
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (int msgs = 0; msgs < 16; ++msgs) {
    size_t used = p.feed(in);
    in.remove_prefix(used);
    if (p.state() == MessageParser::State::Incomplete) {
      if (!in.empty()) continue;
      if (p.finish() != MessageParser::State::Complete) break;
    }
    if (p.state() == MessageParser::State::Error) {
      (void)Response::error(p.errorStatus(), p.errorMessage());
      break;
    }
    // As HttpServer's loop builds a request.
    Request req;
    req.method = p.method;
    req.target = p.url;
    req.headers = p.headers;
    req.body = p.body;
    std::string_view target = req.target;
    if (auto hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
    size_t q = target.find('?');
    req.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) req.query = membrane::api::parseQuery(target.substr(q + 1));
    bool keep_alive = p.keepAlive();
    p.next();
    if (req.path.empty() || req.path.front() != '/') break;
    auto m = router().match(req.method, req.path);
    if (m.kind == Router::Match::Kind::Found) {
      req.params = std::move(m.params);
      Response r = m.route->handler(req);  // no exception may escape
      (void)r.body.size();
    }
    if (!keep_alive || in.empty()) break;
  }
  return 0;
}
