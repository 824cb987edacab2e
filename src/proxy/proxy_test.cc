// End-to-end tests of the proxy loop on loopback (no root): the proxy runs
// in-process without TPROXY, with the "original destination" set to a test
// upstream server.
#include "src/proxy/proxy.h"

#include <sys/resource.h>

#include <filesystem>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "src/api/http_client.h"
#include "src/proxy/control.h"
#include "src/proxy/test_http.h"

namespace membrane::proxy {
namespace {

using namespace std::chrono_literals;
using test::connectTo;
using test::Message;
using test::readMessage;
using test::Reader;
using test::sendAll;
using test::TestServer;

struct RaiseFdLimit {
  RaiseFdLimit() {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 65536);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
} raise_fd_limit;

template <typename F>
bool waitFor(F cond, std::chrono::milliseconds limit = 5s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

// Star Wars: tiefighter (identity 256, here 127.0.0.1) may only POST
// /v1/request-landing; a second rule allows the test paths.
std::string starWarsConfig(uint16_t server_port, uint64_t revision = 1, bool allow_test_paths = true) {
  std::string extra = allow_test_paths ? R"(,{"method":"GET|POST|PUT|HEAD","path":"/(upload|big|ws|ip|echo|h10).*",
      "policy":"default/test-paths","allowed_identities":[256]})"
                                       : "";
  return fmt::format(R"({{"revision":{},"listeners":[{{"port":0,"direction":"ingress"}}],
    "endpoints":[{{"ip":"127.0.0.1","ingress":[{{"port":{},"proto":"TCP","rules":[
      {{"method":"POST","path":"/v1/request-landing","policy":"default/rule1","allowed_identities":[256]}}{}]}}]}}],
    "identities":{{"127.0.0.1":256}}}})",
                     revision, server_port, extra);
}

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override { startProxy(server_.addr()); }

  void startProxy(sockaddr_in odst, ProxyOptions o = {}) {
    o.listen_address = "127.0.0.1";
    o.transparent_listeners = false;
    o.transparent_upstream = false;
    o.original_dst_override = odst;
    if (o.header_timeout == ProxyOptions{}.header_timeout) o.header_timeout = 2s;
    auto p = Proxy::create(o);
    ASSERT_TRUE(p.ok()) << p.error().message;
    proxy_ = std::move(p).value();
    apply(starWarsConfig(ntohs(odst.sin_port)));
    ASSERT_TRUE(proxy_->start().ok());
    port_ = proxy_->boundPort(0, Direction::Ingress);
    ASSERT_NE(port_, 0);
  }

  void apply(const std::string& json) {
    auto cfg = ProxyConfig::parse(json);
    ASSERT_TRUE(cfg.ok()) << cfg.error().message;
    ASSERT_TRUE(proxy_->applyConfig(std::move(cfg).value()).ok());
  }

  struct Counters {
    uint64_t received, forwarded, denied, parse_errors;
  };
  Counters counters() {
    auto& s = proxy_->stats();
    return {s.received.load(), s.forwarded.load(), s.denied.load(), s.parse_errors.load()};
  }

  TestServer server_;
  std::unique_ptr<Proxy> proxy_;
  uint16_t port_ = 0;
};

constexpr std::string_view kDenied =
    "HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n\r\nAccess denied\r\n";

TEST_F(ProxyTest, StarWarsRulesOnOneKeepAliveConnection) {
  auto before = counters();
  UniqueFd fd = connectTo(port_);
  ASSERT_TRUE(fd);
  Reader r(fd.get());

  ASSERT_TRUE(sendAll(fd.get(), "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n"));
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, "Ship landed");

  ASSERT_TRUE(sendAll(fd.get(), "GET /v1 HTTP/1.1\r\nHost: deathstar\r\n\r\n"));
  std::string raw;
  ASSERT_TRUE(r.exact(kDenied.size(), &raw));
  EXPECT_EQ(raw, kDenied);

  ASSERT_TRUE(sendAll(fd.get(), "PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 4\r\n\r\nboom"));
  m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 403);
  EXPECT_EQ(m.body, "Access denied\r\n");

  // Still the same connection, still usable.
  ASSERT_TRUE(sendAll(fd.get(), "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n"));
  m = readMessage(r, true);
  EXPECT_EQ(m.status, 200);

  auto after = counters();
  EXPECT_EQ(after.received - before.received, 4u);
  EXPECT_EQ(after.forwarded - before.forwarded, 2u);
  EXPECT_EQ(after.denied - before.denied, 2u);
  EXPECT_EQ(after.parse_errors - before.parse_errors, 0u);
  EXPECT_EQ(server_.requests(), 2);  // denied requests never reach the server
  EXPECT_EQ(server_.connections(), 1);
  EXPECT_EQ(proxy_->stats().redirects_http.load(), 1u);
}

TEST_F(ProxyTest, PipelinedResponsesKeepRequestOrder) {
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(),
                      "GET /echo/1 HTTP/1.1\r\nHost: a\r\n\r\n"
                      "GET /v1 HTTP/1.1\r\nHost: a\r\n\r\n"
                      "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                      "DELETE /echo/4 HTTP/1.1\r\nHost: a\r\n\r\n"
                      "GET /echo/5 HTTP/1.1\r\nHost: a\r\n\r\n"));
  std::vector<std::pair<int, std::string>> got;
  for (int i = 0; i < 5; ++i) {
    Message m = readMessage(r, true);
    ASSERT_TRUE(m.ok) << i;
    got.emplace_back(m.status, m.body);
  }
  std::vector<std::pair<int, std::string>> want = {
      {200, "ok /echo/1"}, {403, "Access denied\r\n"}, {200, "5"}, {403, "Access denied\r\n"}, {200, "ok /echo/5"}};
  EXPECT_EQ(got, want);
}

TEST_F(ProxyTest, ChunkedTenMiBBodiesAreStreamedBothWays) {
  proxy_->resetBufferPeak();
  UniqueFd fd = connectTo(port_, 20000);
  Reader r(fd.get());
  // Upload: 10 MiB chunked request body.
  ASSERT_TRUE(sendAll(fd.get(), "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
  std::string chunk(64 * 1024, 'y');
  std::string framed = fmt::format("{:x}\r\n{}\r\n", chunk.size(), chunk);
  for (int i = 0; i < 160; ++i) ASSERT_TRUE(sendAll(fd.get(), framed));
  ASSERT_TRUE(sendAll(fd.get(), "0\r\n\r\n"));
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, std::to_string(10u << 20));
  // Download: 10 MiB chunked response body, counted not kept.
  ASSERT_TRUE(sendAll(fd.get(), "GET /big HTTP/1.1\r\nHost: a\r\n\r\n"));
  m = readMessage(r, true, /*keep_body=*/false);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.body_bytes, 10u << 20);
  // Memory stays bounded: at most the four per-connection buffers (32 KiB each).
  EXPECT_LE(proxy_->buffersPeak(), 4u);
}

TEST_F(ProxyTest, ExpectContinueAllowedAndDenied) {
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 100);  // the server's interim answer is passed on
  ASSERT_TRUE(sendAll(fd.get(), "abc"));
  m = readMessage(r, true);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, "3");

  // Denied with Expect: 403 right away, no 100, connection closed (the body may never come).
  UniqueFd fd2 = connectTo(port_);
  Reader r2(fd2.get());
  ASSERT_TRUE(sendAll(fd2.get(), "PUT /v1/exhaust-port HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
  m = readMessage(r2, true);
  EXPECT_EQ(m.status, 403);
  EXPECT_EQ(m.header("connection"), "close");
  EXPECT_TRUE(r2.eof());
}

TEST_F(ProxyTest, Http10RequestIsAnsweredAndClosed) {
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "GET /h10 HTTP/1.0\r\n\r\n"));
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, "ok /h10");
  EXPECT_TRUE(r.eof());

  UniqueFd fd2 = connectTo(port_);
  Reader r2(fd2.get());
  ASSERT_TRUE(sendAll(fd2.get(), "GET /v1 HTTP/1.0\r\n\r\n"));
  m = readMessage(r2, true);
  EXPECT_EQ(m.status, 403);
  EXPECT_EQ(m.header("connection"), "close");
  EXPECT_TRUE(r2.eof());
}

TEST_F(ProxyTest, UpgradePassesRawBytesAfter101) {
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 101);
  std::string frames = "\x81\x05hello not-http \r\n\r\n GET / HTTP/1.1";
  ASSERT_TRUE(sendAll(fd.get(), frames));
  std::string echoed;
  ASSERT_TRUE(r.exact(frames.size(), &echoed));
  EXPECT_EQ(echoed, frames);

  // A denied upgrade gets 403 and the connection keeps speaking HTTP.
  UniqueFd fd2 = connectTo(port_);
  Reader r2(fd2.get());
  ASSERT_TRUE(sendAll(fd2.get(), "GET /v1/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
  m = readMessage(r2, true);
  EXPECT_EQ(m.status, 403);
  ASSERT_TRUE(sendAll(fd2.get(), "GET /echo/after HTTP/1.1\r\nHost: a\r\n\r\n"));
  m = readMessage(r2, true);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, "ok /echo/after");
}

TEST_F(ProxyTest, MalformedRequestGets400AndCloses) {
  auto before = counters();
  int server_requests = server_.requests();
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo HTTP/1.1\r\nHost a-missing-colon\r\n\r\n"));
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 400);
  EXPECT_TRUE(r.eof());
  auto after = counters();
  EXPECT_EQ(after.parse_errors - before.parse_errors, 1u);
  EXPECT_EQ(after.received - before.received, 0u);
  EXPECT_EQ(server_.requests(), server_requests);
}

// The proxy's own closes are graceful: bytes the client sent after the request
// the proxy answered with a closing error (400 here, 408 and 403 alike) are
// drained, not left unread. Closing a socket with unread bytes resets the
// connection, and the reset makes the client's send fail and can destroy the
// response before the client reads it (seen as a flaky slowloris test: the
// 408 arrived, then ECONNRESET instead of the end of the stream).
TEST_F(ProxyTest, ClosingErrorResponseIsNotLostToAReset) {
  UniqueFd fd = connectTo(port_);
  std::string request = "GET /echo HTTP/1.1\r\nHost a-missing-colon\r\n\r\n" + std::string(1 << 20, 'x');
  ASSERT_TRUE(sendAll(fd.get(), request)) << errnoText(errno);
  ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);
  std::string got;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::recv(fd.get(), buf, sizeof(buf), 0)) > 0) got.append(buf, static_cast<size_t>(n));
  EXPECT_EQ(n, 0) << "the stream ended with " << errnoText(errno) << ", not a clean close";
  EXPECT_EQ(got.substr(0, got.find("\r\n")), "HTTP/1.1 400 Bad Request");
  EXPECT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 0; }));
}

// A connection the proxy lingers on: a malformed head (answered 400, closing)
// followed by bytes the proxy must drain; the client keeps its side open.
UniqueFd openLingering(uint16_t port) {
  UniqueFd fd = connectTo(port);
  Reader r(fd.get());
  EXPECT_TRUE(sendAll(fd.get(), "GET /echo HTTP/1.1\r\nHost a-missing-colon\r\n\r\nmore"));
  Message m = readMessage(r, true);
  EXPECT_EQ(m.status, 400);
  EXPECT_TRUE(r.eof());  // the proxy's FIN comes with the response, not after the linger
  return fd;
}

// Draining is bounded: a client that never ends its side is closed after
// linger_timeout, and that is not counted as an idle timeout.
TEST_F(ProxyTest, LingeringCloseIsBoundedByTheLingerTimeout) {
  proxy_.reset();
  ProxyOptions o;
  o.linger_timeout = 300ms;
  startProxy(server_.addr(), o);
  uint64_t idle_before = proxy_->stats().timeouts_idle.load();
  UniqueFd fd = openLingering(port_);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 0; }, 3s));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 200ms);
  EXPECT_EQ(proxy_->stats().timeouts_idle.load(), idle_before);
}

// The linger deadline is not queued behind the longer idle deadlines of
// connections accepted earlier: with a 60 s idle timeout, a connection that
// lingers after one that is idle is still closed after linger_timeout (a
// slowloris client that never closes must not hold its socket for the idle
// timeout), and the idle one stays open and served.
TEST_F(ProxyTest, LingeringCloseIsNotDelayedByEarlierIdleConnections) {
  proxy_.reset();
  ProxyOptions o;
  o.idle_timeout = 60s;
  o.linger_timeout = 300ms;
  startProxy(server_.addr(), o);
  UniqueFd idle_fd = connectTo(port_);
  ASSERT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 1; }));
  UniqueFd lingering_fd = openLingering(port_);
  EXPECT_EQ(proxy_->stats().connections_active.load(), 2u);
  EXPECT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 1; }, 3s))
      << "the lingering connection is still open";
  EXPECT_EQ(proxy_->stats().timeouts_idle.load(), 0u);
  Reader r(idle_fd.get());
  ASSERT_TRUE(sendAll(idle_fd.get(), "POST /v1/request-landing HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_EQ(readMessage(r, true).status, 200);
}

// stop() closes every connection, lingering ones included.
TEST_F(ProxyTest, StopClosesLingeringConnections) {
  UniqueFd idle_fd = connectTo(port_);
  UniqueFd lingering_fd = openLingering(port_);
  ASSERT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 2; }));
  proxy_->stop();
  EXPECT_EQ(proxy_->stats().connections_active.load(), 0u);
}

// --- L7 bypass: what the policy judged is what the server gets -------------

constexpr std::string_view kBadRequest =
    "HTTP/1.1 400 Bad Request\r\ncontent-length: 13\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n"
    "Bad Request\r\n";

bool anyLineContains(const std::vector<std::string>& lines, std::string_view needle) {
  for (const auto& l : lines)
    if (l.find(needle) != std::string::npos) return true;
  return false;
}

// A denied request hidden behind chunk data that ends in a bare LF: a lenient
// parser skips the two bytes after the data, nginx reads the LF as the end of
// the chunk and then frames "GET /v1" as the next request.
TEST_F(ProxyTest, RequestSmuggledAfterChunkDataNeverReachesTheServer) {
  auto before = counters();
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(),
                      "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\nX0\r\n\r\nGET /v1 HTTP/1.1\r\nHost: a\r\n\r\n"));
  // The POST's head was forwarded; at the broken chunk the upstream is reset
  // and the client gets a 400 in the POST's place.
  EXPECT_EQ(r.rest(), kBadRequest);
  fd.reset();  // else the proxy lingers for our EOF
  ASSERT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 0; }, 3s));
  auto after = counters();
  EXPECT_EQ(after.received - before.received, 1u);
  EXPECT_EQ(after.forwarded - before.forwarded, 1u);
  EXPECT_EQ(after.parse_errors - before.parse_errors, 1u);
  EXPECT_FALSE(anyLineContains(server_.startLines(), "/v1"));
}

// Heads RFC 9112 says to reject: 400 + close, one parse error, nothing else
// counted, nothing forwarded.
TEST_F(ProxyTest, RejectedHeadsCountOnlyAParseErrorAndForwardNothing) {
  const std::string vectors[] = {
      "GET /echo/1 HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
      "GET /echo/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "GET /echo/1 HTTP/1.1\r\nHost : a\r\n\r\n",
      "POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
      "GET /echo/1 HTTP/1.1\r\nHost: a\r\n\rGET /v1 HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /echo/..;/v1 HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /echo/%2F..%2F..%2Fv1 HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /echo/1#x HTTP/1.1\r\nHost: a\r\n\r\n",
  };
  for (const auto& v : vectors) {
    auto before = counters();
    int served = server_.requests();
    UniqueFd fd = connectTo(port_);
    Reader r(fd.get());
    ASSERT_TRUE(sendAll(fd.get(), v));
    EXPECT_EQ(r.rest(), kBadRequest) << v;
    auto after = counters();
    EXPECT_EQ(after.parse_errors - before.parse_errors, 1u) << v;
    EXPECT_EQ(after.received - before.received, 0u) << v;
    EXPECT_EQ(after.forwarded - before.forwarded, 0u) << v;
    EXPECT_EQ(after.denied - before.denied, 0u) << v;
    EXPECT_EQ(server_.requests(), served) << v;
  }
}

TEST_F(ProxyTest, RulesMatchTheNormalisedPathAndTheServerGetsIt) {
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  // "/(echo|...).*" allows "/echo/..": only the normalised path tells that
  // these name /v1, which the rules deny.
  for (const char* t : {"/echo/../v1", "/echo/%2e%2e/v1", "/echo/.%2E/v1", "/echo\\..\\v1", "/echo/./../v1"}) {
    ASSERT_TRUE(sendAll(fd.get(), fmt::format("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", t)));
    Message m = readMessage(r, true);
    ASSERT_TRUE(m.ok) << t;
    EXPECT_EQ(m.status, 403) << t;
  }
  ASSERT_TRUE(sendAll(fd.get(), "GET //echo//a/./b/../c%7e?q=/../x HTTP/1.1\r\nHost:   a  \r\nX-T:\t1\r\n\r\n"));
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, "ok /echo/a/c~?q=/../x");
  auto lines = server_.startLines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "GET /echo/a/c~?q=/../x HTTP/1.1");
}

TEST_F(ProxyTest, DeniedHeadGets403WithoutABodyAndThePipelineStaysFramed) {
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "HEAD /v1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo/2 HTTP/1.1\r\nHost: a\r\n\r\n"));
  const std::string head403 = "HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n\r\n";
  std::string raw;
  ASSERT_TRUE(r.exact(head403.size(), &raw));
  EXPECT_EQ(raw, head403);
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, "ok /echo/2");
}

// Envoy, as Cilium uses it, matches several fields of one name as their
// comma-joined value; a server reading the first field sees "no".
TEST_F(ProxyTest, RepeatedHeaderFieldsAreMatchedAsTheirJoinedValue) {
  apply(fmt::format(R"({{"revision":2,"listeners":[{{"port":0,"direction":"ingress"}}],
    "endpoints":[{{"ip":"127.0.0.1","ingress":[{{"port":{},"rules":[
      {{"method":"GET","path":"/echo/.*","headers":["X-Empire: yes"],"policy":"p"}}]}}]}}]}})",
                    server_.port()));
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  struct Case {
    const char* fields;
    int status;
  };
  for (const Case& c : {Case{"X-Empire: yes\r\n", 200}, Case{"X-Empire: no\r\nX-Empire: yes\r\n", 403},
                        Case{"x-empire: yes\r\nX-EMPIRE: yes\r\n", 403}, Case{"X-Empire: yes,no\r\n", 403},
                        Case{"", 403}}) {
    ASSERT_TRUE(sendAll(fd.get(), fmt::format("GET /echo/h HTTP/1.1\r\nHost: a\r\n{}\r\n", c.fields)));
    Message m = readMessage(r, true);
    ASSERT_TRUE(m.ok) << c.fields;
    EXPECT_EQ(m.status, c.status) << c.fields;
  }
}

// headerMatches mismatch actions (config.h): the server gets the edited head.
TEST_F(ProxyTest, HeaderMatchActionsEditWhatTheServerGets) {
  apply(fmt::format(R"({{"revision":2,"listeners":[{{"port":0,"direction":"ingress"}}],
    "endpoints":[{{"ip":"127.0.0.1","ingress":[{{"port":{},"rules":[
      {{"path":"/fields","policy":"p","header_matches":[
        {{"name":"X-Token","value":"t0k","mismatch":"REPLACE"}},
        {{"name":"X-Debug","value":"off","mismatch":"DELETE"}},
        {{"name":"X-Via","value":"membrane","mismatch":"ADD"}},
        {{"name":"X-Trace","mismatch":"LOG"}}]}}]}}]}}]}})",
                    server_.port()));
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  struct Case {
    const char* fields;
    const char* server_sees;
  };
  for (const Case& c :
       {Case{"X-Token: t0k\r\nX-Via: membrane\r\nX-Trace: 1\r\n", "Host: a\nX-Token: t0k\nX-Via: membrane\nX-Trace: 1\n"},
        Case{"X-Token: forged\r\nx-token: t0k\r\nX-Debug: on\r\nX-Keep: 1\r\n",
             "Host: a\nX-Keep: 1\nX-Token: t0k\nX-Via: membrane\n"},
        Case{"X-Debug: off\r\nX-Via: other\r\n", "Host: a\nX-Debug: off\nX-Via: other\nX-Token: t0k\nX-Via: membrane\n"}}) {
    ASSERT_TRUE(sendAll(fd.get(), fmt::format("GET /fields HTTP/1.1\r\nHost: a\r\n{}\r\n", c.fields)));
    Message m = readMessage(r, true);
    ASSERT_TRUE(m.ok) << c.fields;
    EXPECT_EQ(m.status, 200) << c.fields;
    EXPECT_EQ(m.body, c.server_sees) << c.fields;
  }
  EXPECT_EQ(server_.requests(), 3);
}

TEST_F(ProxyTest, HeaderLimitsGive431) {
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  std::string many = "GET /echo HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 101; ++i) many += fmt::format("X-H{}: v\r\n", i);
  ASSERT_TRUE(sendAll(fd.get(), many + "\r\n"));
  Message m = readMessage(r, true);
  EXPECT_EQ(m.status, 431);
  EXPECT_TRUE(r.eof());

  UniqueFd fd2 = connectTo(port_);
  Reader r2(fd2.get());
  ASSERT_TRUE(sendAll(fd2.get(), "GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n"));
  m = readMessage(r2, true);
  EXPECT_EQ(m.status, 431);
}

TEST_F(ProxyTest, ConfigSwapChangesVerdictOfNextRequestOnSameConnection) {
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo/x HTTP/1.1\r\nHost: a\r\n\r\n"));
  Message m = readMessage(r, true);
  EXPECT_EQ(m.status, 200);
  apply(starWarsConfig(server_.port(), 2, /*allow_test_paths=*/false));
  EXPECT_EQ(proxy_->stats().config_revision.load(), 2u);
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo/x HTTP/1.1\r\nHost: a\r\n\r\n"));
  m = readMessage(r, true);
  EXPECT_EQ(m.status, 403);
  apply(starWarsConfig(server_.port(), 3, true));
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo/x HTTP/1.1\r\nHost: a\r\n\r\n"));
  m = readMessage(r, true);
  EXPECT_EQ(m.status, 200);
}

TEST_F(ProxyTest, UnknownIdentityIsDenied) {
  apply(R"({"revision":5,"listeners":[{"port":0,"direction":"ingress"}],
    "endpoints":[{"ip":"127.0.0.1","ingress":[{"port":)" + std::to_string(server_.port()) + R"(,"rules":[
      {"method":"POST","path":"/v1/request-landing","allowed_identities":[256]}]}]}]})");
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "POST /v1/request-landing HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_EQ(readMessage(r, true).status, 403);  // 127.0.0.1 is now "world" (2)
}

TEST_F(ProxyTest, AccessLogHasOneLinePerRequestAndResponse) {
  auto sub = proxy_->accessLog().subscribe();
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  // The URL is built from the Host header like Cilium's; without one (an
  // HTTP/1.0 request) the original destination IP:port stands in.
  ASSERT_TRUE(sendAll(fd.get(),
                      "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar.default.svc.cluster.local\r\n"
                      "Content-Length: 0\r\n\r\nGET /v1 HTTP/1.0\r\n\r\n"));
  EXPECT_EQ(readMessage(r, true).status, 200);
  EXPECT_EQ(readMessage(r, true).status, 403);
  std::vector<nlohmann::json> lines;
  ASSERT_TRUE(waitFor([&] {
    std::vector<std::string> got;
    sub->next(got, 10ms);
    for (auto& l : got) lines.push_back(nlohmann::json::parse(l));
    return lines.size() >= 4;
  }));
  proxy_->accessLog().unsubscribe(sub);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["l7_type"], "request");
  EXPECT_EQ(lines[0]["verdict"], "Forwarded");
  EXPECT_EQ(lines[0]["method"], "POST");
  EXPECT_EQ(lines[0]["url"], "http://deathstar.default.svc.cluster.local/v1/request-landing");
  EXPECT_EQ(lines[1]["url"], "http://127.0.0.1:" + std::to_string(server_.port()) + "/v1");
  EXPECT_EQ(lines[0]["policy"], "default/rule1");
  EXPECT_EQ(lines[0]["direction"], "ingress");
  EXPECT_EQ(lines[0]["src"]["identity"], 256);
  EXPECT_EQ(lines[0]["src"]["ip"], "127.0.0.1");
  EXPECT_EQ(lines[0]["dst"]["port"], server_.port());
  EXPECT_EQ(lines[1]["l7_type"], "request");  // requests are logged at their verdict
  EXPECT_EQ(lines[1]["verdict"], "Denied");
  EXPECT_EQ(lines[2]["l7_type"], "response");
  EXPECT_EQ(lines[2]["status"], 200);
  EXPECT_TRUE(lines[2].contains("latency_us"));
  EXPECT_EQ(lines[3]["l7_type"], "response");
  EXPECT_EQ(lines[3]["verdict"], "Denied");
  EXPECT_EQ(lines[3]["status"], 403);
}

TEST_F(ProxyTest, SlowlorisGets408AfterHeaderTimeout) {
  proxy_.reset();
  ProxyOptions o;
  o.header_timeout = 300ms;
  startProxy(server_.addr(), o);
  uint64_t before = proxy_->stats().timeouts_header.load();
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo HTTP/1.1\r\nHo"));
  std::this_thread::sleep_for(100ms);
  sendAll(fd.get(), "st");  // trickling bytes do not extend the deadline
  Message m = readMessage(r, true);
  EXPECT_EQ(m.status, 408);
  EXPECT_TRUE(r.eof());
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3s);
  EXPECT_EQ(proxy_->stats().timeouts_header.load() - before, 1u);
  fd.reset();  // the client closes on EOF; the proxy, lingering, sees it at once
  EXPECT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 0; }, 1s));
}

TEST_F(ProxyTest, IdleTimeoutClosesQuietConnections) {
  proxy_.reset();
  ProxyOptions o;
  o.idle_timeout = 200ms;
  startProxy(server_.addr(), o);
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  EXPECT_TRUE(r.eof());  // closed by the proxy, nothing sent
  EXPECT_EQ(proxy_->stats().timeouts_idle.load(), 1u);
}

TEST_F(ProxyTest, ThousandIdleConnectionsHeldThenClosed) {
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 1000; ++i) {
    UniqueFd fd = connectTo(port_);
    ASSERT_TRUE(fd) << i;
    fds.push_back(std::move(fd));
  }
  ASSERT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 1000; }))
      << proxy_->stats().connections_active.load();
  EXPECT_EQ(proxy_->buffersInUse(), 0u);  // idle connections hold no buffers
  // The proxy still serves.
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "POST /v1/request-landing HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_EQ(readMessage(r, true).status, 200);
  fds.clear();
  fd.reset();
  EXPECT_TRUE(waitFor([&] { return proxy_->stats().connections_active.load() == 0; }))
      << proxy_->stats().connections_active.load();
}

TEST(ProxyUpstreamDown, Gets503AndErrorLabel) {
  // A port with nothing listening: bind, learn the port, close.
  sockaddr_in dead{};
  {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM, 0));
    dead.sin_family = AF_INET;
    dead.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(s.get(), reinterpret_cast<sockaddr*>(&dead), sizeof(dead));
    socklen_t len = sizeof(dead);
    getsockname(s.get(), reinterpret_cast<sockaddr*>(&dead), &len);
  }
  ProxyOptions o;
  o.listen_address = "127.0.0.1";
  o.transparent_listeners = o.transparent_upstream = false;
  o.original_dst_override = dead;
  auto p = Proxy::create(o);
  ASSERT_TRUE(p.ok());
  auto cfg = ProxyConfig::parse(starWarsConfig(ntohs(dead.sin_port)));
  ASSERT_TRUE(cfg.ok());
  ASSERT_TRUE((*p)->applyConfig(std::move(cfg).value()).ok());
  ASSERT_TRUE((*p)->start().ok());
  UniqueFd fd = connectTo((*p)->boundPort(0, Direction::Ingress));
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "POST /v1/request-landing HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"));
  Message m = readMessage(r, true);
  EXPECT_EQ(m.status, 503);
  EXPECT_FALSE(m.body.empty());
  // The connection stays usable: a denied request still gets its 403.
  ASSERT_TRUE(sendAll(fd.get(), "GET /v1 HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_EQ(readMessage(r, true).status, 403);
  auto j = (*p)->stats().toJson();
  uint64_t errors = 0;
  for (const auto& s : j["upstream_reply_seconds"])
    if (s["error"] == "connect_failed" && s["scope"] == "totalTime") errors = s["count"].get<uint64_t>();
  EXPECT_EQ(errors, 1u);
  EXPECT_EQ((*p)->stats().upstream_connect_errors.load(), 1u);
}

// An upstream that answers the first request of one connection with a
// response whose body ends when the server closes (no Content-Length, not
// chunked: RFC 9112 6.3 rule 8), then closes.
class CloseDelimitedUpstream {
 public:
  static constexpr std::string_view kResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close";
  CloseDelimitedUpstream() {
    listen_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    addr_.sin_family = AF_INET;
    addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_));
    ::listen(listen_.get(), 16);
    socklen_t len = sizeof(addr_);
    getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&addr_), &len);
    thread_ = std::thread([this] {
      UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!fd) return;
      test::setTimeouts(fd.get(), 5000);
      Reader r(fd.get());
      std::string head;
      while (r.buffered().find("\r\n\r\n") == std::string::npos && r.fill()) {
      }
      sendAll(fd.get(), kResponse);
    });
  }
  ~CloseDelimitedUpstream() {
    ::shutdown(listen_.get(), SHUT_RDWR);
    thread_.join();
  }
  sockaddr_in addr() const { return addr_; }

 private:
  UniqueFd listen_;
  sockaddr_in addr_{};
  std::thread thread_;
};

// Reads until EOF (true) or until nothing arrived for 'ms' (false).
bool readUntilEof(int fd, std::string* out, int ms) {
  test::setTimeouts(fd, ms);
  char b[4096];
  for (;;) {
    ssize_t n = ::recv(fd, b, sizeof(b), 0);
    if (n == 0) return true;
    if (n < 0) return false;
    out->append(b, static_cast<size_t>(n));
  }
}

// An upstream that answers the first request at once and closes (FIN in the
// same segment as the answer), then records what a second connection gets.
class EarlyAnswerUpstream {
 public:
  EarlyAnswerUpstream() {
    listen_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    addr_.sin_family = AF_INET;
    addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr_), sizeof(addr_));
    ::listen(listen_.get(), 16);
    socklen_t len = sizeof(addr_);
    getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&addr_), &len);
    thread_ = std::thread([this] {
      for (int i = 0; i < 2; ++i) {
        pollfd p{listen_.get(), POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) return;
        UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!fd) return;
        test::setTimeouts(fd.get(), 2000);
        Reader r(fd.get());
        while (r.buffered().find("\r\n\r\n") == std::string::npos && r.fill()) {
        }
        if (i == 1) {
          std::lock_guard lk(mu_);
          second_ = r.buffered();
        }
        int one = 1;
        setsockopt(fd.get(), IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
        sendAll(fd.get(), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        ::shutdown(fd.get(), SHUT_WR);  // flushes the corked answer with the FIN
        r.rest();
      }
    });
  }
  ~EarlyAnswerUpstream() {
    ::shutdown(listen_.get(), SHUT_RDWR);
    thread_.join();
  }
  sockaddr_in addr() const { return addr_; }
  std::string second() {
    std::lock_guard lk(mu_);
    return second_;
  }

 private:
  UniqueFd listen_;
  sockaddr_in addr_{};
  std::thread thread_;
  std::mutex mu_;
  std::string second_;
};

// The server answers a request before its body and closes: the rest of that
// body has nowhere to go. It must be dropped, not queued for the next
// upstream connection, where the server would read it as requests of its own
// (here a denied "GET /v1" hidden in the body).
TEST_F(ProxyTest, BodyAfterAnEarlyAnswerNeverReachesTheNextUpstreamConnection) {
  EarlyAnswerUpstream up;
  proxy_.reset();
  startProxy(up.addr());
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  const std::string hidden = "GET /v1 HTTP/1.1\r\nHost: a\r\n\r\n";
  ASSERT_TRUE(sendAll(fd.get(), fmt::format("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                                            hidden.size())));
  Message m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.body, "ok");
  ASSERT_TRUE(sendAll(fd.get(), hidden + "GET /echo/x HTTP/1.1\r\nHost: a\r\n\r\n"));
  m = readMessage(r, true);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(up.second(), "GET /echo/x HTTP/1.1\r\nHost: a\r\n\r\n");
}

TEST_F(ProxyTest, CloseDelimitedResponseClosesTheClientConnection) {
  // Only the end of the connection tells the client where such a body ends:
  // the proxy must close the client connection after it.
  CloseDelimitedUpstream up;
  proxy_.reset();
  startProxy(up.addr());
  UniqueFd fd = connectTo(port_);
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"));
  std::string got;
  EXPECT_TRUE(readUntilEof(fd.get(), &got, 3000)) << "no EOF after the close-delimited response";
  EXPECT_EQ(got, CloseDelimitedUpstream::kResponse);
}

TEST_F(ProxyTest, CloseDelimitedResponseEndsAPipeline) {
  // A request pipelined behind a close-delimited response cannot be answered
  // on this connection: nothing may follow that body, not even a 503 or a 403.
  CloseDelimitedUpstream up;
  proxy_.reset();
  startProxy(up.addr());
  auto sub = proxy_->accessLog().subscribe();
  UniqueFd fd = connectTo(port_);
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo HTTP/1.1\r\nHost: a\r\n\r\nGET /echo/2 HTTP/1.1\r\nHost: a\r\n\r\n"
                                "GET /denied HTTP/1.1\r\nHost: a\r\n\r\n"));
  std::string got;
  EXPECT_TRUE(readUntilEof(fd.get(), &got, 3000)) << "no EOF after the close-delimited response";
  EXPECT_EQ(got, CloseDelimitedUpstream::kResponse);
  EXPECT_EQ(proxy_->stats().received.load(), 3u);
  // Every request still gets its response line in the access log.
  std::vector<nlohmann::json> responses;
  ASSERT_TRUE(waitFor([&] {
    std::vector<std::string> lines;
    sub->next(lines, 10ms);
    for (auto& l : lines) {
      auto j = nlohmann::json::parse(l);
      if (j["l7_type"] == "response") responses.push_back(j);
    }
    return responses.size() >= 3;
  }));
  proxy_->accessLog().unsubscribe(sub);
  ASSERT_EQ(responses.size(), 3u);
  EXPECT_EQ(responses[0]["status"], 200);
  EXPECT_FALSE(responses[0].contains("error"));
  EXPECT_EQ(responses[1]["error"], "upstream_reset");
  EXPECT_EQ(responses[2]["verdict"], "Denied");
}

TEST_F(ProxyTest, ControlSocketConfigStatsAndAccessLog) {
  auto dir = std::filesystem::temp_directory_path() / fmt::format("membrane-proxy-test-{}", getpid());
  std::filesystem::create_directories(dir);
  std::string sock = (dir / "proxy.sock").string();
  ControlServer control(*proxy_, sock);
  ASSERT_TRUE(control.start().ok());
  api::HttpClient client(sock, 5s);
  auto bad = client.request("PUT", "/v1/config", R"({"revision":9,"endpoints":[{"ip":"127.0.0.1","ingress":[{"port":80,"rules":[{"path":"("}]}]}]})");
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("endpoints[0].ingress[0].rules[0].path"), std::string::npos) << bad->body;
  auto ok = client.request("PUT", "/v1/config", starWarsConfig(server_.port(), 7));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(proxy_->config()->revision(), 7u);

  std::vector<std::string> lines;
  std::thread streamer([&] {
    api::HttpClient sc(sock, 5s);
    auto st = sc.stream("/v1/accesslog", [&](std::string_view l) {
      lines.emplace_back(l);
      return lines.size() < 3;
    });
    EXPECT_TRUE(st.ok());
  });
  // The stream subscribes asynchronously: wait until it is active.
  UniqueFd fd = connectTo(port_);
  Reader r(fd.get());
  ASSERT_TRUE(waitFor([&] { return proxy_->accessLog().active(); }));
  ASSERT_TRUE(sendAll(fd.get(), "GET /v1 HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_EQ(readMessage(r, true).status, 403);
  streamer.join();
  ASSERT_EQ(lines.size(), 3u);
  // First the stream says it is live (the agent's relay waits for it), then request and response.
  EXPECT_EQ(lines[0], R"({"type":"subscribed"})");
  EXPECT_NE(lines[1].find("\"verdict\":\"Denied\""), std::string::npos) << lines[1];

  auto stats = client.request("GET", "/v1/stats");
  ASSERT_TRUE(stats.ok());
  auto j = nlohmann::json::parse(stats->body);
  EXPECT_EQ(j["denied"], proxy_->stats().denied.load());
  EXPECT_EQ(j["redirects"]["http"], 1);
  EXPECT_EQ(j["config"]["revision"], 7);
  control.stop();
  std::filesystem::remove_all(dir);
}

TEST_F(ProxyTest, EgressDirectionUsesClientAsPodAndDestinationIdentity) {
  apply(fmt::format(R"({{"revision":11,"listeners":[{{"port":0,"direction":"egress"}}],
    "endpoints":[{{"ip":"127.0.0.1","egress":[{{"port":{},"rules":[
      {{"method":"GET","path":"/echo/out","policy":"default/egress","allowed_identities":[300]}}]}}]}}],
    "identities":{{"127.0.0.1":300}}}})",
                    server_.port()));
  uint16_t eport = proxy_->boundPort(0, Direction::Egress);
  ASSERT_NE(eport, 0);
  EXPECT_EQ(proxy_->boundPort(0, Direction::Ingress), 0);  // the ingress listener is gone
  UniqueFd fd = connectTo(eport);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo/out HTTP/1.1\r\nHost: a\r\n\r\nGET /echo/other HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_EQ(readMessage(r, true).status, 200);
  EXPECT_EQ(readMessage(r, true).status, 403);
}

// Egress L7 to a destination with its own ingress L7 rules: the egress proxy
// applies both (the datapath cannot chain two proxies); both must allow.
TEST_F(ProxyTest, EgressAlsoAppliesTheDestinationsIngressRules) {
  apply(fmt::format(R"({{"revision":12,"listeners":[{{"port":0,"direction":"egress"}}],
    "endpoints":[{{"ip":"127.0.0.1",
      "egress":[{{"port":{0},"rules":[{{"method":"GET","path":"/echo/.*"}}]}}],
      "ingress":[{{"port":{0},"rules":[{{"method":"GET","path":"/echo/in"}}]}}]}}],
    "identities":{{"127.0.0.1":300}}}})",
                    server_.port()));
  uint16_t eport = proxy_->boundPort(0, Direction::Egress);
  ASSERT_NE(eport, 0);
  uint64_t denied = proxy_->stats().denied.load(), forwarded = proxy_->stats().forwarded.load();
  UniqueFd fd = connectTo(eport);
  Reader r(fd.get());
  ASSERT_TRUE(sendAll(fd.get(), "GET /echo/in HTTP/1.1\r\nHost: a\r\n\r\nGET /echo/out HTTP/1.1\r\nHost: a\r\n\r\nPUT /echo/in HTTP/1.1\r\nHost: a\r\n"
                                "content-length: 0\r\n\r\n"));
  EXPECT_EQ(readMessage(r, true).status, 200);  // both allow
  EXPECT_EQ(readMessage(r, true).status, 403);  // egress allows, ingress denies
  EXPECT_EQ(readMessage(r, true).status, 403);  // egress denies
  EXPECT_EQ(proxy_->stats().denied.load(), denied + 2);
  EXPECT_EQ(proxy_->stats().forwarded.load(), forwarded + 1);
  EXPECT_EQ(upstreamMark(Direction::Ingress, 300), 0x012C0A00u);
  // CIDR identities keep their scope bit (mark bit 12): the datapath reads them back whole.
  EXPECT_EQ(mb_mark_identity(upstreamMark(Direction::Ingress, 0x01000001)), 0x01000001u);
  EXPECT_EQ(upstreamMark(Direction::Egress, 70000) & MB_MARK_MAGIC_MASK, uint32_t{MB_MARK_MAGIC_PROXY_EGRESS});
}

}  // namespace
}  // namespace membrane::proxy
