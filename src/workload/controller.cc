#include "src/workload/controller.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ctime>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "bpf/shared/datapath.h"
#include "membrane/rfc3339.h"
#include "src/endpoint/manager.h"
#include "src/endpoint/state_json.h"
#include "src/endpoint/state_store.h"
#include "src/kernel/datapath_maps.h"
#include "src/kernel/netlink.h"
#include "src/kernel/pod_networks.h"
#include "src/kernel/process_runner.h"

namespace membrane::workload {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// "docker.io/cilium/starwars:v1.0@sha256:…" -> "cilium/starwars".
std::string imageName(std::string image) {
  if (auto at = image.find('@'); at != std::string::npos) image.resize(at);
  auto slash = image.rfind('/');
  if (auto colon = image.rfind(':'); colon != std::string::npos && (slash == std::string::npos || colon > slash))
    image.resize(colon);
  for (const char* reg : {"docker.io/", "quay.io/", "index.docker.io/"})
    if (image.rfind(reg, 0) == 0) return image.substr(std::string(reg).size());
  return image;
}

bool isDeathstar(const Container& c) { return imageName(c.image) == "cilium/starwars"; }
bool isIdleClient(const Container& c) {
  std::string n = imageName(c.image);
  return n == "tgraf/netperf" || n == "cilium/json-mock";
}

std::string randomSuffix() {
  // Kubernetes' alphabet for generated names: no vowels, no look-alikes.
  static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  static std::mt19937 rng(std::random_device{}());
  std::string s;
  for (int i = 0; i < 5; ++i) s += kAlphabet[rng() % (sizeof kAlphabet - 1)];
  return s;
}

bool matches(const Labels& selector, const Labels& labels) {
  if (selector.empty()) return false;  // a Service without selector has no automatic backends
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

labels::LabelSet toLabelSet(const Labels& l) {
  labels::LabelSet out;
  for (const auto& [k, v] : l)
    if (auto lab = labels::parseLabel(k + "=" + v)) out.add(*lab);
  return out;
}

// Rewrites path in place (same inode: bind mounts of it see the new text).
Status rewriteInPlace(const std::string& path, const std::string& content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Error::fromErrno(errno, "open " + path);
  bool ok = ::ftruncate(fd, 0) == 0 && ::pwrite(fd, content.data(), content.size(), 0) == static_cast<ssize_t>(content.size());
  int err = errno;
  ::close(fd);
  if (!ok) return Error::fromErrno(err, "write " + path);
  return okStatus();
}

uint8_t protoNumber(const std::string& p) { return p == "UDP" ? IPPROTO_UDP : IPPROTO_TCP; }

// Named ports of the endpoint, in the shape of PUT /v1/endpoint's "named_ports".
json namedPorts(const PodSpec& spec) {
  json arr = json::array();
  for (const auto& c : spec.containers)
    for (const auto& p : c.ports)
      if (!p.name.empty()) arr.push_back({{"name", p.name}, {"port", p.port}, {"protocol", p.protocol}});
  return arr;
}

const endpoint::state::Names<PodPhase, 5> kPodPhases{"pod phase",
                                                     {{{PodPhase::Pending, "Pending"},
                                                       {PodPhase::Running, "Running"},
                                                       {PodPhase::Waiting, "Waiting"},
                                                       {PodPhase::Succeeded, "Succeeded"},
                                                       {PodPhase::Failed, "Failed"}}}};

}  // namespace

std::string_view toString(PodPhase p) { return kPodPhases.toString(p); }
Result<PodPhase> parsePodPhase(std::string_view s) { return kPodPhases.parse(s); }

Result<std::vector<std::string>> resolveCommand(const Container& c, const std::string& deathstar_script) {
  if (!c.command.empty()) {
    std::vector<std::string> argv = c.command;
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    return argv;
  }
  if (isDeathstar(c)) return std::vector<std::string>{"python3", "-u", deathstar_script, "80"};
  if (isIdleClient(c)) return std::vector<std::string>{"sleep", "infinity"};
  return Error::invalid(fmt::format(
      "container '{}': image '{}' is not built into membrane, which runs commands on the node and does not pull "
      "images; give the command to run with `command:` (and `args:`), e.g. command: [\"python3\", \"-m\", "
      "\"http.server\", \"80\"] (built-in images: cilium/starwars, tgraf/netperf, cilium/json-mock)",
      c.name, c.image));
}

std::vector<uint16_t> impliedPorts(const Container& c) {
  std::vector<uint16_t> out;
  for (const auto& p : c.ports)
    if (p.protocol == "TCP") out.push_back(p.port);
  if (c.command.empty() && isDeathstar(c) && std::find(out.begin(), out.end(), 80) == out.end()) out.push_back(80);
  return out;
}

Controller::Controller(ControllerConfig cfg, endpoint::Manager& eps, kernel::DatapathMaps& dp,
                       kernel::PodNetworks& net, kernel::ProcessRunner& procs, endpoint::StateFiles& files)
    : cfg_(std::move(cfg)), eps_(eps), dp_(dp), net_(net), procs_(procs), files_(files) {}

Controller::~Controller() = default;

Clock::time_point Controller::now() const { return cfg_.now ? cfg_.now() : Clock::now(); }

void Controller::saveRuntime() {
  auto st = save();
  unsaved_ = !st.ok();
  const std::string error = st.ok() ? "" : st.error().message;
  if (!error.empty() && error != save_error_) spdlog::warn("save workloads: {} (retrying)", error);
  save_error_ = error;
}

void Controller::setDesired(Desired d) {
  pods_ = std::move(d.pods);
  deployments_ = std::move(d.deployments);
  services_ = std::move(d.services);
  namespaces_ = std::move(d.namespaces);
}

labels::LabelSet Controller::namespaceLabels(const std::string& ns) const {
  auto all = eps_.namespaces();
  auto it = all.find(ns);
  return it == all.end() ? labels::LabelSet() : it->second;
}

void Controller::restoreNamespaceLabels(const std::vector<std::pair<std::string, labels::LabelSet>>& before) {
  for (auto it = before.rbegin(); it != before.rend(); ++it)
    if (auto st = eps_.setNamespaceLabels(it->first, it->second); !st.ok())
      spdlog::error("undo the labels of namespace {}: {}", it->first, st.error().message);
}

std::string Controller::podDir(const Instance& i) const {
  return fmt::format("{}/pods/{}_{}", cfg_.state_dir, i.ns, i.name);
}

Result<Controller::State> Controller::parseState(std::string_view text) {
  namespace st = endpoint::state;
  State out;
  MB_ASSIGN(const json j, st::parseObject(text));
  MB_ASSIGN(const json pods, st::field<json>(j, "", "pods", json::array()));
  if (!pods.is_array()) return st::typeError("pods", "a list", pods);
  for (size_t n = 0; n < pods.size(); ++n) {
    MB_ASSIGN(auto o, podFromJson(pods[n], st::index("pods", n)));
    if (o.spec.containers.size() == 1) out.pods[key(o.meta.ns, o.meta.name)] = o;
  }
  MB_ASSIGN(const json deps, st::field<json>(j, "", "deployments", json::array()));
  if (!deps.is_array()) return st::typeError("deployments", "a list", deps);
  for (size_t n = 0; n < deps.size(); ++n) {
    MB_ASSIGN(auto o, deploymentFromJson(deps[n], st::index("deployments", n)));
    if (o.spec.containers.size() == 1) out.deployments[key(o.meta.ns, o.meta.name)] = o;
  }
  MB_ASSIGN(const json svcs, st::field<json>(j, "", "services", json::array()));
  if (!svcs.is_array()) return st::typeError("services", "a list", svcs);
  for (size_t n = 0; n < svcs.size(); ++n) {
    const std::string p = st::index("services", n);
    Service svc;
    MB_ASSIGN(const json obj, st::field<json>(svcs[n], p, "object"));
    MB_ASSIGN(svc.obj, serviceFromJson(obj, st::join(p, "object")));
    MB_ASSIGN(svc.cluster_ip, st::field<uint32_t>(svcs[n], p, "cluster_ip", 0));
    MB_ASSIGN(svc.created, st::field<std::string>(svcs[n], p, "created", ""));
    MB_ASSIGN(const json synced, st::field<json>(svcs[n], p, "synced", json::array()));
    if (!synced.is_array()) return st::typeError(st::join(p, "synced"), "a list", synced);
    for (size_t k = 0; k < synced.size(); ++k) {
      const std::string sp = st::index(st::join(p, "synced"), k);
      MB_ASSIGN(uint16_t port, st::field<uint16_t>(synced[k], sp, "port", 0));
      MB_ASSIGN(uint8_t proto, st::field<uint8_t>(synced[k], sp, "proto", 0));
      svc.synced[{port, proto}] = {};
    }
    out.services[key(svc.obj.meta.ns, svc.obj.meta.name)] = svc;
  }
  MB_ASSIGN(out.namespaces, (st::field<std::map<std::string, Labels>>(j, "", "namespaces", {})));
  for (const char* list : {"instances", "terminating"}) {
    MB_ASSIGN(const json insts, st::field<json>(j, "", list, json::array()));
    if (!insts.is_array()) return st::typeError(list, "a list", insts);
    auto& into = std::string_view(list) == "instances" ? out.instances : out.terminating;
    for (size_t n = 0; n < insts.size(); ++n) {
      const json& ij = insts[n];
      const std::string p = st::index(list, n);
      Instance i;
      MB_ASSIGN(i.ns, st::field<std::string>(ij, p, "namespace"));
      MB_ASSIGN(i.name, st::field<std::string>(ij, p, "name"));
      MB_ASSIGN(i.owner, st::field<std::string>(ij, p, "owner", ""));
      MB_ASSIGN(i.labels, st::field<Labels>(ij, p, "labels", {}));
      MB_ASSIGN(const json spec, st::field<json>(ij, p, "spec"));
      MB_ASSIGN(i.spec, podSpecFromJson(spec, st::join(p, "spec")));
      MB_ASSIGN(i.argv, st::field<std::vector<std::string>>(ij, p, "argv", {}));
      MB_ASSIGN(i.pid, st::field<pid_t>(ij, p, "pid", 0));
      MB_ASSIGN(i.start_time, st::field<uint64_t>(ij, p, "start_time", 0));
      MB_ASSIGN(i.restarts, st::field<int>(ij, p, "restarts", 0));
      MB_ASSIGN(i.last_exit, st::field<int>(ij, p, "last_exit", -1));
      MB_ASSIGN(i.phase, st::enumField(ij, p, "phase", kPodPhases, PodPhase::Pending));
      MB_ASSIGN(i.created, st::field<std::string>(ij, p, "created", ""));
      MB_ASSIGN(i.seq, st::field<uint64_t>(ij, p, "seq", 0));
      if (i.spec.containers.size() != 1) {
        spdlog::warn("workloads.json: pod {}/{} has no container; dropped", i.ns, i.name);
        continue;
      }
      out.next_seq = std::max(out.next_seq, i.seq + 1);
      into[key(i.ns, i.name)] = i;
    }
  }
  return out;
}

Status Controller::load() {
  const std::string path = cfg_.state_dir + "/workloads.json";
  auto text = endpoint::readFile(path);
  if (!text) return okStatus();  // nothing applied yet
  auto state = parseState(*text);
  if (!state)
    return Error::invalid(fmt::format("{}: {}; fix the field, or move the file away to start without the applied "
                                      "workloads (their pods keep running: 'membraned cleanup' does not know them then)",
                                      path, state.error().message));
  pods_ = std::move(state->pods);
  deployments_ = std::move(state->deployments);
  services_ = std::move(state->services);
  namespaces_ = std::move(state->namespaces);
  instances_ = std::move(state->instances);
  terminating_ = std::move(state->terminating);
  next_seq_ = std::max(next_seq_, state->next_seq);
  return okStatus();
}

Status Controller::save() const {
  json j;
  j["pods"] = json::array();
  for (const auto& [k, p] : pods_) j["pods"].push_back(p);
  j["deployments"] = json::array();
  for (const auto& [k, d] : deployments_) j["deployments"].push_back(d);
  j["services"] = json::array();
  for (const auto& [k, s] : services_) {
    json synced = json::array();
    for (const auto& [pp, be] : s.synced) synced.push_back({{"port", pp.first}, {"proto", pp.second}});
    j["services"].push_back({{"object", s.obj}, {"cluster_ip", s.cluster_ip}, {"created", s.created}, {"synced", synced}});
  }
  j["namespaces"] = json::object();
  for (const auto& [ns, l] : namespaces_) j["namespaces"][ns] = l;
  auto instance = [](const Instance& i) -> json {
    return {{"namespace", i.ns},
                              {"name", i.name},
                              {"owner", i.owner},
                              {"labels", i.labels},
                              {"spec", i.spec},
                              {"argv", i.argv},
                              {"pid", i.pid},
                              {"start_time", i.start_time},
                              {"restarts", i.restarts},
                              {"last_exit", i.last_exit},
                              {"phase", toString(i.phase)},
                              {"created", i.created},
                              {"seq", i.seq}};
  };
  j["instances"] = json::array();
  for (const auto& [k, i] : instances_) j["instances"].push_back(instance(i));
  // A restarted agent finishes these (SIGTERM again, then SIGKILL): their
  // processes outlive the agent like every pod's.
  j["terminating"] = json::array();
  for (const auto& [k, i] : terminating_) j["terminating"].push_back(instance(i));
  return files_.write(cfg_.state_dir + "/workloads.json", j.dump(1));
}

Status Controller::init() {
  const auto& c = cfg_.service_cidr;
  MB_TRY_CTX(net_.ensureUnreachableRoute(htonl(c.network), c.prefix_len),
             "install unreachable route for the service CIDR " + c.toString());
  auto dc = dp_.config();
  if (!dc) return dc.error().wrap("read datapath config");
  dc->svc_cidr = htonl(c.network);
  dc->svc_cidr_len = c.prefix_len;
  MB_TRY_CTX(dp_.setConfig(*dc), "write datapath config (service CIDR)");
  MB_TRY(load());
  for (auto& [k, i] : terminating_) {
    i.own_child = false;
    if (i.pid > 0 && procs_.startTime(i.pid) == i.start_time && i.start_time != 0) {
      procs_.signalGroup(i.pid, SIGTERM);  // the SIGTERM may have been lost with the old agent; a new grace period
      i.stop_deadline = now() + cfg_.stop_grace;
    } else {
      i.pid = 0;
      i.start_time = 0;
    }
  }
  for (auto& [k, i] : instances_) {
    const auto* ep = eps_.findByName(i.ns, i.name);
    if (ep) {
      i.endpoint_id = ep->id;
      i.ip = ep->ipv4;
    }
    // Adopt a process that is still the one we started (pid reuse check).
    if (i.pid > 0 && procs_.startTime(i.pid) == i.start_time && i.start_time != 0) {
      i.own_child = false;
      i.started_at = now();
      spdlog::info("pod {}/{}: re-adopted running process {}", i.ns, i.name, i.pid);
    } else if (i.pid > 0) {
      spdlog::info("pod {}/{}: process {} ended while the agent was away", i.ns, i.name, i.pid);
      i.pid = 0;
      i.start_time = 0;
      if (i.phase == PodPhase::Running) i.phase = PodPhase::Waiting;
    }
    // The hosts file is rewritten on the first sync (cache empty).
  }
  // Services the datapath has but nobody wants are removed by syncServices (by id).
  reconcile();
  return okStatus();
}

Status Controller::validate(const Manifests& m) const {
  auto check = [&](const Meta& meta, const std::string& kind, const PodSpec& spec) -> Status {
    for (const auto& c : spec.containers) {
      auto argv = resolveCommand(c, cfg_.deathstar_script);
      if (!argv) return Error::invalid(fmt::format("{}: {} {}/{}: {}", meta.source, kind, meta.ns, meta.name, argv.error().message));
    }
    return okStatus();
  };
  for (const auto& p : m.pods) {
    MB_TRY(check(p.meta, "Pod", p.spec));
    auto it = instances_.find(key(p.meta.ns, p.meta.name));
    if (it != instances_.end() && !it->second.owner.empty())
      return Error::exists(fmt::format("{}: Pod {}/{}: the name is taken by a pod of Deployment {}", p.meta.source,
                                       p.meta.ns, p.meta.name, it->second.owner));
  }
  for (const auto& d : m.deployments) MB_TRY(check(d.meta, "Deployment", d.spec));
  return okStatus();
}

Result<std::vector<std::string>> Controller::apply(const Manifests& m) {
  // The desired state changes (and is saved) before any pod, process or
  // service is touched: a failure up to the save undoes it (header contract).
  const Desired before = desired();
  std::vector<std::pair<std::string, labels::LabelSet>> relabeled;  // namespace -> its labels before
  auto undo = [&] {
    restoreNamespaceLabels(relabeled);
    setDesired(before);
  };
  std::vector<std::string> out;
  std::vector<std::string> replaced;  // instances whose spec changed
  for (const auto& n : m.namespaces) {
    bool existed = namespaces_.count(n.meta.name);
    labels::LabelSet was = namespaceLabels(n.meta.name);
    if (auto st = eps_.setNamespaceLabels(n.meta.name, toLabelSet(n.meta.labels)); !st.ok()) {
      undo();
      return st.error().wrap("namespace " + n.meta.name);
    }
    relabeled.emplace_back(n.meta.name, std::move(was));
    namespaces_[n.meta.name] = n.meta.labels;
    out.push_back(fmt::format("namespace/{} {}", n.meta.name, existed ? "configured" : "created"));
  }
  for (const auto& s : m.services) {
    auto k = key(s.meta.ns, s.meta.name);
    auto it = services_.find(k);
    if (it == services_.end()) {
      Service svc;
      svc.obj = s;
      auto ip = allocateClusterIp();
      if (!ip) {
        undo();
        return ip.error().wrap(fmt::format("service {}", k));
      }
      svc.cluster_ip = *ip;
      svc.created = nowRfc3339();
      services_[k] = svc;
      serviceInputsChanged();
      out.push_back(fmt::format("service/{} created", s.meta.name));
    } else {
      it->second.obj = s;
      out.push_back(fmt::format("service/{} configured", s.meta.name));
    }
  }
  for (const auto& d : m.deployments) {
    auto k = key(d.meta.ns, d.meta.name);
    bool existed = deployments_.count(k);
    // A changed pod template replaces the pods (all at once: no rolling update).
    if (existed && (json(deployments_[k].spec) != json(d.spec) || deployments_[k].template_labels != d.template_labels))
      for (const auto& [ik, i] : instances_)
        if (i.ns == d.meta.ns && i.owner == d.meta.name) replaced.push_back(ik);
    deployments_[k] = d;
    out.push_back(fmt::format("deployment.apps/{} {}", d.meta.name, existed ? "configured" : "created"));
  }
  for (const auto& p : m.pods) {
    auto k = key(p.meta.ns, p.meta.name);
    bool existed = pods_.count(k);
    if (existed && (json(pods_[k].spec) != json(p.spec) || pods_[k].meta.labels != p.meta.labels))
      replaced.push_back(k);
    pods_[k] = p;
    out.push_back(fmt::format("pod/{} {}", p.meta.name, existed ? "configured" : "created"));
  }
  if (auto st = save(); !st.ok()) {
    undo();
    return st.error().wrap("save " + cfg_.state_dir + "/workloads.json");
  }
  for (const auto& k : replaced) destroyInstance(k);
  reconcile();
  saveRuntime();
  return out;
}

Result<std::vector<std::string>> Controller::remove(const Manifests& m) {
  // As apply(): the desired state first, undone when it cannot be saved.
  const Desired before = desired();
  std::vector<std::pair<std::string, labels::LabelSet>> relabeled;
  auto undo = [&] {
    restoreNamespaceLabels(relabeled);
    setDesired(before);
  };
  std::vector<std::string> out;
  std::vector<std::string> doomed;  // instances
  std::vector<std::tuple<uint32_t, uint16_t, uint8_t>> frontends;
  for (const auto& p : m.pods) {
    auto k = key(p.meta.ns, p.meta.name);
    if (!pods_.erase(k)) continue;
    doomed.push_back(k);
    out.push_back(fmt::format("pod \"{}\" deleted", p.meta.name));
  }
  for (const auto& d : m.deployments) {
    auto k = key(d.meta.ns, d.meta.name);
    if (!deployments_.erase(k)) continue;
    for (const auto& [ik, i] : instances_)
      if (i.ns == d.meta.ns && i.owner == d.meta.name) doomed.push_back(ik);
    out.push_back(fmt::format("deployment.apps \"{}\" deleted", d.meta.name));
  }
  for (const auto& s : m.services) {
    auto it = services_.find(key(s.meta.ns, s.meta.name));
    if (it == services_.end()) continue;
    for (const auto& [pp, be] : it->second.synced) frontends.emplace_back(it->second.cluster_ip, pp.first, pp.second);
    serviceInputsChanged();  // the frontends go in the next syncServices()
    services_.erase(it);
    out.push_back(fmt::format("service \"{}\" deleted", s.meta.name));
  }
  for (const auto& n : m.namespaces) {
    if (!namespaces_.count(n.meta.name)) continue;
    labels::LabelSet was = namespaceLabels(n.meta.name);
    if (auto st = eps_.setNamespaceLabels(n.meta.name, {}); !st.ok()) {
      undo();
      return st.error().wrap("namespace " + n.meta.name);
    }
    relabeled.emplace_back(n.meta.name, std::move(was));
    namespaces_.erase(n.meta.name);
    out.push_back(fmt::format("namespace \"{}\" deleted", n.meta.name));
  }
  if (auto st = save(); !st.ok()) {
    undo();
    return st.error().wrap("save " + cfg_.state_dir + "/workloads.json");
  }
  for (const auto& k : doomed) destroyInstance(k);
  stale_frontends_.insert(frontends.begin(), frontends.end());  // deleted by syncServices (reconcile)
  reconcile();
  saveRuntime();
  return out;
}

Status Controller::deletePod(const std::string& ns, const std::string& name) {
  auto k = key(ns, name);
  if (!instances_.count(k)) return Error::notFound(fmt::format("pod {}/{} not found", ns, name));
  const Desired before = desired();
  pods_.erase(k);  // a bare pod is gone for good; a Deployment's is replaced
  if (auto st = save(); !st.ok()) {
    setDesired(before);
    return st.error().wrap(fmt::format("delete pod {}/{}: save {}/workloads.json", ns, name, cfg_.state_dir));
  }
  destroyInstance(k);
  reconcile();
  saveRuntime();
  return okStatus();
}

Result<uint32_t> Controller::allocateClusterIp() const {
  std::set<uint32_t> used;
  for (const auto& [k, s] : services_) used.insert(s.cluster_ip);
  for (const auto& f : stale_frontends_) used.insert(std::get<0>(f));
  const auto& c = cfg_.service_cidr;
  for (uint32_t ip = c.network + 1; ip < c.network + c.size() - 1; ++ip)
    if (!used.count(ip)) return ip;
  return Error(ENOSPC, fmt::format("service CIDR {} is exhausted (--service-cidr)", c.toString()));
}

Status Controller::createInstance(Instance inst) {
  auto argv = resolveCommand(inst.spec.containers.at(0), cfg_.deathstar_script);
  if (!argv) return argv.error();
  inst.argv = *argv;
  // Endpoint first (the pod's network), then the process inside it.
  if (eps_.findByName(inst.ns, inst.name))
    return Error::exists(fmt::format("pod {}/{}: an endpoint of that name exists (membrane endpoint create?); "
                                     "delete it (membrane endpoint delete {} -n {}) or rename the pod",
                                     inst.ns, inst.name, inst.name, inst.ns));
  // containers[].ports with a name are the pod's named ports (NetworkPolicy `port: http`).
  auto named = endpoint::parseNamedPorts(namedPorts(inst.spec));
  if (!named) return named.error().wrap(fmt::format("pod {}/{}: containers[].ports", inst.ns, inst.name));
  // The service account is derived from the spec, never from metadata.labels
  // (a pod must not claim another account's identity by a label).
  labels::LabelSet user = toLabelSet(inst.labels);
  user.add(labels::kSourceK8s, labels::kPolicyServiceAccountLabel, inst.spec.service_account);
  auto ep = eps_.create(inst.name, inst.ns, user, *named);
  if (!ep) return ep.error().wrap(fmt::format("pod {}/{}", inst.ns, inst.name));
  inst.endpoint_id = ep->id;
  inst.ip = ep->ipv4;
  inst.created = nowRfc3339();
  inst.seq = next_seq_++;
  std::string dir = podDir(inst);
  if (auto st = endpoint::makeDirs(dir, 0755); !st.ok()) {
    eps_.remove(inst.endpoint_id).ok();  // all or nothing: no endpoint without its pod
    return st.error();
  }
  auto k = key(inst.ns, inst.name);
  instances_[k] = std::move(inst);
  syncHosts();  // the hosts file must exist before the bind mount
  auto st = startProcess(instances_[k]);
  if (!st.ok()) spdlog::warn("pod {}: {}", k, st.error().message);
  return okStatus();
}

Status Controller::startProcess(Instance& inst) {
  std::string dir = podDir(inst);
  if (inst.hosts_written.empty()) {
    inst.hosts_written = hostsFor(inst);
    MB_TRY(rewriteInPlace(dir + "/hosts", inst.hosts_written));
  }
  MB_TRY(rewriteInPlace(dir + "/resolv.conf",
                        fmt::format("search {}.svc.cluster.local svc.cluster.local cluster.local\n"
                                    "options ndots:1 timeout:1 attempts:1\n",
                                    inst.ns)));
  const auto* ep = eps_.find(inst.endpoint_id);
  if (!ep) return Error::notFound(fmt::format("pod {}/{}: endpoint {} is gone", inst.ns, inst.name, inst.endpoint_id));
  kernel::PodProcessSpec ps;
  ps.argv = inst.argv;
  ps.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
            "HOSTNAME=" + inst.name, "PYTHONUNBUFFERED=1"};
  for (const auto& e : inst.spec.containers.at(0).env) ps.env.push_back(e.name + "=" + e.value);
  ps.netns_path = ep->netns_path;
  ps.hosts_file = dir + "/hosts";
  ps.resolv_file = dir + "/resolv.conf";
  ps.hostname = inst.name;
  ps.log_file = dir + "/log";
  Result<pid_t> pid = runUnlocked(cfg_.unlocked, [&] { return procs_.spawn(ps); });
  if (!pid) {
    inst.phase = PodPhase::Failed;
    inst.last_exit = 127;
    std::string line = "membrane: " + pid.error().message + "\n";
    int fd = ::open(ps.log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd >= 0) {
      (void)!::write(fd, line.data(), line.size());
      ::close(fd);
    }
    // Retried with back-off like a crash (the command may appear later).
    inst.next_start = now() + std::chrono::seconds(std::min(30, 1 << std::min(inst.restarts, 5)));
    return pid.error();
  }
  inst.pid = *pid;
  inst.start_time = procs_.startTime(*pid);
  inst.own_child = true;
  inst.phase = PodPhase::Running;
  inst.ready = false;
  inst.started_at = now();
  return okStatus();
}

bool Controller::processAlive(Instance& inst) {
  if (inst.pid <= 0) return false;
  if (inst.own_child) return procs_.reap(inst.pid, false).state == kernel::ReapResult::State::Running;
  return procs_.startTime(inst.pid) == inst.start_time;
}

Status Controller::removeInstanceResources(const Instance& inst) {
  Status st = okStatus();
  // By id, or by name for a pod restored from the terminating list (ids are
  // not in the state file; its name cannot be re-used while it terminates).
  const endpoint::Endpoint* ep = eps_.find(inst.endpoint_id);
  if (!ep) ep = eps_.findByName(inst.ns, inst.name);
  if (ep) st = eps_.remove(ep->id);
  std::string dir = podDir(inst);
  for (const char* f : {"/log", "/hosts", "/resolv.conf"}) ::unlink((dir + f).c_str());
  ::rmdir(dir.c_str());
  return st;
}

void Controller::destroyInstance(const std::string& k) {
  auto it = instances_.find(k);
  if (it == instances_.end()) return;
  Instance inst = std::move(it->second);
  instances_.erase(it);
  if (inst.ready) serviceInputsChanged();
  inst.ready = false;  // no longer a service backend
  if (processAlive(inst)) {
    procs_.signalGroup(inst.pid, SIGTERM);
    inst.stop_deadline = now() + cfg_.stop_grace;
    terminating_[k] = std::move(inst);
    return;
  }
  if (inst.pid > 0) procs_.signalGroup(inst.pid, SIGKILL);  // what the command left behind in its group
  inst.pid = 0;
  inst.start_time = 0;
  if (auto st = removeInstanceResources(inst); !st.ok()) {
    // Nothing else would ever remove its endpoint: finishTerminations() retries.
    spdlog::warn("remove pod {}: {} (retrying)", k, st.error().message);
    inst.stop_error = st.error().message;
    terminating_[k] = std::move(inst);
  }
}

std::set<std::string> Controller::terminatingKeys() const {
  std::set<std::string> keys;
  for (const auto& [k, inst] : terminating_) keys.insert(k);
  return keys;
}

Controller::StopWait Controller::stopWait(const std::set<std::string>& keys) {
  // A removal that failed is retried this often by a waiting caller (the
  // workload loop retries on its own tick too).
  constexpr std::chrono::milliseconds kRetry{100};
  StopWait w;
  w.done = true;
  for (const auto& k : keys) {
    auto it = terminating_.find(k);
    if (it == terminating_.end()) continue;
    w.done = false;
    Instance& inst = it->second;
    if (!processAlive(inst)) {
      w.recheck_at = std::min(w.recheck_at, now() + kRetry);
      continue;
    }
    w.recheck_at = std::min(w.recheck_at, inst.stop_deadline);
    // Opened while processAlive() just saw our process (a child is not
    // reaped but here, so its pid cannot have been reused yet).
    if (auto fd = procs_.exitFd(inst.pid))
      w.exit_fds.push_back(std::move(*fd));
    else
      w.recheck_at = std::min(w.recheck_at, now() + kRetry);  // nothing to block on: look again soon
  }
  return w;
}

void Controller::finishTerminations() {
  bool finished = false, changed = false;
  for (auto it = terminating_.begin(); it != terminating_.end();) {
    Instance& inst = it->second;
    if (processAlive(inst)) {
      if (now() < inst.stop_deadline) {
        ++it;
        continue;
      }
      spdlog::info("pod {}: process {} ignored SIGTERM for {} ms: SIGKILL", it->first, inst.pid,
                   cfg_.stop_grace.count());
      procs_.signalGroup(inst.pid, SIGKILL);
      // Our child is reaped at once; an adopted process is checked again
      // next time (its start time changes once it is gone).
      if (!inst.own_child || procs_.reap(inst.pid, true).state == kernel::ReapResult::State::Running) {
        ++it;
        continue;
      }
    }
    if (inst.pid > 0) {
      procs_.signalGroup(inst.pid, SIGKILL);  // what the command left behind in its group
      // Gone (reaped): a retry below must not signal the pid again (it may be reused).
      inst.pid = 0;
      inst.start_time = 0;
      changed = true;
    }
    if (auto st = removeInstanceResources(inst); !st.ok()) {
      if (st.error().message != inst.stop_error)
        spdlog::warn("remove pod {}: {} (retrying)", it->first, st.error().message);
      inst.stop_error = st.error().message;
      ++it;
      continue;
    }
    it = terminating_.erase(it);
    finished = true;
  }
  if (finished) reconcile();  // names that waited for their old pod
  if (finished || changed) saveRuntime();
}

void Controller::reconcile() {
  // Instances whose owner is gone, or whose endpoint was deleted under them.
  std::vector<std::string> doomed;
  for (const auto& [k, i] : instances_) {
    bool wanted = i.owner.empty() ? pods_.count(k) > 0 : deployments_.count(key(i.ns, i.owner)) > 0;
    bool endpoint_gone = !eps_.find(i.endpoint_id);  // deleted under us, or lost across a restart
    if (!wanted || endpoint_gone) doomed.push_back(k);
  }
  for (auto it = create_failures_.begin(); it != create_failures_.end();)
    it = pods_.count(it->first) || deployments_.count(it->first) ? std::next(it) : create_failures_.erase(it);
  for (const auto& k : doomed) destroyInstance(k);
  for (const auto& [k, p] : pods_) {
    if (instances_.count(k) || terminating_.count(k)) continue;  // the old pod must be gone first (its netns name)
    Instance i;
    i.ns = p.meta.ns;
    i.name = p.meta.name;
    i.labels = p.meta.labels;
    i.spec = p.spec;
    if (!mayCreate(k)) continue;
    if (auto st = createInstance(i); !st.ok()) createFailed(k, "", st.error().message);
    else create_failures_.erase(k);
  }
  for (const auto& [k, d] : deployments_) {
    std::vector<std::string> owned;
    for (const auto& [ik, i] : instances_)
      if (i.ns == d.meta.ns && i.owner == d.meta.name) owned.push_back(ik);
    for (int n = static_cast<int>(owned.size()); n < d.replicas; ++n) {
      Instance i;
      i.ns = d.meta.ns;
      i.owner = d.meta.name;
      i.labels = d.template_labels;
      i.spec = d.spec;
      if (!mayCreate(k)) break;
      do i.name = d.meta.name + "-" + (cfg_.name_suffix ? cfg_.name_suffix() : randomSuffix());
      while (instances_.count(key(i.ns, i.name)) || terminating_.count(key(i.ns, i.name)) ||
             eps_.findByName(i.ns, i.name));
      if (auto st = createInstance(i); !st.ok()) {
        createFailed(k, d.meta.name, st.error().message);
        break;
      }
      create_failures_.erase(k);
    }
    // Scale down: the newest go first.
    if (static_cast<int>(owned.size()) > d.replicas) {
      std::sort(owned.begin(), owned.end(),
                [&](const auto& a, const auto& b) { return instances_[a].seq > instances_[b].seq; });
      for (size_t n = 0; n < owned.size() - static_cast<size_t>(d.replicas); ++n) destroyInstance(owned[n]);
    }
  }
  superviseProcesses();
  syncServices();
  syncHosts();
}

bool Controller::mayCreate(const std::string& k) const {
  auto it = create_failures_.find(k);
  return it == create_failures_.end() || now() >= it->second.retry;
}

void Controller::createFailed(const std::string& k, const std::string& owner, const std::string& message) {
  auto& f = create_failures_[k];
  if (f.message != message) spdlog::warn("create pod {}: {} (retrying every 5 s)", k, message);
  f.message = message;
  f.owner = owner;
  f.retry = now() + std::chrono::seconds(5);
}

void Controller::superviseProcesses() {
  const auto t = now();
  for (auto& [k, i] : instances_) {
    if (i.pid > 0) {
      bool exited = false;
      int code = -1;
      if (i.own_child) {
        auto r = procs_.reap(i.pid, false);
        exited = r.state != kernel::ReapResult::State::Running;
        code = r.exit_code;
      } else {
        exited = procs_.startTime(i.pid) != i.start_time;
      }
      if (!exited) {
        bool ready = true;
        for (uint16_t port : impliedPorts(i.spec.containers.at(0))) ready = ready && procs_.listensOnTcp(i.pid, port);
        if (ready != i.ready) serviceInputsChanged();
        i.ready = ready;
        continue;
      }
      procs_.signalGroup(i.pid, SIGKILL);  // what the command left behind in its group
      spdlog::info("pod {}: process {} exited ({})", k, i.pid, code);
      i.pid = 0;
      i.start_time = 0;
      if (i.ready) serviceInputsChanged();
      i.ready = false;
      i.last_exit = code;
      const std::string& rp = i.spec.restart_policy;
      if (rp == "Never" || (rp == "OnFailure" && code == 0)) {
        i.phase = code == 0 ? PodPhase::Succeeded : PodPhase::Failed;
        continue;
      }
      // Back-off restarts from a crash loop; a process that ran a while starts over at 1 s.
      if (t - i.started_at > std::chrono::seconds(60)) i.restarts = 0;
      i.phase = PodPhase::Waiting;
      i.next_start = t + std::chrono::seconds(std::min(30, 1 << std::min(i.restarts, 5)));
      continue;
    }
    if ((i.phase == PodPhase::Waiting || i.phase == PodPhase::Pending || i.phase == PodPhase::Failed) &&
        t >= i.next_start && !(i.phase == PodPhase::Failed && i.spec.restart_policy == "Never") &&
        eps_.find(i.endpoint_id)) {
      bool restart = i.phase != PodPhase::Pending;
      auto st = startProcess(i);
      if (restart) ++i.restarts;
      if (!st.ok()) spdlog::warn("pod {}: {}", k, st.error().message);
    }
  }
}

void Controller::serviceInputsChanged() {
  if (!services_changed_at_) services_changed_at_ = Clock::now();
}

void Controller::syncServices() {
  // Every write of this pass implements the changes seen since the last one.
  const auto changed_at = services_changed_at_.value_or(Clock::now());
  services_changed_at_.reset();
  for (auto it = stale_frontends_.begin(); it != stale_frontends_.end();) {
    const auto& [vip, port, proto] = *it;
    if (auto st = dp_.deleteService(htonl(vip), port, proto); !st.ok()) {
      spdlog::warn("delete service frontend {}:{}: {} (retrying)", ipv4HostOrderToString(vip), port, st.error().message);
      ++it;
      continue;
    }
    if (cfg_.on_service_event) cfg_.on_service_event("delete", secondsSince(changed_at));
    it = stale_frontends_.erase(it);
  }
  for (auto& [k, s] : services_) {
    std::map<std::pair<uint16_t, uint8_t>, std::vector<std::pair<uint32_t, uint16_t>>> want;
    for (const auto& sp : s.obj.ports) {
      auto& backends = want[{sp.port, protoNumber(sp.protocol)}];
      for (const auto& [ik, i] : instances_) {
        if (i.ns != s.obj.meta.ns || !i.ready || !matches(s.obj.selector, i.labels)) continue;
        uint16_t target = sp.port;
        if (!sp.target_port.empty()) {
          if (std::all_of(sp.target_port.begin(), sp.target_port.end(), ::isdigit)) {
            target = static_cast<uint16_t>(std::stoul(sp.target_port));
          } else {
            target = 0;
            for (const auto& c : i.spec.containers)
              for (const auto& cp : c.ports)
                if (cp.name == sp.target_port) target = cp.port;
            if (target == 0) continue;  // this pod has no port of that name
          }
        }
        backends.emplace_back(i.ip, target);
      }
      std::sort(backends.begin(), backends.end());
    }
    for (const auto& [pp, be] : want) {
      auto cur = s.synced.find(pp);
      if (!s.fresh && cur != s.synced.end() && cur->second == be) continue;
      std::vector<kernel::Backend> backends;
      for (const auto& [ip, port] : be) backends.push_back({htonl(ip), port});
      auto st = dp_.upsertService(htonl(s.cluster_ip), pp.first, pp.second, backends);
      if (!st.ok()) {
        spdlog::warn("service {}: {}", k, st.error().message);
        continue;
      }
      // Backends that went away: their pinned flows must not keep going there.
      if (cur != s.synced.end())
        for (const auto& old : cur->second)
          if (std::find(be.begin(), be.end(), old) == be.end()) dp_.flushCtFor(htonl(old.first)).ok();
      if (cur == s.synced.end() || cur->second != be)
        spdlog::info("service {} {}:{}: {} backends", k, ipv4HostOrderToString(s.cluster_ip), pp.first, be.size());
      s.synced[pp] = be;
      unsaved_ = true;  // what the datapath holds (a restarted agent deletes frontends by it)
      if (cfg_.on_service_event) cfg_.on_service_event("update", secondsSince(changed_at));
    }
    for (auto it = s.synced.begin(); it != s.synced.end();) {
      if (want.count(it->first)) {
        ++it;
        continue;
      }
      // A port the service no longer has: kept in synced (and retried) until its frontend is gone.
      if (auto st = dp_.deleteService(htonl(s.cluster_ip), it->first.first, it->first.second); !st.ok()) {
        spdlog::warn("service {}: {}", k, st.error().message);
        ++it;
        continue;
      }
      if (cfg_.on_service_event) cfg_.on_service_event("delete", secondsSince(changed_at));
      it = s.synced.erase(it);
      unsaved_ = true;
    }
    s.fresh = false;
  }
}

std::string Controller::hostsFor(const Instance& inst) const {
  std::string h = "# Kubernetes-managed hosts file (membrane): pod and service names.\n"
                  "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (inst.ip) h += fmt::format("{}\t{}\n", ipv4HostOrderToString(inst.ip), inst.name);
  for (const auto& [k, s] : services_) {
    const auto& n = s.obj.meta.name;
    const auto& ns = s.obj.meta.ns;
    h += fmt::format("{}\t{}.{}.svc.cluster.local {}.{}.svc {}.{}{}\n", ipv4HostOrderToString(s.cluster_ip), n, ns, n,
                     ns, n, ns, ns == inst.ns ? " " + n : "");
  }
  return h;
}

void Controller::syncHosts() {
  for (auto& [k, i] : instances_) {
    std::string want = hostsFor(i);
    if (want == i.hosts_written) continue;
    auto st = rewriteInPlace(podDir(i) + "/hosts", want);
    if (!st.ok()) {
      spdlog::warn("pod {}: {}", k, st.error().message);
      continue;
    }
    i.hosts_written = want;
  }
}

void Controller::tick() {
  finishTerminations();
  std::map<std::string, std::pair<pid_t, int>> before;
  for (const auto& [k, i] : instances_) before[k] = {i.pid, i.restarts};
  reconcile();
  bool changed = before.size() != instances_.size();
  for (const auto& [k, i] : instances_) {
    auto it = before.find(k);
    if (it == before.end() || it->second != std::make_pair(i.pid, i.restarts)) changed = true;
  }
  if (changed || unsaved_) saveRuntime();
}

json Controller::podsJson(const std::string& ns) const {
  json arr = json::array();
  auto row = [&](const Instance& i, bool terminating) {
    if (!ns.empty() && i.ns != ns) return;
    // kubectl's STATUS words for each phase.
    std::string_view status;
    switch (i.phase) {
      case PodPhase::Pending: status = "ContainerCreating"; break;
      case PodPhase::Running: status = "Running"; break;
      case PodPhase::Waiting: status = i.restarts > 0 || i.last_exit != 0 ? "CrashLoopBackOff" : "Pending"; break;
      case PodPhase::Succeeded: status = "Completed"; break;
      case PodPhase::Failed: status = "Error"; break;
    }
    if (terminating) status = "Terminating";  // kubectl's word for a pod between SIGTERM and gone
    arr.push_back({{"name", i.name},
                   {"namespace", i.ns},
                   {"owner", i.owner},
                   {"labels", i.labels},
                   {"ready", i.ready},
                   {"status", status},
                   {"phase", toString(i.phase)},
                   {"restarts", i.restarts},
                   {"last_exit_code", i.last_exit},
                   {"pid", i.pid},
                   {"ip", i.ip ? ipv4HostOrderToString(i.ip) : ""},
                   {"endpoint_id", i.endpoint_id},
                   {"node", "localhost"},
                   {"image", i.spec.containers.at(0).image},
                   {"command", i.argv},
                   {"named_ports", namedPorts(i.spec)},
                   {"created", i.created},
                   {"hosts_file", podDir(i) + "/hosts"},
                   {"resolv_file", podDir(i) + "/resolv.conf"},
                   {"log_file", podDir(i) + "/log"}});
  };
  for (const auto& [k, i] : instances_) row(i, false);
  for (const auto& [k, i] : terminating_) row(i, true);
  for (const auto& [k, f] : create_failures_) {
    auto slash = k.find('/');
    std::string fns = k.substr(0, slash), fname = k.substr(slash + 1);
    if ((!ns.empty() && fns != ns) || !f.owner.empty()) continue;
    arr.push_back({{"name", fname}, {"namespace", fns}, {"ready", false}, {"status", "CreateContainerError"},
                   {"restarts", 0}, {"message", f.message}, {"created", ""}});
  }
  return arr;
}

json Controller::deploymentsJson(const std::string& ns) const {
  json arr = json::array();
  for (const auto& [k, d] : deployments_) {
    if (!ns.empty() && d.meta.ns != ns) continue;
    int total = 0, ready = 0;
    for (const auto& [ik, i] : instances_)
      if (i.ns == d.meta.ns && i.owner == d.meta.name) {
        ++total;
        ready += i.ready ? 1 : 0;
      }
    json j = d;
    j["status"] = {{"replicas", total}, {"readyReplicas", ready}};
    arr.push_back(j);
  }
  return arr;
}

json Controller::servicesJson(const std::string& ns) const {
  json arr = json::array();
  for (const auto& [k, s] : services_) {
    if (!ns.empty() && s.obj.meta.ns != ns) continue;
    json j = s.obj;
    j["spec"]["clusterIP"] = ipv4HostOrderToString(s.cluster_ip);
    j["metadata"]["created"] = s.created;
    json backends = json::array();
    for (const auto& [pp, be] : s.synced)
      for (const auto& [ip, port] : be)
        backends.push_back({{"port", pp.first}, {"backend", fmt::format("{}:{}", ipv4HostOrderToString(ip), port)}});
    j["status"] = {{"backends", backends}};
    arr.push_back(j);
  }
  return arr;
}

Result<json> Controller::podJson(const std::string& ns, const std::string& name) const {
  for (const auto& p : podsJson(ns))
    if (p["name"] == name) return p;
  return Error::notFound(fmt::format("pod {}/{} not found (membrane get pods -n {})", ns, name, ns));
}

Result<std::string> Controller::logFile(const std::string& ns, const std::string& name) const {
  auto it = instances_.find(key(ns, name));
  if (it == instances_.end())
    return Error::notFound(fmt::format("pod {}/{} not found (membrane get pods -n {})", ns, name, ns));
  return podDir(it->second) + "/log";
}

Status Controller::removeAll() {
  Status first = okStatus();
  // Nothing is wanted any more: every pod gets SIGTERM at once and goes the
  // way of a deleted pod (terminating set, finishTerminations). This runs in
  // `membraned cleanup`, with no agent to keep answering, so it waits here.
  pods_.clear();
  deployments_.clear();
  std::vector<std::string> all;
  for (const auto& [k, i] : instances_) all.push_back(k);
  for (const auto& k : all) destroyInstance(k);
  const auto deadline = Clock::now() + cfg_.stop_grace + std::chrono::seconds(2);
  for (;;) {
    finishTerminations();
    if (terminating_.empty() || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (const auto& [k, i] : terminating_)
    if (first.ok())
      first = i.pid > 0 ? Error(ETIMEDOUT, fmt::format("pod {}: process {} did not end after SIGKILL", k, i.pid))
                        : Error(EIO, fmt::format("pod {}: {}", k, i.stop_error));
  for (const auto& [k, s] : services_)
    for (const auto& [pp, be] : s.synced) dp_.deleteService(htonl(s.cluster_ip), pp.first, pp.second).ok();
  services_.clear();
  for (const auto& [vip, port, proto] : stale_frontends_) dp_.deleteService(htonl(vip), port, proto).ok();
  stale_frontends_.clear();
  namespaces_.clear();
  const auto& c = cfg_.service_cidr;
  auto st = net_.removeUnreachableRoute(htonl(c.network), c.prefix_len);
  if (!st.ok() && first.ok()) first = st;
  files_.remove(cfg_.state_dir + "/workloads.json").ok();
  ::rmdir((cfg_.state_dir + "/pods").c_str());
  return first;
}

}  // namespace membrane::workload
