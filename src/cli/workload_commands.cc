#include "src/cli/workload_commands.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "membrane/result.h"
#include "src/api/http_client.h"
#include "src/api/http_message.h"
#include "src/cli/format.h"

namespace membrane::cli {
namespace {

using api::HttpClient;

struct Answer {
  Json body;
  std::string error;
  bool ok = false;
};

Answer call(HttpClient& client, std::string_view method, const std::string& target, const std::string& body = "") {
  Answer a;
  auto r = client.request(method, target, body);
  if (!r.ok()) {
    a.error = r.error().message;
    return a;
  }
  Json j = Json::parse(r->body, nullptr, false);
  if (r->status < 200 || r->status >= 300) {
    if (j.is_object() && j.contains("error") && j["error"].is_string())
      a.error = j["error"].get<std::string>() + "\n" + formatDiagnostics(j);
    else
      a.error = fmt::format("{} {}: membraned answered {}", method, target, r->status);
    while (!a.error.empty() && a.error.back() == '\n') a.error.pop_back();
    return a;
  }
  a.body = std::move(j);
  a.ok = !a.body.is_discarded();
  if (!a.ok) a.error = fmt::format("{} {}: membraned sent an answer that is not JSON", method, target);
  return a;
}

int fail(Context& ctx, const std::string& msg) {
  ctx.err << msg << "\n";
  ctx.err.flush();
  return 1;
}

Result<std::string> readAll(const std::string& file) {
  std::stringstream ss;
  if (file == "-") {
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return Error::fromErrno(errno ? errno : ENOENT, "open " + file);
  ss << in.rdbuf();
  if (in.bad()) return Error::fromErrno(errno ? errno : EIO, "read " + file);
  return ss.str();
}

// -f arguments -> {"documents": [...]}: a directory contributes its manifest files.
Result<Json> documents(const std::vector<std::string>& files, const std::string& ns) {
  if (files.empty()) return Error::invalid("give the manifests with -f FILE|DIR|- (e.g. -f examples/starwars/http-sw-app.yaml)");
  Json docs = Json::array();
  for (const auto& f : files) {
    std::vector<std::string> paths;
    std::error_code ec;
    if (f != "-" && std::filesystem::is_directory(f, ec)) {
      for (const auto& e : std::filesystem::directory_iterator(f, ec)) {
        auto ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml" || ext == ".json")) paths.push_back(e.path().string());
      }
      std::sort(paths.begin(), paths.end());
      if (paths.empty()) return Error::invalid(fmt::format("{}: no *.yaml, *.yml or *.json files in this directory", f));
    } else {
      paths.push_back(f);
    }
    for (const auto& p : paths) {
      auto text = readAll(p);
      if (!text) return text.error();
      docs.push_back({{"source", p == "-" ? "stdin" : p}, {"content", *text}});
    }
  }
  return Json{{"documents", docs}, {"namespace", ns.empty() ? "default" : ns}};
}

int sendDocuments(Context& ctx, const std::vector<std::string>& files, const std::string& ns, const char* route,
                  const char* key) {
  auto body = documents(files, ns);
  if (!body) return fail(ctx, body.error().message);
  HttpClient client(ctx.socket);
  Answer a = call(client, "PUT", route, body->dump(-1, ' ', false, Json::error_handler_t::replace));
  if (!a.ok) return fail(ctx, a.error);
  if (ctx.json) {
    ctx.out << a.body.dump(2) << "\n";
    return 0;
  }
  for (const auto& l : a.body.value(key, Json::array())) ctx.out << l.get<std::string>() << "\n";
  return 0;
}

long parseTime(const std::string& s) {
  std::tm tm{};
  if (!strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm)) return 0;
  return static_cast<long>(timegm(&tm));
}

std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 3, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string normalizeResource(const std::string& r) {
  if (r == "pod" || r == "pods" || r == "po") return "pods";
  if (r == "deployment" || r == "deployments" || r == "deploy") return "deployments";
  if (r == "service" || r == "services" || r == "svc") return "services";
  if (r == "policy" || r == "policies" || r == "cnp" || r == "ciliumnetworkpolicies" || r == "networkpolicies" ||
      r == "netpol" || r == "ccnp")
    return "policies";
  if (r == "namespace" || r == "namespaces" || r == "ns") return "namespaces";
  return "";
}

}  // namespace

std::string formatAge(const std::string& created, long now) {
  long t = parseTime(created);
  if (t == 0) return "<unknown>";
  long d = std::max(0L, now - t);
  if (d < 120) return fmt::format("{}s", d);
  if (d < 7200) return fmt::format("{}m", d / 60);
  if (d < 172800) return fmt::format("{}h", d / 3600);
  return fmt::format("{}d", d / 86400);
}

std::string formatPods(const Json& pods, bool all_ns, bool wide, long now) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head{"NAME", "READY", "STATUS", "RESTARTS", "AGE"};
  if (all_ns) head.insert(head.begin(), "NAMESPACE");
  if (wide) head.insert(head.end(), {"IP", "NODE", "ENDPOINT"});
  rows.push_back(head);
  for (const auto& p : pods) {
    std::vector<std::string> r{p.value("name", ""), p.value("ready", false) ? "1/1" : "0/1", p.value("status", ""),
                               std::to_string(p.value("restarts", 0)), formatAge(p.value("created", ""), now)};
    if (all_ns) r.insert(r.begin(), p.value("namespace", ""));
    if (wide) r.insert(r.end(), {p.value("ip", ""), p.value("node", ""), std::to_string(p.value("endpoint_id", 0))});
    rows.push_back(r);
  }
  return table(rows);
}

std::string formatServices(const Json& services, bool all_ns, long now) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head{"NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"};
  if (all_ns) head.insert(head.begin(), "NAMESPACE");
  rows.push_back(head);
  for (const auto& s : services) {
    std::string ports;
    for (const auto& p : s["spec"].value("ports", Json::array()))
      ports += (ports.empty() ? "" : ",") + fmt::format("{}/{}", p.value("port", 0), p.value("protocol", "TCP"));
    std::vector<std::string> r{s["metadata"].value("name", ""), "ClusterIP", s["spec"].value("clusterIP", ""), "<none>",
                               ports, formatAge(s["metadata"].value("created", ""), now)};
    if (all_ns) r.insert(r.begin(), s["metadata"].value("namespace", ""));
    rows.push_back(r);
  }
  return table(rows);
}

std::string formatDeployments(const Json& deployments, bool all_ns, long /*now*/) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head{"NAME", "READY", "UP-TO-DATE", "AVAILABLE"};
  if (all_ns) head.insert(head.begin(), "NAMESPACE");
  rows.push_back(head);
  for (const auto& d : deployments) {
    int want = d["spec"].value("replicas", 0);
    int have = d["status"].value("replicas", 0), ready = d["status"].value("readyReplicas", 0);
    std::vector<std::string> r{d["metadata"].value("name", ""), fmt::format("{}/{}", ready, want), std::to_string(have),
                               std::to_string(ready)};
    if (all_ns) r.insert(r.begin(), d["metadata"].value("namespace", ""));
    rows.push_back(r);
  }
  return table(rows);
}

int cmdApply(Context& ctx, const std::vector<std::string>& files, const std::string& ns) {
  return sendDocuments(ctx, files, ns, "/v1/apply", "applied");
}
int cmdDelete(Context& ctx, const std::vector<std::string>& files, const std::string& ns) {
  return sendDocuments(ctx, files, ns, "/v1/delete", "deleted");
}

int cmdDeletePod(Context& ctx, const std::string& name, const std::string& ns) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "DELETE", "/v1/pods/" + api::percentEncode(ns) + "/" + api::percentEncode(name));
  if (!a.ok) return fail(ctx, a.error);
  ctx.out << fmt::format("pod \"{}\" deleted\n", name);
  return 0;
}

int cmdGet(Context& ctx, const GetArgs& args) {
  // kubectl get pods,svc: one table per kind, names prefixed with the kind.
  if (args.resource.find(',') != std::string::npos) {
    std::stringstream in(args.resource);
    std::string part;
    bool first = true;
    while (std::getline(in, part, ',')) {
      GetArgs one = args;
      one.resource = part;
      one.kind_prefix = true;
      if (!first && !(ctx.json || args.output == "json")) ctx.out << "\n";
      first = false;
      if (int rc = cmdGet(ctx, one); rc != 0) return rc;
    }
    return 0;
  }
  std::string res = normalizeResource(args.resource);
  if (res.empty())
    return fail(ctx, fmt::format("membrane get: unknown resource '{}' (pods, deployments, services, policies, namespaces)",
                                 args.resource));
  std::string nsq = args.all_namespaces ? "" : "?namespace=" + api::percentEncode(args.ns);
  HttpClient client(ctx.socket);
  Answer a;
  if (res == "policies") a = call(client, "GET", "/v1/policy");
  else if (res == "namespaces") a = call(client, "GET", "/v1/namespace");
  else a = call(client, "GET", "/v1/" + res + nsq);
  if (!a.ok) return fail(ctx, a.error);
  const bool json = ctx.json || args.output == "json";
  long now = static_cast<long>(std::time(nullptr));
  if (res == "policies") {
    Json list = Json::array();
    for (const auto& p : a.body.value("policies", Json::array()))
      if (args.all_namespaces || p.value("namespace", "") == args.ns || p.value("namespace", "").empty()) list.push_back(p);
    if (json) {
      ctx.out << list.dump(2) << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> rows{{"KIND", "NAMESPACE", "NAME"}};
    for (const auto& p : list) rows.push_back({p.value("kind", ""), p.value("namespace", ""), p.value("name", "")});
    ctx.out << table(rows);
    return 0;
  }
  if (json) {
    ctx.out << a.body.dump(2) << "\n";
    return 0;
  }
  if (args.kind_prefix) {
    for (auto& o : a.body) {
      if (res == "pods") o["name"] = "pod/" + o.value("name", "");
      if (res == "services") o["metadata"]["name"] = "service/" + o["metadata"].value("name", "");
      if (res == "deployments") o["metadata"]["name"] = "deployment.apps/" + o["metadata"].value("name", "");
    }
  }
  if (res == "pods") ctx.out << formatPods(a.body, args.all_namespaces, args.output == "wide", now);
  if (res == "services") ctx.out << formatServices(a.body, args.all_namespaces, now);
  if (res == "deployments") ctx.out << formatDeployments(a.body, args.all_namespaces, now);
  if (res == "namespaces") {
    std::vector<std::vector<std::string>> rows{{"NAME", "STATUS", "PODS", "LABELS"}};
    for (const auto& n : a.body) {
      std::string labels;
      // A local, not n.value(...).items(): the range-for would outlive the temporary.
      const Json ls = n.value("labels", Json::object());
      for (const auto& [k, v] : ls.items())
        labels += (labels.empty() ? "" : ",") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
      rows.push_back({n.value("name", ""), "Active", std::to_string(n.value("endpoints", 0)), labels.empty() ? "<none>" : labels});
    }
    ctx.out << table(rows);
  }
  return 0;
}

int cmdLogs(Context& ctx, const std::string& name, const std::string& ns, bool follow) {
  HttpClient client(ctx.socket);
  Answer a = call(client, "GET", "/v1/pods?namespace=" + api::percentEncode(ns) + "&name=" + api::percentEncode(name));
  if (!a.ok) return fail(ctx, a.error);
  std::string path = a.body.value("log_file", "");
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(ctx, fmt::format("pod {}/{}: no log yet ({})", ns, name, path));
  char buf[65536];
  for (;;) {
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      ctx.out.write(buf, in.gcount());
      if (in.eof()) break;
    }
    ctx.out.flush();
    if (!follow) return 0;
    in.clear();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (::access(path.c_str(), F_OK) != 0) return 0;  // the pod was deleted
  }
}

}  // namespace membrane::cli
