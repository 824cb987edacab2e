#include "src/proxy/config.h"

#include <arpa/inet.h>
#include <re2/re2.h>

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "membrane/http_field.h"

namespace membrane::proxy {

using nlohmann::json;

std::string_view directionName(Direction d) { return d == Direction::Ingress ? "ingress" : "egress"; }

bool headerNameEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    unsigned char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x += 32;
    if (y >= 'A' && y <= 'Z') y += 32;
    if (x != y) return false;
  }
  return true;
}

CompiledRule::CompiledRule() = default;
CompiledRule::~CompiledRule() = default;
CompiledRule::CompiledRule(CompiledRule&&) noexcept = default;
CompiledRule& CompiledRule::operator=(CompiledRule&&) noexcept = default;

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Result<in_addr_t> parseIp(const json& j, const std::string& where) {
  if (!j.is_string()) return Error::invalid(where + ": expected an IPv4 address string");
  in_addr a{};
  if (inet_pton(AF_INET, j.get<std::string>().c_str(), &a) != 1)
    return Error::invalid(fmt::format("{}: '{}' is not an IPv4 address", where, j.get<std::string>()));
  return a.s_addr;
}

// "a.b.c.d/n" (n in 0..32, host bits clear) -> (network host order, n).
Result<std::pair<uint32_t, uint8_t>> parsePrefix(const json& j, const std::string& where) {
  auto bad = [&](const std::string& what) {
    return Error::invalid(fmt::format("{}: {} (expected an IPv4 prefix like \"192.0.2.0/24\", length 0..32)", where, what));
  };
  if (!j.is_string()) return bad("not a string");
  const std::string s = j.get<std::string>();
  auto slash = s.find('/');
  if (slash == std::string::npos) return bad(fmt::format("'{}' has no '/length'", s));
  const std::string len_text = s.substr(slash + 1);
  if (len_text.empty() || len_text.size() > 2 || len_text.find_first_not_of("0123456789") != std::string::npos)
    return bad(fmt::format("'{}': bad prefix length", s));
  const int len = std::stoi(len_text);
  if (len > 32) return bad(fmt::format("'{}': prefix length {} > 32", s, len));
  in_addr a{};
  if (inet_pton(AF_INET, s.substr(0, slash).c_str(), &a) != 1) return bad(fmt::format("'{}': not an IPv4 address", s));
  const uint32_t host = ntohl(a.s_addr);
  const uint32_t mask = len == 0 ? 0 : ~uint32_t{0} << (32 - len);
  if (host & ~mask) return bad(fmt::format("'{}': host bits set", s));
  return std::pair<uint32_t, uint8_t>{host, static_cast<uint8_t>(len)};
}

Result<uint16_t> parsePort(const json& j, const std::string& where, bool allow_zero) {
  if (!j.is_number_unsigned() && !j.is_number_integer()) return Error::invalid(where + ": expected a port number");
  int64_t v = j.get<int64_t>();
  if (v < (allow_zero ? 0 : 1) || v > 65535) return Error::invalid(fmt::format("{}: port {} out of range", where, v));
  return static_cast<uint16_t>(v);
}

Result<std::string> optString(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) return Error::invalid(fmt::format("{}.{}: expected a string", where, key));
  return it->get<std::string>();
}

Result<std::unique_ptr<re2::RE2>> compileRegex(const std::string& pattern, const std::string& where) {
  if (pattern.empty()) return std::unique_ptr<re2::RE2>();
  re2::RE2::Options o;
  o.set_log_errors(false);
  auto re = std::make_unique<re2::RE2>(pattern, o);
  if (!re->ok()) return Error::invalid(fmt::format("{}: invalid regex '{}': {}", where, pattern, re->error()));
  return re;
}

Result<CompiledRule> parseRule(const json& j, const std::string& where) {
  if (!j.is_object()) return Error::invalid(where + ": expected an object");
  CompiledRule r;
  for (const char* key : {"method", "path", "host"}) {
    MB_ASSIGN(std::string pat, optString(j, key, where));
    MB_ASSIGN(auto re, compileRegex(pat, where + "." + key));
    if (key[0] == 'm') r.method = std::move(re);
    else if (key[0] == 'p') r.path = std::move(re);
    else r.host = std::move(re);
  }
  if (auto it = j.find("headers"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return Error::invalid(where + ".headers: expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& h = (*it)[i];
      std::string hw = fmt::format("{}.headers[{}]", where, i);
      if (!h.is_string()) return Error::invalid(hw + ": expected \"Name\" or \"Name: value\"");
      std::string s = h.get<std::string>();
      auto colon = s.find(':');
      std::string_view name = trim(std::string_view(s).substr(0, colon));
      if (name.empty()) return Error::invalid(hw + ": empty header name");
      HeaderField f{std::string(name), ""};
      bool has_value = colon != std::string::npos;
      if (has_value) f.value = std::string(trim(std::string_view(s).substr(colon + 1)));
      r.headers.push_back(std::move(f));
      r.header_has_value.push_back(has_value);
    }
  }
  if (auto it = j.find("header_matches"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return Error::invalid(where + ".header_matches: expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& h = (*it)[i];
      std::string hw = fmt::format("{}.header_matches[{}]", where, i);
      if (!h.is_object()) return Error::invalid(hw + ": expected an object");
      HeaderMatch m;
      MB_ASSIGN(m.name, optString(h, "name", hw));
      MB_ASSIGN(m.value, optString(h, "value", hw));
      MB_ASSIGN(std::string mismatch, optString(h, "mismatch", hw));
      if (m.name.empty()) return Error::invalid(hw + ".name: required");
      if (!http::isFieldName(m.name))
        return Error::invalid(fmt::format("{}.name: '{}' is not an HTTP field name", hw, m.name));
      if (!http::isFieldValue(m.value))
        return Error::invalid(fmt::format(
            "{}.value: control characters or surrounding whitespace are not allowed in a field value", hw));
      if (mismatch.empty() || mismatch == "DENY") m.mismatch = Mismatch::Deny;
      else if (mismatch == "LOG") m.mismatch = Mismatch::Log;
      else if (mismatch == "ADD") m.mismatch = Mismatch::Add;
      else if (mismatch == "DELETE") m.mismatch = Mismatch::Delete;
      else if (mismatch == "REPLACE") m.mismatch = Mismatch::Replace;
      else
        return Error::invalid(
            fmt::format("{}.mismatch: '{}' is not one of DENY, LOG, ADD, DELETE, REPLACE", hw, mismatch));
      if (m.mismatch >= Mismatch::Add && http::isFramingField(m.name))
        return Error::invalid(fmt::format("{}: '{}' frames or routes the request; it can be matched, not edited ({})",
                                          hw, m.name, mismatch));
      r.header_matches.push_back(std::move(m));
    }
  }
  MB_ASSIGN(r.policy, optString(j, "policy", where));
  if (auto it = j.find("allowed_identities"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return Error::invalid(where + ".allowed_identities: expected an array");
    for (const auto& id : *it) {
      // get<uint32_t>() would wrap 2^32 + n to n: reject instead.
      if (!id.is_number_unsigned() || id.get<uint64_t>() > UINT32_MAX)
        return Error::invalid(where + ".allowed_identities: expected 32-bit identity numbers");
      r.allowed_identities.push_back(id.get<uint32_t>());
    }
    std::sort(r.allowed_identities.begin(), r.allowed_identities.end());
  }
  return r;
}

Result<std::vector<PortPolicy>> parsePorts(const json& j, const std::string& where) {
  std::vector<PortPolicy> out;
  if (j.is_null()) return out;
  if (!j.is_array()) return Error::invalid(where + ": expected an array");
  for (size_t i = 0; i < j.size(); ++i) {
    std::string pw = fmt::format("{}[{}]", where, i);
    const json& p = j[i];
    if (!p.is_object() || !p.contains("port")) return Error::invalid(pw + ": expected an object with \"port\"");
    PortPolicy pp;
    MB_ASSIGN(pp.port, parsePort(p["port"], pw + ".port", false));
    MB_ASSIGN(std::string proto, optString(p, "proto", pw));
    if (!proto.empty() && proto != "TCP" && proto != "ANY")
      return Error::invalid(fmt::format("{}.proto: '{}': the HTTP proxy handles TCP only", pw, proto));
    if (auto it = p.find("rules"); it != p.end() && !it->is_null()) {
      if (!it->is_array()) return Error::invalid(pw + ".rules: expected an array");
      for (size_t k = 0; k < it->size(); ++k) {
        MB_ASSIGN(CompiledRule r, parseRule((*it)[k], fmt::format("{}.rules[{}]", pw, k)));
        for (const auto& m : r.header_matches) pp.has_edits = pp.has_edits || m.mismatch >= Mismatch::Add;
        pp.rules.push_back(std::move(r));
      }
    }
    // Two entries for one port are one union.
    auto same = std::find_if(out.begin(), out.end(), [&](const PortPolicy& o) { return o.port == pp.port; });
    if (same != out.end()) {
      for (auto& r : pp.rules) same->rules.push_back(std::move(r));
      same->has_edits = same->has_edits || pp.has_edits;
    } else {
      out.push_back(std::move(pp));
    }
  }
  return out;
}

// Several fields with one name are one field whose value is their values
// joined with "," (RFC 9110 5.3), as Envoy hands headers to Cilium's matchers:
// "X-Empire: no" + "X-Empire: yes" is "no,yes", which a rule "X-Empire: yes"
// does not match (a server reading the first field would see "no").
// Compared piecewise, without building the joined string.
bool headerPresent(const RequestView& req, std::string_view name, const std::string* value) {
  bool found = false;
  size_t pos = 0;  // how much of *value the fields so far matched
  for (size_t i = 0; i < req.header_count; ++i) {
    const HeaderField& f = req.headers[i];
    if (!headerNameEquals(f.name, name)) continue;
    if (!value) return true;
    if (found) {
      if (pos >= value->size() || (*value)[pos] != ',') return false;
      ++pos;
    }
    found = true;
    std::string_view v = trim(f.value);
    if (value->compare(pos, v.size(), v.data(), v.size()) != 0 || value->size() - pos < v.size()) return false;
    pos += v.size();
  }
  return found && pos == value->size();
}

bool identityAllowed(const CompiledRule& r, uint32_t id) {
  return r.allowed_identities.empty() ||
         std::binary_search(r.allowed_identities.begin(), r.allowed_identities.end(), id);
}

bool fullMatch(const std::unique_ptr<re2::RE2>& re, std::string_view v) {
  return !re || re2::RE2::FullMatch(re2::StringPiece(v.data(), v.size()), *re);
}

}  // namespace

Result<std::shared_ptr<const ProxyConfig>> ProxyConfig::parse(std::string_view text) {
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Error::invalid("proxy config: not valid JSON");
  if (!doc.is_object()) return Error::invalid("proxy config: expected a JSON object");
  auto cfg = std::make_shared<ProxyConfig>();
  try {
    if (auto it = doc.find("revision"); it != doc.end()) {
      if (!it->is_number_unsigned()) return Error::invalid("revision: expected a non-negative number");
      cfg->revision_ = it->get<uint64_t>();
    }
    if (auto it = doc.find("listeners"); it != doc.end() && !it->is_null()) {
      if (!it->is_array()) return Error::invalid("listeners: expected an array");
      for (size_t i = 0; i < it->size(); ++i) {
        const json& l = (*it)[i];
        std::string lw = fmt::format("listeners[{}]", i);
        if (!l.is_object() || !l.contains("port")) return Error::invalid(lw + ": expected {\"port\", \"direction\"}");
        Listener li;
        MB_ASSIGN(li.port, parsePort(l["port"], lw + ".port", true));
        MB_ASSIGN(std::string dir, optString(l, "direction", lw));
        if (dir == "ingress") li.direction = Direction::Ingress;
        else if (dir == "egress") li.direction = Direction::Egress;
        else return Error::invalid(fmt::format("{}.direction: '{}' (ingress or egress)", lw, dir));
        for (const auto& o : cfg->listeners_)
          if (li.port != 0 && o.port == li.port) return Error::invalid(fmt::format("{}.port: {} listed twice", lw, li.port));
        cfg->listeners_.push_back(li);
      }
    }
    if (auto it = doc.find("endpoints"); it != doc.end() && !it->is_null()) {
      if (!it->is_array()) return Error::invalid("endpoints: expected an array");
      for (size_t i = 0; i < it->size(); ++i) {
        const json& e = (*it)[i];
        std::string ew = fmt::format("endpoints[{}]", i);
        if (!e.is_object() || !e.contains("ip")) return Error::invalid(ew + ": expected an object with \"ip\"");
        MB_ASSIGN(in_addr_t ip, parseIp(e["ip"], ew + ".ip"));
        if (cfg->endpoints_.count(ip)) return Error::invalid(ew + ".ip: endpoint listed twice");
        EndpointPolicy ep;
        MB_ASSIGN(ep.ingress, parsePorts(e.value("ingress", json()), ew + ".ingress"));
        MB_ASSIGN(ep.egress, parsePorts(e.value("egress", json()), ew + ".egress"));
        cfg->redirects_ += ep.ingress.size() + ep.egress.size();
        cfg->endpoints_.emplace(ip, std::move(ep));
      }
    }
    if (auto it = doc.find("identities"); it != doc.end() && !it->is_null()) {
      if (!it->is_object()) return Error::invalid("identities: expected an object {\"ip\": identity}");
      for (const auto& [k, v] : it->items()) {
        MB_ASSIGN(in_addr_t ip, parseIp(json(k), "identities"));
        if (!v.is_number_unsigned() || v.get<uint64_t>() > MB_MARK_IDENTITY_MAX)
          return Error::invalid(fmt::format("identities.{}: expected an identity number 0..{:#x} (what a packet mark carries)",
                                            k, MB_MARK_IDENTITY_MAX));
        cfg->identities_[ip] = v.get<uint32_t>();
      }
    }
    if (auto it = doc.find("prefixes"); it != doc.end() && !it->is_null()) {
      if (!it->is_array()) return Error::invalid("prefixes: expected an array of {\"cidr\", \"identity\"}");
      for (size_t i = 0; i < it->size(); ++i) {
        const json& p = (*it)[i];
        std::string pw = fmt::format("prefixes[{}]", i);
        if (!p.is_object() || !p.contains("cidr") || !p.contains("identity"))
          return Error::invalid(pw + ": expected an object {\"cidr\": \"a.b.c.d/n\", \"identity\": N}");
        MB_ASSIGN(auto net, parsePrefix(p["cidr"], pw + ".cidr"));
        if (!p["identity"].is_number_unsigned() || p["identity"].get<uint64_t>() > MB_MARK_IDENTITY_MAX)
          return Error::invalid(fmt::format("{}.identity: expected an identity number 0..{:#x} (what a packet mark carries)",
                                            pw, MB_MARK_IDENTITY_MAX));
        for (const auto& o : cfg->prefixes_)
          if (o.network == net.first && o.len == net.second)
            return Error::invalid(fmt::format("{}.cidr: '{}' listed twice", pw, p["cidr"].get<std::string>()));
        cfg->prefixes_.push_back({net.first, net.second, p["identity"].get<uint32_t>()});
      }
      std::stable_sort(cfg->prefixes_.begin(), cfg->prefixes_.end(),
                       [](const Prefix& a, const Prefix& b) { return a.len > b.len; });
    }
  } catch (const std::exception& e) {  // nlohmann type errors: never leave the parser
    return Error::invalid(fmt::format("proxy config: {}", e.what()));
  }
  cfg->source_ = std::string(text);
  return std::shared_ptr<const ProxyConfig>(std::move(cfg));
}

std::shared_ptr<const ProxyConfig> ProxyConfig::empty() {
  static const std::shared_ptr<const ProxyConfig> e = std::make_shared<ProxyConfig>();
  return e;
}

uint32_t ProxyConfig::identityOf(in_addr_t ip) const {
  if (auto it = identities_.find(ip); it != identities_.end()) return it->second;
  const uint32_t host = ntohl(ip);
  for (const auto& p : prefixes_) {  // longest first: the first hit is the longest match
    const uint32_t mask = p.len == 0 ? 0 : ~uint32_t{0} << (32 - p.len);
    if ((host & mask) == p.network) return p.identity;
  }
  return kWorldIdentity;
}

const PortPolicy* ProxyConfig::find(in_addr_t pod_ip, Direction dir, uint16_t port) const {
  auto it = endpoints_.find(pod_ip);
  if (it == endpoints_.end()) return nullptr;
  const auto& ports = dir == Direction::Ingress ? it->second.ingress : it->second.egress;
  for (const auto& p : ports)
    if (p.port == port) return &p;
  return nullptr;
}

Verdict ProxyConfig::evaluate(const PortPolicy* pp, uint32_t peer_identity, const RequestView& req) {
  Verdict v;
  if (!pp) return v;
  for (const auto& r : pp->rules) {
    if (!identityAllowed(r, peer_identity)) continue;
    if (!fullMatch(r.method, req.method) || !fullMatch(r.path, req.url) || !fullMatch(r.host, req.host)) continue;
    bool ok = true;
    for (size_t i = 0; ok && i < r.headers.size(); ++i)
      ok = headerPresent(req, r.headers[i].name, r.header_has_value[i] ? &r.headers[i].value : nullptr);
    if (!ok) continue;
    bool flagged = false;
    size_t edits_before = v.edits.size();
    for (const auto& m : r.header_matches) {
      if (headerPresent(req, m.name, m.value.empty() ? nullptr : &m.value)) continue;
      if (m.mismatch == Mismatch::Deny) {
        ok = false;
        break;
      }
      // DELETE when the field is missing (always so for a presence match):
      // nothing to delete, nothing to flag (as Envoy does).
      if (m.mismatch == Mismatch::Delete && (m.value.empty() || !headerPresent(req, m.name, nullptr))) continue;
      flagged = true;
      if (m.mismatch != Mismatch::Log) v.edits.push_back(&m);
    }
    if (!ok) {
      v.edits.resize(edits_before);  // a rule that did not accept edits nothing
      continue;
    }
    v.header_mismatch_logged = v.header_mismatch_logged || flagged;
    if (!v.allowed) {
      v.allowed = true;
      v.policy = r.policy;
    }
    // The first accepting rule decides; later ones can only add edits.
    if (!pp->has_edits) return v;
  }
  return v;
}

}  // namespace membrane::proxy
