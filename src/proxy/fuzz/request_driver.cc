#include "src/proxy/fuzz/request_driver.h"

#include <arpa/inet.h>
#include <re2/re2.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/http_field.h"
#include "src/proxy/access_log.h"
#include "src/proxy/config.h"
#include "src/proxy/fuzz/reference_framer.h"
#include "src/proxy/message_parser.h"
#include "src/proxy/proxy.h"
#include "src/proxy/stats.h"

namespace membrane::proxy {

namespace {

using nlohmann::json;

constexpr std::string_view kSeparator = "\n%%\n";
constexpr std::string_view kTime = "2026-12-04T16:00:00.000000Z";
constexpr size_t kMaxPipelined = 4;  // small, so the fuzzer fills the ring

// MEMBRANE_FUZZ_TRACE=1: print the config verdict and every access-log line
// to stderr (for reading what a corpus file or a crash input does).
bool tracing() {
  static const bool on = std::getenv("MEMBRANE_FUZZ_TRACE") != nullptr;
  return on;
}

// --- input ------------------------------------------------------------------

struct Sections {
  bool has_config = false;
  std::string_view config, client, upstream;
};

Sections split(std::string_view in) {
  Sections s;
  size_t a = in.find(kSeparator);
  if (a == std::string_view::npos) {  // the first corpus format: one stream, both ways
    s.client = s.upstream = in;
    return s;
  }
  s.has_config = true;
  s.config = in.substr(0, a);
  std::string_view rest = in.substr(a + kSeparator.size());
  size_t b = rest.find(kSeparator);
  if (b == std::string_view::npos) {
    s.client = rest;
    return s;
  }
  s.client = rest.substr(0, b);
  s.upstream = rest.substr(b + kSeparator.size());
  return s;
}

std::vector<std::string_view> words(std::string_view s, size_t max) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < max) {
    size_t sp = s.find(' ');
    if (sp == std::string_view::npos) break;
    out.push_back(s.substr(0, sp));
    s.remove_prefix(sp + 1);
  }
  out.push_back(s);
  return out;
}

struct Connection {
  Direction dir = Direction::Ingress;
  sockaddr_in client{}, odst{};
  std::optional<size_t> seed;  // sizes of the pieces the bytes arrive in
};

sockaddr_in address(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

Connection defaultConnection() {
  Connection c;
  c.client = address("10.200.0.3", 40000);
  c.odst = address("10.200.0.2", 80);
  return c;
}

uint32_t number(std::string_view t) {
  uint32_t v = 0;
  for (char ch : t) {
    if (ch < '0' || ch > '9') break;
    v = (v * 10 + static_cast<uint32_t>(ch - '0')) % 65536;
  }
  return v;
}

// "@ <in|out> <client-ip> <dst-ip> <dst-port> [<seed>]"; what does not parse
// keeps its default.
Connection parseConnection(std::string_view line) {
  Connection c = defaultConnection();
  auto w = words(line, 7);
  if (w.size() > 1 && (w[1] == "out" || w[1] == "egress")) c.dir = Direction::Egress;
  auto ip = [](std::string_view t, sockaddr_in& a) {
    std::string s(t);
    in_addr v{};
    if (inet_pton(AF_INET, s.c_str(), &v) == 1) a.sin_addr = v;
  };
  if (w.size() > 2) ip(w[2], c.client);
  if (w.size() > 3) ip(w[3], c.odst);
  if (w.size() > 4) c.odst.sin_port = htons(static_cast<uint16_t>(number(w[4])));
  if (w.size() > 5) c.seed = number(w[5]);
  return c;
}

// A JSON value when 't' is JSON (numbers, null, arrays...), else the string:
// lets the rule language put wrong types and out-of-range numbers in front of
// the validator.
json scalar(std::string_view t) {
  // Bounded nesting: dump() recurses, and deep values test nothing of the proxy.
  if (std::count(t.begin(), t.end(), '[') + std::count(t.begin(), t.end(), '{') > 8) return json(std::string(t));
  json v = json::parse(t.begin(), t.end(), nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded()) return json(std::string(t));
  return v;
}

// On the value as the config will read it: the JSON text is dumped and
// parsed again, and a non-negative signed integer ("-0" parses as one) comes
// back unsigned.
bool isIdentity(const json& v, uint64_t max = UINT32_MAX) {
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= max;
  return v.is_number_integer() && v.get<int64_t>() >= 0 && static_cast<uint64_t>(v.get<int64_t>()) <= max;
}

bool isPort(const json& v, bool zero_ok) {
  if (!v.is_number_integer()) return false;  // unsigned included
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= 65535 && (zero_ok || v.get<uint64_t>() > 0);
  return v.get<int64_t>() >= (zero_ok ? 0 : 1) && v.get<int64_t>() <= 65535;
}

// The rule language, one command per line ("\r" at the end ignored, unknown
// lines skipped); <rest> is the rest of the line verbatim:
//   V <json>                 revision
//   L <port> [<direction>]   listener
//   E <ip>                   endpoint (later ports attach to it)
//   I|O <port> [<proto>]     ingress/egress port entry (later rules attach to it)
//   R [<policy>]             rule
//   m|p|h <rest>             method/path/host regex (may be invalid)
//   H <rest>                 headers entry ("Name" or "Name: value")
//   M <name> [<value> [<mismatch>]]  header_matches entry
//   A <json>                 allowed identity
//   N <ip> <json>            identities entry
//   X <cidr> <json>          prefixes entry
// A rule or port command without an endpoint/port opens a default one
// (10.200.0.2, ingress 80). <json> is a JSON value, or a string if it is not one.
// Sets *must_reject when a port or identity is out of the documented range
// (ports 1..65535, listeners 0..65535, allowed identities 32-bit unsigned,
// identities/prefixes entries 0..MB_MARK_IDENTITY_MAX).
std::string buildConfigJson(std::string_view text, bool* must_reject) {
  json doc = json::object();
  json eps = json::array();
  std::optional<size_t> ep, port, rule;
  std::string side = "ingress";
  auto endpoint = [&]() -> json& {
    if (!ep) {
      eps.push_back({{"ip", "10.200.0.2"}});
      ep = eps.size() - 1;
      port.reset();
      rule.reset();
    }
    return eps[*ep];
  };
  auto addPort = [&](const std::string& dir, json number) {
    json& e = endpoint();
    e[dir].push_back({{"port", std::move(number)}});
    side = dir;
    port = e[dir].size() - 1;
    rule.reset();
  };
  auto portEntry = [&]() -> json& {
    if (!port) addPort("ingress", 80);
    return endpoint()[side][*port];
  };
  auto ruleEntry = [&]() -> json& {
    if (!rule) {
      json& p = portEntry();
      p["rules"].push_back(json::object());
      rule = p["rules"].size() - 1;
    }
    return portEntry()["rules"][*rule];
  };
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() < 2 || line[1] != ' ') {
      if (line == "R") {
        rule.reset();
        ruleEntry();
      }
      continue;
    }
    const char cmd = line[0];
    const std::string_view rest = line.substr(2);
    auto w = words(rest, 3);
    switch (cmd) {
      case 'V': doc["revision"] = scalar(rest); break;
      case 'L': {
        json l = {{"port", scalar(w[0])}};
        if (!isPort(l["port"], true)) *must_reject = true;
        if (w.size() > 1) l["direction"] = std::string(w[1]);
        doc["listeners"].push_back(std::move(l));
        break;
      }
      case 'E':
        eps.push_back({{"ip", scalar(rest)}});
        ep = eps.size() - 1;
        port.reset();
        rule.reset();
        break;
      case 'I':
      case 'O':
        addPort(cmd == 'I' ? "ingress" : "egress", scalar(w[0]));
        if (!isPort(scalar(w[0]), false)) *must_reject = true;
        if (w.size() > 1) portEntry()["proto"] = std::string(w[1]);
        break;
      case 'R':
        if (rule) rule.reset();
        ruleEntry()["policy"] = scalar(rest);
        break;
      case 'm': ruleEntry()["method"] = std::string(rest); break;
      case 'p': ruleEntry()["path"] = std::string(rest); break;
      case 'h': ruleEntry()["host"] = std::string(rest); break;
      case 'H': ruleEntry()["headers"].push_back(std::string(rest)); break;
      case 'M': {
        json m = {{"name", std::string(w[0])}};
        if (w.size() > 1) m["value"] = std::string(w[1]);
        if (w.size() > 2) m["mismatch"] = std::string(w[2]);
        ruleEntry()["header_matches"].push_back(std::move(m));
        break;
      }
      case 'A':
        ruleEntry()["allowed_identities"].push_back(scalar(rest));
        if (!isIdentity(scalar(rest))) *must_reject = true;
        break;
      case 'N':
        if (w.size() > 1 && !doc["identities"].contains(std::string(w[0]))) {  // the first one counts
          json id = scalar(rest.substr(w[0].size() + 1));
          if (!isIdentity(id, MB_MARK_IDENTITY_MAX)) *must_reject = true;  // peers' identities go into marks
          doc["identities"][std::string(w[0])] = std::move(id);
        }
        break;
      case 'X':
        if (w.size() > 1) {
          json id = scalar(rest.substr(w[0].size() + 1));
          if (!isIdentity(id, MB_MARK_IDENTITY_MAX)) *must_reject = true;
          doc["prefixes"].push_back({{"cidr", scalar(w[0])}, {"identity", std::move(id)}});
        }
        break;
      default: break;
    }
  }
  if (!eps.empty()) doc["endpoints"] = std::move(eps);
  // Invalid UTF-8 from the input becomes U+FFFD (JSON text must be UTF-8).
  return doc.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The Star Wars rules: the first corpus format and configs that do not parse.
std::shared_ptr<const ProxyConfig> fallbackConfig() {
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
  return cfg;
}

// What ProxyConfig::parse promises of a config it accepts.
void checkConfig(const ProxyConfig& cfg, std::string_view text) {
  MB_CHECK(cfg.source() == text);
  const auto& ls = cfg.listeners();
  for (size_t i = 0; i < ls.size(); ++i)
    for (size_t k = i + 1; k < ls.size(); ++k) MB_CHECK(ls[i].port == 0 || ls[i].port != ls[k].port);
}

// --- oracles ----------------------------------------------------------------

bool validUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : 4;
    if (n == 4 || i + n >= s.size() + (n ? 0 : 1)) return false;
    uint32_t cp = n == 0 ? c : n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool sameName(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// The plain reading: build the comma-joined value of every field with that
// name (config.h), then compare.
bool hasHeader(const RequestView& req, std::string_view name, const std::string* value) {
  bool found = false;
  std::string joined;
  for (size_t i = 0; i < req.header_count; ++i) {
    if (!sameName(req.headers[i].name, name)) continue;
    if (found) joined += ',';
    joined += trimOws(req.headers[i].value);
    found = true;
  }
  return found && (!value || joined == *value);
}

// config.h's matching contract, written out plainly (linear identity search,
// every rule in order): the first accepting rule decides and names the
// policy; when the port has editing header_matches, every accepting rule
// adds its edits, in rule order.
Verdict referenceEvaluate(const PortPolicy* pp, uint32_t peer, const RequestView& req) {
  Verdict v;
  if (!pp) return v;
  auto full = [](const std::unique_ptr<re2::RE2>& re, std::string_view s) {
    return !re || re2::RE2::FullMatch(re2::StringPiece(s.data(), s.size()), *re);
  };
  bool port_edits = false;
  for (const CompiledRule& r : pp->rules)
    for (const HeaderMatch& m : r.header_matches)
      port_edits = port_edits || m.mismatch == Mismatch::Add || m.mismatch == Mismatch::Delete ||
                   m.mismatch == Mismatch::Replace;
  for (const CompiledRule& r : pp->rules) {
    const auto& ids = r.allowed_identities;
    if (!ids.empty() && std::find(ids.begin(), ids.end(), peer) == ids.end()) continue;
    if (!full(r.method, req.method) || !full(r.path, req.url) || !full(r.host, req.host)) continue;
    bool ok = true;
    for (size_t i = 0; ok && i < r.headers.size(); ++i)
      ok = hasHeader(req, r.headers[i].name, r.header_has_value[i] ? &r.headers[i].value : nullptr);
    bool flagged = false;
    std::vector<const HeaderMatch*> edits;
    for (size_t i = 0; ok && i < r.header_matches.size(); ++i) {
      const HeaderMatch& m = r.header_matches[i];
      if (hasHeader(req, m.name, m.value.empty() ? nullptr : &m.value)) continue;
      switch (m.mismatch) {
        case Mismatch::Deny: ok = false; break;
        case Mismatch::Log: flagged = true; break;
        case Mismatch::Delete:
          if (!m.value.empty() && hasHeader(req, m.name, nullptr)) {
            flagged = true;
            edits.push_back(&m);
          }
          break;
        case Mismatch::Add:
        case Mismatch::Replace:
          flagged = true;
          edits.push_back(&m);
          break;
      }
    }
    if (!ok) continue;
    if (!v.allowed) v.policy = r.policy;
    v.allowed = true;
    v.header_mismatch_logged = v.header_mismatch_logged || flagged;
    v.edits.insert(v.edits.end(), edits.begin(), edits.end());
    if (!port_edits) return v;
  }
  return v;
}

bool sameVerdict(const Verdict& a, const Verdict& b) {
  return a.allowed == b.allowed && a.header_mismatch_logged == b.header_mismatch_logged &&
         a.policy.data() == b.policy.data() && a.policy.size() == b.policy.size() && a.edits == b.edits;
}

// The forwarded head carries, for every name an edit touches, exactly the
// fields the edits leave: the client's count, then DELETE -> 0, REPLACE -> 1
// (the edit's value), ADD -> +1, in order. Counted from the serialised head
// by a plain line split, independently of serializeHead's own loops.
void checkEdits(const RequestView& req, const std::vector<const HeaderMatch*>& edits, const std::string& head) {
  for (const HeaderMatch* e : edits) {
    size_t want = 0;
    for (size_t i = 0; i < req.header_count; ++i) want += sameName(req.headers[i].name, e->name);
    for (const HeaderMatch* x : edits) {
      if (!sameName(x->name, e->name)) continue;
      if (x->mismatch == Mismatch::Delete) want = 0;
      else if (x->mismatch == Mismatch::Replace) want = 1;
      else ++want;
    }
    size_t got = 0;
    size_t pos = head.find("\r\n") + 2;  // past the request line
    while (pos < head.size()) {
      size_t eol = head.find("\r\n", pos);
      MB_CHECK(eol != std::string::npos);
      std::string_view line(head.data() + pos, eol - pos);
      size_t colon = line.find(':');
      if (colon != std::string_view::npos && sameName(line.substr(0, colon), e->name)) ++got;
      pos = eol + 2;
    }
    MB_CHECK(got == want);
    MB_CHECK(!http::isFramingField(e->name));
  }
}

std::string ipText(const sockaddr_in& a) {
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a.sin_addr, buf, sizeof(buf));
  return buf;
}

// The record formatAccessRecord() promises: one line of JSON, valid UTF-8, no
// raw control byte, exactly the documented fields with the given values
// (strings exact when they were valid UTF-8).
void checkAccessLine(const AccessRecord& r, const std::string& line) {
  MB_CHECK(!line.empty());
  for (char ch : line) MB_CHECK(static_cast<unsigned char>(ch) >= 0x20);
  MB_CHECK(validUtf8(line));
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  MB_CHECK(!j.is_discarded() && j.is_object());
  size_t keys = 11 + (r.response ? 2 + !r.error.empty() : 0) + r.header_mismatch;
  MB_CHECK(j.size() == keys);
  auto str = [&](const char* k, std::string_view want) {
    MB_CHECK(j.contains(k) && j[k].is_string());
    const std::string& got = j[k].get_ref<const std::string&>();
    if (validUtf8(want)) MB_CHECK(got == want);
    else MB_CHECK(got.find("\xEF\xBF\xBD") != std::string::npos);
  };
  str("type", "l7");
  str("l7_type", r.response ? "response" : "request");
  str("time", r.time);
  str("direction", r.direction);
  str("verdict", r.verdict);
  str("method", r.method);
  str("url", r.url);
  str("protocol", "HTTP/1.1");
  str("policy", r.policy);
  for (const char* side : {"src", "dst"}) {
    const sockaddr_in& a = side[0] == 's' ? r.src : r.dst;
    const json& o = j[side];
    MB_CHECK(o.is_object() && o.size() == 3);
    MB_CHECK(o.contains("ip") && o["ip"] == ipText(a));
    MB_CHECK(o.contains("port") && o["port"] == ntohs(a.sin_port));
    MB_CHECK(o.contains("identity") && o["identity"] == (side[0] == 's' ? r.src_identity : r.dst_identity));
  }
  if (r.response) {
    MB_CHECK(j.contains("status") && j["status"] == r.status);
    MB_CHECK(j.contains("latency_us") && j["latency_us"] == r.latency_us);
    if (!r.error.empty()) str("error", r.error);
  }
  if (r.header_mismatch) MB_CHECK(j.contains("header_mismatch") && j["header_mismatch"] == true);
}

// --- one connection ---------------------------------------------------------

// Pending (connection.h), as the access log needs it.
struct Entry {
  bool forward = false;
  int status = 0;
  UpstreamError error = UpstreamError::None;
  bool close_after = false, is_head = false, is_connect = false, upgrade = false;
  bool response_started = false, header_mismatch = false;
  std::string_view method, policy;
  std::string url;
  uint32_t src_id = 0, dst_id = 0;
  int64_t start_us = 0;
};

enum class ReqState { Headers, Body, AwaitUpgrade, Tunnel, Done };

// Proxy::Impl's work for one connection (processRequests, processResponses,
// failUpstream, the client-EOF rule of drive(), onRequestHeaders), minus the
// sockets and buffers: the client's bytes arrive in input-sized pieces, the
// upstream answers with the upstream bytes once it has been started, and ends
// (EOF) when they run out and nothing else can move.
class ConnectionModel {
 public:
  ConnectionModel(const ProxyConfig& cfg, Connection conn, std::string_view client, std::string_view upstream,
                  size_t seed)
      : cfg_(cfg), conn_(conn), client_(client), upstream_(upstream), seed_(seed),
        req_(MessageParser::Kind::Request, limits()), resp_(MessageParser::Kind::Response, limits()) {}

  void run() {
    // How far the client gets ahead of the upstream: request steps per
    // response step (a full pipeline ring needs several).
    const size_t burst = 1 + (seed_ >> 3) % 16;
    for (int guard = 0; guard < 200000 && !dead_; ++guard) {
      bool p = false;
      for (size_t i = 0; i < burst && !dead_; ++i) p |= processRequests();
      if (!dead_) p |= processResponses();
      if (!dead_ && c_eof_) onClientEof();  // drive() applies it after every round
      if (dead_) break;
      if (p) continue;
      if (!c_eof_ && cpos_ == client_.size()) {  // the client closes once it has sent everything
        c_eof_ = true;
        onClientEof();
        continue;
      }
      if (upstream_open_ && !u_eof_ && upos_ == upstream_.size()) {
        u_eof_ = true;
        continue;
      }
      break;
    }
    // No hang: once both sides have closed, every request has its answer and
    // the connection is on its way out.
    if (!dead_ && c_eof_ && (!upstream_open_ || u_eof_)) MB_CHECK(pending_.empty() && closing_);
    checkTotals();
    checkForwarded();
  }

  size_t verdicts() const { return verdicts_; }

 private:
  static ParserLimits limits() {
    ParserLimits l;
    l.max_header_bytes = 2048;  // small, so the fuzzer reaches the limits
    l.max_headers = 16;
    return l;
  }

  size_t piece(std::string_view s, size_t pos) const { return std::min<size_t>(s.size() - pos, 1 + (seed_ + pos) % 97); }
  void tick(size_t n) { now_us_ += static_cast<int64_t>(1 + n) << ((seed_ + steps_++) % 24); }

  bool processRequests() {
    switch (rs_) {
      case ReqState::Headers: {
        if (closing_ || pending_.size() == kMaxPipelined || cpos_ == client_.size()) return false;
        size_t n = piece(client_, cpos_);
        bool was_in = req_.inMessage();
        auto st = req_.execute(client_.data() + cpos_, n);
        MB_CHECK(st.consumed <= n);
        cpos_ += st.consumed;
        tick(st.consumed);
        if (!was_in && req_.inMessage()) msg_start_us_ = now_us_;
        switch (st.event) {
          case MessageParser::Event::NeedMore:
            MB_CHECK(st.consumed == n);
            return st.consumed > 0;
          case MessageParser::Event::HeadersComplete:
            MB_CHECK(req_.inHeaders() == false && req_.inMessage());
            onRequestHeaders();
            return true;
          case MessageParser::Event::Error:
            MB_CHECK(req_.errorStatus() == 400 || req_.errorStatus() == 431);
            MB_CHECK(!req_.errorReason().empty());
            parseError(req_.errorStatus());
            return true;
          default:
            // Upgrade/MessageComplete stop only after HeadersComplete paused the parser.
            MB_CHECK(false);
        }
        return true;
      }
      case ReqState::Body: {
        size_t n = cpos_ < client_.size() ? piece(client_, cpos_) : 0;
        auto st = req_.execute(client_.data() + cpos_, n);
        MB_CHECK(st.consumed <= n);
        if (cur_forward_ && !fwd_raw_ && st.consumed) {  // what Proxy::Impl appends to uout
          fwd_.append(client_.data() + cpos_, st.consumed);
          fwds_.back().body_raw += st.consumed;
        }
        cpos_ += st.consumed;
        tick(st.consumed);
        switch (st.event) {
          case MessageParser::Event::NeedMore: return st.consumed > 0;
          case MessageParser::Event::MessageComplete:
            MB_CHECK(!req_.inMessage());
            if (cur_forward_ && !fwd_raw_) fwds_.back().complete = true;
            rs_ = ReqState::Headers;
            if (!req_.keepAlive()) {
              closing_ = true;
              rs_ = ReqState::Done;
            }
            return true;
          case MessageParser::Event::Upgrade:
            if (cur_forward_) {
              // Raw bytes may follow upstream: the differential check ends here.
              if (!fwd_raw_) fwds_.back().complete = true;
              fwd_raw_ = true;
              rs_ = ReqState::AwaitUpgrade;
            } else {
              req_.reset();
              rs_ = ReqState::Headers;
            }
            return true;
          case MessageParser::Event::Error:
            stats_.parse_errors.fetch_add(1);
            if (!pending_.empty() && pending_.back().forward && !pending_.back().response_started) {
              for (size_t i = 0; i + 1 < pending_.size(); ++i) {
                if (pending_[i].forward) {
                  dead_ = true;  // destroy(): earlier answers were due from this upstream
                  return true;
                }
              }
              closeUpstream();  // abortUpstream(): the request becomes a local 400
              Entry& e = pending_.back();
              e.forward = false;
              e.status = 400;
              e.close_after = true;
            }
            closing_ = true;
            rs_ = ReqState::Done;
            return true;
          case MessageParser::Event::HeadersComplete: MB_CHECK(false);
        }
        return true;
      }
      case ReqState::Tunnel:
        if (cpos_ == client_.size() || !upstream_open_) return false;
        cpos_ = client_.size();  // raw bytes to the upstream
        return true;
      case ReqState::AwaitUpgrade:
      case ReqState::Done: return false;
    }
    return false;
  }

  void onRequestHeaders() {
    RequestView view{req_.method(), req_.target(), req_.host(), req_.headers(), req_.headerCount()};
    MB_CHECK(view.header_count <= limits().max_headers);
    RequestDecision d = decideRequest(cfg_, conn_.dir, conn_.client, conn_.odst, view);
    checkDecision(d, view);
    const Verdict& v = d.verdict;

    Entry& e = pending_.emplace_back();
    ++pushed_;
    e.forward = v.allowed;
    e.status = v.allowed ? 0 : 403;
    e.is_head = req_.isHead();
    e.is_connect = req_.isConnect();
    e.upgrade = req_.upgrade() || req_.isConnect();
    e.header_mismatch = v.header_mismatch_logged;
    e.method = req_.method();
    buildAccessUrl(e.url, req_.host(), conn_.odst, req_.target());
    e.policy = v.policy;
    e.src_id = d.src_id;
    e.dst_id = d.dst_id;
    e.start_us = msg_start_us_;
    e.close_after = !v.allowed && (!req_.keepAlive() || (req_.expectContinue() && req_.hasBody()));
    stats_.received.fetch_add(1);
    (v.allowed ? stats_.forwarded : stats_.denied).fetch_add(1);
    ++verdicts_;
    cur_forward_ = v.allowed;
    if (v.allowed && !fwd_raw_) {  // the head Proxy::Impl sends upstream
      Fwd& f = fwds_.emplace_back();
      req_.serializeHead(&f.head, v.edits);
      checkEdits(view, v.edits, f.head);
      fwd_ += f.head;
    }
    log(e, /*response=*/false, 0);
    if (e.close_after) {
      closing_ = true;
      rs_ = ReqState::Done;
      return;
    }
    rs_ = ReqState::Body;
    if (v.allowed && !upstream_open_) {
      upstream_open_ = true;
      u_eof_ = false;
      resp_.reset();
    }
  }

  // The decision is deterministic, denies by default, and an allow names a
  // rule of the pod's port that admits the peer, as the plain reading of the
  // contract finds it.
  void checkDecision(const RequestDecision& d, const RequestView& view) {
    RequestDecision again = decideRequest(cfg_, conn_.dir, conn_.client, conn_.odst, view);
    MB_CHECK(sameVerdict(d.verdict, again.verdict) && d.src_id == again.src_id && d.dst_id == again.dst_id &&
             d.ingress_checked == again.ingress_checked);
    MB_CHECK(d.src_id == cfg_.identityOf(conn_.client.sin_addr.s_addr));
    MB_CHECK(d.dst_id == cfg_.identityOf(conn_.odst.sin_addr.s_addr));
    const bool ingress = conn_.dir == Direction::Ingress;
    const in_addr_t pod = ingress ? conn_.odst.sin_addr.s_addr : conn_.client.sin_addr.s_addr;
    const uint16_t port = ntohs(conn_.odst.sin_port);
    const PortPolicy* pp = cfg_.find(pod, conn_.dir, port);
    const PortPolicy* in = ingress ? nullptr : cfg_.find(conn_.odst.sin_addr.s_addr, Direction::Ingress, port);
    MB_CHECK(d.ingress_checked == (in != nullptr));
    const uint32_t peer = ingress ? d.src_id : d.dst_id;
    Verdict ref = referenceEvaluate(pp, peer, view);
    if (ref.allowed && in) {
      Verdict ri = referenceEvaluate(in, d.src_id, view);
      if (!ri.allowed) {
        ref = ri;
      } else {
        ref.header_mismatch_logged = ref.header_mismatch_logged || ri.header_mismatch_logged;
        ref.edits.insert(ref.edits.end(), ri.edits.begin(), ri.edits.end());
      }
    }
    MB_CHECK(sameVerdict(d.verdict, ref));
    if (!pp || pp->rules.empty()) MB_CHECK(!d.verdict.allowed);  // fail closed
    if (d.verdict.header_mismatch_logged) MB_CHECK(d.verdict.allowed);
    if (d.verdict.allowed) {
      bool named = false;
      for (const auto& r : pp->rules) named = named || r.policy.data() == d.verdict.policy.data();
      MB_CHECK(named);
    } else {
      MB_CHECK(d.verdict.policy.empty());
    }
  }

  void parseError(int status) {
    stats_.parse_errors.fetch_add(1);
    if (pending_.size() == kMaxPipelined) {
      dead_ = true;
      return;
    }
    Entry& e = pending_.emplace_back();
    ++pushed_;
    e.status = status;
    e.close_after = true;
    e.start_us = now_us_;
    buildAccessUrl(e.url, req_.host(), conn_.odst, req_.url());
    closing_ = true;
    rs_ = ReqState::Done;
  }

  void onClientEof() {
    if (rs_ == ReqState::Tunnel) {  // no half-close in a tunnel
      if (upos_ == upstream_.size()) dead_ = true;
      return;
    }
    if (rs_ == ReqState::AwaitUpgrade) return;
    if (rs_ == ReqState::Body && cur_forward_) {
      dead_ = true;  // a forwarded request cut short
      return;
    }
    closing_ = true;
    rs_ = ReqState::Done;
  }

  void closeUpstream() {
    upstream_open_ = false;
    u_eof_ = false;
    resp_.reset();
    if (rs_ == ReqState::Body) cur_forward_ = false;  // the rest of the request is dropped
    // One upstream connection's bytes end here: check them, start afresh.
    checkForwarded();
    fwd_.clear();
    fwds_.clear();
    fwd_raw_ = false;
  }

  void failUpstream(UpstreamError err) {
    if (rs_ == ReqState::Tunnel) {
      closeUpstream();
      closing_ = true;
      rs_ = ReqState::Done;
      return;
    }
    closeUpstream();  // also ends forwarding of the current request
    for (Entry& e : pending_) {
      if (!e.forward) continue;
      if (e.response_started) {
        closing_ = true;
        rs_ = ReqState::Done;
        e.forward = false;
        e.status = 0;
        continue;
      }
      e.forward = false;
      e.status = 503;
      e.error = err;
    }
  }

  void endAfterCloseDelimited() {
    while (!pending_.empty()) {
      Entry& e = pending_.front();
      if (e.forward) {
        e.forward = false;
        e.status = 0;
        e.error = UpstreamError::Reset;
      }
      finishEntry(e, 0);
      pending_.pop_front();
    }
    closing_ = true;
    rs_ = ReqState::Done;
  }

  void finishEntry(const Entry& e, int status) {
    auto total = std::chrono::microseconds(now_us_ - e.start_us);
    if (e.forward) {
      stats_.observe(UpstreamError::None, Scope::TotalTime, total);
    } else if (e.error != UpstreamError::None) {
      stats_.observe(e.error, Scope::TotalTime, total);
      stats_.observe(e.error, Scope::UpstreamTime, total / 2);
    }
    log(e, /*response=*/true, status);
    ++popped_;
  }

  bool processResponses() {
    if (rs_ == ReqState::Tunnel) {
      if (upos_ == upstream_.size()) return false;
      upos_ = upstream_.size();
      return true;
    }
    bool progress = false;
    for (int guard = 0; guard < 100000 && !pending_.empty(); ++guard) {
      Entry& f = pending_.front();
      if (!f.forward) {
        finishEntry(f, f.status);
        bool reset_parser = f.upgrade && rs_ == ReqState::AwaitUpgrade;
        bool close_after = f.close_after;
        pending_.pop_front();
        if (reset_parser) {
          req_.reset();
          rs_ = ReqState::Headers;
        }
        if (close_after) closing_ = true;
        progress = true;
        continue;
      }
      MB_CHECK(upstream_open_);  // a forwarded request always has its upstream
      if (upos_ == upstream_.size()) {
        if (!u_eof_) break;
        if (resp_.inMessage()) {
          auto st = resp_.finish();
          MB_CHECK(st.consumed == 0);
          if (st.event == MessageParser::Event::MessageComplete) {  // delimited by the close
            finishEntry(f, resp_.status());
            pending_.pop_front();
            closeUpstream();
            endAfterCloseDelimited();
            progress = true;
            continue;
          }
        }
        failUpstream(UpstreamError::Reset);
        progress = true;
        continue;
      }
      resp_.setRequestHint(f.is_head, f.is_connect);
      size_t n = piece(upstream_, upos_);
      auto st = resp_.execute(upstream_.data() + upos_, n);
      MB_CHECK(st.consumed <= n);
      tick(st.consumed);
      if (st.consumed) {
        if (!f.response_started) {
          f.response_started = true;
          stats_.observe(UpstreamError::None, Scope::UpstreamTime, std::chrono::microseconds(now_us_ - f.start_us));
        }
        upos_ += st.consumed;
        progress = true;
      }
      if (st.event == MessageParser::Event::NeedMore) {
        MB_CHECK(st.consumed == n);
        if (st.consumed == 0) break;
        continue;
      }
      if (st.event == MessageParser::Event::MessageComplete) {
        int status = resp_.status();
        if (status >= 100 && status < 200) continue;  // interim (100 Continue, 103): the real answer follows
        bool keep = resp_.keepAlive();
        finishEntry(f, status);
        pending_.pop_front();
        if (rs_ == ReqState::AwaitUpgrade && pending_.empty()) {  // upgrade declined
          req_.reset();
          rs_ = ReqState::Headers;
        }
        if (!keep) {
          closeUpstream();
          failUpstream(UpstreamError::Reset);
        }
        progress = true;
        continue;
      }
      if (st.event == MessageParser::Event::Upgrade) {
        finishEntry(f, resp_.status());
        pending_.pop_front();
        rs_ = ReqState::Tunnel;
        return true;
      }
      MB_CHECK(st.event == MessageParser::Event::Error);
      MB_CHECK(resp_.errorStatus() == 400 || resp_.errorStatus() == 431);
      failUpstream(UpstreamError::Reset);
      progress = true;
    }
    // The upstream answers what it was sent: its bytes count as unsolicited
    // only once the client has sent everything.
    if (pending_.empty() && upstream_open_ && ((c_eof_ && upos_ < upstream_.size()) || u_eof_)) {
      closeUpstream();  // bytes nobody asked for, or an idle upstream that closed
      if (upos_ < upstream_.size()) upos_ = upstream_.size();
      progress = true;
    }
    return progress;
  }

  void log(const Entry& e, bool response, int status) {
    const AccessRecord r = accessRecordOf(e, directionName(conn_.dir), kTime, conn_.client, conn_.odst, response,
                                          status, response ? now_us_ - e.start_us : 0);
    const std::string line = formatAccessRecord(r);
    if (tracing()) std::fprintf(stderr, "%s\n", line.c_str());
    checkAccessLine(r, line);
    log_.publish(line);
    if (published_.size() < kLogQueue) published_.push_back(line);
    ++published_count_;
    // What the verdict says follows from the entry alone.
    if (!response) MB_CHECK(r.verdict == (e.forward ? "Forwarded" : "Denied"));
    if (r.url.find("://") == std::string_view::npos) MB_CHECK(r.url.substr(0, 7) == "http://");
    ++(response ? response_lines_ : request_lines_);
  }

  // The differential check: the bytes sent upstream, framed by a second,
  // independent strict framer (reference_framer.h), are exactly the requests
  // the policy allowed, with the same heads and body boundaries, and nothing
  // more. Only the last forwarded request may be unfinished (its body broke,
  // or the client stopped); then its bytes must not frame as anything else.
  void checkForwarded() {
    std::vector<FramedRequest> got;
    std::string why;
    FrameResult r = frameRequests(fwd_, &got, &why);
    if (r == FrameResult::Invalid) {
      std::fprintf(stderr, "differential: the forwarded bytes break the grammar: %s\n", why.c_str());
      MB_CHECK(false);
    }
    size_t complete = 0;
    while (complete < fwds_.size() && fwds_[complete].complete) ++complete;
    MB_CHECK(complete + 1 >= fwds_.size());
    // An unfinished last request that needed no more bytes frames as complete.
    const bool last_done = complete < fwds_.size() && got.size() == complete + 1;
    MB_CHECK(got.size() == complete || last_done);
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i].head != fwds_[i].head || got[i].body_raw != fwds_[i].body_raw) {
        std::fprintf(stderr, "differential: request %zu framed as head %zu bytes + body %zu, membrane %zu + %zu\n", i,
                     got[i].head.size(), got[i].body_raw, fwds_[i].head.size(), fwds_[i].body_raw);
        MB_CHECK(false);
      }
    }
    MB_CHECK((r == FrameResult::Complete) == (complete == fwds_.size() || last_done));
  }

  // Counters agree with each other and with what was logged; the subscriber
  // that never read holds the first kLogQueue lines in order, the rest dropped.
  void checkTotals() {
    std::vector<std::string> got;
    MB_CHECK(log_.active());
    MB_CHECK(sub_->next(got, std::chrono::milliseconds(0)) == (published_count_ > 0));
    MB_CHECK(got == published_ && sub_->dropped() == published_count_ - published_.size());
    log_.unsubscribe(sub_);
    MB_CHECK(!log_.active());
    MB_CHECK(stats_.received == verdicts_ && stats_.received == stats_.forwarded + stats_.denied);
    MB_CHECK(request_lines_ == verdicts_);
    MB_CHECK(response_lines_ == popped_ && popped_ + pending_.size() == pushed_);
    MB_CHECK(cpos_ <= client_.size() && upos_ <= upstream_.size());
    uint64_t observed = 0;
    for (const auto& per_error : stats_.latency) {
      for (const Histogram& h : per_error) {
        uint64_t in_buckets = 0;
        for (const auto& b : h.buckets) in_buckets += b.load();
        MB_CHECK(in_buckets <= h.count.load());  // above the last bucket: +Inf only
        observed += h.count.load();
      }
    }
    const auto& none = stats_.latency[static_cast<size_t>(UpstreamError::None)];
    MB_CHECK(none[static_cast<size_t>(Scope::TotalTime)].count.load() <= popped_);
    MB_CHECK(none[static_cast<size_t>(Scope::UpstreamTime)].count.load() <= pushed_);
    // The JSON the control socket serves (slow in this build: one input in 16).
    if ((client_.size() + upstream_.size()) % 16 != 0) return;
    json j = stats_.toJson();
    MB_CHECK(j["received"] == verdicts_ && j["parse_errors"] == stats_.parse_errors.load());
    uint64_t series_total = 0;
    for (const auto& s : j["upstream_reply_seconds"]) {
      uint64_t prev = 0;
      for (const auto& b : s["buckets"]) {
        MB_CHECK(b["count"].get<uint64_t>() >= prev);  // cumulative
        prev = b["count"].get<uint64_t>();
      }
      MB_CHECK(prev <= s["count"].get<uint64_t>());
      series_total += s["count"].get<uint64_t>();
    }
    MB_CHECK(series_total == observed);  // every observed series is listed
  }

  static constexpr size_t kLogQueue = 5;
  AccessLog log_{kLogQueue};
  std::shared_ptr<AccessLog::Subscription> sub_ = log_.subscribe();
  std::vector<std::string> published_;  // the first kLogQueue lines
  size_t published_count_ = 0;
  const ProxyConfig& cfg_;
  Connection conn_;
  std::string_view client_, upstream_;
  // What went upstream (checkForwarded): the bytes, and per forwarded request
  // its serialised head, how many body bytes followed, whether it ended.
  struct Fwd {
    std::string head;
    size_t body_raw = 0;
    bool complete = false;
  };
  std::string fwd_;
  std::vector<Fwd> fwds_;
  bool fwd_raw_ = false;  // an upgrade went upstream: raw bytes may follow
  size_t seed_;
  MessageParser req_, resp_;
  ProxyStats stats_;
  std::deque<Entry> pending_;
  ReqState rs_ = ReqState::Headers;
  size_t cpos_ = 0, upos_ = 0;
  bool cur_forward_ = false, closing_ = false, dead_ = false;
  bool c_eof_ = false, u_eof_ = false, upstream_open_ = false;
  int64_t now_us_ = 0, msg_start_us_ = 0;
  size_t steps_ = 0;
  size_t verdicts_ = 0, pushed_ = 0, popped_ = 0, request_lines_ = 0, response_lines_ = 0;
};

}  // namespace

size_t driveRequestStream(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const Sections s = split(in);
  std::shared_ptr<const ProxyConfig> cfg;
  Connection conn = defaultConnection();
  size_t seed = size ? static_cast<uint8_t>(in[0]) : 1;
  if (s.has_config) {
    std::string_view text = s.config;
    if (!text.empty() && text[0] == '@') {
      size_t nl = text.find('\n');
      conn = parseConnection(text.substr(0, nl));
      if (conn.seed) seed = *conn.seed;
      text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    }
    std::string json_text;
    bool must_reject = false;
    try {
      json_text = !text.empty() && text[0] == '{' ? std::string(text) : buildConfigJson(text, &must_reject);
    } catch (const json::exception&) {  // the driver's own JSON building: not under test
      json_text.clear();
      must_reject = false;
    }
    auto r = ProxyConfig::parse(json_text);
    if (must_reject) MB_CHECK(!r.ok());
    if (r.ok()) {
      cfg = std::move(r).value();
      checkConfig(*cfg, json_text);
      if (tracing()) std::fprintf(stderr, "config: %s\n", json_text.c_str());
    } else {
      MB_CHECK(!r.error().message.empty() && r.error().code == EINVAL);
      if (tracing()) std::fprintf(stderr, "config rejected (Star Wars fallback): %s\n", r.error().message.c_str());
    }
  }
  if (!cfg) {
    cfg = fallbackConfig();
    conn = defaultConnection();
  }
  ConnectionModel model(*cfg, conn, s.client, s.upstream, seed);
  model.run();
  return model.verdicts();
}

}  // namespace membrane::proxy
