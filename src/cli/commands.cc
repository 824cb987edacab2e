#include "src/cli/commands.h"

#include "src/kernel/netns.h"
#include "src/kernel/pod_process.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <iostream>
#include <regex>
#include <sstream>
#include <utility>

#include <fmt/format.h>

#include "membrane/labels.h"
#include "membrane/result.h"
#include "src/api/http_client.h"
#include "src/cli/format.h"

namespace membrane::cli {

namespace {

using api::HttpClient;

// An API call that failed: the message to print (transport error or the
// server's "error") and, for a rejected policy, its diagnostics.
struct Failure {
  std::string message;
  std::string diagnostics;
};

struct Answer {
  Json body;
  Failure failure;
  bool ok = false;
};

Answer call(HttpClient& client, std::string_view method, const std::string& target, const std::string& body = "") {
  Answer a;
  auto r = client.request(method, target, body);
  if (!r.ok()) {
    a.failure.message = r.error().message;
    return a;
  }
  Json j = Json::parse(r->body, nullptr, false);
  if (r->status < 200 || r->status >= 300) {
    if (j.is_object() && j.contains("error") && j["error"].is_string()) {
      a.failure.message = j["error"].get<std::string>();
      a.failure.diagnostics = formatDiagnostics(j);
    } else {
      a.failure.message = fmt::format("{} {}: membraned answered {} {}", method, target, r->status,
                                      api::reasonPhrase(r->status));
    }
    return a;
  }
  if (j.is_discarded()) {
    a.failure.message = fmt::format("{} {}: membraned sent an answer that is not JSON", method, target);
    return a;
  }
  a.body = std::move(j);
  a.ok = true;
  return a;
}

int fail(Context& ctx, const Failure& f) {
  ctx.err << f.message << "\n" << f.diagnostics;
  ctx.err.flush();
  return 1;
}
int fail(Context& ctx, const std::string& msg) { return fail(ctx, Failure{msg, ""}); }

void printJson(Context& ctx, const Json& j) {
  ctx.out << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
}

bool isNumber(const std::string& s) {
  return !s.empty() && s.size() <= 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string nsOrDefault(const std::string& ns) { return ns.empty() ? "default" : ns; }

// The endpoint object for "ID" or "NAME" (in namespace ns).
Answer findEndpoint(HttpClient& client, const std::string& ref, const std::string& ns) {
  if (isNumber(ref)) return call(client, "GET", "/v1/endpoint/" + ref);
  Answer a = call(client, "GET",
                  "/v1/endpoint?name=" + api::percentEncode(ref) + "&namespace=" + api::percentEncode(nsOrDefault(ns)));
  if (!a.ok) return a;
  if (!a.body.is_array() || a.body.empty()) {
    a.ok = false;
    a.failure.message = fmt::format("no endpoint named '{}' in namespace '{}' (see 'membrane endpoint list')", ref,
                                    nsOrDefault(ns));
    return a;
  }
  a.body = a.body[0];
  return a;
}

// The numeric id for "ID" or "NAME" (looked up in namespace ns); fills *failure otherwise.
std::optional<std::string> endpointId(HttpClient& client, const std::string& ref, const std::string& ns,
                                      Answer* failure) {
  if (isNumber(ref)) return ref;
  Answer ep = findEndpoint(client, ref, ns);
  if (!ep.ok) {
    *failure = ep;
    return std::nullopt;
  }
  return std::to_string(ep.body.value("id", 0));
}

Result<std::string> readInput(const std::string& file) {
  std::stringstream ss;
  if (file == "-") {
    ss << std::cin.rdbuf();
    if (std::cin.bad()) return Error(EIO, "read policy from stdin failed");
    return ss.str();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return Error::fromErrno(errno ? errno : ENOENT, "open policy file " + file);
  ss << in.rdbuf();
  if (in.bad()) return Error::fromErrno(errno ? errno : EIO, "read policy file " + file);
  return ss.str();
}

// A policy change the agent stored but does not enforce yet (202: a stored
// policy is held, see docs/api.md "Policy changes") says so on stderr.
void warnIfHeld(Context& ctx, const Json& body) {
  if (body.is_object() && body.contains("held") && body["held"].is_string())
    ctx.err << "Warning: stored, not enforced yet: " << body["held"].get<std::string>() << "\n";
}

}  // namespace

int cmdStatus(Context& ctx, bool brief) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/healthz");
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << (brief ? formatStatusBrief(a.body) : formatStatus(a.body));
  return statusOk(a.body) ? 0 : 1;
}

int cmdHealthStatus(Context& ctx, bool probe, bool succinct) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", probe ? "/v1/health?probe=true" : "/v1/health");
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << formatHealthStatus(a.body, succinct);
  // Like `cilium-health status`, the exit code says whether the call worked, not
  // whether every node is reachable: scripts read `reachable`/`total` (-o json).
  return 0;
}

int cmdEndpointList(Context& ctx) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/endpoint");
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << formatEndpointList(a.body);
  return 0;
}

int cmdEndpointGet(Context& ctx, const std::string& ref, const std::string& ns) {
  HttpClient client(ctx.socket);
  Answer a = findEndpoint(client, ref, ns);
  if (!a.ok) return fail(ctx, a.failure);
  // Like cilium-dbg, the endpoint's detail is its JSON in either output mode.
  printJson(ctx, a.body);
  return 0;
}

int cmdEndpointCreate(Context& ctx, const std::string& name, const std::string& ns, const std::string& labels,
                      const std::vector<std::string>& ports, const std::string& service_account) {
  Json named = Json::array();
  for (const auto& p : ports) {
    static const std::regex re("^([^=/]+)=([0-9]{1,5})(?:/([A-Za-z]+))?$");
    std::smatch m;
    if (!std::regex_match(p, m, re))
      return fail(ctx, fmt::format("--port '{}': expected NAME=PORT[/PROTOCOL], e.g. http=80/TCP", p));
    named.push_back({{"name", m[1].str()}, {"port", std::stoi(m[2].str())},
                     {"protocol", m[3].matched ? m[3].str() : std::string("TCP")}});
  }
  Json lab = Json::object();
  std::stringstream ss(labels);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    size_t eq = item.find('=');
    std::string key = item.substr(0, eq);
    if (key.empty()) return fail(ctx, fmt::format("label '{}': expected key=value", item));
    lab[key] = eq == std::string::npos ? "" : item.substr(eq + 1);
  }
  // The pod's service account is a label to the agent (validated there like any label value).
  if (!service_account.empty()) lab["io.cilium.k8s.policy.serviceaccount"] = service_account;
  Json body = {{"name", name}, {"namespace", nsOrDefault(ns)}, {"labels", lab}};
  if (!named.empty()) body["named_ports"] = named;
  HttpClient client(ctx.socket);
  Answer a = call(client, "PUT", "/v1/endpoint", body.dump());
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << formatEndpointCreated(a.body);
  return 0;
}

int cmdEndpointDelete(Context& ctx, const std::string& ref, const std::string& ns) {
  HttpClient client(ctx.socket);
  Answer lookup;
  auto found = endpointId(client, ref, ns, &lookup);
  if (!found) return fail(ctx, lookup.failure);
  const std::string& id = *found;
  Answer a = call(client, "DELETE", "/v1/endpoint/" + id);
  if (!a.ok) return fail(ctx, a.failure);
  ctx.out << "Endpoint " << id << " deleted\n";
  return 0;
}

int cmdExec(Context& ctx, const std::string& name, const std::string& ns, const std::vector<std::string>& argv) {
  if (argv.empty()) return fail(ctx, "membrane exec: give a command after '--', e.g. membrane exec xwing -- curl -s http://10.200.0.5/");
  std::string netns, hosts, resolv, hostname;
  {
    HttpClient client(ctx.socket);  // closed before exec (and CLOEXEC anyway)
    Answer a = findEndpoint(client, name, ns);
    if (!a.ok) return fail(ctx, a.failure);
    netns = a.body.value("netns", "");
    // A pod of `membrane apply` has its own /etc/hosts (service names) and
    // resolv.conf: exec sees the same files as the pod's command.
    Answer p = call(client, "GET", "/v1/pods?namespace=" + api::percentEncode(nsOrDefault(ns)) + "&name=" +
                                       api::percentEncode(name));
    if (p.ok && p.body.is_object()) {
      hosts = p.body.value("hosts_file", "");
      resolv = p.body.value("resolv_file", "");
      hostname = p.body.value("name", "");
    }
  }
  if (netns.empty()) return fail(ctx, fmt::format("endpoint '{}' has no network namespace path", name));
  // This process is single-threaded here, so setns moves all of it (src/kernel owns the syscall).
  if (auto st = kernel::enterPodForExec(netns, hosts, resolv, hostname); !st.ok()) {
    const Error& e = st.error();
    return fail(ctx, fmt::format("{} (pod {}/{}){}", e.message, nsOrDefault(ns), name,
                                 e.code == EPERM ? " — run as root (needs CAP_SYS_ADMIN)" : ""));
  }
  ctx.out.flush();
  ctx.err.flush();
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  int err = errno;
  if (err == ENOENT) {
    fail(ctx, fmt::format("membrane exec: {}: command not found", argv[0]));
    return 127;
  }
  fail(ctx, fmt::format("membrane exec: {}: {}", argv[0], membrane::errnoText(err)));
  return 126;
}

int cmdIdentityList(Context& ctx) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/identity");
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << formatIdentityList(a.body);
  return 0;
}

int cmdIdentityGet(Context& ctx, const std::string& id) {
  if (!isNumber(id)) return fail(ctx, fmt::format("identity '{}' is not a number", id));
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/identity/" + id);
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << formatIdentityList(a.body);
  return 0;
}

int cmdPolicyImport(Context& ctx, const std::vector<std::string>& files) {
  HttpClient client(ctx.socket);
  Json answers = Json::array();
  int64_t revision = -1;
  for (const auto& f : files) {
    auto text = readInput(f);
    if (!text.ok()) return fail(ctx, text.error().message);
    Json body = {{"source", f == "-" ? "stdin" : f}, {"content", *text}};
    Answer a = call(client, "PUT", "/v1/policy", body.dump(-1, ' ', false, Json::error_handler_t::replace));
    if (!a.ok) return fail(ctx, a.failure);
    warnIfHeld(ctx, a.body);
    revision = a.body.value("revision", int64_t{0});
    answers.push_back(a.body);
  }
  if (ctx.json)
    printJson(ctx, files.size() == 1 ? answers[0] : answers);
  else
    ctx.out << "Revision: " << revision << "\n";
  return 0;
}

int cmdPolicyGet(Context& ctx) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/policy");
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << formatPolicyGet(a.body);
  return 0;
}

int cmdPolicyDelete(Context& ctx, const std::string& name, const std::string& ns, bool all,
                    const std::string& labels) {
  if (int(all) + int(!name.empty()) + int(!labels.empty()) != 1)
    return fail(ctx, "policy delete: give exactly one of a policy NAME, --labels k=v[,k=v...] or --all");
  std::string target = all               ? "/v1/policy?all=true"
                       : !labels.empty() ? "/v1/policy?labels=" + api::percentEncode(labels)
                                         : "/v1/policy?name=" + api::percentEncode(name) +
                                               "&namespace=" + api::percentEncode(nsOrDefault(ns));
  HttpClient client(ctx.socket);
  Answer a = call(client, "DELETE", target);
  if (!a.ok) return fail(ctx, a.failure);
  warnIfHeld(ctx, a.body);
  if (ctx.json) {
    printJson(ctx, a.body);
    return 0;
  }
  if (a.body.contains("deleted") && a.body["deleted"].is_array())
    for (const auto& d : a.body["deleted"]) ctx.out << "Deleted " << (d.is_string() ? d.get<std::string>() : d.dump()) << "\n";
  ctx.out << "Revision: " << a.body.value("revision", int64_t{0}) << "\n";
  return 0;
}

std::optional<long> parseDurationSeconds(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
  if (i == 0 || i > 9) return std::nullopt;
  long n = std::stol(text.substr(0, i));
  std::string unit = text.substr(i);
  if (unit.empty() || unit == "s") return n;
  if (unit == "ms") return (n + 999) / 1000;
  if (unit == "m") return n * 60;
  if (unit == "h") return n * 3600;
  return std::nullopt;
}

int cmdPolicyWait(Context& ctx, const std::string& revision, const std::string& timeout) {
  if (!isNumber(revision))
    return fail(ctx, fmt::format("policy wait: revision '{}' is not a number (see 'membrane policy get')", revision));
  auto secs = parseDurationSeconds(timeout);
  if (!secs || *secs > 3600)
    return fail(ctx, fmt::format("policy wait: --timeout '{}' is not a duration up to 1h (e.g. 30s, 2m)", timeout));
  // The agent bounds the wait; the connection gets a margin on top.
  HttpClient client(ctx.socket, std::chrono::seconds(*secs + 10));
  Answer a = call(client, "GET", fmt::format("/v1/policy/wait?revision={}&timeout={}", revision, *secs));
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << "Policy revision " << revision << " is enforced by every endpoint (current revision "
            << a.body.value("revision", int64_t{0}) << ")\n";
  return 0;
}

int cmdEndpointConfig(Context& ctx, const std::string& ref, const std::string& ns,
                      const std::vector<std::string>& settings) {
  HttpClient client(ctx.socket);
  Answer lookup;
  auto found = endpointId(client, ref, ns, &lookup);
  if (!found) return fail(ctx, lookup.failure);
  const std::string& id = *found;
  if (settings.empty()) {
    Answer a = call(client, "GET", "/v1/endpoint/" + id);
    if (!a.ok) return fail(ctx, a.failure);
    Json cfg = a.body.value("config", Json::object());
    if (ctx.json) {
      printJson(ctx, cfg);
      return 0;
    }
    for (const auto& [k, v] : cfg.items())
      ctx.out << fmt::format("{:<24} {}\n", k, v.is_string() ? v.get<std::string>() : v.dump());
    return 0;
  }
  Json body = Json::object();
  for (const auto& s : settings) {
    size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
      return fail(ctx, fmt::format("endpoint config: '{}' is not Option=Value (e.g. PolicyAuditMode=Enabled)", s));
    body[s.substr(0, eq)] = s.substr(eq + 1);
  }
  Answer a = call(client, "PATCH", "/v1/endpoint/" + id + "/config", body.dump());
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body.value("config", Json::object()));
  else
    ctx.out << "Endpoint " << id << " configuration updated successfully\n";
  return 0;
}

int cmdNamespaceLabel(Context& ctx, const std::string& ns, const std::vector<std::string>& items, bool overwrite) {
  if (items.empty()) return fail(ctx, "namespace label: give at least one k=v (or k- to remove a label)");
  HttpClient client(ctx.socket);
  Answer list = call(client, "GET", "/v1/namespace");
  if (!list.ok) return fail(ctx, list.failure);
  Json labels = Json::object();
  for (const auto& n : list.body)
    if (n.value("name", "") == ns) labels = n.value("labels", Json::object());
  // Listed, but derived from the name by the agent: not ours to send back.
  const std::string name_label(labels::kNamespaceNameLabel);
  labels.erase(name_label);
  const std::string derived = fmt::format(
      "namespace label: {} is derived from the namespace's name and is always '{}'; it cannot be set or removed; "
      "nothing changed",
      name_label, ns);
  bool changed = false;
  for (const auto& item : items) {
    if (item.size() > 1 && item.back() == '-' && item.find('=') == std::string::npos) {
      std::string key = item.substr(0, item.size() - 1);
      if (key == name_label) return fail(ctx, derived);
      changed |= labels.erase(key) > 0;
      continue;
    }
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      return fail(ctx, fmt::format("namespace label: '{}' is neither k=v nor k- (remove)", item));
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == name_label) {
      if (value != ns) return fail(ctx, derived);
      continue;  // the value it has: no change, as for any label
    }
    if (labels.contains(key) && labels[key] != value && !overwrite)
      return fail(ctx, fmt::format("namespace label: '{}' already has a value ({}), and --overwrite is false; "
                                   "nothing changed",
                                   key, labels[key].is_string() ? labels[key].get<std::string>() : labels[key].dump()));
    if (!labels.contains(key) || labels[key] != value) changed = true;
    labels[key] = value;
  }
  if (!changed) {
    ctx.out << "namespace/" << ns << " not labeled\n";
    return 0;
  }
  Answer a = call(client, "PUT", "/v1/namespace/" + api::percentEncode(ns), Json{{"labels", labels}}.dump());
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << "namespace/" << ns << " labeled\n";
  return 0;
}

int cmdNamespaceList(Context& ctx) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/namespace");
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json) {
    printJson(ctx, a.body);
    return 0;
  }
  ctx.out << fmt::format("{:<24} {:<10} {}\n", "NAME", "ENDPOINTS", "LABELS");
  for (const auto& n : a.body) {
    std::string ls;
    const Json labels = n.contains("labels") && n["labels"].is_object() ? n["labels"] : Json::object();
    for (const auto& [k, v] : labels.items())
      ls += (ls.empty() ? "" : ",") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
    ctx.out << fmt::format("{:<24} {:<10} {}\n", n.value("name", ""), n.value("endpoints", 0), ls.empty() ? "<none>" : ls);
  }
  return 0;
}

int cmdPolicyTrace(Context& ctx, const TraceArgs& a) {
  if (a.src_endpoint.empty() == a.src_labels.empty())
    return fail(ctx, "policy trace: give exactly one of --src-endpoint or --src-labels");
  if (a.dst_endpoint.empty() == a.dst_labels.empty())
    return fail(ctx, "policy trace: give exactly one of --dst-endpoint or --dst-labels");
  std::string target = "/v1/policy/trace?";
  auto add = [&](const char* key, const std::string& value) {
    if (value.empty()) return;
    if (target.back() != '?') target += '&';
    target += std::string(key) + "=" + api::percentEncode(value);
  };
  add("src_endpoint", a.src_endpoint);
  add("src_labels", a.src_labels);
  add("dst_endpoint", a.dst_endpoint);
  add("dst_labels", a.dst_labels);
  add("dport", a.dport);
  add("namespace", nsOrDefault(a.ns));
  HttpClient client(ctx.socket);
  Answer ans = call(client, "GET", target);
  if (!ans.ok) return fail(ctx, ans.failure);
  if (ctx.json)
    printJson(ctx, ans.body);
  else
    ctx.out << formatPolicyTrace(ans.body);
  return 0;
}

int cmdMonitor(Context& ctx, const std::vector<std::string>& types) {
  std::string target = "/v1/monitor";
  for (size_t i = 0; i < types.size(); ++i) target += (i ? "&type=" : "?type=") + api::percentEncode(types[i]);
  // The banner goes to stderr (stdout carries only events: --json pipes into
  // jq) once the agent says the subscription is live ({"type":"subscribed"},
  // the stream's first line), so every event caused after the banner is shown
  // and a script can wait for it. An agent that does not send that line gets
  // the banner before the first event.
  bool listening = false;
  auto banner = [&] {
    if (std::exchange(listening, true)) return;
    long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    ctx.err << "Listening for events on " << (cpus > 0 ? cpus : 1) << " CPUs with 64x4096 of shared memory\n"
            << "Press Ctrl-C to quit\n";
    ctx.err.flush();
  };
  HttpClient client(ctx.socket);
  std::string stream_error;
  auto st = client.stream(target, [&](std::string_view line) {
    if (line.empty()) return true;
    Json ev = Json::parse(line, nullptr, false);
    const std::string type = ev.is_object() ? ev.value("type", "") : "";
    if (type == "error") {
      stream_error = ev.value("error", "monitor stream failed");
      return false;
    }
    banner();
    if (type == "subscribed") return true;
    if (ctx.json) {
      ctx.out << line << "\n";
    } else {
      std::string text = ev.is_discarded() ? std::string(line) : formatEvent(ev);
      if (text.empty()) return true;
      ctx.out << text << "\n";
    }
    ctx.out.flush();
    return static_cast<bool>(ctx.out);  // stdout closed (| head): stop
  });
  if (!stream_error.empty()) return fail(ctx, stream_error);
  if (!st.ok()) return fail(ctx, st.error().message);
  if (!ctx.out) return 0;
  return fail(ctx, "membraned ended the event stream (agent stopping?)");
}

int cmdMetricsList(Context& ctx, const std::string& pattern) {
  std::regex re;
  if (!pattern.empty()) {
    try {
      re = std::regex(pattern);
    } catch (const std::regex_error& e) {
      return fail(ctx, fmt::format("--match-pattern '{}': not a valid regular expression: {}", pattern, e.what()));
    }
  }
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/metrics");
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json) {
    Json out = Json::array();
    for (const auto& s : a.body)
      if (pattern.empty() || std::regex_search(s.value("name", ""), re)) out.push_back(s);
    printJson(ctx, out);
  } else {
    ctx.out << formatMetricList(a.body, pattern.empty() ? nullptr : &re);
  }
  return 0;
}

int cmdBpfCtList(Context& ctx) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/bpf/ct");
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << formatCtList(a.body);
  return 0;
}

int cmdBpfPolicyGet(Context& ctx, const std::string& ref, const std::string& ns) {
  HttpClient client(ctx.socket);
  Answer lookup;
  auto found = endpointId(client, ref, ns, &lookup);
  if (!found) return fail(ctx, lookup.failure);
  const std::string& id = *found;
  Answer a = call(client, "GET", "/v1/bpf/policy/" + id);
  if (!a.ok) return fail(ctx, a.failure);
  if (ctx.json)
    printJson(ctx, a.body);
  else
    ctx.out << formatBpfPolicy(a.body);
  return 0;
}

}  // namespace membrane::cli
