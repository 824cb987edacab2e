// Agent handlers for policy changes (PUT and DELETE /v1/policy) and the
// policy state file they keep (<state-dir>/policy.json).
//
// A change is a transaction: the repository changes, the change is realized
// on every endpoint and in the L7 proxy, and it is persisted; if any of the
// three fails, the repository, the imports and the held list are put back,
// the previous policy is realized again, and the answer says which step
// failed. A 200 always means "enforced and stored".
//
// On start, a stored import that no longer parses or imports (a stricter
// parser after an upgrade, a hand-edited file) is never dropped: dropping a
// deny rule would allow what it blocked. It is *held*: the endpoint manager
// keeps every endpoint's policy as the kernel enforces it, `membrane status`
// is degraded and names it, membrane_policy_held counts it, and only changes
// that fix it (an import of the same policy) or delete it are accepted; once
// nothing is held, the whole repository is realized again.
#include <chrono>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "src/daemon/agent.h"
#include "src/daemon/api_errors.h"
#include "src/daemon/policy_state.h"
#include "src/endpoint/state_store.h"

namespace membrane::daemon {
namespace {

using nlohmann::json;
using api::Request;
using api::Response;

// "Kind/ns/name" -> {ns, name}
std::pair<std::string, std::string> keyNamespaceName(const std::string& key) {
  size_t a = key.find('/');
  size_t b = a == std::string::npos ? std::string::npos : key.find('/', a + 1);
  if (b == std::string::npos) return {"", key};
  return {key.substr(a + 1, b - a - 1), key.substr(b + 1)};
}

bool hasL7Rules(const policy::Policy& p) {
  for (const auto& r : p.rules)
    for (const auto* sec : {&r.ingress, &r.egress})
      for (const auto& peer : *sec)
        for (const auto& pr : peer.to_ports)
          if (!pr.http.empty()) return true;
  return false;
}


}  // namespace

std::string Agent::heldMessage() const {
  std::string out;
  for (const auto& h : held_) {
    std::string keys;
    for (const auto& k : h.keys) keys += (keys.empty() ? "" : ", ") + k;
    out += fmt::format("{}stored policy {} (imported from {}) {}", out.empty() ? "" : "; ", keys,
                       h.import.value("source", "?"), h.error);
  }
  if (out.empty()) return out;
  return out + ". Policy enforcement is held at what the kernel enforced before this start (no endpoint is "
               "regenerated, new endpoints wait); fix it with `membrane policy import` of a corrected file with the "
               "same names, or remove it with `membrane policy delete NAME -n NAMESPACE`";
}

void Agent::applyHold() {
  metrics_->setPolicyHeld(static_cast<int64_t>(held_.size()));
  eps_->setPolicyHold(held_.empty() ? std::string() : heldMessage());
}

Status Agent::loadPolicyState() {
  std::string path = cfg_.state_dir + "/policy.json";
  auto text = endpoint::readFile(path);
  if (!text) return okStatus();  // first start
  // A damaged file refuses the start (the caller names the file): starting
  // without the policies would leave their endpoints unprotected.
  auto state = parsePolicyState(*text);
  if (!state)
    return Error::invalid(state.error().message + "; fix the field, or move the file away to start without policies");
  const std::set<std::string>& live = state->live;
  // Cookies first: each policy gets back the cookie its kernel entries carry
  // (a held one too, so that its entries' events still name it).
  for (const auto& [key, cookie] : state->cookies)
    if (auto st = repo_.reserveCookie(key, cookie); !st.ok())
      spdlog::warn("restoring policies from {}: {} (events may name another policy until it is re-imported)", path,
                   st.error().message);
  for (const auto& imp : state->imports) {
    const std::string source = imp["source"].get<std::string>();
    std::set<std::string> keys;
    for (const auto& k : imp["keys"]) keys.insert(k.get<std::string>());
    auto parsed = policy::parsePolicies(imp["content"].get<std::string>(), source);
    std::string problem;
    if (!parsed.ok()) {
      problem = "no longer parses: " +
                (parsed.diagnostics.empty() ? std::string("invalid") : policy::formatDiagnostic(parsed.diagnostics[0]));
    } else if (parsed.policies.empty()) {
      problem = "no longer contains a policy document";
    } else if (auto r = repo_.import(parsed.policies); !r) {
      problem = "no longer imports: " + r.error().message;
    }
    if (!problem.empty()) {
      held_.push_back({imp, problem, keys});
      continue;
    }
    policy_imports_.push_back(imp);
  }
  std::vector<std::pair<std::string, std::string>> dead;
  for (const auto& p : repo_.policies())
    if (!live.count(policy::policyKey(p))) dead.emplace_back(p.name, p.namespace_name);
  for (const auto& [n, ns] : dead) (void)repo_.remove(n, ns);
  // Only what was in force matters: a held key that had been deleted, or that
  // an import which still loads provides, is not held.
  std::set<std::string> in_repo;
  for (const auto& p : repo_.policies()) in_repo.insert(policy::policyKey(p));
  for (auto& h : held_)
    for (auto it = h.keys.begin(); it != h.keys.end();)
      it = (!live.count(*it) || in_repo.count(*it)) ? h.keys.erase(it) : std::next(it);
  std::erase_if(held_, [](const HeldImport& h) { return h.keys.empty(); });
  applyHold();
  committed_revision_ = repo_.revision();
  if (!held_.empty()) spdlog::error("restoring policies: {}", heldMessage());
  spdlog::info("restored {} policies (revision {}), {} held", repo_.policies().size(), repo_.revision(), held_.size());
  return okStatus();
}

Status Agent::savePolicyState() {
  // Keep only imports that still provide a live policy (the last import of a
  // key provides it), so the file does not grow with every change.
  std::set<std::string> live;
  for (const auto& p : repo_.policies()) live.insert(policy::policyKey(p));
  json kept = json::array();
  std::set<std::string> provided;
  for (auto it = policy_imports_.rbegin(); it != policy_imports_.rend(); ++it) {
    bool useful = false;
    for (const auto& k : (*it)["keys"]) {
      std::string key = k.get<std::string>();
      if (live.count(key) && !provided.count(key)) {
        provided.insert(key);
        useful = true;
      }
    }
    if (useful) kept.insert(kept.begin(), *it);
  }
  policy_imports_ = kept;
  // Held imports stay stored as they were until fixed or deleted, and their
  // unresolved keys stay live (the next start holds them again).
  json imports = policy_imports_;
  for (const auto& h : held_) {
    imports.push_back(h.import);
    live.insert(h.keys.begin(), h.keys.end());
  }
  // The cookies of what is live (held keys included), for the next start.
  json cookies = json::object();
  for (const auto& [key, cookie] : repo_.cookies())
    if (live.count(key)) cookies[key] = cookie;
  json state = {{"version", 1},
                {"revision", repo_.revision()},
                {"imports", imports},
                {"live", json(std::vector<std::string>(live.begin(), live.end()))},
                {"cookies", cookies}};
  std::string text = state.dump(1) + "\n";
  MutexUnlock unlocked(mu_);  // a write and an fsync: readers go on meanwhile
  return endpoint::writeFileAtomic(cfg_.state_dir + "/policy.json", text);
}

Agent::PolicySnapshot Agent::policySnapshot() const { return {repo_, policy_imports_, held_}; }

Status Agent::commitPolicyChange(std::string_view reason) {
  if (held_.empty()) {
    applyHold();  // lifts a hold this change resolved
    auto regen = eps_->triggerPolicyUpdate(reason);
    if (!regen) return regen.error().wrap("realize on the endpoints");
    MB_TRY_CTX(syncProxy(), "push to the L7 proxy");
  } else {
    applyHold();  // fewer held: the message names what is left
  }
  MB_TRY_CTX(savePolicyState(), "persist to " + cfg_.state_dir + "/policy.json");
  return okStatus();
}

Status Agent::rollbackPolicyChange(PolicySnapshot before) {
  const bool was_held = !before.held.empty();
  const bool hold_lifted = was_held && held_.empty();
  repo_ = std::move(before.repo);
  policy_imports_ = std::move(before.imports);
  held_ = std::move(before.held);
  applyHold();
  if (hold_lifted)
    return Error(EIO, "endpoints realized before the failure keep the new policy (the held policy's previous "
                      "enforcement cannot be recomputed); fix the failure and apply the change again");
  if (was_held) return okStatus();  // nothing was realized
  auto regen = eps_->regenerateAll();
  if (!regen) return regen.error().wrap("realize the previous policy on the endpoints");
  MB_TRY_CTX(syncProxy(), "push the previous policy to the L7 proxy");
  return okStatus();
}

Response Agent::finishPolicyChange(PolicySnapshot before, const std::string& what, std::string_view reason,
                                   std::chrono::steady_clock::time_point t0, json ok_body) {
  Status st = commitPolicyChange(reason);
  if (!st.ok()) {
    Status rb = rollbackPolicyChange(std::move(before));
    refreshCookieNames();
    updatePolicyMetrics();
    metrics_->recordPolicyChange(false);
    if (!rb.ok()) {
      std::string msg = fmt::format("{} failed: {}; restoring the previous policy also failed: {}", what,
                                    st.error().message, rb.error().message);
      spdlog::error("{}", msg);
      return Response::error(500, msg);
    }
    std::string msg = fmt::format("{} not applied, nothing changed: {}", what, st.error().message);
    spdlog::error("{}", msg);
    return Response::error(500, msg);
  }
  committed_revision_ = repo_.revision();
  refreshCookieNames();
  updatePolicyMetrics();
  metrics_->recordPolicyChange(true);
  if (!held_.empty()) {
    // Stored, not enforced: say so (202), never a plain success.
    ok_body["held"] = heldMessage();
    return Response::json(202, ok_body);
  }
  metrics_->observePolicyImplementationDelay(metrics::kPolicySourceApi, secondsSince(t0));
  return Response::json(200, ok_body);
}

Response Agent::importPolicy(const Request& req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("content") || !body["content"].is_string())
    return Response::error(400, "request body must be {\"source\": \"file.yaml\", \"content\": \"<YAML or JSON>\"}");
  auto t0 = std::chrono::steady_clock::now();
  std::string source = body.value("source", "policy");
  std::string content = body["content"];
  auto parsed = policy::parsePolicies(content, source);
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  if (!parsed.ok()) {
    metrics_->recordPolicyChange(false);
    json diags = json::array();
    std::string first;
    for (const auto& d : parsed.diagnostics) {
      diags.push_back({{"file", d.file}, {"line", d.line}, {"column", d.column}, {"path", d.path}, {"message", d.message}});
      if (first.empty()) first = policy::formatDiagnostic(d);
    }
    return Response::json(400, {{"error", fmt::format("policy {} rejected, nothing applied: {}", source, first)},
                                {"code", 400},
                                {"diagnostics", diags}});
  }
  if (parsed.policies.empty()) {
    metrics_->recordPolicyChange(false);
    return Response::error(400, fmt::format("policy {}: no policy documents found", source));
  }
  // L7 rules need the proxy; refusing is safer than silently allowing all of L7.
  for (const auto& p : parsed.policies)
    if (!proxy_ && hasL7Rules(p)) {
      metrics_->recordPolicyChange(false);
      return Response::error(400, fmt::format("policy {} in {}: toPorts[].rules (L7 HTTP rules) need the L7 proxy, "
                                              "which is disabled (membraned --enable-l7-proxy=false); nothing applied",
                                              p.displayName(), source));
    }
  json keys = json::array(), names = json::array();
  std::set<std::string> key_set;
  for (const auto& p : parsed.policies) {
    keys.push_back(policy::policyKey(p));
    key_set.insert(policy::policyKey(p));
    names.push_back(p.displayName());
  }
  PolicySnapshot before = policySnapshot();
  if (!held_.empty()) {
    // While held, only a change that fixes a held policy goes in.
    bool fixes = false;
    for (auto& h : held_)
      for (auto it = h.keys.begin(); it != h.keys.end();) {
        if (key_set.count(*it)) {
          fixes = true;
          it = h.keys.erase(it);
        } else {
          ++it;
        }
      }
    if (!fixes) {
      metrics_->recordPolicyChange(false);
      return Response::error(409, fmt::format("policy {} not applied: {}", source, heldMessage()));
    }
    std::erase_if(held_, [](const HeldImport& h) { return h.keys.empty(); });
  }
  auto r = repo_.import(parsed.policies);
  if (!r) {
    held_ = std::move(before.held);
    metrics_->recordPolicyChange(false);
    return errorResponse(r.error());
  }
  policy_imports_.push_back({{"source", source}, {"content", content}, {"keys", keys}});
  Response resp = finishPolicyChange(std::move(before), "policy " + source, metrics::kTriggerPolicyAdded, t0,
                                     {{"revision", repo_.revision()}, {"imported", names}});
  if (resp.status < 300) spdlog::info("policy import {}: {} policies, revision {}", source, names.size(), repo_.revision());
  return resp;
}

Response Agent::deletePolicy(const Request& req) {
  auto t0 = std::chrono::steady_clock::now();
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  PolicySnapshot before = policySnapshot();
  std::vector<std::string> deleted;
  if (req.queryValue("all") == "true") {
    deleted = repo_.removeAll();
    for (const auto& h : held_) deleted.insert(deleted.end(), h.keys.begin(), h.keys.end());
    held_.clear();
  } else if (req.hasQuery("labels")) {
    auto wanted = labels::parseLabels(req.queryValue("labels"));
    if (!wanted) return Response::error(400, "labels: " + wanted.error().message + " (expected k=v[,k=v...])");
    // A held policy's labels are unknown (it does not parse): deleting by
    // labels could not tell whether it is meant.
    if (!held_.empty()) return Response::error(409, "policy delete --labels not applied: " + heldMessage());
    auto r = repo_.removeByLabels(*wanted);
    if (!r) return errorResponse(r.error());
    deleted = *r;
  } else {
    std::string name = req.queryValue("name");
    std::string ns = req.queryValue("namespace");
    if (name.empty()) return Response::error(400, "give ?name=NAME[&namespace=NS], ?labels=k=v[,k=v...] or ?all=true");
    if (ns.empty()) ns = "default";
    bool fixes = false;
    for (auto& h : held_)
      for (auto it = h.keys.begin(); it != h.keys.end();) {
        auto [kns, kname] = keyNamespaceName(*it);
        if (kname == name && (kns == ns || kns.empty())) {
          deleted.push_back(kns.empty() ? kname : kns + "/" + kname);
          fixes = true;
          it = h.keys.erase(it);
        } else {
          ++it;
        }
      }
    std::erase_if(held_, [](const HeldImport& h) { return h.keys.empty(); });
    if (!before.held.empty() && !fixes)
      return Response::error(409, fmt::format("policy delete {}/{} not applied: {}", ns, name, heldMessage()));
    auto r = repo_.remove(name, ns);
    if (!r && !fixes) return errorResponse(r.error());
    if (r) deleted.insert(deleted.end(), r->begin(), r->end());
  }
  return finishPolicyChange(std::move(before), "policy delete", metrics::kTriggerPolicyDeleted, t0,
                            {{"revision", repo_.revision()}, {"deleted", deleted}});
}

}  // namespace membrane::daemon
