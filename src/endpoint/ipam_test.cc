#include "src/endpoint/ipam.h"

#include <gtest/gtest.h>

namespace membrane::endpoint {

TEST(Cidr4, ParsesAndRejects) {
  auto c = Cidr4::parse("10.200.0.0/16");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->toString(), "10.200.0.0/16");
  EXPECT_EQ(c->size(), 65536u);
  EXPECT_TRUE(c->contains(*parseIpv4("10.200.255.1")));
  EXPECT_FALSE(c->contains(*parseIpv4("10.201.0.1")));
  auto bad = Cidr4::parse("10.200.0.1/16");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "CIDR '10.200.0.1/16' has host bits set (did you mean 10.200.0.0/16?)");
  EXPECT_FALSE(Cidr4::parse("10.200.0.0").ok());
  EXPECT_FALSE(Cidr4::parse("10.200.0.0/31").ok());
  EXPECT_FALSE(Cidr4::parse("10.300.0.0/16").ok());
  EXPECT_FALSE(Cidr4::parse("10.200.0.0/16x").ok());
}

// clang-tidy (clang-analyzer-core.UndefinedBinaryOperatorResult) and UBSan:
// a default Cidr4 (/0) computed its size as 1u << 32.
TEST(Cidr4, DefaultIsTheWholeSpaceWithoutOverflow) {
  Cidr4 all;
  EXPECT_EQ(all.size(), uint64_t{1} << 32);
  EXPECT_TRUE(all.contains(0xffffffffu));
  Cidr4 host{*parseIpv4("10.0.0.7"), 32};
  EXPECT_EQ(host.size(), 1u);
}

TEST(Ipam, SkipsNetworkGatewayBroadcastAndExhausts) {
  Ipam ipam(*Cidr4::parse("10.9.0.0/29"));  // 8 addresses: .0 net, .1 gw, .7 bcast => 5 usable
  EXPECT_EQ(ipam.capacity(), 5u);
  std::vector<std::string> got;
  for (int i = 0; i < 5; ++i) {
    auto ip = ipam.allocate();
    ASSERT_TRUE(ip.ok());
    got.push_back(ipv4HostOrderToString(*ip));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}));
  auto full = ipam.allocate();
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, ENOSPC);
  EXPECT_NE(full.error().message.find("pod CIDR 10.9.0.0/29 is exhausted"), std::string::npos);
  ipam.release(*parseIpv4("10.9.0.4"));
  EXPECT_EQ(ipv4HostOrderToString(*ipam.allocate()), "10.9.0.4");
}

TEST(Ipam, ReserveForRestore) {
  Ipam ipam(*Cidr4::parse("10.9.0.0/24"));
  EXPECT_TRUE(ipam.reserve(*parseIpv4("10.9.0.2")).ok());
  EXPECT_EQ(ipam.reserve(*parseIpv4("10.9.0.2")).error().code, EEXIST);
  EXPECT_EQ(ipam.reserve(*parseIpv4("10.9.0.1")).error().code, EINVAL);  // gateway
  EXPECT_EQ(ipam.reserve(*parseIpv4("10.9.1.2")).error().code, EINVAL);  // outside
  EXPECT_EQ(ipv4HostOrderToString(*ipam.allocate()), "10.9.0.3");
}

}  // namespace membrane::endpoint
