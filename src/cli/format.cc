#include "src/cli/format.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <map>

#include <fmt/format.h>

namespace membrane::cli {

namespace {

// Field access that never throws: the CLI must print whatever the agent sends.
const Json& field(const Json& j, const char* key) {
  static const Json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string text(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump(-1, ' ', false, Json::error_handler_t::replace);
}
std::string str(const Json& j, const char* key) { return text(field(j, key)); }

int64_t num(const Json& j, const char* key, int64_t def = 0) {
  const Json& v = field(j, key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_unsigned()) return static_cast<int64_t>(v.get<uint64_t>());
  if (v.is_number_float()) return static_cast<int64_t>(v.get<double>());
  if (v.is_string()) {
    try {
      return std::stoll(v.get<std::string>());
    } catch (...) {
    }
  }
  return def;
}

bool flag(const Json& j, const char* key) {
  const Json& v = field(j, key);
  return v.is_boolean() && v.get<bool>();
}

std::vector<std::string> stringList(const Json& v) {
  std::vector<std::string> out;
  if (v.is_array())
    for (const auto& e : v) out.push_back(text(e));
  else if (v.is_object())  // {"k": "v"} form
    for (auto it = v.begin(); it != v.end(); ++it) out.push_back(it.key() + "=" + text(it.value()));
  else if (!v.is_null())
    out.push_back(text(v));
  return out;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string capitalized(std::string s) {
  s = lower(std::move(s));
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

// Protocol name ("TCP") from a name or an IP protocol number.
std::string protoName(const Json& v) {
  if (v.is_number()) {
    switch (v.get<int>()) {
      case 0: return "ANY";
      case 1: return "ICMP";
      case 6: return "TCP";
      case 17: return "UDP";
      case 58: return "ICMPv6";
      case 132: return "SCTP";
      default: return std::to_string(v.get<int>());
    }
  }
  std::string s = upper(text(v));
  return s == "ICMPV6" ? "ICMPv6" : s;
}

int protoNumber(const std::string& name) {
  static const std::map<std::string, int> kNums = {{"ICMP", 1}, {"TCP", 6}, {"UDP", 17}, {"ICMPv6", 58}, {"SCTP", 132}};
  auto it = kNums.find(name);
  return it == kNums.end() ? 0 : it->second;
}

std::string icmpTypeName(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_number()) return "";
  switch (v.get<int>()) {
    case 0: return "EchoReply";
    case 3: return "DestinationUnreachable";
    case 5: return "Redirect";
    case 8: return "EchoRequest";
    case 11: return "TimeExceeded";
    case 12: return "ParameterProblem";
    default: return fmt::format("Type{}", v.get<int>());
  }
}

// "10.200.0.7:43122 -> 10.200.0.5:80 tcp SYN" or "10.200.0.7 -> 10.200.0.5 EchoRequest".
std::string flowSummary(const Json& ev) {
  std::string proto = protoName(field(ev, "proto"));
  std::string out = fmt::format("{} -> {}", str(ev, "src"), str(ev, "dst"));
  if (proto == "ICMP" || proto == "ICMPv6") {
    std::string t = icmpTypeName(field(ev, "icmp_type"));
    if (!t.empty()) out += " " + t;
    return out;
  }
  if (!proto.empty()) out += " " + lower(proto);
  const Json& flags = field(ev, "tcp_flags");
  std::string f;
  if (flags.is_array()) {
    for (const auto& x : flags) f += (f.empty() ? "" : ", ") + text(x);
  } else {
    f = text(flags);
  }
  if (!f.empty()) out += " " + f;
  return out;
}

std::string identityPair(const Json& ev) {
  return identityName(field(ev, "src_identity")) + "->" + identityName(field(ev, "dst_identity"));
}

// Trace observation point as cilium-dbg prints it ("-> endpoint 1204", "-> stack").
std::string observationPoint(const Json& ev) {
  const Json& op = field(ev, "observation_point");
  std::string name;
  if (op.is_number()) {
    static const char* kNames[] = {"to-endpoint", "to-proxy", "to-host", "to-stack", "to-overlay",
                                   "from-endpoint", "from-proxy", "from-host", "from-stack", "from-overlay",
                                   "from-network", "to-network"};
    int i = op.get<int>();
    name = (i >= 0 && i < 12) ? kNames[i] : std::to_string(i);
  } else {
    name = lower(text(op));
  }
  std::string ep = std::to_string(num(ev, "endpoint"));
  if (name == "to-endpoint" || name.empty()) return "-> endpoint " + ep;
  if (name == "from-endpoint") return "<- endpoint " + ep;
  if (name.starts_with("to-")) return "-> " + name.substr(3);
  if (name.starts_with("from-")) return "<- " + name.substr(5);
  return name;
}

std::string ctState(const Json& ev) {
  const Json& v = field(ev, "ct_state").is_null() ? field(ev, "state") : field(ev, "ct_state");
  if (v.is_number()) {
    switch (v.get<int>()) {
      case 0: return "new";
      case 1: return "established";
      case 2: return "reply";
      case 3: return "related";
      default: return std::to_string(v.get<int>());
    }
  }
  return lower(text(v));
}

std::string verdictAction(const std::string& verdict) {
  std::string v = upper(verdict);
  if (v == "FORWARDED" || v == "ALLOW" || v == "ALLOWED") return "allow";
  if (v == "DROPPED" || v == "DENY" || v == "DENIED") return "deny";
  if (v == "AUDIT") return "audit";
  if (v == "REDIRECTED") return "redirect";
  return lower(verdict);
}

void addLabelRows(std::vector<std::vector<std::string>>& rows, std::vector<std::string> first_cells, size_t label_col,
                  std::vector<std::string> labels, size_t ncols) {
  first_cells.resize(ncols);
  first_cells[label_col] = labels.empty() ? "" : labels[0];
  rows.push_back(std::move(first_cells));
  for (size_t i = 1; i < labels.size(); ++i) {
    std::vector<std::string> cont(ncols);
    cont[label_col] = labels[i];
    rows.push_back(std::move(cont));
  }
}

}  // namespace

std::string alignColumns(const std::vector<std::vector<std::string>>& rows, size_t padding) {
  size_t ncols = 0;
  for (const auto& r : rows) ncols = std::max(ncols, r.size());
  std::vector<size_t> width(ncols, 0);
  for (const auto& r : rows)
    for (size_t c = 0; c + 1 < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      line += r[c];
      if (c + 1 < r.size()) line.append(width[c] + padding - r[c].size(), ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

bool statusOk(const Json& health) { return lower(str(health, "status")) == "ok"; }

std::string formatStatus(const Json& h) {
  const Json& dp = field(h, "datapath");
  std::string dp_status = str(dp, "status").empty() ? "Unknown" : capitalized(str(dp, "status"));
  std::vector<std::vector<std::string>> rows = {
      {"KVStore:", "Disabled"},
      {"Kubernetes:", "Disabled"},
      {"membrane:", fmt::format("{}   {} ({})", capitalized(str(h, "status")), str(h, "version"), str(h, "revision"))},
      {"Datapath:", fmt::format("{}   bpf-root {}", dp_status, str(dp, "bpf_root"))},
      {"IPv4 address pool:", str(h, "pod_cidr")},
      {"Endpoints:", std::to_string(num(h, "endpoints"))},
      {"Policy revision:", std::to_string(num(h, "policy_revision"))},
  };
  // Cilium: "Proxy Status:   OK, ip 10.0.0.1, 0 redirects active on ports 10000-20000".
  const Json& px = field(h, "proxy");
  if (str(px, "status") == "disabled") {
    rows.push_back({"Proxy Status:", "Disabled"});
  } else if (!str(px, "status").empty()) {
    rows.push_back({"Proxy Status:", fmt::format("{}, ip {}, {} redirects active on ports {}, pid {}",
                                                 str(px, "status") == "ok" ? "OK" : capitalized(str(px, "status")),
                                                 str(px, "ip"), num(px, "redirects"), str(px, "ports"), num(px, "pid"))});
  }
  rows.push_back({"Cluster health:", formatClusterHealthLine(field(h, "cluster_health"))});
  if (!str(h, "message").empty()) rows.push_back({"Message:", str(h, "message")});
  return alignColumns(rows);
}

std::string formatClusterHealthLine(const Json& ch) {
  if (!ch.is_object()) return "Disabled";
  std::string interval = fmt::format("{}s", num(ch, "interval_seconds"));
  if (flag(ch, "pending")) return fmt::format("Probe pending (Probe interval: {})", interval);
  return fmt::format("{}/{} reachable ({}) (Probe interval: {})", num(ch, "reachable"), num(ch, "total"),
                     str(ch, "probe_time"), interval);
}

std::string formatRtt(double seconds) {
  // Go's time.Duration String(), as cilium-health prints RTTs: 315.254µs, 1.5ms, 2s.
  // llround, not (long long)(x + 0.5): that truncates toward zero, wrong for negatives.
  if (seconds < 1e-6) return fmt::format("{}ns", std::llround(seconds * 1e9));
  auto trim = [](std::string v) {
    if (v.find('.') != std::string::npos) {
      while (!v.empty() && v.back() == '0') v.pop_back();
      if (!v.empty() && v.back() == '.') v.pop_back();
    }
    return v;
  };
  if (seconds < 1e-3) return trim(fmt::format("{:.3f}", seconds * 1e6)) + "µs";
  if (seconds < 1) return trim(fmt::format("{:.6f}", seconds * 1e3)) + "ms";
  return trim(fmt::format("{:.9f}", seconds)) + "s";
}

namespace {
std::string probeText(const Json& probe) {
  if (!probe.is_object()) return "unknown";
  if (flag(probe, "ok")) return "OK, RTT=" + formatRtt(probe.value("rtt_seconds", 0.0));
  std::string err = str(probe, "error");
  return err.empty() ? "unreachable" : err;
}
std::string pathSummary(const Json& path) {
  if (!path.is_object()) return "-";
  return flag(path, "reachable") ? "OK" : "unreachable";
}
}  // namespace

std::string formatHealthStatus(const Json& h, bool succinct) {
  std::string out = fmt::format("Probe time:   {}\n", str(h, "probe_time").empty() ? "pending" : str(h, "probe_time"));
  out += "Nodes:\n";
  const Json& nodes = field(h, "nodes");
  if (!nodes.is_array()) return out;
  for (const auto& n : nodes) {
    std::string name = str(n, "name") + (flag(n, "local") ? " (localhost)" : "");
    if (succinct) {
      out += fmt::format("  {}: host {}, endpoint {}\n", name, pathSummary(field(n, "host")),
                         pathSummary(field(n, "endpoint")));
      continue;
    }
    out += fmt::format("  {}:\n", name);
    auto path = [&](const char* what, const Json& p) {
      if (!p.is_object()) return;
      out += fmt::format("    {} connectivity to {}:\n", what, str(p, "address"));
      out += fmt::format("      ICMP to stack:   {}\n", probeText(field(p, "icmp")));
      out += fmt::format("      HTTP to agent:   {}\n", probeText(field(p, "http")));
    };
    path("Host", field(n, "host"));
    path("Endpoint", field(n, "endpoint"));
  }
  return out;
}

std::string formatStatusBrief(const Json& h) {
  if (statusOk(h)) return "OK\n";
  std::string msg = str(h, "message");
  return capitalized(str(h, "status").empty() ? "unknown" : str(h, "status")) + (msg.empty() ? "" : ": " + msg) + "\n";
}

std::string enforcementText(const Json& d) {
  if (flag(d, "audit")) return "Audit";
  return flag(d, "enforcing") ? "Enabled" : "Disabled";
}

std::string formatEndpointList(const Json& endpoints) {
  constexpr size_t kCols = 8;
  std::vector<std::vector<std::string>> rows = {
      {"ENDPOINT", "POLICY (ingress)", "POLICY (egress)", "IDENTITY", "LABELS (source:key[=value])", "IPv6", "IPv4",
       "STATUS"},
      {"", "ENFORCEMENT", "ENFORCEMENT", "", "", "", "", ""},
  };
  std::vector<Json> eps;
  if (endpoints.is_array()) eps.assign(endpoints.begin(), endpoints.end());
  std::stable_sort(eps.begin(), eps.end(), [](const Json& a, const Json& b) { return num(a, "id") < num(b, "id"); });
  for (const auto& ep : eps) {
    const Json& pol = field(ep, "policy");
    auto labels = stringList(field(ep, "labels"));
    std::sort(labels.begin(), labels.end());
    std::vector<std::string> cells = {std::to_string(num(ep, "id")),
                                      enforcementText(field(pol, "ingress")),
                                      enforcementText(field(pol, "egress")),
                                      std::to_string(num(ep, "identity")),
                                      "",
                                      str(ep, "ipv6"),
                                      str(ep, "ipv4"),
                                      str(ep, "state")};
    addLabelRows(rows, std::move(cells), 4, std::move(labels), kCols);
  }
  return alignColumns(rows);
}

std::string formatEndpointCreated(const Json& ep) {
  return fmt::format("Endpoint {} created for {}/{}: identity {}, IPv4 {}\n", num(ep, "id"), str(ep, "namespace"),
                     str(ep, "name"), num(ep, "identity"), str(ep, "ipv4"));
}

std::string formatIdentityList(const Json& identities) {
  std::vector<std::vector<std::string>> rows = {{"ID", "LABELS"}};
  std::vector<Json> ids;
  if (identities.is_array()) ids.assign(identities.begin(), identities.end());
  else if (identities.is_object()) ids.push_back(identities);
  std::stable_sort(ids.begin(), ids.end(), [](const Json& a, const Json& b) { return num(a, "id") < num(b, "id"); });
  for (const auto& id : ids) {
    auto labels = stringList(field(id, "labels"));
    std::sort(labels.begin(), labels.end());
    addLabelRows(rows, {std::to_string(num(id, "id"))}, 1, std::move(labels), 2);
  }
  return alignColumns(rows);
}

std::string identityName(const Json& id) {
  if (id.is_string()) return id.get<std::string>();
  if (!id.is_number()) return "unknown";
  switch (id.get<int64_t>()) {
    case 0: return "unknown";
    case 1: return "host";
    case 2: return "world";
    case 3: return "unmanaged";
    case 4: return "health";
    case 5: return "init";
    case 6: return "remote-node";
    case 7: return "kube-apiserver";
    default: return std::to_string(id.get<int64_t>());
  }
}

// The endpoint whose policy the event is about: for ingress at a local
// destination that is the destination (the program runs on the source's
// veth), as Cilium reports "to endpoint <dst>" / "local EP ID <dst>".
int64_t localEndpoint(const Json& ev) {
  if (str(ev, "direction") == "INGRESS" && num(ev, "dst_endpoint") > 0) return num(ev, "dst_endpoint");
  return num(ev, "endpoint");
}

// An L7 access-log event as Cilium's monitor prints it:
//   <- Request http from 12 ([k8s:org=empire …]) to 11 ([…]), identity 258->257, verdict Denied PUT http://deathstar.default.svc.cluster.local/v1/exhaust-port => 0
//   <- Response http to 12 ([…]) from 11 ([…]), identity 257->258, verdict Denied PUT http://deathstar.default.svc.cluster.local/v1/exhaust-port => 403, latency 812us
// "<-" ingress, "->" egress.
namespace {
std::string formatL7(const Json& ev) {
  const Json& src = field(ev, "src");
  const Json& dst = field(ev, "dst");
  auto peer = [](const Json& side) {
    std::string labels;
    const Json& ls = field(side, "labels");
    if (ls.is_array())
      for (const auto& l : ls)
        if (l.is_string()) labels += (labels.empty() ? "" : " ") + l.get<std::string>();
    return fmt::format("{} ([{}])", num(side, "endpoint"), labels);
  };
  std::string arrow = str(ev, "direction") == "egress" ? "->" : "<-";
  // The proxy sends the URL as Cilium prints it (http://<Host header><path>);
  // an older proxy sent only the path: build it from the destination then.
  std::string url = str(ev, "url");
  if (url.find("://") == std::string::npos) url = fmt::format("http://{}:{}{}", str(dst, "ip"), num(dst, "port"), url);
  if (str(ev, "l7_type") == "response") {
    std::string line = fmt::format("{} Response http to {} from {}, identity {}->{}, verdict {} {} {} => {}, latency {}us",
                                   arrow, peer(src), peer(dst), num(dst, "identity"), num(src, "identity"),
                                   str(ev, "verdict"), str(ev, "method"), url, num(ev, "status"), num(ev, "latency_us"));
    if (!str(ev, "error").empty()) line += ", error " + str(ev, "error");
    return line;
  }
  return fmt::format("{} Request http from {} to {}, identity {}->{}, verdict {} {} {} => 0", arrow, peer(src), peer(dst),
                     num(src, "identity"), num(dst, "identity"), str(ev, "verdict"), str(ev, "method"), url);
}
}  // namespace

std::string formatEvent(const Json& ev) {
  std::string type = str(ev, "type");
  if (type == "drop") {
    return fmt::format("xx drop ({}) to endpoint {}, ifindex {}, identity {}: {}", str(ev, "reason"),
                       localEndpoint(ev), num(ev, "ifindex"), identityPair(ev), flowSummary(ev));
  }
  if (type == "policy-verdict") {
    std::string dir = lower(str(ev, "direction"));
    const Json& remote = dir == "egress" ? field(ev, "dst_identity") : field(ev, "src_identity");
    std::string proto = protoName(field(ev, "proto"));
    std::string line = fmt::format("Policy verdict log: local EP ID {}, remote ID {}, proto {}, {}, action {}, match {}, {}",
                                   localEndpoint(ev), identityName(remote), protoNumber(proto), dir,
                                   verdictAction(str(ev, "verdict")), str(ev, "match"), flowSummary(ev));
    return line;
  }
  if (type == "trace") {
    std::string state = ctState(ev);
    return fmt::format("{}, identity {}{} ifindex {}: {}", observationPoint(ev), identityPair(ev),
                       state.empty() ? "" : " state " + state, num(ev, "ifindex"), flowSummary(ev));
  }
  if (type == "lost") return fmt::format("Lost {} events", num(ev, "lost"));
  if (type == "l7") return formatL7(ev);
  return "";
}

std::string formatPolicyGet(const Json& answer) {
  const Json& pols = field(answer, "policies");
  std::string out = (pols.is_null() ? Json::array() : pols).dump(2, ' ', false, Json::error_handler_t::replace);
  return out + "\nRevision: " + std::to_string(num(answer, "revision")) + "\n";
}

std::string formatPolicyTrace(const Json& answer) {
  std::string out = str(answer, "text");
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

std::string formatDiagnostics(const Json& error_body) {
  std::string out;
  const Json& diags = field(error_body, "diagnostics");
  if (!diags.is_array()) return out;
  for (const auto& d : diags) {
    std::string path = str(d, "path");
    out += fmt::format("{}:{}:{}: {}{}\n", str(d, "file"), num(d, "line"), num(d, "column"),
                       path.empty() ? "" : path + ": ", str(d, "message"));
  }
  return out;
}

std::string formatMetricList(const Json& samples, const std::regex* filter) {
  std::vector<std::vector<std::string>> rows = {{"Metric", "Labels", "Value"}};
  if (samples.is_array()) {
    for (const auto& s : samples) {
      std::string name = str(s, "name");
      if (filter && !std::regex_search(name, *filter)) continue;
      std::string labels;
      const Json& l = field(s, "labels");
      if (l.is_object())  // nlohmann orders object keys: labels come out sorted
        for (auto it = l.begin(); it != l.end(); ++it)
          labels += (labels.empty() ? "" : " ") + it.key() + "=" + text(it.value());
      const Json& v = field(s, "value");
      std::string value = v.is_number() ? fmt::format("{:f}", v.get<double>()) : text(v);
      rows.push_back({name, labels, value});
    }
  }
  return alignColumns(rows);
}

std::string formatCtList(const Json& flows) {
  std::string out;
  if (!flows.is_array()) return out;
  for (const auto& f : flows) {
    std::string dir = str(f, "direction").empty() ? "OUT" : upper(str(f, "direction"));
    out += fmt::format("{} {} {} -> {} expires={} RxPackets={} RxBytes={} TxPackets={} TxBytes={} SourceSecurityID={}",
                       protoName(field(f, "proto")), dir, str(f, "src"), str(f, "dst"), num(f, "expires_in_seconds"),
                       num(f, "rx_packets"), num(f, "rx_bytes"), num(f, "tx_packets"), num(f, "tx_bytes"),
                       num(f, "src_identity"));
    auto flags = stringList(field(f, "flags"));
    if (!flags.empty()) {
      std::string joined;
      for (const auto& x : flags) joined += (joined.empty() ? "" : ",") + x;
      out += " Flags=" + joined;
    }
    out += "\n";
  }
  return out;
}

std::string formatBpfPolicy(const Json& entries) {
  bool named = false;
  if (entries.is_array())
    for (const auto& e : entries)
      if (!str(e, "policy").empty()) named = true;
  const size_t ncols = named ? 9 : 8;
  std::vector<std::string> header = {"POLICY", "DIRECTION", "IDENTITY", "LABELS (source:key[=value])",
                                     "PORT/PROTO", "PROXY PORT", "BYTES", "PACKETS"};
  if (named) header.push_back("DERIVED FROM");
  std::vector<std::vector<std::string>> rows = {header};
  if (entries.is_array()) {
    for (const auto& e : entries) {
      int64_t id = num(e, "identity");
      auto labels = stringList(field(e, "labels"));
      if (id == 0) labels = {"reserved:unknown"};
      std::string proto = protoName(field(e, "proto"));
      int64_t port = num(e, "port");
      std::string pp;
      if (port != 0)
        pp = fmt::format("{}/{}", port, proto.empty() || proto == "ANY" ? "ANY" : proto);
      else
        pp = proto.empty() || proto == "ANY" ? "ANY" : "ANY/" + proto;
      int64_t proxy = num(e, "proxy_port");
      std::vector<std::string> cells = {flag(e, "deny") ? "Deny" : "Allow",
                                        capitalized(str(e, "direction")),
                                        id == 0 ? "ANY" : std::to_string(id),
                                        "",
                                        pp,
                                        proxy ? std::to_string(proxy) : "NONE",
                                        std::to_string(num(e, "bytes")),
                                        std::to_string(num(e, "packets"))};
      if (named) cells.push_back(str(e, "policy"));
      addLabelRows(rows, std::move(cells), 3, std::move(labels), ncols);
    }
  }
  return alignColumns(rows);
}

}  // namespace membrane::cli
