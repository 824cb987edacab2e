// What a peer rule allows on L4 and L7: toPorts (port, endPort, protocol,
// named ports), ICMP types, and L7 HTTP rules with header matches.
#include <algorithm>

#include <fmt/format.h>

#include "membrane/http_field.h"
#include "src/policy/http_regex.h"
#include "src/policy/parser_internal.h"

namespace membrane::policy::detail {

std::optional<uint16_t> Parser::portNumber(const YAML::Node& n, const std::string& path, std::string_view what) {
  if (!n.IsScalar()) {
    error(n, path, fmt::format("expected a string or number, got {}", typeName(n)));
    return std::nullopt;
  }
  const std::string& s = n.Scalar();
  if (s.empty()) return uint16_t{0};
  if (!isDigits(s)) {
    if (s.front() == '-' && isDigits(s.substr(1))) {
      error(n, path, fmt::format("{} {} is out of range (0-65535)", what, s));
    } else if (what == "port") {
      error(n, path, fmt::format("named port '{}' is not supported yet; use a number", s));
    } else {
      error(n, path, fmt::format("{} '{}' must be a number", what, s));
    }
    return std::nullopt;
  }
  if (s.size() > 5 || std::stoul(s) > 65535) {
    error(n, path, fmt::format("{} {} is out of range (0-65535)", what, s));
    return std::nullopt;
  }
  return static_cast<uint16_t>(std::stoul(s));
}

bool Parser::toPorts(const YAML::Node& n, const std::string& path, bool deny, PeerRule& pr) {
  if (!isList(n, path)) return false;
  bool ok = true;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string ipath = index(path, i);
    ObjectSpec spec{{"ports", "rules"},
                    {{"terminatingTLS", ""}, {"originatingTLS", ""}, {"serverNames", ""}, {"listener", ""}}};
    auto f = fields(n[i], ipath, spec);
    if (!f) {
      ok = false;
      continue;
    }
    PortRule rule;
    bool item_ok = true;
    if (auto it = f->find("ports"); it != f->end()) {
      const YAML::Node& l = it->second.value;
      const std::string lpath = join(ipath, "ports");
      if (!isList(l, lpath)) {
        ok = false;
        continue;
      }
      for (size_t j = 0; j < l.size(); ++j) {
        auto pp = portProtocol(l[j], index(lpath, j), Protocol::Any, {{"port", "endPort", "protocol"}, {}});
        if (pp) rule.ports.push_back(*pp);
        else item_ok = false;
      }
    }
    if (auto it = f->find("rules"); it != f->end()) {
      const std::string rpath = join(ipath, "rules");
      if (deny) {
        error(it->second.key, rpath, "L7 rules are not allowed in deny rules");
        item_ok = false;
      } else if (!l7Rules(it->second.value, rpath, rule)) {
        item_ok = false;
      } else if (!rule.http.empty()) {
        if (rule.ports.empty()) {
          error(it->second.key, rpath, "L7 rules need at least one port in 'ports'");
          item_ok = false;
        }
        for (const auto& pp : rule.ports) {
          if (pp.port == 0 && pp.name.empty()) {
            error(it->second.key, rpath, "L7 rules can not be used when a port is 0 (all ports); give the port");
            item_ok = false;
            break;
          }
          if (pp.protocol != Protocol::TCP && pp.protocol != Protocol::Any) {
            error(it->second.key, rpath,
                  fmt::format("HTTP rules apply to TCP only, not {}", protocolName(pp.protocol)));
            item_ok = false;
            break;
          }
        }
      }
    }
    if (item_ok) pr.to_ports.push_back(std::move(rule));
    ok &= item_ok;
  }
  return ok;
}

std::optional<PortProtocol> Parser::portProtocol(const YAML::Node& n, const std::string& path, Protocol default_proto,
                                                 const ObjectSpec& spec) {
  auto f = fields(n, path, spec);
  if (!f) return std::nullopt;
  PortProtocol pp;
  pp.protocol = default_proto;
  if (auto it = f->find("port"); it != f->end()) {
    const YAML::Node& pn = it->second.value;
    const std::string ppath = join(path, "port");
    if (pn.IsScalar() && !pn.Scalar().empty() && !isDigits(pn.Scalar()) && pn.Scalar().front() != '-') {
      // A named port (Kubernetes NetworkPolicy and Cilium): resolved per
      // endpoint against the ports its pod declares.
      auto valid = validatePortName(pn.Scalar());
      if (!valid.ok()) {
        error(pn, ppath, valid.error().message);
        return std::nullopt;
      }
      pp.name = pn.Scalar();
    } else {
      auto port = portNumber(pn, ppath, "port");
      if (!port) return std::nullopt;
      pp.port = *port;
    }
  }
  if (auto it = f->find("protocol"); it != f->end()) {
    const std::string ppath = join(path, "protocol");
    auto s = string(it->second.value, ppath);
    if (!s) return std::nullopt;
    if (*s == "TCP") pp.protocol = Protocol::TCP;
    else if (*s == "UDP") pp.protocol = Protocol::UDP;
    else if (*s == "SCTP") pp.protocol = Protocol::SCTP;
    else if (*s == "ICMP") pp.protocol = Protocol::ICMP;
    else if (*s == "ANY" || s->empty()) pp.protocol = Protocol::Any;
    else if (*s == "ICMPV6") {
      error(it->second.value, ppath, "protocol ICMPV6 is not supported yet (IPv6)");
      return std::nullopt;
    } else if (*s == "VRRP" || *s == "IGMP") {
      error(it->second.value, ppath, fmt::format("protocol {} is not supported yet", *s));
      return std::nullopt;
    } else {
      error(it->second.value, ppath,
            fmt::format("protocol '{}' must be one of TCP, UDP, SCTP, ICMP, ANY (upper case)", *s));
      return std::nullopt;
    }
  }
  if (auto it = f->find("endPort"); it != f->end()) {
    const std::string epath = join(path, "endPort");
    auto end = portNumber(it->second.value, epath, "endPort");
    if (!end) return std::nullopt;
    if (*end != 0 && !pp.name.empty()) {
      error(it->second.value, epath, fmt::format("endPort cannot be used with the named port '{}'", pp.name));
      return std::nullopt;
    }
    if (*end != 0 && pp.port == 0) {
      error(it->second.value, epath, "endPort needs a non-zero port");
      return std::nullopt;
    }
    if (*end != 0 && *end < pp.port) {
      error(it->second.value, epath, fmt::format("endPort {} is lower than port {}", *end, pp.port));
      return std::nullopt;
    }
    if (*end != 0 && uint32_t(*end) - pp.port + 1 > kMaxPortRange) {
      error(it->second.value, epath,
            fmt::format("port range {}-{} spans {} ports; at most {} are supported (one map entry per port)",
                        pp.port, *end, uint32_t(*end) - pp.port + 1, kMaxPortRange));
      return std::nullopt;
    }
    if (*end > pp.port) pp.end_port = *end;
  }
  return pp;
}

// icmps: [{fields: [{type: 8 | EchoRequest, family: IPv4}]}] (Cilium's ICMPRule).
bool Parser::icmps(const YAML::Node& n, const std::string& path, PeerRule& pr) {
  if (!isList(n, path)) return false;
  bool ok = true;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string ipath = index(path, i);
    auto f = fields(n[i], ipath, {{"fields"}, {}});
    if (!f) {
      ok = false;
      continue;
    }
    auto it = f->find("fields");
    if (it == f->end()) continue;
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(ipath, "fields");
    if (!isList(l, lpath)) {
      ok = false;
      continue;
    }
    for (size_t j = 0; j < l.size(); ++j) {
      auto t = icmpField(l[j], index(lpath, j));
      if (!t) {
        ok = false;
        continue;
      }
      if (std::find(pr.icmp_types.begin(), pr.icmp_types.end(), *t) == pr.icmp_types.end())
        pr.icmp_types.push_back(*t);
    }
  }
  return ok;
}

std::optional<uint8_t> Parser::icmpField(const YAML::Node& n, const std::string& path) {
  auto f = fields(n, path, {{"type", "family"}, {}});
  if (!f) return std::nullopt;
  if (auto it = f->find("family"); it != f->end()) {
    const std::string fpath = join(path, "family");
    auto fam = string(it->second.value, fpath);
    if (!fam) return std::nullopt;
    if (*fam == "IPv6") {
      error(it->second.value, fpath, "ICMPv6 is not supported yet (IPv6)");
      return std::nullopt;
    }
    if (*fam != "IPv4") {
      error(it->second.value, fpath, fmt::format("family '{}' must be IPv4 or IPv6", *fam));
      return std::nullopt;
    }
  }
  auto it = f->find("type");
  if (it == f->end()) {
    error(n, join(path, "type"), "missing required field 'type'");
    return std::nullopt;
  }
  const std::string tpath = join(path, "type");
  const YAML::Node& t = it->second.value;
  if (!t.IsScalar()) {
    error(t, tpath, fmt::format("expected an ICMP type number or name, got {}", typeName(t)));
    return std::nullopt;
  }
  const std::string& v = t.Scalar();
  if (isDigits(v)) {
    if (v.size() > 3 || std::stoul(v) > 255) {
      error(t, tpath, fmt::format("ICMP type {} is out of range (0-255)", v));
      return std::nullopt;
    }
    return static_cast<uint8_t>(std::stoul(v));
  }
  if (auto named = icmpTypeByName(v)) return *named;
  if (!v.empty() && v.front() == '-' && isDigits(v.substr(1))) {
    error(t, tpath, fmt::format("ICMP type {} is out of range (0-255)", v));
    return std::nullopt;
  }
  static const std::vector<std::string_view> kNames = {
      "EchoReply",        "DestinationUnreachable", "Redirect",  "EchoRequest",    "Echo",
      "RouterAdvertisement", "RouterSelection",     "TimeExceeded", "ParameterProblem", "Timestamp",
      "TimestampReply",   "Photuris",               "ExtendedEchoRequest", "ExtendedEchoReply"};
  auto sug = suggest(v, kNames);
  error(t, tpath,
        sug ? fmt::format("unknown ICMP type '{}' (did you mean '{}'?)", v, *sug)
            : fmt::format("unknown ICMP type '{}': give a number 0-255 or a name such as EchoRequest", v));
  return std::nullopt;
}

bool Parser::l7Rules(const YAML::Node& n, const std::string& path, PortRule& rule) {
  ObjectSpec spec{{"http"}, {{"kafka", ""}, {"dns", ""}, {"l7proto", ""}, {"l7", ""}}};
  auto f = fields(n, path, spec);
  if (!f) return false;
  auto it = f->find("http");
  if (it == f->end()) return true;
  const YAML::Node& l = it->second.value;
  const std::string lpath = join(path, "http");
  if (!isList(l, lpath)) return false;
  bool ok = true;
  for (size_t i = 0; i < l.size(); ++i) {
    const std::string ipath = index(lpath, i);
    auto hf = fields(l[i], ipath, {{"method", "path", "host", "headers", "headerMatches"}, {}});
    if (!hf) {
      ok = false;
      continue;
    }
    HttpRule h;
    for (auto [name, out] : {std::pair<const char*, std::string*>{"method", &h.method},
                             {"path", &h.path},
                             {"host", &h.host}}) {
      auto fi = hf->find(name);
      if (fi == hf->end()) continue;
      auto s = string(fi->second.value, join(ipath, name));
      if (!s) {
        ok = false;
        continue;
      }
      if (auto err = checkHttpRegex(*s); !err.empty()) {
        error(fi->second.value, join(ipath, name), fmt::format("invalid regular expression '{}': {}", *s, err));
        ok = false;
        continue;
      }
      *out = *s;
    }
    if (auto fi = hf->find("headers"); fi != hf->end()) {
      const YAML::Node& hl = fi->second.value;
      const std::string hpath = join(ipath, "headers");
      if (!isList(hl, hpath)) {
        ok = false;
        continue;
      }
      for (size_t j = 0; j < hl.size(); ++j) {
        auto s = string(hl[j], index(hpath, j));
        if (s) h.headers.push_back(*s);
        else ok = false;
      }
    }
    if (auto fi = hf->find("headerMatches"); fi != hf->end()) {
      if (!headerMatches(fi->second.value, join(ipath, "headerMatches"), h)) ok = false;
    }
    rule.http.push_back(std::move(h));
  }
  return ok;
}

// Cilium's HeaderMatch: {mismatch, name, secret, value}.
bool Parser::headerMatches(const YAML::Node& l, const std::string& lpath, HttpRule& h) {
  if (!isList(l, lpath)) return false;
  bool ok = true;
  for (size_t i = 0; i < l.size(); ++i) {
    const std::string ipath = index(lpath, i);
    auto f = fields(l[i], ipath,
                    {{"name", "value", "mismatch"},
                     {{"secret", "secret is not supported: membrane reads no Kubernetes secrets; put the value in 'value'"}}});
    if (!f) {
      ok = false;
      continue;
    }
    HeaderMatchRule m;
    bool item_ok = true;
    for (auto [name, out] : {std::pair<const char*, std::string*>{"name", &m.name},
                             {"value", &m.value},
                             {"mismatch", &m.mismatch}}) {
      auto fi = f->find(name);
      if (fi == f->end()) continue;
      auto s = string(fi->second.value, join(ipath, name));
      if (s) *out = *s;
      else item_ok = false;
    }
    if (!item_ok) {
      ok = false;
      continue;
    }
    const YAML::Node& at = l[i];
    if (m.name.empty()) {
      error(at, join(ipath, "name"), "required: the name of the header field to match");
      ok = false;
      continue;
    }
    if (!http::isFieldName(m.name)) {
      error(f->at("name").value, join(ipath, "name"), fmt::format("'{}' is not an HTTP field name", m.name));
      ok = false;
    }
    if (!http::isFieldValue(m.value)) {
      error(f->at("value").value, join(ipath, "value"),
            "control characters or leading/trailing whitespace are not allowed in a header value");
      ok = false;
    }
    if (!m.mismatch.empty() && m.mismatch != "LOG" && m.mismatch != "ADD" && m.mismatch != "DELETE" &&
        m.mismatch != "REPLACE") {
      error(f->at("mismatch").value, join(ipath, "mismatch"),
            fmt::format("unknown mismatch action '{}' (LOG, ADD, DELETE or REPLACE; leave it out to deny)",
                        m.mismatch));
      ok = false;
    } else if ((m.mismatch == "ADD" || m.mismatch == "DELETE" || m.mismatch == "REPLACE") &&
               http::isFramingField(m.name)) {
      error(f->at("mismatch").value, join(ipath, "mismatch"),
            fmt::format("'{}' frames or routes the request: it can be matched, not changed by {}", m.name,
                        m.mismatch));
      ok = false;
    }
    h.header_matches.push_back(std::move(m));
  }
  return ok;
}

}  // namespace membrane::policy::detail
