// Pod networking over rtnetlink (libnl-route-3 builds the messages; libnl
// stays out of this header).
//
// The model (as in Cilium): each pod has its own network namespace and a
// veth pair, host side `lxc…` in the host namespace, pod side `eth0` created
// directly inside the pod namespace. The pod gets an IPv4 /32; its gateway G
// is an address on a host device (ensureHostDevice). Inside the pod:
//   <podip>/32 on eth0, `G dev eth0 scope link`, `default via G dev eth0`,
//   neighbour G -> MAC of the host-side veth, PERMANENT (no ARP for G);
//   IPv6 disabled (all/default/eth0/lo), lo up.
// On the host:
//   `<podip>/32 dev lxc… scope link src G`, IPv6 disabled on lxc…;
//   an `unreachable` route for the whole pod CIDR (ensureUnreachableRoute) so
//   traffic to an address no pod owns never leaves the machine.
//
// Contract
// - Addresses are IPv4 in network byte order (*_be).
// - "Host" functions act on the network namespace of the CALLING thread
//   (normally the host's). Pod-side work runs through Netns::run().
// - Errors carry what failed and the kernel's reason, including the
//   kernel's extended ack message when it gives one:
//   "create pod network membrane_default_xwing: create veth lxc1a2b/eth0 in
//    membrane_default_xwing: File exists".
// - Thread safety: every call opens its own netlink socket; calls on
//   different pods may run concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "membrane/result.h"
#include "src/kernel/netns.h"

namespace membrane::kernel {

using MacAddress = std::array<uint8_t, 6>;

struct PodNetworkSpec {
  std::string netns_name;      // /var/run/netns/<netns_name>, created here
  // Non-empty: the pod's namespace exists already and is not membrane's (a
  // container runtime's, CNI_NETNS): it is entered by this absolute path,
  // never created, prepared (lo, IPv6 defaults) or removed, and netns_name
  // is not used. pod_ifname must not exist in it yet (EEXIST naming it).
  std::string adopt_netns_path;
  std::string host_ifname;     // e.g. hostIfnameFor(...); at most 15 chars
  std::string pod_ifname = "eth0";
  uint32_t ipv4_be = 0;        // the pod's address (/32)
  uint32_t gateway_be = 0;     // must already be local on the host (ensureHostDevice)
  uint32_t mtu = 1500;         // both ends of the veth
};

struct PodNetwork {
  std::string netns_path;
  uint32_t host_ifindex = 0;   // in the host namespace (where tc programs attach)
  uint32_t pod_ifindex = 0;    // in the pod namespace
  MacAddress host_mac{};
  MacAddress pod_mac{};
};

// Checks names (IFNAMSIZ, characters), addresses (non-zero, pod != gateway)
// and MTU (68..65535) without touching the kernel.
Status validatePodNetworkSpec(const PodNetworkSpec& spec);

// Creates the namespace, veth pair, addresses, routes and neighbour entry
// described above. All or nothing: on failure every step already done is
// undone (in reverse order) before the error is returned. EEXIST if the
// namespace or host_ifname already exists (nothing of the existing object is
// touched). Requires the gateway to be a local address (ensureHostDevice
// first): the host route uses it as source so host->pod traffic comes from G.
Result<PodNetwork> createPodNetwork(const PodNetworkSpec& spec);

// Removes every trace of a pod network: the host /32 route (only if it still
// points at host_ifname, so an address reused by another pod is left alone),
// the veth pair and the namespace. Idempotent: absent pieces are fine.
// netns_name "": an adopted namespace (PodNetworkSpec::adopt_netns_path),
// which stays; the veth goes (and with it the pod end and its addresses and
// routes), so a runtime's namespace that is already gone is fine too.
Status deletePodNetwork(const std::string& netns_name, const std::string& host_ifname, uint32_t ipv4_be);

// For restore after an agent restart: verifies that the pod network still
// exists as createPodNetwork left it (namespace, host veth up, its peer is
// spec.pod_ifname in that namespace with the pod address, host /32 route)
// and returns its ifindexes/MACs. ENOENT naming the first missing piece.
Result<PodNetwork> inspectPodNetwork(const PodNetworkSpec& spec);

// Host side, in the calling thread's namespace.
// The host device `name` carrying gateway/32, up, IPv6 disabled: a veth pair
// `name` / hostDevicePeerName(name), like Cilium's cilium_host/cilium_net
// (also works on kernels without CONFIG_DUMMY). An existing dummy device of
// that name is accepted too. Idempotent; EEXIST if `name` exists but is
// neither veth nor dummy.
Status ensureHostDevice(const std::string& name, uint32_t gateway_be);
// "<x>_host" -> "<x>_net"; otherwise the first 11 characters of name + "_net".
std::string hostDevicePeerName(const std::string& name);
// Deletes the device (a veth pair goes as a whole, with its addresses). OK if absent.
Status removeHostDevice(const std::string& name);
// `unreachable <cidr>/<prefix_len>` in the main table. Idempotent (replaces
// an existing unreachable route for the same prefix). EINVAL if host bits set.
Status ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len);
// OK if absent.
Status removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len);

// ENOENT if there is no such link.
Result<uint32_t> ifindexOf(const std::string& ifname);
bool linkExists(const std::string& ifname);

// "lxc" + 11 hex characters of a stable (FNV-1a 64) hash of namespace, pod
// and salt: 14 characters, fits IFNAMSIZ, the same in every build and run.
std::string hostIfnameFor(const std::string& ns, const std::string& pod, const std::string& salt);

}  // namespace membrane::kernel
