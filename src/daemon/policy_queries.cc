// Agent API handlers that read policy: GET /v1/policy, /v1/policy/trace and
// /v1/policy/wait (answered when every endpoint realizes a committed revision).
// Changes are in policy_handlers.cc.
#include "src/daemon/agent.h"
#include "src/daemon/agent_internal.h"
#include "src/daemon/api_errors.h"

#include <fmt/format.h>

namespace membrane::daemon {

using nlohmann::json;
using api::Request;
using api::Response;

Response Agent::getPolicy(const Request&) {
  MutexLock lk(mu_);
  json arr = json::array();
  for (const auto& p : repo_.policies()) arr.push_back(policy::toJson(p));
  return Response::json(200, {{"revision", repo_.revision()}, {"policies", arr}});
}

Response Agent::tracePolicy(const Request& req) {
  MutexLock lk(mu_);
  std::string ns = req.queryValue("namespace");
  if (ns.empty()) ns = "default";
  // One side: an endpoint (its labels) or a label list (as a pod with those labels in ns would have).
  std::vector<policy::NamedPort> dst_ports;  // named ports resolve against the destination endpoint's
  const endpoint::Manager& eps = *eps_;       // mu_ is held for the whole call
  auto side = [&](const char* what) -> Result<labels::LabelSet> {
    std::string ep_key = std::string(what) + "_endpoint", labels_key = std::string(what) + "_labels";
    bool has_ep = req.hasQuery(ep_key), has_labels = req.hasQuery(labels_key);
    if (has_ep == has_labels)
      return Error::invalid(fmt::format("give exactly one of {} and {}", ep_key, labels_key));
    if (has_ep) {
      std::string v = req.queryValue(ep_key);
      const endpoint::Endpoint* ep = nullptr;
      if (auto id = parseId(v)) ep = eps.find(*id);
      if (!ep) ep = eps.findByName(ns, v);
      if (!ep) return Error::notFound(fmt::format("endpoint '{}' not found in namespace {}", v, ns));
      if (std::string_view(what) == "dst") dst_ports = ep->named_ports;
      return ep->labels;
    }
    auto ls = labels::parseLabels(req.queryValue(labels_key));
    if (!ls) return ls.error();
    return eps.podLabels(ns, *ls);
  };
  auto src = side("src");
  if (!src) return errorResponse(src.error());
  auto dst = side("dst");
  if (!dst) return errorResponse(dst.error());
  std::optional<policy::PortProto> port;
  if (req.hasQuery("dport")) {
    auto pp = policy::parsePortProto(req.queryValue("dport"));
    if (!pp) return errorResponse(pp.error());
    port = *pp;
  }
  auto result = policy::trace(repo_.policies(), *src, *dst, eps_->identityRefs(), port, dst_ports);
  return Response::json(200, policy::toJson(result));
}

void Agent::waitPolicy(const Request& req, std::shared_ptr<api::PendingResponse> reply) {
  std::string rev_s = req.queryValue("revision");
  auto rev = parseId(rev_s);
  if (!rev) {
    reply->complete(Response::error(400, fmt::format("revision '{}' is not a number", rev_s)));
    return;
  }
  int timeout_s = 30;
  if (req.hasQuery("timeout")) {
    auto t = parseId(req.queryValue("timeout"));
    if (!t || *t > 3600) {
      reply->complete(Response::error(400, "timeout must be a number of seconds (<= 3600)"));
      return;
    }
    timeout_s = static_cast<int>(*t);
  }
  MutexLock lk(mu_);
  uint64_t realized = realizedRevision();
  if (realized >= *rev) {
    reply->complete(Response::json(200, {{"revision", repo_.revision()}, {"realized", realized}}));
    return;
  }
  if (timeout_s == 0 || stopping_) {
    reply->complete(policyWaitExpired(*rev, timeout_s));
    return;
  }
  // Waiters whose client left are dropped here and in notifyPolicyWaiters().
  std::erase_if(policy_waiters_, [](const PolicyWaiter& w) { return !w.reply->pending(); });
  policy_waiters_.push_back({*rev, reply});
  policy_waiting_ = true;
  // The expiry runs on an API worker; the API server is stopped (its workers
  // joined) before the agent goes away.
  reply->expireAfter(std::chrono::seconds(timeout_s), [this, rev = *rev, timeout_s] {
    MutexLock lk(mu_);
    return policyWaitExpired(rev, timeout_s);
  });
}

uint64_t Agent::realizedRevision() {
  uint64_t realized = std::min(repo_.revision(), committed_revision_);
  for (const auto* ep : eps_->list()) realized = std::min<uint64_t>(realized, ep->policy_revision);
  return realized;
}

Response Agent::policyWaitExpired(uint64_t rev, int timeout_s) {
  uint64_t realized = realizedRevision();
  if (realized >= rev) return Response::json(200, {{"revision", repo_.revision()}, {"realized", realized}});
  if (rev > repo_.revision())
    return Response::error(408, fmt::format("revision {} not reached within {} s (current revision {})", rev, timeout_s,
                                            repo_.revision()));
  return Response::error(408, fmt::format("revision {} not realized by every endpoint within {} s", rev, timeout_s));
}

void Agent::notifyPolicyWaiters() {
  MutexLock lk(mu_);
  if (policy_waiters_.empty()) return;
  const uint64_t realized = realizedRevision(), revision = repo_.revision();
  std::erase_if(policy_waiters_, [&](const PolicyWaiter& w) {
    if (!w.reply->pending()) return true;
    if (realized < w.revision) return false;
    w.reply->complete(Response::json(200, {{"revision", revision}, {"realized", realized}}));
    return true;
  });
  policy_waiting_ = !policy_waiters_.empty();
}

}  // namespace membrane::daemon
