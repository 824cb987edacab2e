#include "src/daemon/cni_results.h"

#include <gtest/gtest.h>

namespace membrane::daemon {
namespace {

constexpr uint32_t kGateway = 0x0ac80001;  // 10.200.0.1

endpoint::Endpoint container() {
  endpoint::Endpoint ep;
  ep.id = 1204;
  ep.ipv4 = 0x0ac80007;  // 10.200.0.7
  ep.netns_path = "/run/netns/netns-4f1c";
  ep.host_ifname = "lxc3f9a0c1d2e4";
  ep.mac = {0x02, 0xaa, 0, 0, 0, 0x65};
  ep.host_mac = {0x02, 0xfe, 0, 0, 0, 0x65};
  ep.cni = endpoint::CniAttachment{"c0ffee", "eth0", "membrane"};
  return ep;
}

TEST(CniResults, EndpointNames) {
  EXPECT_EQ(cniEndpointName("web-1", "c0ffee"), "web-1");
  EXPECT_EQ(cniEndpointName("sharp_tesla", "c0ffee"), "sharp-tesla");  // podman's generated names
  EXPECT_EQ(cniEndpointName("My.Web", "c0ffee"), "my-web");
  EXPECT_EQ(cniEndpointName("__x__", "c0ffee"), "x");
  EXPECT_EQ(cniEndpointName("", "3F9A0C1D2E4B5A6978"), "cni-3f9a0c1d2e4b");
  EXPECT_EQ(cniEndpointName("___", "default-c1"), "cni-default-c1");  // ctr: "<namespace>-<id>"
  EXPECT_EQ(cniEndpointName("", "_"), "cni");
  EXPECT_EQ(cniEndpointName(std::string(70, 'a'), "c"), std::string(63, 'a'));
}

TEST(CniResults, AddAnswerListsBothEndsTheAddressAndTheRoute) {
  EXPECT_EQ(cni::toJson(cniAddAnswer(container(), kGateway)).dump(),
            R"({"endpoint_id":1204,"result":{"dns":{},"interfaces":[{"mac":"02:fe:00:00:00:65","name":"lxc3f9a0c1d2e4"},)"
            R"({"mac":"02:aa:00:00:00:65","name":"eth0","sandbox":"/run/netns/netns-4f1c"}],)"
            R"("ips":[{"address":"10.200.0.7/32","gateway":"10.200.0.1","interface":1}],)"
            R"("routes":[{"dst":"0.0.0.0/0","gw":"10.200.0.1"}]}})");
}

TEST(CniResults, CheckAgreesWithItsOwnAddResult) {
  auto ep = container();
  auto ours = cniAddAnswer(ep, kGateway).result;
  EXPECT_EQ(cniCheckDifference(ep, ep.netns_path, ours, kGateway), std::nullopt);
  // Chained after another plugin: its entries come first.
  cni::CniResult chained = ours;
  chained.interfaces.insert(chained.interfaces.begin(), cni::Interface{"lo", "", ep.netns_path, {}, "", ""});
  chained.ips[0].interface = 2;
  EXPECT_EQ(cniCheckDifference(ep, ep.netns_path, chained, kGateway), std::nullopt);
}

TEST(CniResults, CheckNamesTheFirstDifference) {
  auto ep = container();
  auto ours = cniAddAnswer(ep, kGateway).result;
  EXPECT_EQ(cniCheckDifference(ep, "/run/netns/other", ours, kGateway),
            "CNI_NETNS is /run/netns/other, the endpoint's interface is in /run/netns/netns-4f1c");
  auto no_if = ours;
  no_if.interfaces[1].sandbox = "/elsewhere";
  EXPECT_EQ(cniCheckDifference(ep, ep.netns_path, no_if, kGateway),
            "prevResult lists no interface eth0 in /run/netns/netns-4f1c");
  auto mac = ours;
  mac.interfaces[1].mac = "02:aa:00:00:00:66";
  EXPECT_EQ(cniCheckDifference(ep, ep.netns_path, mac, kGateway),
            "interface eth0: MAC is 02:aa:00:00:00:65, prevResult says 02:aa:00:00:00:66");
  auto addr = ours;
  addr.ips[0].address = "10.200.0.8/32";
  EXPECT_EQ(cniCheckDifference(ep, ep.netns_path, addr, kGateway),
            "address 10.200.0.7/32 of eth0 is not in prevResult's ips for eth0");
  auto wrong_index = ours;
  wrong_index.ips[0].interface = 0;
  EXPECT_EQ(cniCheckDifference(ep, ep.netns_path, wrong_index, kGateway),
            "address 10.200.0.7/32 of eth0 is not in prevResult's ips for eth0");
  auto route = ours;
  route.routes.clear();
  EXPECT_EQ(cniCheckDifference(ep, ep.netns_path, route, kGateway), "prevResult has no default route via 10.200.0.1");
}

}  // namespace
}  // namespace membrane::daemon
