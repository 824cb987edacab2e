#include "src/kernel/fake/faults.h"

#include <fmt/format.h>

namespace membrane::kernel {

void FaultInjector::failNth(size_t n, int err, std::string method) {
  n_ = n;
  err_ = err;
  method_ = std::move(method);
  matched_ = 0;
  calls_.clear();
  fired_.reset();
}

void FaultInjector::clear() { failNth(0); }

Status FaultInjector::check(const char* method) {
  calls_.emplace_back(method);
  if (n_ == 0 || fired_ || (!method_.empty() && method_ != method)) return okStatus();
  if (++matched_ != n_) return okStatus();
  fired_ = method;
  return Error::fromErrno(err_, fmt::format("injected fault: {} call {}", method, n_));
}

// Forwards unless the injector fails this call.
#define MB_FAULT(method, call)                     \
  do {                                             \
    if (auto st = f_.check(method); !st.ok()) return st.error(); \
    return call;                                   \
  } while (0)

Status FaultyDatapathMaps::attach(uint32_t ifindex) { MB_FAULT("attach", inner_.attach(ifindex)); }
Status FaultyDatapathMaps::setConfig(const mb_datapath_config& config) {
  MB_FAULT("setConfig", inner_.setConfig(config));
}
Result<mb_datapath_config> FaultyDatapathMaps::config() { MB_FAULT("config", inner_.config()); }
Status FaultyDatapathMaps::upsertEndpoint(const mb_endpoint_info& endpoint) {
  MB_FAULT("upsertEndpoint", inner_.upsertEndpoint(endpoint));
}
Status FaultyDatapathMaps::deleteEndpoint(uint32_t ifindex, uint32_t ipv4_be) {
  MB_FAULT("deleteEndpoint", inner_.deleteEndpoint(ifindex, ipv4_be));
}
Result<std::vector<mb_endpoint_info>> FaultyDatapathMaps::listEndpoints() {
  MB_FAULT("listEndpoints", inner_.listEndpoints());
}
Status FaultyDatapathMaps::upsertIpcache(uint32_t ipv4_be, uint8_t prefix_len, uint32_t identity) {
  MB_FAULT("upsertIpcache", inner_.upsertIpcache(ipv4_be, prefix_len, identity));
}
Status FaultyDatapathMaps::deleteIpcache(uint32_t ipv4_be, uint8_t prefix_len) {
  MB_FAULT("deleteIpcache", inner_.deleteIpcache(ipv4_be, prefix_len));
}
Result<std::vector<IpcacheEntry>> FaultyDatapathMaps::listIpcache() { MB_FAULT("listIpcache", inner_.listIpcache()); }
Result<PolicySyncStats> FaultyDatapathMaps::syncPolicy(uint32_t ep_id,
                                                       const std::map<PolicyMapKey, PolicyMapValue>& desired) {
  MB_FAULT("syncPolicy", inner_.syncPolicy(ep_id, desired));
}
Status FaultyDatapathMaps::deletePolicy(uint32_t ep_id) { MB_FAULT("deletePolicy", inner_.deletePolicy(ep_id)); }
Status FaultyDatapathMaps::flushCtFor(uint32_t ipv4_be) { MB_FAULT("flushCtFor", inner_.flushCtFor(ipv4_be)); }
Status FaultyDatapathMaps::upsertService(uint32_t vip_be, uint16_t port, uint8_t proto,
                                         const std::vector<Backend>& backends) {
  MB_FAULT("upsertService", inner_.upsertService(vip_be, port, proto, backends));
}
Status FaultyDatapathMaps::deleteService(uint32_t vip_be, uint16_t port, uint8_t proto) {
  MB_FAULT("deleteService", inner_.deleteService(vip_be, port, proto));
}

Status FaultyPodNetworks::ensureHostDevice(const std::string& name, uint32_t gateway_be) {
  MB_FAULT("ensureHostDevice", inner_.ensureHostDevice(name, gateway_be));
}
Status FaultyPodNetworks::removeHostDevice(const std::string& name) {
  MB_FAULT("removeHostDevice", inner_.removeHostDevice(name));
}
Status FaultyPodNetworks::ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) {
  MB_FAULT("ensureUnreachableRoute", inner_.ensureUnreachableRoute(cidr_be, prefix_len));
}
Status FaultyPodNetworks::removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) {
  MB_FAULT("removeUnreachableRoute", inner_.removeUnreachableRoute(cidr_be, prefix_len));
}
Result<PodNetwork> FaultyPodNetworks::createPodNetwork(const PodNetworkSpec& spec) {
  MB_FAULT("createPodNetwork", inner_.createPodNetwork(spec));
}
Result<PodNetwork> FaultyPodNetworks::inspectPodNetwork(const PodNetworkSpec& spec) {
  MB_FAULT("inspectPodNetwork", inner_.inspectPodNetwork(spec));
}
Status FaultyPodNetworks::deletePodNetwork(const std::string& netns_name, const std::string& host_ifname,
                                           uint32_t ipv4_be) {
  MB_FAULT("deletePodNetwork", inner_.deletePodNetwork(netns_name, host_ifname, ipv4_be));
}
Result<std::vector<uint32_t>> FaultyPodNetworks::hostAddresses() { MB_FAULT("hostAddresses", inner_.hostAddresses()); }

Result<pid_t> FaultyProcessRunner::spawn(const PodProcessSpec& spec) { MB_FAULT("spawn", inner_.spawn(spec)); }
Result<UniqueFd> FaultyProcessRunner::exitFd(pid_t pid) { MB_FAULT("exitFd", inner_.exitFd(pid)); }

Status FaultyStateFiles::write(const std::string& path, const std::string& content) {
  MB_FAULT("writeStateFile", inner_.write(path, content));
}
Status FaultyStateFiles::remove(const std::string& path) { MB_FAULT("removeStateFile", inner_.remove(path)); }

}  // namespace membrane::kernel
