// Agent handlers for workloads: PUT /v1/apply, PUT /v1/delete, GET
// /v1/pods|deployments|services, DELETE /v1/pods/{namespace}/{name}, and the
// loop that keeps pods, deployments and services converged.
//
// Apply is all or nothing for bad input: every document of every file is
// parsed and validated before anything changes; policy documents then go
// through the same import path as `membrane policy import` (PUT /v1/policy),
// the other kinds to the workload controller.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "src/daemon/agent.h"
#include "src/kernel/pod_networks.h"
#include "src/kernel/process_runner.h"
#include "src/workload/manifest.h"

#ifndef MEMBRANE_SOURCE_DIR
#define MEMBRANE_SOURCE_DIR ""
#endif

namespace membrane::daemon {
namespace {

using nlohmann::json;
using api::Request;
using api::Response;

// The pods a change began stopping: terminating after it, not before.
std::set<std::string> newlyStopping(const std::set<std::string>& before, const std::set<std::string>& after) {
  std::set<std::string> out;
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::inserter(out, out.end()));
  return out;
}

// The bundled cilium/starwars server: <exe>/../share/membrane/deathstar.py
// (build tree and `make install`), else the source tree's copy.
std::string findDeathstar() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = 0;
    auto p = std::filesystem::path(buf).parent_path().parent_path() / "share/membrane/deathstar.py";
    if (std::filesystem::exists(p)) return p.string();
  }
  std::string src = std::string(MEMBRANE_SOURCE_DIR) + "/examples/starwars/deathstar.py";
  if (std::filesystem::exists(src)) return src;
  return "/usr/local/share/membrane/deathstar.py";
}

Response statusError(const Error& e) {
  int code = e.code == EINVAL ? 400 : e.code == ENOENT ? 404 : e.code == EEXIST ? 409 : e.code == ENOSPC ? 503 : 500;
  return Response::error(code, e.message);
}

struct Parsed {
  std::string source;
  workload::Manifests manifests;
};

// Parses {"documents": [{"source", "content"}]}; a 400 Response on any problem.
std::variant<std::vector<Parsed>, Response> parseBody(const Request& req, const char* verb) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("documents") || !body["documents"].is_array())
    return Response::error(400, "request body must be {\"documents\": [{\"source\": \"file.yaml\", \"content\": \"<YAML or JSON>\"}]}");
  std::vector<Parsed> out;
  std::string default_ns = body.value("namespace", "default");
  json diags = json::array();
  std::string first;
  for (const auto& d : body["documents"]) {
    if (!d.is_object() || !d.contains("content") || !d["content"].is_string())
      return Response::error(400, "each document needs \"content\" (string) and \"source\"");
    Parsed p;
    p.source = d.value("source", "manifest");
    auto r = workload::parseManifests(d["content"].get<std::string>(), p.source, default_ns);
    for (const auto& dg : r.diagnostics) {
      diags.push_back({{"file", dg.file}, {"line", dg.line}, {"column", dg.column}, {"path", dg.path}, {"message", dg.message}});
      if (first.empty()) first = policy::formatDiagnostic(dg);
    }
    p.manifests = std::move(r.manifests);
    out.push_back(std::move(p));
  }
  if (!diags.empty())
    return Response::json(400, {{"error", fmt::format("manifests rejected, nothing {}: {}", verb, first)},
                                {"code", 400},
                                {"diagnostics", diags}});
  return out;
}

}  // namespace

Status Agent::startWorkloads() {
  auto svc = endpoint::Cidr4::parse(cfg_.service_cidr);
  if (!svc) return svc.error().wrap("--service-cidr");
  auto pod = endpoint::Cidr4::parse(cfg_.pod_cidr);
  if (pod && (svc->contains(pod->network) || pod->contains(svc->network)))
    return Error::invalid(fmt::format("--service-cidr {} overlaps --pod-cidr {}: choose disjoint ranges",
                                      cfg_.service_cidr, cfg_.pod_cidr));
  metrics::AgentMetrics* m = metrics_.get();
  workload::ControllerConfig wc{cfg_.state_dir, *svc, findDeathstar(),
                                [m](std::string_view action, double delay_seconds) {
                                  m->recordServiceEvent(action);
                                  m->observeServiceImplementationDelay(action, delay_seconds);
                                }};
  // The controller is only ever called with mu_ held (workloads_ is
  // PT_GUARDED_BY(mu_)); its process starts run with mu_ released.
  wc.unlocked = [this](const std::function<void()>& fn) NO_THREAD_SAFETY_ANALYSIS { runWithoutStateLock(fn); };
  MutexLock lk(mu_);
  workloads_ = std::make_unique<workload::Controller>(wc, *eps_, *dp_, kernel::linuxPodNetworks(),
                                                      kernel::linuxProcessRunner());
  return workloads_->init();
}

void Agent::runWithoutStateLock(const std::function<void()>& fn) {
  MutexUnlock unlocked(mu_);
  fn();
}

void Agent::startWorkloadLoop() {
  // Started only after everything tick() and syncProxy() read (proxy_ among
  // them) is built: the thread creation publishes it.
  workload_thread_ = std::thread([this] { workloadLoop(); });
}

void Agent::workloadLoop() {
  // Pods come and go inside tick() (endpoint manager calls, not API calls):
  // when the endpoint set changed, the L7 proxy needs the new IP -> identity
  // map, unless a push since the last change already carried it (an API
  // call's own sync: pushing again would be redundant, and while a proxy
  // does not answer it would hold the change lock for the push's timeout).
  while (!stopping_) {
    const auto t0 = std::chrono::steady_clock::now();
    bool ok = true;
    {
      MutexLock change(change_mu_);
      MutexLock lk(mu_);
      workloads_->tick();
      // An endpoint a failed regeneration left not-ready converges here
      // (with back-off), not only at the next policy change.
      if (auto r = eps_->retryNotReady(std::chrono::steady_clock::now()); !r.ok()) {
        spdlog::error("{}", r.error().message);
        ok = false;
      } else if (*r > 0) {
        spdlog::info("not-ready endpoints realized: {} endpoints regenerated", *r);
      }
      if (proxy_ && eps_->generation() != proxy_generation_) {
        if (auto l7 = syncProxy(); !l7.ok()) {
          spdlog::error("L7 proxy config after pod changes: {}", l7.error().message);
          ok = false;
        }
      }
    }
    metrics_->recordControllerRun(kControllerWorkloads, ok, secondsSince(t0));
    // Pods removed in tick() may have been the last endpoints behind a
    // revision; a retried endpoint may have realized one.
    if (policy_waiting_) notifyPolicyWaiters();
    std::unique_lock lk(gc_mu_);
    gc_cv_.wait_for(lk, std::chrono::milliseconds(250), [this] { return stopping_.load(); });
  }
}

Response Agent::applyManifests(const Request& req) {
  auto parsed = parseBody(req, "applied");
  if (auto* r = std::get_if<Response>(&parsed)) return *r;
  auto& docs = std::get<std::vector<Parsed>>(parsed);
  {
    MutexLock lk(mu_);
    for (const auto& d : docs)
      if (auto st = workloads_->validate(d.manifests); !st.ok())
        return Response::error(400, "manifests rejected, nothing applied: " + st.error().message);
  }
  json lines = json::array();
  // Policies first, all files in ONE import (all or nothing: a refusal by the
  // import path leaves every file's policies out); pods then start under
  // their policy, never before it. Every file already parsed on its own, so
  // the joined text's positions no longer matter.
  std::string sources, text;
  for (const auto& d : docs) {
    if (d.manifests.policies.empty()) continue;
    sources += (sources.empty() ? "" : ", ") + d.source;
    text += (text.empty() ? "" : "\n---\n") + d.manifests.policy_text;
  }
  if (!text.empty()) {
    // kubectl says "created" for an object that did not exist and "configured"
    // for one it replaced: remember which policies exist before the import.
    std::set<std::string> existed;
    {
      MutexLock lk(mu_);
      for (const auto& p : repo_.policies())
        existed.insert(fmt::format("{}/{}/{}", policy::kindName(p.kind), p.namespace_name, p.name));
    }
    Request pr;
    pr.method = "PUT";
    pr.body = json({{"source", sources}, {"content", text}}).dump();
    Response r = importPolicy(pr);
    if (r.status != 200) return r;
    for (const auto& d : docs)
      for (const auto& p : d.manifests.policies)
        lines.push_back(fmt::format("{}/{} {}",
                                    p.kind == "NetworkPolicy"         ? "networkpolicy.networking.k8s.io"
                                    : p.kind == "CiliumNetworkPolicy" ? "ciliumnetworkpolicy.cilium.io"
                                                                      : "ciliumclusterwidenetworkpolicy.cilium.io",
                                    p.name,
                                    existed.count(fmt::format("{}/{}/{}", p.kind, p.ns, p.name)) ? "configured"
                                                                                                  : "created"));
  }
  std::set<std::string> stopping;
  {
    MutexLock change(change_mu_);
    MutexLock lk(mu_);
    const auto before = workloads_->terminatingKeys();
    for (const auto& d : docs) {
      auto r = workloads_->apply(d.manifests);
      if (!r) return statusError(r.error());
      for (const auto& l : *r) lines.push_back(l);
    }
    stopping = newlyStopping(before, workloads_->terminatingKeys());
  }
  awaitPodStops(stopping);  // replaced pods (a changed spec, scale-down) are gone, their successors created
  return Response::json(200, {{"applied", lines}});
}

Response Agent::deleteManifests(const Request& req) {
  auto parsed = parseBody(req, "deleted");
  if (auto* r = std::get_if<Response>(&parsed)) return *r;
  auto& docs = std::get<std::vector<Parsed>>(parsed);
  json lines = json::array();
  for (const auto& d : docs)
    for (const auto& p : d.manifests.policies) {
      Request dr;
      dr.method = "DELETE";
      dr.query.emplace("name", p.name);
      dr.query.emplace("namespace", p.ns);
      Response r = deletePolicy(dr);
      // kubectl's resource.group spelling, as for pods/services ("pod \"xwing\" deleted").
      if (r.status == 200)
        lines.push_back(fmt::format("{} \"{}\" deleted",
                                    p.kind == "NetworkPolicy"         ? "networkpolicy.networking.k8s.io"
                                    : p.kind == "CiliumNetworkPolicy" ? "ciliumnetworkpolicy.cilium.io"
                                                                      : "ciliumclusterwidenetworkpolicy.cilium.io",
                                    p.name));
      else if (r.status != 404) return r;
    }
  std::set<std::string> stopping;
  {
    MutexLock change(change_mu_);
    MutexLock lk(mu_);
    const auto before = workloads_->terminatingKeys();
    for (const auto& d : docs) {
      auto r = workloads_->remove(d.manifests);
      if (!r) return statusError(r.error());
      for (const auto& l : *r) lines.push_back(l);
    }
    stopping = newlyStopping(before, workloads_->terminatingKeys());
  }
  awaitPodStops(stopping);  // as kubectl delete waits: the pods are gone when this answers
  return Response::json(200, {{"deleted", lines}});
}

Response Agent::listPods(const Request& req) {
  MutexLock lk(mu_);
  if (req.hasQuery("name")) {
    std::string ns = req.queryValue("namespace");
    auto p = workloads_->podJson(ns.empty() ? "default" : ns, req.queryValue("name"));
    if (!p) return statusError(p.error());
    return Response::json(200, *p);
  }
  return Response::json(200, workloads_->podsJson(req.queryValue("namespace")));
}

Response Agent::deletePod(const Request& req) {
  std::set<std::string> stopping;
  {
    MutexLock change(change_mu_);
    MutexLock lk(mu_);
    const auto before = workloads_->terminatingKeys();
    auto st = workloads_->deletePod(req.param("namespace"), req.param("name"));
    if (!st.ok()) return statusError(st.error());
    stopping = newlyStopping(before, workloads_->terminatingKeys());
  }
  awaitPodStops(stopping);
  return Response::json(200, {{"deleted", req.param("name")}});
}

void Agent::awaitPodStops(const std::set<std::string>& pods) {
  // A pod may take its whole grace period (3 s) to stop. The wait holds no
  // agent lock: every other API call and the workload loop go on meanwhile.
  // It blocks in poll(2) on the pods' exit fds (pidfds), waking when one
  // exits or when a SIGKILL is due, and takes the locks only to finish the
  // terminations. Only `pods` (those this call stopped) are waited for:
  // another call's slow stop does not hold this one up.
  if (pods.empty()) return;
  std::chrono::steady_clock::time_point deadline;
  for (;;) {
    workload::Controller::StopWait wait;
    {
      MutexLock change(change_mu_);
      MutexLock lk(mu_);
      if (deadline == std::chrono::steady_clock::time_point{})
        deadline = std::chrono::steady_clock::now() + workloads_->stopGrace() + std::chrono::seconds(2);
      workloads_->finishTerminations();
      wait = workloads_->stopWait(pods);
    }
    if (wait.done) return;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline || stopping_) return;
    const auto until = std::min(wait.recheck_at, deadline);
    std::vector<pollfd> fds;
    for (const auto& fd : wait.exit_fds) fds.push_back({fd.get(), POLLIN, 0});
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
    ::poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(ms, 0)));  // EINTR: look again
  }
}

Response Agent::listDeployments(const Request& req) {
  MutexLock lk(mu_);
  return Response::json(200, workloads_->deploymentsJson(req.queryValue("namespace")));
}

Response Agent::listServices(const Request& req) {
  MutexLock lk(mu_);
  return Response::json(200, workloads_->servicesJson(req.queryValue("namespace")));
}

}  // namespace membrane::daemon
