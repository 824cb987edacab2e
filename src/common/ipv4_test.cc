// ipv4HostOrderToString pins its byte order (issue 10: there were two
// ipv4ToString, one per byte order, and callers could not tell which).
#include "membrane/ipv4.h"

#include <arpa/inet.h>

#include <gtest/gtest.h>

namespace membrane {
namespace {

TEST(Ipv4, HostOrderToString) {
  EXPECT_EQ(ipv4HostOrderToString(0x0a000001), "10.0.0.1");
  EXPECT_EQ(ipv4HostOrderToString(0xc0a80a2a), "192.168.10.42");
  EXPECT_EQ(ipv4HostOrderToString(0), "0.0.0.0");
  EXPECT_EQ(ipv4HostOrderToString(0xffffffff), "255.255.255.255");
}

TEST(Ipv4, NetworkOrderGoesThroughNtohl) {
  in_addr a{};
  ASSERT_EQ(inet_pton(AF_INET, "10.233.7.42", &a), 1);
  EXPECT_EQ(ipv4HostOrderToString(ntohl(a.s_addr)), "10.233.7.42");
  if (htonl(1) != 1) {
    EXPECT_EQ(ipv4HostOrderToString(a.s_addr), "42.7.233.10");  // little-endian host: the wrong order shows
  }
}

}  // namespace
}  // namespace membrane
