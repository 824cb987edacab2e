#include "src/kernel/fake/fake_datapath_maps.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace membrane::kernel {

bool FakeDatapathMaps::State::operator==(const State& o) const {
  auto same = [](const auto& a, const auto& b) { return std::memcmp(&a, &b, sizeof a) == 0; };
  if (!same(config, o.config) || endpoints.size() != o.endpoints.size()) return false;
  for (auto a = endpoints.begin(), b = o.endpoints.begin(); a != endpoints.end(); ++a, ++b)
    if (a->first != b->first || !same(a->second, b->second)) return false;
  return ipcache == o.ipcache && policy == o.policy && services == o.services && attached == o.attached &&
         ct_ips == o.ct_ips;
}

Status FakeDatapathMaps::attach(uint32_t ifindex) {
  if (link_exists_ && !link_exists_(ifindex))
    return Error::fromErrno(ENODEV, fmt::format("attach tc ingress on ifindex {}", ifindex));
  s_.attached.insert(ifindex);
  return okStatus();
}

Status FakeDatapathMaps::setConfig(const mb_datapath_config& config) {
  s_.config = config;
  return okStatus();
}

Result<mb_datapath_config> FakeDatapathMaps::config() { return s_.config; }

Status FakeDatapathMaps::upsertEndpoint(const mb_endpoint_info& endpoint) {
  // One entry per ifindex and per address, as the two real maps keep them.
  for (auto it = s_.endpoints.begin(); it != s_.endpoints.end();)
    it = it->first != endpoint.ifindex && it->second.ipv4 == endpoint.ipv4 ? s_.endpoints.erase(it) : std::next(it);
  s_.endpoints[endpoint.ifindex] = endpoint;
  return okStatus();
}

Status FakeDatapathMaps::deleteEndpoint(uint32_t ifindex, uint32_t ipv4_be) {
  s_.endpoints.erase(ifindex);
  for (auto it = s_.endpoints.begin(); it != s_.endpoints.end();)
    it = it->second.ipv4 == ipv4_be ? s_.endpoints.erase(it) : std::next(it);
  return okStatus();
}

Result<std::vector<mb_endpoint_info>> FakeDatapathMaps::listEndpoints() {
  std::vector<mb_endpoint_info> out;
  for (const auto& [_, e] : s_.endpoints) out.push_back(e);
  return out;
}

Status FakeDatapathMaps::upsertIpcache(uint32_t ipv4_be, uint8_t prefix_len, uint32_t identity) {
  if (prefix_len > 32) return Error::invalid(fmt::format("ipcache: prefix length {} > 32", prefix_len));
  uint32_t mask = prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - prefix_len);
  s_.ipcache[{htonl(ntohl(ipv4_be) & mask), prefix_len}] = identity;  // stored with host bits zero, as the LPM trie
  return okStatus();
}

Status FakeDatapathMaps::deleteIpcache(uint32_t ipv4_be, uint8_t prefix_len) {
  uint32_t mask = prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - prefix_len);
  s_.ipcache.erase({htonl(ntohl(ipv4_be) & mask), prefix_len});
  return okStatus();
}

Result<std::vector<IpcacheEntry>> FakeDatapathMaps::listIpcache() {
  std::vector<IpcacheEntry> out;
  for (const auto& [k, id] : s_.ipcache) out.push_back(IpcacheEntry{k.first, k.second, id});
  return out;
}

Result<PolicySyncStats> FakeDatapathMaps::syncPolicy(uint32_t ep_id,
                                                     const std::map<PolicyMapKey, PolicyMapValue>& desired) {
  PolicySyncStats st;
  auto& cur = s_.policy[ep_id];
  for (const auto& [k, v] : desired) {
    auto it = cur.find(k);
    if (it == cur.end()) ++st.added;
    else if (it->second != v) ++st.updated;
    else ++st.unchanged;
    cur[k] = v;
  }
  for (auto it = cur.begin(); it != cur.end();)
    if (!desired.count(it->first)) {
      ++st.deleted;
      it = cur.erase(it);
    } else {
      ++it;
    }
  if (cur.empty()) s_.policy.erase(ep_id);
  return st;
}

Status FakeDatapathMaps::deletePolicy(uint32_t ep_id) {
  s_.policy.erase(ep_id);
  return okStatus();
}

std::vector<uint32_t> FakeDatapathMaps::policyEndpoints() const {
  std::vector<uint32_t> out;
  for (const auto& [id, _] : s_.policy) out.push_back(id);
  return out;
}

Status FakeDatapathMaps::flushCtFor(uint32_t ipv4_be) {
  s_.ct_ips.erase(ipv4_be);
  return okStatus();
}

Status FakeDatapathMaps::upsertService(uint32_t vip_be, uint16_t port, uint8_t proto,
                                       const std::vector<Backend>& backends) {
  if (proto != 6 && proto != 17) return Error::invalid(fmt::format("service protocol {}: TCP or UDP only", proto));
  s_.services[{vip_be, port, proto}] = Service{backends};
  return okStatus();
}

Status FakeDatapathMaps::deleteService(uint32_t vip_be, uint16_t port, uint8_t proto) {
  s_.services.erase({vip_be, port, proto});
  return okStatus();
}

}  // namespace membrane::kernel
