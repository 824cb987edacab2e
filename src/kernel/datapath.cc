#include "src/kernel/datapath.h"
#include "src/kernel/map_walk.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <string_view>
#include <tuple>
#include <utility>

#include "datapath.skel.h"
#include "membrane/unique_fd.h"

namespace membrane::kernel {
namespace {

// Fixed tc filter identity: a restarted agent replaces exactly our filter.
constexpr uint32_t kTcHandle = 1;
constexpr uint32_t kTcPriority = 1;

// Every map the object pins (removePins must not need a loaded object).
// Legacy names are maps of earlier layouts a previous version may have left.
constexpr std::array<std::string_view, 12> kPinnedMaps = {
    MB_MAP_ENDPOINTS, MB_MAP_ENDPOINTS_BY_IP, MB_MAP_IPCACHE,  MB_MAP_POLICY,
    MB_MAP_CT,        MB_MAP_METRICS,         MB_MAP_EVENTS,   MB_MAP_CONFIG,
    MB_MAP_SERVICES,  MB_MAP_BACKENDS,        MB_MAP_REVNAT,   MB_MAP_CT_LEGACY_V1,
};

std::string ifName(uint32_t ifindex) {
  char buf[IF_NAMESIZE] = {};
  if (if_indextoname(ifindex, buf) != nullptr) return buf;
  return "ifindex " + std::to_string(ifindex);
}

std::string ipString(uint32_t ipv4_be) {
  char buf[INET_ADDRSTRLEN] = {};
  in_addr a{};
  a.s_addr = ipv4_be;
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

// libbpf >= 1.0 returns -errno from its APIs.
Error bpfError(int ret, const std::string& what) { return Error::fromErrno(ret < 0 ? -ret : ret, what); }

// Checks that `path` (or its nearest existing ancestor) is on bpffs.
Status checkBpffs(const std::string& path) {
  std::filesystem::path p(path);
  std::error_code ec;
  while (!p.empty() && !std::filesystem::exists(p, ec)) p = p.parent_path();
  if (p.empty()) p = "/";
  struct statfs st {};
  if (statfs(p.c_str(), &st) != 0) return Error::fromErrno(errno, "statfs " + p.string());
  if (static_cast<unsigned long>(st.f_type) != BPF_FS_MAGIC) {
    return Error(ENODEV, "bpf filesystem is not mounted at " + p.string() +
                             " (mount it: mount -t bpf bpf /sys/fs/bpf)");
  }
  return okStatus();
}

Status makeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Error(ec.value(), "create " + path + ": " + ec.message());
  return okStatus();
}

// libbpf reuses a pinned map only if it matches exactly, and then fails with
// a bare EINVAL. Check first so the user learns which map and what to do.
Status checkPinnedMap(const bpf_map* map, const std::string& root) {
  const std::string path = root + "/" + bpf_map__name(map);
  if (access(path.c_str(), F_OK) != 0) return okStatus();
  UniqueFd fd(bpf_obj_get(path.c_str()));
  if (!fd) return bpfError(-errno, "open pinned map " + path);
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  int r = bpf_obj_get_info_by_fd(fd.get(), &info, &len);
  if (r) return bpfError(r, "inspect pinned map " + path);
  auto desc = [](uint32_t type, uint32_t key, uint32_t value, uint32_t max, uint32_t flags) {
    return "type " + std::to_string(type) + ", key " + std::to_string(key) + " B, value " +
           std::to_string(value) + " B, max_entries " + std::to_string(max) + ", flags " +
           std::to_string(flags);
  };
  if (info.type != static_cast<uint32_t>(bpf_map__type(map)) ||
      info.key_size != bpf_map__key_size(map) || info.value_size != bpf_map__value_size(map) ||
      info.max_entries != bpf_map__max_entries(map) || info.map_flags != bpf_map__map_flags(map)) {
    return Error(EEXIST,
                 "pinned map " + path + " is incompatible with this membrane build (pinned: " +
                     desc(info.type, info.key_size, info.value_size, info.max_entries, info.map_flags) +
                     "; expected: " +
                     desc(bpf_map__type(map), bpf_map__key_size(map), bpf_map__value_size(map),
                          bpf_map__max_entries(map), bpf_map__map_flags(map)) +
                     "). Its layout changed without a new _vN name; stop the agent and remove the pin "
                     "(membrane cleanup, or rm " + path + "), which drops that map's state");
  }
  return okStatus();
}

template <typename K>
Result<std::vector<K>> allKeys(int fd, const char* map_name) {
  std::vector<K> keys;
  K cur{};
  K next{};
  const void* prev = nullptr;
  for (;;) {
    int r = bpf_map_get_next_key(fd, prev, &next);
    if (r == -ENOENT) break;
    if (r) return bpfError(r, std::string("iterate ") + map_name);
    keys.push_back(next);
    cur = next;
    prev = &cur;
  }
  return keys;
}

}  // namespace

namespace {
constexpr std::array<std::string_view, 4> kCountedMapNames = {MB_MAP_POLICY, MB_MAP_ENDPOINTS, MB_MAP_ENDPOINTS_BY_IP,
                                                              MB_MAP_IPCACHE};
constexpr std::array<std::string_view, 4> kOpNames = {"update", "delete", "lookup", "getNextKey"};
}  // namespace

template <typename Call>
int Datapath::mapCall(MapId map, MapOp op, Call&& call) {
  // Cilium's outcome is "fail" for any error; the normal end of an iteration
  // and deleting what is already gone are not failures here (callers accept them).
  auto outcome = [op](int ret) {
    return ret != 0 && !(ret == -ENOENT && (op == MapOp::GetNextKey || op == MapOp::Delete));
  };
  int ret;
  if (time_syscalls_) {
    const auto t0 = std::chrono::steady_clock::now();
    ret = call();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    observer_->mapSyscall(kOpNames[static_cast<size_t>(op)], !outcome(ret), secs);
  } else {
    ret = call();
  }
  ops_[static_cast<size_t>(map)][static_cast<size_t>(op)][outcome(ret) ? 1 : 0].fetch_add(1,
                                                                                      std::memory_order_relaxed);
  return ret;
}

void Datapath::setObserver(DatapathObserver* observer) {
  observer_ = observer;
  time_syscalls_ = observer != nullptr && observer->timeMapSyscalls();
}

void Datapath::ipcacheEvent(std::string_view type, std::string_view error) {
  if (observer_ == nullptr) return;
  if (error.empty()) {
    observer_->ipcacheEvent(type);
  } else {
    observer_->ipcacheError(type, error);
  }
}

namespace {

size_t possibleCpus() {
  int n = libbpf_num_possible_cpus();
  return n > 0 ? static_cast<size_t>(n) : 1;
}

// Per-CPU values come as one slot per possible CPU, each rounded up to 8 B.
template <typename V>
struct PerCpu {
  static constexpr size_t kStride = (sizeof(V) + 7) / 8 * 8;
  explicit PerCpu(size_t cpus) : cpus_(cpus), buf_(kStride * cpus) {}
  V get(size_t cpu) const {
    V v;
    std::memcpy(&v, buf_.data() + cpu * kStride, sizeof(V));
    return v;
  }
  void set(size_t cpu, const V& v) { std::memcpy(buf_.data() + cpu * kStride, &v, sizeof(V)); }
  void* data() { return buf_.data(); }
  size_t cpus() const { return cpus_; }

 private:
  size_t cpus_;
  std::vector<unsigned char> buf_;
};

mb_policy_key toBpf(uint32_t ep_id, const PolicyMapKey& k) {
  mb_policy_key key{};
  key.ep_id = ep_id;
  key.identity = k.identity;
  key.dport = htons(k.dport);
  key.proto = k.proto;
  key.direction = k.direction;
  return key;
}

PolicyMapKey fromBpf(const mb_policy_key& k) {
  return PolicyMapKey{k.identity, ntohs(k.dport), k.proto, k.direction};
}

PolicyMapValue fromBpf(const mb_policy_value& v) {
  return PolicyMapValue{(v.flags & MB_POLICY_F_DENY) != 0, ntohs(v.proxy_port), v.cookie};
}

void applyValue(mb_policy_value& v, const PolicyMapValue& want) {
  v.proxy_port = htons(want.proxy_port);
  v.flags = want.deny ? MB_POLICY_F_DENY : 0;
  v.pad = 0;
  v.cookie = want.cookie;
}

// libbpf prints to stderr by default. Keep its warnings (verifier logs on a
// failed load are how one debugs the datapath) but drop debug chatter and the
// kernel's "Exclusivity flag on" note, which bpf_tc_hook_create causes every
// time the clsact qdisc already exists (normal on every attach and restart).
int libbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[4096];
  int n = std::vsnprintf(buf, sizeof buf, fmt, args);
  if (std::strstr(buf, "Exclusivity flag on") || std::strstr(buf, "Cannot find specified filter chain")) return 0;
  std::fputs(buf, stderr);
  return n;
}

}  // namespace

void Datapath::SkelDeleter::operator()(membrane_datapath* skel) const {
  membrane_datapath__destroy(skel);
}

Datapath::Datapath(std::unique_ptr<membrane_datapath, SkelDeleter> skel, std::string bpf_root)
    : skel_(std::move(skel)), bpf_root_(std::move(bpf_root)) {}

Datapath::~Datapath() = default;

Result<std::unique_ptr<Datapath>> Datapath::open(const DatapathOptions& options) {
  const std::string ctx = "load BPF datapath (pins in " + options.bpf_root + ")";
  libbpf_set_print(libbpfPrint);
  MB_TRY_CTX(checkBpffs(options.bpf_root), ctx);
  MB_TRY_CTX(makeDirs(options.bpf_root), ctx);

  LIBBPF_OPTS(bpf_object_open_opts, open_opts);
  open_opts.pin_root_path = options.bpf_root.c_str();
  std::unique_ptr<membrane_datapath, SkelDeleter> skel(membrane_datapath__open_opts(&open_opts));
  if (!skel) return Error::fromErrno(errno, "open BPF object").wrap(ctx);

  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skel->obj) { MB_TRY_CTX(checkPinnedMap(map, options.bpf_root), ctx); }

  int r = membrane_datapath__load(skel.get());
  if (r) {
    if (r == -EPERM || r == -EACCES) {
      return Error(-r, ctx + ": " + membrane::errnoText(-r) +
                           " (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)");
    }
    return bpfError(r, "load and verify programs (libbpf printed the verifier log)").wrap(ctx);
  }
  std::unique_ptr<Datapath> dp(new Datapath(std::move(skel), options.bpf_root));
  MB_TRY_CTX(dp->loadPolicyShadow(), ctx);
  return dp;
}

int Datapath::eventsFd() const { return bpf_map__fd(skel_->maps.mb_events_v1); }

int Datapath::programFd(Program program) const {
  return bpf_program__fd(program == Program::FromEndpoint ? skel_->progs.from_endpoint
                                                          : skel_->progs.to_endpoint);
}

// ---------------------------------------------------------------------------
// tc attachment

namespace {
Status attachOne(uint32_t ifindex, bpf_tc_attach_point point, int prog_fd) {
  const std::string what = std::string("attach tc ") +
                           (point == BPF_TC_INGRESS ? "ingress" : "egress") + " on " + ifName(ifindex);
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = static_cast<int>(ifindex);
  hook.attach_point = point;
  // Creates the clsact qdisc (shared by both directions); EEXIST is normal.
  int r = bpf_tc_hook_create(&hook);
  if (r && r != -EEXIST) return bpfError(r, what + ": create clsact qdisc");
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.prog_fd = prog_fd;
  opts.flags = BPF_TC_F_REPLACE;
  opts.handle = kTcHandle;
  opts.priority = kTcPriority;
  r = bpf_tc_attach(&hook, &opts);
  if (r) return bpfError(r, what);
  return okStatus();
}

Status detachOne(uint32_t ifindex, bpf_tc_attach_point point) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = static_cast<int>(ifindex);
  hook.attach_point = point;
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.handle = kTcHandle;
  opts.priority = kTcPriority;
  int r = bpf_tc_detach(&hook, &opts);
  // ENOENT: no such filter; ENODEV: device gone; EINVAL: no clsact qdisc.
  if (r && r != -ENOENT && r != -ENODEV && r != -EINVAL) {
    return bpfError(r, std::string("detach tc ") + (point == BPF_TC_INGRESS ? "ingress" : "egress") +
                           " from " + ifName(ifindex));
  }
  return okStatus();
}
}  // namespace

Status Datapath::attach(uint32_t ifindex) {
  MB_TRY(attachOne(ifindex, BPF_TC_INGRESS, programFd(Program::FromEndpoint)));
  MB_TRY(attachOne(ifindex, BPF_TC_EGRESS, programFd(Program::ToEndpoint)));
  return okStatus();
}

Status Datapath::detach(uint32_t ifindex) {
  MB_TRY(detachOne(ifindex, BPF_TC_INGRESS));
  MB_TRY(detachOne(ifindex, BPF_TC_EGRESS));
  return okStatus();
}

// ---------------------------------------------------------------------------
// config, endpoints, ipcache

Status Datapath::setConfig(const mb_datapath_config& config) {
  uint32_t key = 0;
  int r = bpf_map_update_elem(bpf_map__fd(skel_->maps.mb_config_v1), &key, &config, BPF_ANY);
  if (r) return bpfError(r, "write datapath config");
  return okStatus();
}

Result<mb_datapath_config> Datapath::config() {
  uint32_t key = 0;
  mb_datapath_config cfg{};
  int r = bpf_map_lookup_elem(bpf_map__fd(skel_->maps.mb_config_v1), &key, &cfg);
  if (r) return bpfError(r, "read datapath config");
  return cfg;
}

Status Datapath::upsertEndpoint(const mb_endpoint_info& ep) {
  const std::string what = "write endpoint " + std::to_string(ep.ep_id) + " (" + ipString(ep.ipv4) +
                           ", " + ifName(ep.ifindex) + ")";
  uint32_t ifindex = ep.ifindex;
  // By-IP first: once the ifindex entry exists the endpoint's own program
  // runs, and replies to it must already be deliverable.
  mb_endpoint_ip_key ip_key{};
  ip_key.ipv4 = ep.ipv4;
  ip_key.family = 4;
  int r = mapCall(MapId::EndpointsByIp, MapOp::Update,
              [&] { return bpf_map_update_elem(bpf_map__fd(skel_->maps.mb_lxcip_v1), &ip_key, &ep, BPF_ANY); });
  if (r) return bpfError(r, what + ": " MB_MAP_ENDPOINTS_BY_IP);
  r = mapCall(MapId::Endpoints, MapOp::Update,
              [&] { return bpf_map_update_elem(bpf_map__fd(skel_->maps.mb_lxc_v1), &ifindex, &ep, BPF_ANY); });
  if (r) return bpfError(r, what + ": " MB_MAP_ENDPOINTS);
  return okStatus();
}

Status Datapath::deleteEndpoint(uint32_t ifindex, uint32_t ipv4_be) {
  const std::string what = "delete endpoint " + ipString(ipv4_be) + " (" + ifName(ifindex) + ")";
  int r = mapCall(MapId::Endpoints, MapOp::Delete,
                  [&] { return bpf_map_delete_elem(bpf_map__fd(skel_->maps.mb_lxc_v1), &ifindex); });
  if (r && r != -ENOENT) return bpfError(r, what + ": " MB_MAP_ENDPOINTS);
  mb_endpoint_ip_key ip_key{};
  ip_key.ipv4 = ipv4_be;
  ip_key.family = 4;
  r = mapCall(MapId::EndpointsByIp, MapOp::Delete,
              [&] { return bpf_map_delete_elem(bpf_map__fd(skel_->maps.mb_lxcip_v1), &ip_key); });
  if (r && r != -ENOENT) return bpfError(r, what + ": " MB_MAP_ENDPOINTS_BY_IP);
  return okStatus();
}

Result<std::vector<mb_endpoint_info>> Datapath::listEndpoints() {
  int fd = bpf_map__fd(skel_->maps.mb_lxc_v1);
  MB_ASSIGN(auto keys, allKeys<uint32_t>(fd, MB_MAP_ENDPOINTS));
  std::vector<mb_endpoint_info> out;
  for (uint32_t k : keys) {
    mb_endpoint_info ep{};
    int r = bpf_map_lookup_elem(fd, &k, &ep);
    if (r == -ENOENT) continue;  // deleted meanwhile
    if (r) return bpfError(r, "read " MB_MAP_ENDPOINTS);
    out.push_back(ep);
  }
  return out;
}

namespace {
Result<mb_ipcache_key> ipcacheKey(uint32_t ipv4_be, uint8_t prefix_len) {
  if (prefix_len > 32) return Error::invalid("ipcache prefix length " + std::to_string(prefix_len) + " > 32");
  mb_ipcache_key key{};
  key.prefixlen = MB_IPCACHE_STATIC_PREFIX + prefix_len;
  key.family = 4;
  // The trie compares all bits up to prefixlen; keep host bits zero so
  // that delete finds what upsert wrote.
  uint32_t mask = prefix_len == 0 ? 0 : htonl(~uint32_t{0} << (32 - prefix_len));
  key.ip[0] = ipv4_be & mask;
  return key;
}
}  // namespace

Status Datapath::upsertIpcache(uint32_t ipv4_be, uint8_t prefix_len, uint32_t identity) {
  const std::string what = "write ipcache " + ipString(ipv4_be) + "/" + std::to_string(prefix_len);
  auto key = ipcacheKey(ipv4_be, prefix_len);
  if (!key) {
    ipcacheEvent("upsert", "invalid_prefix");
    return key.error().wrap(what);
  }
  mb_remote_info info{};
  info.identity = identity;
  const int fd = bpf_map__fd(skel_->maps.mb_ipcache_v1);
  int r = mapCall(MapId::Ipcache, MapOp::Update, [&] { return bpf_map_update_elem(fd, &*key, &info, BPF_ANY); });
  // A failed map write is cilium_bpf_map_ops_total{outcome="fail"}, not an ipcache event.
  if (r) return bpfError(r, what);
  ipcacheEvent("upsert", "");
  return okStatus();
}

Status Datapath::deleteIpcache(uint32_t ipv4_be, uint8_t prefix_len) {
  const std::string what = "delete ipcache " + ipString(ipv4_be) + "/" + std::to_string(prefix_len);
  auto key = ipcacheKey(ipv4_be, prefix_len);
  if (!key) {
    ipcacheEvent("delete", "invalid_prefix");
    return key.error().wrap(what);
  }
  const int fd = bpf_map__fd(skel_->maps.mb_ipcache_v1);
  int r = mapCall(MapId::Ipcache, MapOp::Delete, [&] { return bpf_map_delete_elem(fd, &*key); });
  if (r == -ENOENT) {
    ipcacheEvent("delete", "no_such_prefix");  // not an error for the caller
    return okStatus();
  }
  if (r) return bpfError(r, what);
  ipcacheEvent("delete", "");
  return okStatus();
}

Result<std::vector<Datapath::IpcacheEntry>> Datapath::listIpcache() {
  int fd = bpf_map__fd(skel_->maps.mb_ipcache_v1);
  MB_ASSIGN(auto keys, allKeys<mb_ipcache_key>(fd, MB_MAP_IPCACHE));
  std::vector<IpcacheEntry> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    mb_remote_info info{};
    if (k.family != 4 || k.prefixlen < MB_IPCACHE_STATIC_PREFIX) continue;
    if (mapCall(MapId::Ipcache, MapOp::Lookup, [&] { return bpf_map_lookup_elem(fd, &k, &info); }) != 0) continue;  // gone meanwhile
    out.push_back({k.ip[0], static_cast<uint8_t>(k.prefixlen - MB_IPCACHE_STATIC_PREFIX), info.identity});
  }
  return out;
}

// ---------------------------------------------------------------------------
// policy



std::vector<MapOpCount> Datapath::mapOps() const {
  std::vector<MapOpCount> out;
  for (size_t m = 0; m < static_cast<size_t>(MapId::kCount); ++m)
    for (size_t o = 0; o < static_cast<size_t>(MapOp::kCount); ++o)
      for (size_t f = 0; f < 2; ++f) {
        uint64_t n = ops_[m][o][f].load(std::memory_order_relaxed);
        if (n == 0) continue;
        out.push_back(MapOpCount{std::string(kCountedMapNames[m]), std::string(kOpNames[o]),
                                 f ? "fail" : "success", n});
      }
  std::sort(out.begin(), out.end(), [](const MapOpCount& a, const MapOpCount& b) {
    return std::tie(a.map_name, a.operation, a.outcome) < std::tie(b.map_name, b.operation, b.outcome);
  });
  return out;
}

Status Datapath::loadPolicyShadow() {
  const int fd = bpf_map__fd(skel_->maps.mb_policy_v1);
  std::map<uint32_t, std::map<PolicyMapKey, PolicyMapValue>> shadow;
  PerCpu<mb_policy_value> values(possibleCpus());
  mb_policy_key cur{}, next{};
  const void* prev = nullptr;
  for (;;) {
    int r = mapCall(MapId::Policy, MapOp::GetNextKey, [&] { return bpf_map_get_next_key(fd, prev, &next); });
    if (r == -ENOENT) break;
    if (r) return bpfError(r, "read realized policy: iterate " MB_MAP_POLICY);
    cur = next;
    prev = &cur;
    r = mapCall(MapId::Policy, MapOp::Lookup, [&] { return bpf_map_lookup_elem(fd, &cur, values.data()); });
    if (r == -ENOENT) continue;
    if (r) return bpfError(r, "read realized policy: " MB_MAP_POLICY);
    shadow[cur.ep_id][fromBpf(cur)] = fromBpf(values.get(0));
  }
  MutexLock lk(policy_mu_);
  policy_shadow_ = std::move(shadow);
  return okStatus();
}

Result<PolicySyncStats> Datapath::syncPolicy(uint32_t ep_id,
                                             const std::map<PolicyMapKey, PolicyMapValue>& desired) {
  const std::string what = "sync policy of endpoint " + std::to_string(ep_id);
  const int fd = bpf_map__fd(skel_->maps.mb_policy_v1);
  MutexLock lk(policy_mu_);
  auto& have = policy_shadow_[ep_id];
  // Drop the endpoint's shadow slot again if it ends up empty (also on error).
  struct EraseIfEmpty {
    std::map<uint32_t, std::map<PolicyMapKey, PolicyMapValue>>& shadow;
    uint32_t ep;
    ~EraseIfEmpty() {
      auto it = shadow.find(ep);
      if (it != shadow.end() && it->second.empty()) shadow.erase(it);
    }
  } cleanup{policy_shadow_, ep_id};

  PolicySyncStats stats;
  const size_t cpus = possibleCpus();
  PerCpu<mb_policy_value> values(cpus);
  // 1. new and changed entries first: the packet never sees a gap.
  for (const auto& [key, want] : desired) {
    auto it = have.find(key);
    if (it != have.end() && it->second == want) {
      ++stats.unchanged;
      continue;
    }
    mb_policy_key raw = toBpf(ep_id, key);
    bool updated = false;
    if (it != have.end()) {
      // Keep the per-CPU counters: rewrite only the policy fields.
      int r = mapCall(MapId::Policy, MapOp::Lookup, [&] { return bpf_map_lookup_elem(fd, &raw, values.data()); });
      if (r == 0) {
        for (size_t c = 0; c < cpus; ++c) {
          mb_policy_value v = values.get(c);
          applyValue(v, want);
          values.set(c, v);
        }
        r = mapCall(MapId::Policy, MapOp::Update,
                    [&] { return bpf_map_update_elem(fd, &raw, values.data(), BPF_EXIST); });
        if (r == 0) updated = true;
        else if (r != -ENOENT) return bpfError(r, what + ": update entry");
      } else if (r != -ENOENT) {
        return bpfError(r, what + ": read entry");
      }
    }
    if (!updated) {
      mb_policy_value v{};
      applyValue(v, want);
      for (size_t c = 0; c < cpus; ++c) values.set(c, v);
      int r = mapCall(MapId::Policy, MapOp::Update,
                      [&] { return bpf_map_update_elem(fd, &raw, values.data(), BPF_ANY); });
      if (r) {
        return bpfError(r, what + ": add entry" +
                               (r == -E2BIG || r == -ENOMEM ? " (" MB_MAP_POLICY " is full)" : ""));
      }
    }
    if (it != have.end()) {
      ++stats.updated;
      it->second = want;
    } else {
      ++stats.added;
      have.emplace(key, want);
    }
  }
  // 2. then stale entries.
  for (auto it = have.begin(); it != have.end();) {
    if (desired.count(it->first)) {
      ++it;
      continue;
    }
    mb_policy_key raw = toBpf(ep_id, it->first);
    int r = mapCall(MapId::Policy, MapOp::Delete, [&] { return bpf_map_delete_elem(fd, &raw); });
    if (r && r != -ENOENT) return bpfError(r, what + ": delete entry");
    it = have.erase(it);
    ++stats.deleted;
  }
  return stats;
}

Result<std::vector<PolicyEntryStat>> Datapath::dumpPolicy(uint32_t ep_id) {
  const std::string what = "dump policy of endpoint " + std::to_string(ep_id);
  const int fd = bpf_map__fd(skel_->maps.mb_policy_v1);
  std::vector<PolicyEntryStat> out;
  PerCpu<mb_policy_value> values(possibleCpus());
  MutexLock lk(policy_mu_);
  auto ep = policy_shadow_.find(ep_id);
  if (ep == policy_shadow_.end()) return out;
  for (const auto& [key, _] : ep->second) {
    mb_policy_key raw = toBpf(ep_id, key);
    int r = mapCall(MapId::Policy, MapOp::Lookup, [&] { return bpf_map_lookup_elem(fd, &raw, values.data()); });
    if (r == -ENOENT) continue;
    if (r) return bpfError(r, what);
    PolicyEntryStat s;
    s.key = key;
    s.value = fromBpf(values.get(0));
    for (size_t c = 0; c < values.cpus(); ++c) {
      s.packets += values.get(c).packets;
      s.bytes += values.get(c).bytes;
    }
    out.push_back(s);
  }
  return out;  // the shadow is a std::map: already sorted by key
}

Status Datapath::deletePolicy(uint32_t ep_id) {
  auto r = syncPolicy(ep_id, {});
  if (!r) return r.error();
  return okStatus();
}

std::vector<uint32_t> Datapath::policyEndpoints() const {
  MutexLock lk(policy_mu_);
  std::vector<uint32_t> out;
  for (const auto& [ep, entries] : policy_shadow_)
    if (!entries.empty()) out.push_back(ep);
  return out;
}

// ---------------------------------------------------------------------------
// metrics, conntrack, usage

Result<std::vector<MetricsEntry>> Datapath::readMetrics() {
  const int fd = bpf_map__fd(skel_->maps.mb_metrics_v1);
  MB_ASSIGN(auto keys, allKeys<mb_metrics_key>(fd, MB_MAP_METRICS));
  std::vector<MetricsEntry> out;
  PerCpu<mb_metrics_value> values(possibleCpus());
  for (const auto& k : keys) {
    int r = bpf_map_lookup_elem(fd, &k, values.data());
    if (r == -ENOENT) continue;
    if (r) return bpfError(r, "read " MB_MAP_METRICS);
    MetricsEntry e;
    e.reason = k.reason;
    e.direction = k.direction;
    for (size_t c = 0; c < values.cpus(); ++c) {
      e.packets += values.get(c).packets;
      e.bytes += values.get(c).bytes;
    }
    out.push_back(e);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.reason, a.direction) < std::tie(b.reason, b.direction);
  });
  return out;
}

Result<std::vector<CtFlow>> Datapath::listCt() {
  const int fd = bpf_map__fd(skel_->maps.mb_ct4_v2);
  MB_ASSIGN(auto keys, allKeys<mb_ct_key>(fd, MB_MAP_CT));
  std::vector<CtFlow> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    CtFlow f{k, {}};
    int r = bpf_map_lookup_elem(fd, &k, &f.entry);
    if (r == -ENOENT) continue;
    if (r) return bpfError(r, "read " MB_MAP_CT);
    out.push_back(f);
  }
  return out;
}

Result<Datapath::CtGcResult> Datapath::gcCt(uint64_t now_boottime_ns) {
  const int fd = bpf_map__fd(skel_->maps.mb_ct4_v2);
  // The datapath keeps creating and (on TCP close) deleting entries while we
  // walk: walkMap notices entries vanishing under the iterator.
  struct Ops {
    int fd;
    int getNextKey(const mb_ct_key* prev, mb_ct_key* next) { return bpf_map_get_next_key(fd, prev, next); }
    int lookup(const mb_ct_key& key, mb_ct_entry* value) { return bpf_map_lookup_elem(fd, &key, value); }
  } ops{fd};
  CtGcResult res;
  MapWalkStats walk;
  int delete_error = 0;
  const int r = walkMap<mb_ct_key, mb_ct_entry>(
      ops, bpf_map__max_entries(skel_->maps.mb_ct4_v2), walk,
      [&](const mb_ct_key& key, const mb_ct_entry& entry) {
        const bool tcp = key.proto == IPPROTO_TCP;
        if (entry.expires_ns >= now_boottime_ns) {
          ++(tcp ? res.tcp_alive : res.other_alive);
          return;
        }
        int d = bpf_map_delete_elem(fd, &key);
        if (d == 0) {
          ++(tcp ? res.tcp_deleted : res.other_deleted);
        } else if (d != -ENOENT && delete_error == 0) {
          delete_error = d;
        }
      },
      [&](const mb_ct_key& vanished) {
        ++(vanished.proto == IPPROTO_TCP ? res.tcp_key_fallbacks : res.other_key_fallbacks);
      });
  if (r == -E2BIG) {
    res.completed = false;  // the map kept changing: the next pass continues the work
  } else if (r) {
    return bpfError(r, "conntrack gc: walk " MB_MAP_CT);
  }
  if (delete_error) return bpfError(delete_error, "conntrack gc: delete entry");
  res.interrupts = walk.interrupts;
  return res;
}

Status Datapath::flushCtFor(uint32_t ipv4_be) {
  const std::string what = "flush conntrack of " + ipString(ipv4_be);
  auto flows = listCt();
  if (!flows) return flows.error().wrap(what);
  const int fd = bpf_map__fd(skel_->maps.mb_ct4_v2);
  for (const auto& f : *flows) {
    const bool pins_backend = (f.key.flags & MB_CT_KEY_F_SERVICE) && f.entry.backend_ip == ipv4_be;
    if (f.key.saddr != ipv4_be && f.key.daddr != ipv4_be && !pins_backend) continue;
    int r = bpf_map_delete_elem(fd, &f.key);
    if (r && r != -ENOENT) return bpfError(r, what);
  }
  return okStatus();
}

Result<std::vector<MapUsage>> Datapath::mapUsage() {
  std::vector<MapUsage> out;
  auto add = [&](const bpf_map* map, auto key_tag) -> Status {
    using K = decltype(key_tag);
    MB_ASSIGN(auto keys, allKeys<K>(bpf_map__fd(map), bpf_map__name(map)));
    out.push_back(MapUsage{bpf_map__name(map), keys.size(), bpf_map__max_entries(map)});
    return okStatus();
  };
  MB_TRY(add(skel_->maps.mb_lxc_v1, uint32_t{}));
  MB_TRY(add(skel_->maps.mb_ipcache_v1, mb_ipcache_key{}));
  MB_TRY(add(skel_->maps.mb_policy_v1, mb_policy_key{}));
  MB_TRY(add(skel_->maps.mb_ct4_v2, mb_ct_key{}));
  MB_TRY(add(skel_->maps.mb_metrics_v1, mb_metrics_key{}));
  MB_TRY(add(skel_->maps.mb_svc_v1, mb_service_key{}));
  MB_TRY(add(skel_->maps.mb_backend_v1, mb_backend_key{}));
  return out;
}

// ---------------------------------------------------------------------------
// services

namespace {
std::string serviceName(uint32_t vip_be, uint16_t port, uint8_t proto) {
  const char* p = proto == IPPROTO_TCP ? "TCP" : proto == IPPROTO_UDP ? "UDP" : nullptr;
  return "service " + ipString(vip_be) + ":" + std::to_string(port) + "/" +
         (p ? std::string(p) : std::to_string(proto));
}

mb_service_key serviceKey(uint32_t vip_be, uint16_t port, uint8_t proto) {
  mb_service_key key{};
  key.vip = vip_be;
  key.port = htons(port);
  key.proto = proto;
  return key;
}
}  // namespace

Status Datapath::upsertService(uint32_t vip_be, uint16_t port, uint8_t proto,
                               const std::vector<Backend>& backends) {
  const std::string what = "write " + serviceName(vip_be, port, proto);
  if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
    return Error::invalid(what + ": only TCP and UDP services are load-balanced");
  }
  if (port == 0) return Error::invalid(what + ": port 0");
  if (backends.size() > MB_BACKENDS_MAX || backends.size() > UINT16_MAX) {
    return Error::invalid(what + ": " + std::to_string(backends.size()) + " backends (max " +
                          std::to_string(std::min<size_t>(MB_BACKENDS_MAX, UINT16_MAX)) + ")");
  }
  const int svc_fd = bpf_map__fd(skel_->maps.mb_svc_v1);
  const int be_fd = bpf_map__fd(skel_->maps.mb_backend_v1);
  const int rn_fd = bpf_map__fd(skel_->maps.mb_revnat_v1);
  const mb_service_key key = serviceKey(vip_be, port, proto);

  mb_service_info info{};
  uint16_t old_count = 0;
  int r = bpf_map_lookup_elem(svc_fd, &key, &info);
  if (r == 0) {
    old_count = info.backend_count;
  } else if (r == -ENOENT) {
    // Smallest free id >= 1: ids are few and stay small.
    MB_ASSIGN(auto keys, allKeys<mb_service_key>(svc_fd, MB_MAP_SERVICES));
    std::vector<bool> used(keys.size() + 2, false);
    for (const auto& k : keys) {
      mb_service_info other{};
      if (bpf_map_lookup_elem(svc_fd, &k, &other) == 0 && other.rev_nat_id < used.size()) {
        used[other.rev_nat_id] = true;
      }
    }
    uint16_t id = 1;
    while (used[id]) ++id;
    info = mb_service_info{};
    info.rev_nat_id = id;
  } else {
    return bpfError(r, what + ": read " MB_MAP_SERVICES);
  }

  // Replies must translate as soon as the first packet is DNATed.
  mb_revnat_info rn{};
  rn.vip = vip_be;
  rn.port = htons(port);
  uint16_t id = info.rev_nat_id;
  r = bpf_map_update_elem(rn_fd, &id, &rn, BPF_ANY);
  if (r) return bpfError(r, what + ": " MB_MAP_REVNAT);

  for (size_t slot = 0; slot < backends.size(); ++slot) {
    mb_backend_key bk{id, static_cast<uint16_t>(slot)};
    mb_backend_info bi{};
    bi.ip = backends[slot].ip_be;
    bi.port = htons(backends[slot].port);
    r = bpf_map_update_elem(be_fd, &bk, &bi, BPF_ANY);
    if (r) {
      return bpfError(r, what + ": backend slot " + std::to_string(slot) +
                             (r == -E2BIG || r == -ENOMEM ? " (" MB_MAP_BACKENDS " is full)" : ""));
    }
  }
  info.backend_count = static_cast<uint16_t>(backends.size());
  r = bpf_map_update_elem(svc_fd, &key, &info, BPF_ANY);
  if (r) {
    return bpfError(r, what + (r == -E2BIG || r == -ENOMEM ? ": " MB_MAP_SERVICES " is full" : ""));
  }
  for (size_t slot = backends.size(); slot < old_count; ++slot) {
    mb_backend_key bk{id, static_cast<uint16_t>(slot)};
    r = bpf_map_delete_elem(be_fd, &bk);
    if (r && r != -ENOENT) return bpfError(r, what + ": delete stale backend slot");
  }
  return okStatus();
}

Status Datapath::deleteService(uint32_t vip_be, uint16_t port, uint8_t proto) {
  const std::string what = "delete " + serviceName(vip_be, port, proto);
  const int svc_fd = bpf_map__fd(skel_->maps.mb_svc_v1);
  const mb_service_key key = serviceKey(vip_be, port, proto);
  mb_service_info info{};
  int r = bpf_map_lookup_elem(svc_fd, &key, &info);
  if (r == -ENOENT) return okStatus();
  if (r) return bpfError(r, what);
  r = bpf_map_delete_elem(svc_fd, &key);
  if (r && r != -ENOENT) return bpfError(r, what);
  const uint16_t id = info.rev_nat_id;
  for (uint16_t slot = 0; slot < info.backend_count; ++slot) {
    mb_backend_key bk{id, slot};
    r = bpf_map_delete_elem(bpf_map__fd(skel_->maps.mb_backend_v1), &bk);
    if (r && r != -ENOENT) return bpfError(r, what + ": backend slot");
  }
  // Flows of the service go before the reverse-NAT entry: a reply must not
  // leave untranslated while its flow entry still says "service".
  auto flows = listCt();
  if (!flows) return flows.error().wrap(what);
  const int ct_fd = bpf_map__fd(skel_->maps.mb_ct4_v2);
  for (const auto& f : *flows) {
    if (f.entry.rev_nat_id != id) continue;
    r = bpf_map_delete_elem(ct_fd, &f.key);
    if (r && r != -ENOENT) return bpfError(r, what + ": conntrack");
  }
  r = bpf_map_delete_elem(bpf_map__fd(skel_->maps.mb_revnat_v1), &id);
  if (r && r != -ENOENT) return bpfError(r, what + ": " MB_MAP_REVNAT);
  return okStatus();
}

Result<std::vector<ServiceInfo>> Datapath::listServices() {
  const int svc_fd = bpf_map__fd(skel_->maps.mb_svc_v1);
  const int be_fd = bpf_map__fd(skel_->maps.mb_backend_v1);
  MB_ASSIGN(auto keys, allKeys<mb_service_key>(svc_fd, MB_MAP_SERVICES));
  std::vector<ServiceInfo> out;
  for (const auto& k : keys) {
    mb_service_info info{};
    int r = bpf_map_lookup_elem(svc_fd, &k, &info);
    if (r == -ENOENT) continue;
    if (r) return bpfError(r, "read " MB_MAP_SERVICES);
    ServiceInfo s;
    s.vip_be = k.vip;
    s.port = ntohs(k.port);
    s.proto = k.proto;
    s.id = info.rev_nat_id;
    for (uint16_t slot = 0; slot < info.backend_count; ++slot) {
      mb_backend_key bk{info.rev_nat_id, slot};
      mb_backend_info bi{};
      r = bpf_map_lookup_elem(be_fd, &bk, &bi);
      if (r == -ENOENT) continue;  // being rewritten
      if (r) return bpfError(r, "read " MB_MAP_BACKENDS);
      s.backends.push_back(Backend{bi.ip, ntohs(bi.port)});
    }
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::make_tuple(ntohl(a.vip_be), a.port, a.proto) <
           std::make_tuple(ntohl(b.vip_be), b.port, b.proto);
  });
  return out;
}

Status Datapath::removePins(const std::string& bpf_root) {
  for (std::string_view name : kPinnedMaps) {
    const std::string path = bpf_root + "/" + std::string(name);
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return Error::fromErrno(errno, "unpin " + path);
  }
  if (rmdir(bpf_root.c_str()) != 0 && errno != ENOENT) {
    return Error::fromErrno(errno, "remove " + bpf_root);
  }
  return okStatus();
}

// ---------------------------------------------------------------------------
// EventReader

namespace {
int onEvent(void* ctx, void* data, size_t size) {
  if (size < sizeof(mb_event)) return 0;  // not ours: skip, keep reading
  mb_event ev;
  std::memcpy(&ev, data, sizeof(ev));
  (*static_cast<EventReader::Callback*>(ctx))(ev);
  return 0;
}
}  // namespace

EventReader::EventReader(ring_buffer* rb, std::unique_ptr<Callback> callback)
    : rb_(rb), callback_(std::move(callback)) {}

EventReader::~EventReader() {
  if (rb_) ring_buffer__free(rb_);
}

EventReader::EventReader(EventReader&& o) noexcept
    : rb_(std::exchange(o.rb_, nullptr)), callback_(std::move(o.callback_)) {}

EventReader& EventReader::operator=(EventReader&& o) noexcept {
  if (this != &o) {
    if (rb_) ring_buffer__free(rb_);
    rb_ = std::exchange(o.rb_, nullptr);
    callback_ = std::move(o.callback_);
  }
  return *this;
}

Result<EventReader> EventReader::open(int events_fd, Callback callback) {
  auto cb = std::make_unique<Callback>(std::move(callback));
  ring_buffer* rb = ring_buffer__new(events_fd, onEvent, cb.get(), nullptr);
  if (!rb) return Error::fromErrno(errno, "open events ring buffer " MB_MAP_EVENTS);
  return EventReader(rb, std::move(cb));
}

Result<int> EventReader::poll(int timeout_ms) {
  int r = ring_buffer__poll(rb_, timeout_ms);
  if (r == -EINTR) return 0;
  if (r < 0) return bpfError(r, "poll events ring buffer");
  return r;
}

Result<int> EventReader::consume() {
  int r = ring_buffer__consume(rb_);
  if (r < 0) return bpfError(r, "read events ring buffer");
  return r;
}

namespace {

// "memlock:\t<bytes>" from /proc/self/fdinfo/<fd>; 0 when absent.
uint64_t memlockOf(int fd) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  UniqueFd f(::open(path, O_RDONLY | O_CLOEXEC));
  if (!f) return 0;
  char buf[4096];
  ssize_t n = ::read(f.get(), buf, sizeof buf - 1);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* m = std::strstr(buf, "memlock:");
  return m ? std::strtoull(m + 8, nullptr, 10) : 0;
}

// Sums memlock over every object id; next/open are the map or program calls.
Result<uint64_t> sumMemlock(int (*next)(__u32, __u32*), int (*open_id)(__u32), const char* what) {
  uint64_t total = 0;
  for (__u32 id = 0;;) {
    if (next(id, &id) != 0) {
      if (errno == ENOENT) break;  // the end of the list
      return Error::fromErrno(errno, std::string("list BPF ") + what);
    }
    UniqueFd fd(open_id(id));
    if (!fd) continue;  // gone since listed, or not ours to open
    total += memlockOf(fd.get());
  }
  return total;
}

}  // namespace

Result<BpfMemoryUsage> systemBpfMemory() {
  BpfMemoryUsage u;
  MB_ASSIGN(u.maps_bytes, sumMemlock(bpf_map_get_next_id, bpf_map_get_fd_by_id, "maps"));
  MB_ASSIGN(u.progs_bytes, sumMemlock(bpf_prog_get_next_id, bpf_prog_get_fd_by_id, "programs"));
  return u;
}

}  // namespace membrane::kernel
