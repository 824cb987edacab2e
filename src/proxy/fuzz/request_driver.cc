#include "src/proxy/fuzz/request_driver.h"

#include <arpa/inet.h>

#include <algorithm>
#include <memory>

#include "src/proxy/config.h"
#include "src/proxy/message_parser.h"

namespace membrane::proxy {

namespace {

const ProxyConfig& fuzzConfig() {
  static const std::shared_ptr<const ProxyConfig> cfg = [] {
    auto r = ProxyConfig::parse(R"({"revision":1,
      "endpoints":[{"ip":"10.200.0.2","ingress":[{"port":80,"rules":[
        {"method":"POST","path":"/v1/request-landing","policy":"default/rule1","allowed_identities":[256]},
        {"method":"GET","path":"/v1/.*","host":"deathstar(\\..*)?","headers":["X-Has-Force"],
         "header_matches":[{"name":"X-Token","value":"t","mismatch":"LOG"}]}]}]}],
      "identities":{"10.200.0.3":256}})");
    MB_CHECK(r.ok());
    return std::move(r).value();
  }();
  return *cfg;
}

}  // namespace

size_t driveRequestStream(const uint8_t* data, size_t size) {
  ParserLimits limits;
  limits.max_header_bytes = 2048;  // small, so the fuzzer reaches the limits
  limits.max_headers = 16;
  MessageParser req(MessageParser::Kind::Request, limits);
  MessageParser resp(MessageParser::Kind::Response, limits);
  const ProxyConfig& cfg = fuzzConfig();
  in_addr_t pod = inet_addr("10.200.0.2");
  const PortPolicy* pp = cfg.find(pod, Direction::Ingress, 80);
  MB_CHECK(pp != nullptr);

  size_t verdicts = 0;
  size_t pos = 0;
  size_t step_seed = size ? data[0] : 1;
  bool in_body = false;
  int guard = 0;
  while (pos <= size && guard++ < 100000) {
    size_t piece = std::min<size_t>(size - pos, 1 + (step_seed + pos) % 97);
    auto st = req.execute(reinterpret_cast<const char*>(data) + pos, piece);
    MB_CHECK(st.consumed <= piece);
    pos += st.consumed;
    if (st.event == MessageParser::Event::HeadersComplete) {
      MB_CHECK(!in_body);
      in_body = true;
      RequestView v{req.method(), req.url(), req.host(), req.headers(), req.headerCount()};
      MB_CHECK(v.header_count <= limits.max_headers);
      (void)ProxyConfig::evaluate(pp, 256, v);
      (void)ProxyConfig::evaluate(pp, 2, v);
      ++verdicts;
      continue;
    }
    if (st.event == MessageParser::Event::MessageComplete) {
      MB_CHECK(in_body);
      in_body = false;
      continue;
    }
    if (st.event == MessageParser::Event::Upgrade || st.event == MessageParser::Event::Error) {
      if (st.event == MessageParser::Event::Error)
        MB_CHECK(req.errorStatus() == 400 || req.errorStatus() == 431);
      break;
    }
    if (pos == size) break;  // NeedMore with everything consumed
  }
  // The same bytes as an upstream's answer stream.
  pos = 0;
  guard = 0;
  while (pos < size && guard++ < 100000) {
    auto st = resp.execute(reinterpret_cast<const char*>(data) + pos, size - pos);
    MB_CHECK(st.consumed <= size - pos);
    pos += st.consumed;
    if (st.event != MessageParser::Event::MessageComplete) break;
  }
  (void)resp.finish();
  return verdicts;
}

}  // namespace membrane::proxy
