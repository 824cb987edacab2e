#include "src/health/health.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

namespace membrane::health {
namespace {

uint16_t portOf(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

const uint32_t kLoopback = htonl(INADDR_LOOPBACK);

TEST(Health, HelloServerAnswersHttpProbe) {
  auto fd = listenTcp(0);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  uint16_t port = portOf(fd->get());
  auto srv = HelloServer::start(std::move(*fd));
  ASSERT_TRUE(srv.ok());
  auto r = probeHttp(kLoopback, port, std::chrono::milliseconds(1000));
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_GT(r.rtt_seconds, 0);
  EXPECT_EQ((*srv)->served(), 1u);
  srv->reset();  // stops and joins
  auto gone = probeHttp(kLoopback, port, std::chrono::milliseconds(300));
  EXPECT_FALSE(gone.ok);
  EXPECT_NE(gone.error.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << gone.error;
}

TEST(Health, IcmpProbeOfLoopback) {
  if (geteuid() != 0) GTEST_SKIP() << "raw ICMP socket needs root";
  auto r = probeIcmp(kLoopback, std::chrono::milliseconds(1000));
  EXPECT_TRUE(r.ok) << r.error;
}

TEST(Health, ReportCountsUnreachable) {
  auto fd = listenTcp(0);
  ASSERT_TRUE(fd.ok());
  HealthReport rep;
  NodeStatus a;
  a.host.icmp.ok = a.host.http.ok = true;
  PathStatus ep;
  ep.icmp.ok = true;  // http fails
  a.endpoint = ep;
  NodeStatus b;  // host unreachable, no endpoint
  rep.nodes = {a, b};
  EXPECT_EQ(rep.unreachableNodes(), 1);
  EXPECT_EQ(rep.unreachableHealthEndpoints(), 1);
  EXPECT_EQ(rep.healthyNodes(), 0);  // a: endpoint fails HTTP; b: host fails
  rep.nodes[0].endpoint->http.ok = true;
  EXPECT_EQ(rep.healthyNodes(), 1);
}

TEST(Health, CheckerProbesTargetsAndReports) {
  int reports = 0;
  HealthChecker hc([] { return std::vector<NodeTarget>{{"localhost", htonl(INADDR_LOOPBACK), 0}}; },
                   [&](const HealthReport&) { ++reports; }, std::chrono::seconds(60),
                   std::chrono::milliseconds(300));
  auto rep = hc.probeNow();
  ASSERT_EQ(rep.nodes.size(), 1u);
  EXPECT_TRUE(rep.nodes[0].local);
  EXPECT_EQ(rep.nodes[0].host.address, "127.0.0.1");
  EXPECT_FALSE(rep.nodes[0].endpoint.has_value());
  EXPECT_EQ(reports, 1);
  ASSERT_TRUE(hc.last().has_value());
}

}  // namespace
}  // namespace membrane::health
