// The API under a thousand `membrane monitor` clients (issue 10): a real
// membraned, 1,000 concurrent GET /v1/monitor streams, and the ordinary API
// (healthz, endpoint list, policy import) still answering within 1 s each; a
// policy wait answered by notification when the import realizes its revision.
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <poll.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "membrane/unique_fd.h"
#include "src/api/http_client.h"
#include "tests/integration/agent_fixture.h"

namespace membrane::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

UniqueFd connectTo(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return UniqueFd();
  return fd;
}

// Reads until the response head is complete (or 10 s pass).
std::string readHead(int fd) {
  std::string out;
  auto deadline = Clock::now() + 10s;
  char c;
  while (Clock::now() < deadline && out.find("\r\n\r\n") == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    if (::recv(fd, &c, 1, 0) != 1) break;
    out.push_back(c);
  }
  return out;
}

class ApiScale : public AgentFixture {
 protected:
  void SetUp() override {
    // 1,000 streams here and in the agent (it inherits the limit).
    rlimit rl{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &rl), 0);
    ASSERT_GE(rl.rlim_cur, 2500u) << "needs RLIMIT_NOFILE >= 2500";
    AgentFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    startAgent();
  }
};

TEST_F(ApiScale, ThousandMonitorStreamsLeaveTheApiResponsive) {
  std::vector<UniqueFd> monitors;
  for (int i = 0; i < 1000; ++i) {
    auto fd = connectTo(socket_);
    ASSERT_TRUE(fd.valid()) << "connect " << i << ": " << std::strerror(errno);
    const std::string req = "GET /v1/monitor HTTP/1.1\r\nHost: membraned\r\n\r\n";
    ASSERT_EQ(::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    monitors.push_back(std::move(fd));
  }
  size_t streaming = 0;
  for (auto& m : monitors)
    if (readHead(m.get()).starts_with("HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n")) ++streaming;
  ASSERT_EQ(streaming, 1000u);

  api::HttpClient c(socket_, 10s);
  auto timed = [&](const char* what, std::string_view method, std::string_view target, std::string_view body = "") {
    auto t0 = Clock::now();
    auto r = c.request(method, target, body);
    auto took = Clock::now() - t0;
    EXPECT_LT(took, 1s) << what << " took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                        << " ms with 1,000 monitors";
    return r;
  };
  auto h = timed("GET /v1/healthz", "GET", "/v1/healthz");
  ASSERT_TRUE(h.ok()) << h.error().message;
  ASSERT_EQ(h->status, 200) << h->body;
  const uint64_t rev0 = json::parse(h->body).at("policy_revision").get<uint64_t>();

  auto eps = timed("GET /v1/endpoint", "GET", "/v1/endpoint");
  ASSERT_TRUE(eps.ok());
  EXPECT_EQ(eps->status, 200);
  EXPECT_EQ(json::parse(eps->body), json::array());

  // A wait for the next revision, registered before the import that makes it.
  std::optional<Result<api::Response>> waited;
  Clock::time_point waited_at;
  std::thread waiter([&] {
    api::HttpClient wc(socket_, 60s);
    waited = wc.request("GET", fmt::format("/v1/policy/wait?revision={}&timeout=30", rev0 + 1));
    waited_at = Clock::now();
  });
  // The wait must be pending (not answered) before the import.
  std::this_thread::sleep_for(200ms);  // not synchronisation: gives a wrong early answer the chance to show
  EXPECT_FALSE(waited.has_value());

  const std::string policy = fmt::format(
      "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: scale\n  namespace: {}\n"
      "spec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{}}]\n",
      ns_);
  auto imp = timed("PUT /v1/policy", "PUT", "/v1/policy", json({{"source", "scale.yaml"}, {"content", policy}}).dump());
  auto imported_at = Clock::now();
  ASSERT_TRUE(imp.ok());
  ASSERT_EQ(imp->status, 200) << imp->body;
  EXPECT_EQ(json::parse(imp->body).at("revision").get<uint64_t>(), rev0 + 1);

  waiter.join();
  ASSERT_TRUE(waited.has_value() && waited->ok());
  EXPECT_EQ((*waited)->status, 200) << (*waited)->body;
  EXPECT_EQ(json::parse((*waited)->body), json({{"revision", rev0 + 1}, {"realized", rev0 + 1}}));
  EXPECT_LT(waited_at - imported_at, 1s) << "the wait was not answered when the revision was realized";

  // Every monitor is still streaming, and leaving is noticed: the agent serves
  // a fresh monitor and status after 1,000 clients hung up.
  monitors.clear();
  auto st = cli({"status"}, 10s);
  EXPECT_EQ(st.exit_code, 0) << st.err;
}

}  // namespace
}  // namespace membrane::testing
