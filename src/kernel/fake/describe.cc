#include "src/kernel/fake/describe.h"

#include <arpa/inet.h>

#include <sstream>

#include <fmt/format.h>

#include "membrane/ipv4.h"

namespace membrane::kernel {
namespace {
std::string hex(const void* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += fmt::format("{:02x}", static_cast<const uint8_t*>(p)[i]);
  return out;
}
std::string ip(uint32_t be) { return ipv4HostOrderToString(ntohl(be)); }
}  // namespace

std::string describe(const FakeDatapathMaps::State& s) {
  std::ostringstream o;
  o << "config " << hex(&s.config, sizeof s.config) << "\n";
  for (const auto& [ifx, e] : s.endpoints) o << "endpoint " << ifx << " " << hex(&e, sizeof e) << "\n";
  for (const auto& [k, id] : s.ipcache) o << "ipcache " << ip(k.first) << "/" << int(k.second) << " " << id << "\n";
  for (const auto& [ep, entries] : s.policy)
    for (const auto& [k, v] : entries)
      o << "policy " << ep << " " << k.identity << ":" << k.dport << "/" << int(k.proto) << " dir " << int(k.direction)
        << " deny " << v.deny << " proxy " << v.proxy_port << " cookie " << v.cookie << "\n";
  for (const auto& [k, sv] : s.services) {
    o << "service " << ip(std::get<0>(k)) << ":" << std::get<1>(k) << "/" << int(std::get<2>(k)) << " ->";
    for (const auto& b : sv.backends) o << " " << ip(b.ip_be) << ":" << b.port;
    o << "\n";
  }
  for (uint32_t a : s.attached) o << "attached " << a << "\n";
  for (uint32_t a : s.ct_ips) o << "ct " << ip(a) << "\n";
  return o.str();
}

std::string describe(const FakePodNetworks::State& s) {
  std::ostringstream o;
  for (const auto& [n, gw] : s.host_devices) o << "host device " << n << " " << ip(gw) << "\n";
  for (const auto& [c, l] : s.unreachable_routes) o << "unreachable " << ip(c) << "/" << int(l) << "\n";
  for (const auto& [n, p] : s.pods)
    o << "pod " << n << " " << p.spec.host_ifname << " " << ip(p.spec.ipv4_be) << " ifindex " << p.net.host_ifindex
      << "\n";
  return o.str();
}

std::string describe(const FakeProcessRunner::State& s) {
  std::ostringstream o;
  for (const auto& [pid, p] : s) {
    o << "process " << pid << " start " << p.start_time << (p.running ? " running" : " exited ") ;
    if (!p.running) o << p.exit_code;
    o << " netns " << p.netns_path << " hostname " << p.hostname << " argv";
    for (const auto& a : p.argv) o << " " << a;
    for (uint16_t port : p.listening) o << " listens " << port;
    o << "\n";
  }
  return o.str();
}

std::string withoutCreated(std::string text) {
  for (size_t at; (at = text.find("\"created\"")) != std::string::npos;) {
    size_t end = text.find_first_of(",}\n", at);
    text.erase(at, end - at);
  }
  return text;
}

}  // namespace membrane::kernel
