#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>

#include "membrane/metrics.h"
#include "membrane/unique_fd.h"

namespace membrane::metrics {
namespace {

// Plain-socket HTTP/1.0 GET on 127.0.0.1:port; returns the whole response.
std::string httpGet(int port, const std::string& path) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd.valid());
  timeval tv{.tv_sec = 10, .tv_usec = 0};  // a hung server fails the test instead of hanging it
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return "connect failed";
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  EXPECT_EQ(::write(fd.get(), req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  return resp;
}

TEST(MetricsServer, ServesMetricsOnAnyFreePort) {
  AgentMetrics m;
  m.setEndpointCount(2);
  auto srv = MetricsServer::start("127.0.0.1:0", m);
  ASSERT_TRUE(srv.ok()) << srv.error().message;
  ASSERT_NE(*srv, nullptr);
  const int port = (*srv)->port();
  ASSERT_GT(port, 0);

  std::string resp = httpGet(port, "/metrics");
  EXPECT_THAT(resp, testing::StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(resp, testing::HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  EXPECT_THAT(resp, testing::HasSubstr("\ncilium_version{"));
  EXPECT_THAT(resp, testing::HasSubstr("\ncilium_endpoint_count 2\n"));
  // Only /metrics is served.
  EXPECT_THAT(httpGet(port, "/other"), testing::ContainsRegex("^HTTP/1\\.[01] 404 "));
}

TEST(MetricsServer, PortInUseIsACleanError) {
  AgentMetrics m;
  auto first = MetricsServer::start("127.0.0.1:0", m);
  ASSERT_TRUE(first.ok()) << first.error().message;
  const std::string addr = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = MetricsServer::start(addr, m);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, EADDRINUSE);
  EXPECT_EQ(second.error().message,
            "cannot serve metrics on " + addr +
                ": address in use — pass --prometheus-serve-addr with another port, or empty to disable");
  // The first one still serves.
  EXPECT_THAT(httpGet((*first)->port(), "/metrics"), testing::StartsWith("HTTP/1.1 200 OK"));
}

TEST(MetricsServer, EmptyHostMeansAllInterfaces) {
  AgentMetrics m;
  auto srv = MetricsServer::start(":0", m);  // civetweb's "0": every interface, loopback included
  ASSERT_TRUE(srv.ok()) << srv.error().message;
  EXPECT_THAT(httpGet((*srv)->port(), "/metrics"), testing::HasSubstr("\ncilium_version{"));
}

TEST(MetricsServer, EmptyAddressDisables) {
  AgentMetrics m;
  auto srv = MetricsServer::start("", m);
  ASSERT_TRUE(srv.ok());
  EXPECT_EQ(*srv, nullptr);
}

TEST(MetricsServer, MalformedAddressesAreRejected) {
  AgentMetrics m;
  for (const char* addr : {"9962", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:9x", "example.com:9962"}) {
    auto srv = MetricsServer::start(addr, m);
    ASSERT_FALSE(srv.ok()) << addr;
    EXPECT_EQ(srv.error().code, EINVAL) << addr;
    EXPECT_THAT(srv.error().message, testing::HasSubstr(std::string("metrics address '") + addr + "'"));
  }
}

}  // namespace
}  // namespace membrane::metrics
