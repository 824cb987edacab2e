// Agent API handlers for membrane-cni (PUT /v1/cni/add, del, check, gc): a
// container runtime's container becomes an endpoint in the runtime's network
// namespace. The contract (bodies, answers, CNI error codes) is
// src/cni/agent_api.h; docs/cni.md explains it. Every refusal carries the
// CNI code the plugin reports ("cni_code").
#include <sys/stat.h>

#include <cerrno>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "src/cni/agent_api.h"
#include "src/daemon/agent.h"
#include "src/daemon/cni_results.h"

namespace membrane::daemon {

using api::Request;
using api::Response;
using cni::Code;

namespace {

// A decoder's error (its code is a CNI code: 6 or 7) as a 400 answer.
Response badRequest(const Error& e) { return cni::errorAnswer(400, static_cast<Code>(e.code), e.message); }

// A failure of the endpoint manager (errno codes, manager.h) as the CNI
// error the runtime sees.
Response managerFailure(const Error& e) {
  switch (e.code) {
    case EEXIST: return cni::errorAnswer(409, Code::AlreadyExists, e.message);
    case ENOSPC: return cni::errorAnswer(503, Code::PoolExhausted, e.message);
    case EAGAIN: return cni::errorAnswer(503, Code::TryAgainLater, e.message);  // policy hold: the message says why
    case EINVAL: return cni::errorAnswer(400, Code::InvalidConfig, e.message);
    default: return cni::errorAnswer(500, Code::AgentFailed, e.message);
  }
}

}  // namespace

Response Agent::cniAdd(const Request& req) {
  auto r = cni::parseAddRequest(req.body);
  if (!r.ok()) return badRequest(r.error());
  const std::string& container = r->ref.container_id;
  const std::string what = fmt::format("ADD {}/{}", container, r->ref.ifname);
  // Checked before any lock: the namespace is the runtime's, and a missing
  // one is the runtime's mistake (code 4), not a kernel failure.
  struct stat st {};
  if (::stat(r->ref.netns.c_str(), &st) != 0)
    return cni::errorAnswer(400, Code::InvalidEnv,
                            fmt::format("{}: CNI_NETNS {}: {}", what, r->ref.netns, errnoText(errno)));
  const std::string ns = r->pod_namespace.empty() ? "default" : r->pod_namespace;
  if (auto v = endpoint::validateName("namespace", ns); !v.ok())
    return cni::errorAnswer(400, Code::InvalidEnv, fmt::format("{}: K8S_POD_NAMESPACE: {}", what, v.error().message));
  const std::string name = cniEndpointName(r->pod_name, container);
  labels::LabelSet user;
  for (const auto& [k, v] : r->labels) user.add(labels::kSourceK8s, k, v);

  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  auto ep = eps_->createForContainer(name, ns, user, endpoint::CniAttachment{container, r->ref.ifname, r->ref.network},
                                     r->ref.netns);
  if (!ep) return managerFailure(ep.error());
  if (auto l7 = syncProxy(); !l7.ok()) spdlog::error("L7 proxy config after {}: {}", what, l7.error().message);
  return Response::json(200, cni::toJson(cniAddAnswer(*ep, eps_->gateway())));
}

Response Agent::cniDel(const Request& req) {
  auto r = cni::parseDelRequest(req.body);
  if (!r.ok()) return badRequest(r.error());
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  // Idempotent (the spec's DEL): nothing known is nothing to do. A netns the
  // runtime already removed took the veth with it; remove() finishes the rest.
  const auto* ep = eps_->findByContainer(r->ref.container_id, r->ref.ifname);
  if (!ep) return Response::json(200, {{"deleted", false}});
  const uint32_t id = ep->id;
  if (auto st = eps_->remove(id); !st.ok()) return managerFailure(st.error());
  if (auto l7 = syncProxy(); !l7.ok())
    spdlog::error("L7 proxy config after DEL {}/{}: {}", r->ref.container_id, r->ref.ifname, l7.error().message);
  return Response::json(200, {{"deleted", true}, {"endpoint_id", id}});
}

Response Agent::cniCheck(const Request& req) {
  auto r = cni::parseCheckRequest(req.body);
  if (!r.ok()) return badRequest(r.error());
  const std::string what = fmt::format("CHECK {}/{}", r->ref.container_id, r->ref.ifname);
  MutexLock lk(mu_);
  const auto* ep = eps_->findByContainer(r->ref.container_id, r->ref.ifname);
  if (!ep) return cni::errorAnswer(404, Code::UnknownContainer, what + ": membraned has no endpoint for it");
  if (auto diff = cniCheckDifference(*ep, r->ref.netns, r->expected, eps_->gateway()))
    return cni::errorAnswer(409, Code::AgentFailed, fmt::format("{}: endpoint {}: {}", what, ep->id, *diff));
  if (auto st = eps_->checkNetwork(ep->id); !st.ok())
    return cni::errorAnswer(409, Code::AgentFailed, fmt::format("{}: endpoint {}: {}", what, ep->id, st.error().message));
  return Response::json(200, {{"endpoint_id", ep->id}});
}

Response Agent::cniGc(const Request& req) {
  auto r = cni::parseGcRequest(req.body);
  if (!r.ok()) return badRequest(r.error());
  std::set<std::pair<std::string, std::string>> valid;
  for (const auto& a : r->valid) valid.emplace(a.container_id, a.ifname);
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  std::vector<uint32_t> stale;
  for (const auto* ep : eps_->list())
    if (ep->cni && ep->cni->network == r->network && !valid.count({ep->cni->container_id, ep->cni->ifname}))
      stale.push_back(ep->id);
  nlohmann::json removed = nlohmann::json::array();
  Status first;
  for (uint32_t id : stale) {
    const endpoint::CniAttachment att = *eps_->find(id)->cni;
    if (auto st = eps_->remove(id); !st.ok()) {
      if (first.ok()) first = st;
      continue;
    }
    removed.push_back({{"container_id", att.container_id}, {"ifname", att.ifname}});
  }
  if (!stale.empty())
    if (auto l7 = syncProxy(); !l7.ok()) spdlog::error("L7 proxy config after GC: {}", l7.error().message);
  if (!first.ok()) return managerFailure(first.error().wrap("GC " + r->network));
  return Response::json(200, {{"removed", removed}});
}

}  // namespace membrane::daemon
