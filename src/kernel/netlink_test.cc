// Privileged: real namespaces, veth pairs, routes and pings. Every name
// contains the pid; everything is removed by guards, also on failure.
// `ip` and `ping` are used only to observe what the library did.
#include "src/kernel/netlink.h"

#include <arpa/inet.h>

#include "membrane/ipv4.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "src/kernel/netlink_test_util.h"
#include "src/kernel/netns.h"

namespace membrane::kernel {
namespace {

using testing::Cleanup;
using testing::CmdResult;
using testing::ipv4;
using testing::pingOnce;
using testing::sh;

std::string macString(const MacAddress& m) {
  char buf[18];
  std::snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return buf;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Per-test-run addressing: 10.233.<pid%200>.0/24, gateway .1 on the host
// device, pods from .10.
class PodNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pid_ = std::to_string(::getpid());
    subnet_ = "10.233." + std::to_string(::getpid() % 200) + ".";
    cidr_be_ = ipv4(subnet_ + "0");
    gw_ = subnet_ + "1";
    host_dev_ = "mbgw" + pid_;
  }
  void TearDown() override {
    for (const auto& p : pods_) (void)deletePodNetwork(p.netns_name, p.host_ifname, p.ipv4_be);
    (void)removeUnreachableRoute(cidr_be_, 24);
    (void)removeHostDevice(host_dev_);
    // Leak check: nothing with our pid may survive.
    EXPECT_EQ(sh("ip netns list | grep -c -- '-" + pid_ + "-'").output, "0\n");
    EXPECT_EQ(sh("ip -o link show | grep -c " + pid_).output, "0\n");
    EXPECT_EQ(sh("ip route show | grep -c '^[a-z ]*" + subnet_ + "'").output, "0\n");
  }

  // Registers the spec for cleanup before anything is created.
  PodNetworkSpec pod(const std::string& tag, int host_octet) {
    PodNetworkSpec s;
    s.netns_name = "mbt-" + pid_ + "-" + tag;
    s.host_ifname = "lxt" + pid_ + tag;
    s.ipv4_be = ipv4(subnet_ + std::to_string(host_octet));
    s.gateway_be = ipv4(gw_);
    pods_.push_back(s);
    return s;
  }
  CmdResult inPod(const PodNetworkSpec& s, const std::string& cmd) {
    return sh("ip netns exec " + s.netns_name + " " + cmd);
  }

  std::string pid_, subnet_, gw_, host_dev_;
  uint32_t cidr_be_ = 0;
  std::vector<PodNetworkSpec> pods_;
};

TEST_F(PodNetworkTest, TwoPodsAreWiredAndReachable) {
  MB_ASSERT_OK(ensureHostDevice(host_dev_, ipv4(gw_)));
  auto again = ensureHostDevice(host_dev_, ipv4(gw_));  // idempotent
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(sh("ip -4 -o addr show dev " + host_dev_ + " | grep -c 'inet " + gw_ + "/32'").output, "1\n");
  EXPECT_EQ(sh("ip -6 addr show dev " + host_dev_).output, "");
  MB_ASSERT_OK(ensureUnreachableRoute(cidr_be_, 24));

  const PodNetworkSpec specs[] = {pod("a", 10), pod("b", 11)};
  for (const auto& s : specs) {
    SCOPED_TRACE(s.netns_name);
    const std::string ip = ipv4HostOrderToString(ntohl(s.ipv4_be));
    auto net = createPodNetwork(s);
    ASSERT_TRUE(net.ok()) << net.error().message;
    EXPECT_EQ(net->netns_path, "/var/run/netns/" + s.netns_name);

    // Host side.
    EXPECT_NE(sh("ip netns list").output.find(s.netns_name), std::string::npos);
    auto idx = ifindexOf(s.host_ifname);
    ASSERT_TRUE(idx.ok());
    EXPECT_EQ(*idx, net->host_ifindex);
    EXPECT_TRUE(linkExists(s.host_ifname));
    auto link = sh("ip -o link show dev " + s.host_ifname);
    EXPECT_NE(link.output.find("state UP"), std::string::npos) << link.output;
    EXPECT_NE(link.output.find("mtu 1500"), std::string::npos) << link.output;
    EXPECT_NE(link.output.find("link/ether " + macString(net->host_mac)), std::string::npos) << link.output;
    EXPECT_EQ(trim(sh("ip -4 route show " + ip + "/32").output),
              ip + " dev " + s.host_ifname + " scope link src " + gw_);
    EXPECT_EQ(sh("ip -6 addr show dev " + s.host_ifname).output, "");

    // Pod side.
    auto addr = inPod(s, "ip -4 -o addr show dev eth0");
    EXPECT_NE(addr.output.find("inet " + ip + "/32"), std::string::npos) << addr.output;
    EXPECT_EQ(inPod(s, "ip route show").output,
              "default via " + gw_ + " dev eth0 \n" + gw_ + " dev eth0 scope link \n");
    EXPECT_EQ(trim(inPod(s, "ip neigh show " + gw_).output),
              gw_ + " dev eth0 lladdr " + macString(net->host_mac) + " PERMANENT");
    EXPECT_EQ(trim(inPod(s, "cat /sys/class/net/eth0/address").output), macString(net->pod_mac));
    EXPECT_EQ(trim(inPod(s, "cat /sys/class/net/eth0/ifindex").output), std::to_string(net->pod_ifindex));
    EXPECT_EQ(inPod(s, "ip -6 addr show").output, "");  // no IPv6 at all, not even on lo
    EXPECT_NE(inPod(s, "ip -o link show dev lo").output.find("UP"), std::string::npos);

    // Restore path sees the same thing.
    auto seen = inspectPodNetwork(s);
    ASSERT_TRUE(seen.ok()) << seen.error().message;
    EXPECT_EQ(seen->host_ifindex, net->host_ifindex);
    EXPECT_EQ(seen->pod_ifindex, net->pod_ifindex);
    EXPECT_EQ(seen->host_mac, net->host_mac);
    EXPECT_EQ(seen->pod_mac, net->pod_mac);
  }

  for (const auto& s : specs) {
    SCOPED_TRACE(s.netns_name);
    EXPECT_TRUE(pingOnce(s.ipv4_be)) << "host -> " << ipv4HostOrderToString(ntohl(s.ipv4_be));
    auto ns = Netns::open(s.netns_name);
    ASSERT_TRUE(ns.ok()) << ns.error().message;
    auto pod_to_gw = ns->run([&]() -> Result<bool> { return pingOnce(ipv4(gw_)); });
    ASSERT_TRUE(pod_to_gw.ok()) << pod_to_gw.error().message;
    EXPECT_TRUE(*pod_to_gw) << "pod -> gateway " << gw_;
  }
  // Control: an address in the pod range that nobody owns does not answer.
  EXPECT_FALSE(pingOnce(ipv4(subnet_ + "77"), 200));

  // Addresses of the pod range that no pod owns hit the unreachable route.
  auto nobody = sh("ip route get " + subnet_ + "77");
  EXPECT_NE(nobody.exit_code, 0) << nobody.output;
  EXPECT_NE(nobody.output.find("No route to host"), std::string::npos) << nobody.output;

  // Delete pod a: every trace is gone, pod b is untouched.
  const auto& a = specs[0];
  const std::string ip_a = ipv4HostOrderToString(ntohl(a.ipv4_be));
  MB_ASSERT_OK(deletePodNetwork(a.netns_name, a.host_ifname, a.ipv4_be));
  EXPECT_FALSE(Netns::exists(a.netns_name));
  EXPECT_EQ(sh("ip netns list").output.find(a.netns_name), std::string::npos);
  EXPECT_FALSE(linkExists(a.host_ifname));
  EXPECT_NE(sh("ip link show dev " + a.host_ifname).exit_code, 0);
  EXPECT_EQ(sh("ip -4 route show " + ip_a + "/32").output, "");
  auto gone = sh("ip route get " + ip_a);
  EXPECT_NE(gone.output.find("No route to host"), std::string::npos) << gone.output;
  auto inspect_gone = inspectPodNetwork(a);
  ASSERT_FALSE(inspect_gone.ok());
  EXPECT_EQ(inspect_gone.error().code, ENOENT);
  // Idempotent.
  auto twice = deletePodNetwork(a.netns_name, a.host_ifname, a.ipv4_be);
  EXPECT_TRUE(twice.ok()) << twice.error().message;

  EXPECT_TRUE(inspectPodNetwork(specs[1]).ok());
  EXPECT_TRUE(pingOnce(specs[1].ipv4_be));
  EXPECT_FALSE(pingOnce(a.ipv4_be, 200));
}

// Each call has its own netlink socket and namespace thread: pods can be
// set up and torn down in parallel.
TEST_F(PodNetworkTest, PodsCanBeCreatedAndDeletedConcurrently) {
  MB_ASSERT_OK(ensureHostDevice(host_dev_, ipv4(gw_)));
  constexpr int kPods = 4;
  std::vector<PodNetworkSpec> specs;
  for (int i = 0; i < kPods; ++i) specs.push_back(pod("c" + std::to_string(i), 30 + i));
  std::vector<Result<PodNetwork>> results(kPods, Result<PodNetwork>(Error::invalid("not run")));
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kPods; ++i) threads.emplace_back([&, i] { results[i] = createPodNetwork(specs[i]); });
    for (auto& t : threads) t.join();
  }
  for (int i = 0; i < kPods; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].error().message;
    EXPECT_TRUE(pingOnce(specs[i].ipv4_be)) << ipv4HostOrderToString(ntohl(specs[i].ipv4_be));
  }
  std::vector<Status> deleted(kPods);
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kPods; ++i)
      threads.emplace_back([&, i] {
        deleted[i] = deletePodNetwork(specs[i].netns_name, specs[i].host_ifname, specs[i].ipv4_be);
      });
    for (auto& t : threads) t.join();
  }
  for (int i = 0; i < kPods; ++i) {
    EXPECT_TRUE(deleted[i].ok()) << deleted[i].error().message;
    EXPECT_FALSE(Netns::exists(specs[i].netns_name));
    EXPECT_FALSE(linkExists(specs[i].host_ifname));
  }
}

TEST_F(PodNetworkTest, ExistingNetnsIsRefusedAndNothingIsLeftBehind) {
  MB_ASSERT_OK(ensureHostDevice(host_dev_, ipv4(gw_)));
  PodNetworkSpec s = pod("x", 20);
  auto squatter = Netns::create(s.netns_name);
  ASSERT_TRUE(squatter.ok()) << squatter.error().message;

  auto r = createPodNetwork(s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EEXIST);
  EXPECT_NE(r.error().message.find(s.netns_name), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("File exists"), std::string::npos) << r.error().message;
  EXPECT_FALSE(linkExists(s.host_ifname));
  EXPECT_EQ(sh("ip -4 route show " + ipv4HostOrderToString(ntohl(s.ipv4_be)) + "/32").output, "");
  // The existing namespace belongs to someone else: still there, untouched.
  EXPECT_TRUE(Netns::exists(s.netns_name));
  EXPECT_EQ(trim(inPod(s, "ip -o link show | wc -l").output), "1");  // only lo
}

// A container runtime's namespace (CNI_NETNS), adopted by path: the veth's
// pod end is born there with the runtime's interface name; deleting the pod
// network takes the veth, never the namespace; a taken name or a missing
// namespace is refused and leaves nothing.
TEST_F(PodNetworkTest, AdoptedNamespaceIsEnteredByPathAndNeverRemoved) {
  MB_ASSERT_OK(ensureHostDevice(host_dev_, ipv4(gw_)));
  PodNetworkSpec runtime = pod("rt", 30);  // only its name: the "runtime" namespace
  auto rt = Netns::create(runtime.netns_name);
  ASSERT_TRUE(rt.ok()) << rt.error().message;
  PodNetworkSpec s = runtime;
  s.netns_name.clear();
  s.adopt_netns_path = Netns::pathOf(runtime.netns_name);
  s.pod_ifname = "net1";
  s.host_ifname = "lxt" + pid_ + "a";
  pods_.push_back(s);

  auto net = createPodNetwork(s);
  ASSERT_TRUE(net.ok()) << net.error().message;
  EXPECT_EQ(net->netns_path, s.adopt_netns_path);
  const std::string ip = ipv4HostOrderToString(ntohl(s.ipv4_be));
  EXPECT_EQ(inPod(runtime, "ip -4 -o addr show dev net1 | grep -c 'inet " + ip + "/32 scope global net1'").output,
            "1\n");
  EXPECT_EQ(trim(inPod(runtime, "ip -4 route show default").output), "default via " + gw_ + " dev net1");
  EXPECT_EQ(trim(inPod(runtime, "cat /sys/class/net/net1/address").output), macString(net->pod_mac));
  auto seen = inspectPodNetwork(s);
  ASSERT_TRUE(seen.ok()) << seen.error().message;
  EXPECT_EQ(seen->pod_mac, net->pod_mac);

  PodNetworkSpec again = s;
  again.host_ifname = "lxt" + pid_ + "b";
  again.ipv4_be = ipv4(subnet_ + "31");
  auto taken = createPodNetwork(again);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.error().code, EEXIST);
  EXPECT_EQ(taken.error().message, "create pod network " + s.adopt_netns_path + ": interface net1 already exists in " +
                                       s.adopt_netns_path);
  EXPECT_FALSE(linkExists(again.host_ifname));

  PodNetworkSpec missing = again;
  missing.adopt_netns_path = "/run/netns/mbt-" + pid_ + "-gone";
  auto gone = createPodNetwork(missing);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ENOENT);
  EXPECT_EQ(gone.error().message, "create pod network " + missing.adopt_netns_path + ": open netns " +
                                      missing.adopt_netns_path + ": " + missing.adopt_netns_path + " does not exist");

  MB_ASSERT_OK(deletePodNetwork("", s.host_ifname, s.ipv4_be));
  EXPECT_FALSE(linkExists(s.host_ifname));
  EXPECT_EQ(sh("ip -4 route show " + ip + "/32").output, "");
  EXPECT_TRUE(Netns::exists(runtime.netns_name));
  EXPECT_EQ(trim(inPod(runtime, "ip -o link show | wc -l").output), "1");  // only lo: net1 went with the veth
  // Idempotent, also once the runtime removed its namespace.
  MB_ASSERT_OK(Netns::remove(runtime.netns_name));
  MB_ASSERT_OK(deletePodNetwork("", s.host_ifname, s.ipv4_be));
}

TEST_F(PodNetworkTest, ExistingHostInterfaceIsRefusedAndNoNetnsIsLeft) {
  MB_ASSERT_OK(ensureHostDevice(host_dev_, ipv4(gw_)));
  PodNetworkSpec s = pod("y", 21);
  ASSERT_EQ(sh("ip link add " + s.host_ifname + " type veth peer name " + s.host_ifname + "p").exit_code, 0);

  auto r = createPodNetwork(s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EEXIST);
  EXPECT_NE(r.error().message.find(s.host_ifname), std::string::npos) << r.error().message;
  EXPECT_FALSE(Netns::exists(s.netns_name));
  EXPECT_EQ(sh("ip netns list").output.find(s.netns_name), std::string::npos);
  // The existing device is not ours to delete.
  EXPECT_TRUE(linkExists(s.host_ifname));
  // TearDown's deletePodNetwork removes it (same name).
}

TEST_F(PodNetworkTest, FailureAtTheLastStepRollsBackEverything) {
  // No host device: the gateway is not a local address, so the host route
  // (src = gateway) is refused by the kernel after the namespace, the veth
  // pair and the whole pod side already exist.
  PodNetworkSpec s = pod("z", 22);
  auto r = createPodNetwork(s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find("add route " + ipv4HostOrderToString(ntohl(s.ipv4_be)) + "/32"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("ensureHostDevice"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find("rollback incomplete"), std::string::npos) << r.error().message;
  EXPECT_FALSE(Netns::exists(s.netns_name));
  EXPECT_FALSE(linkExists(s.host_ifname));
  EXPECT_EQ(sh("ip -4 route show " + ipv4HostOrderToString(ntohl(s.ipv4_be)) + "/32").output, "");
}

TEST_F(PodNetworkTest, UnreachableRouteIsIdempotentAndRemovable) {
  MB_ASSERT_OK(ensureUnreachableRoute(cidr_be_, 24));
  auto second = ensureUnreachableRoute(cidr_be_, 24);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(sh("ip -4 route show type unreachable " + subnet_ + "0/24").output, "unreachable " + subnet_ + "0/24 \n");
  auto get = sh("ip route get " + subnet_ + "200");
  EXPECT_NE(get.exit_code, 0) << get.output;
  EXPECT_NE(get.output.find("No route to host"), std::string::npos) << get.output;

  MB_ASSERT_OK(removeUnreachableRoute(cidr_be_, 24));
  EXPECT_EQ(sh("ip -4 route show type unreachable " + subnet_ + "0/24").output, "");
  EXPECT_EQ(sh("ip route get " + subnet_ + "200").output.find("No route to host"), std::string::npos);
  MB_EXPECT_OK(removeUnreachableRoute(cidr_be_, 24));  // absent is fine

  auto bad = ensureUnreachableRoute(ipv4(subnet_ + "5"), 24);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, EINVAL);
  EXPECT_NE(bad.error().message.find("host bits"), std::string::npos);
}

TEST_F(PodNetworkTest, HostDeviceRefusesANonDummyAndIsRemovable) {
  auto lo = ensureHostDevice("lo", ipv4(gw_));
  ASSERT_FALSE(lo.ok());
  EXPECT_EQ(lo.error().code, EEXIST);
  EXPECT_NE(lo.error().message.find("not a veth or dummy device"), std::string::npos) << lo.error().message;
  EXPECT_EQ(sh("ip -4 -o addr show dev lo | grep -c " + gw_).output, "0\n");

  MB_ASSERT_OK(ensureHostDevice(host_dev_, ipv4(gw_)));
  EXPECT_TRUE(linkExists(host_dev_));
  MB_ASSERT_OK(removeHostDevice(host_dev_));
  EXPECT_FALSE(linkExists(host_dev_));
  EXPECT_FALSE(linkExists(hostDevicePeerName(host_dev_)));
  MB_EXPECT_OK(removeHostDevice(host_dev_));
  auto missing = ifindexOf(host_dev_);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
}

}  // namespace
}  // namespace membrane::kernel
