#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "src/api/http_client.h"
#include "src/api/http_server.h"

namespace membrane::api {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/membrane-api-XXXXXX";
    MB_CHECK(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A raw client socket for what HttpClient would never send.
UniqueFd rawConnect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  MB_CHECK(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  return fd;
}

void rawSend(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    s.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads until 'needle' was seen, the peer closes, or 5 s pass.
std::string rawReadUntil(int fd, std::string_view needle, int count = 1) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    int found = 0;
    for (size_t pos = 0; !needle.empty() && (pos = out.find(needle, pos)) != std::string::npos; pos += needle.size())
      ++found;
    if (!needle.empty() && found >= count) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

template <typename F>
bool waitFor(F cond, std::chrono::milliseconds limit = 5s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sock_ = dir_.path() + "/run/membrane.sock";  // parent does not exist yet
    server_ = std::make_unique<HttpServer>(sock_, options());
    server_->route("GET", "/v1/endpoint", [](const Request& r) {
      json q = json::object();
      for (const auto& [k, v] : r.query) q[k].push_back(v);
      return Response::json(200, {{"query", q}, {"ua", r.header("USER-AGENT")}});
    });
    server_->route("PUT", "/v1/endpoint", [](const Request& r) {
      auto j = json::parse(r.body, nullptr, false);
      if (!j.is_object()) return Response::error(400, "body must be a JSON object");
      return Response::json(201, {{"name", j.value("name", "")}, {"bytes", r.body.size()}});
    });
    server_->route("GET", "/v1/endpoint/{id}", [](const Request& r) {
      return Response::json(200, {{"id", r.param("id")}});
    });
    server_->route("DELETE", "/v1/endpoint/{id}", [](const Request& r) {
      return Response::json(200, {{"deleted", std::stoi(r.param("id"))}});
    });
    server_->route("GET", "/v1/throw", [](const Request&) -> Response { throw std::runtime_error("boom"); });
    server_->routeStream("GET", "/v1/monitor", [this](const Request& r, StreamWriter& w) {
      for (const auto& t : r.queryValues("type"))
        if (!w.write(json({{"type", t}}).dump())) break;
      w.write("last");
      {
        std::lock_guard lk(mu_);
        stream_started_ = true;
      }
      cv_.notify_all();
      if (!r.hasQuery("hold")) return;
      // Hold the stream open until the client leaves (or the server stops).
      while (w.alive()) std::this_thread::sleep_for(5ms);
      std::lock_guard lk(mu_);
      stream_saw_disconnect_ = true;
      cv_.notify_all();
    });
    ASSERT_TRUE(server_->start().ok());
  }
  void TearDown() override { server_->stop(); }
  virtual ServerOptions options() {
    ServerOptions o;
    o.read_timeout = 2s;
    return o;
  }

  TempDir dir_;
  std::string sock_;
  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stream_started_ = false;
  bool stream_saw_disconnect_ = false;
};

TEST_F(HttpTest, SocketCreatedWithModeAndParentDir) {
  struct stat st{};
  ASSERT_EQ(::stat(sock_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  ASSERT_EQ(::stat((dir_.path() + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
}

TEST_F(HttpTest, RoundTripGetPutDeleteWithParamsAndQuery) {
  HttpClient c(sock_);
  auto r = c.request("GET", "/v1/endpoint?name=x%20wing&type=drop&type=trace");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->content_type, "application/json");
  EXPECT_EQ(json::parse(r->body),
            json::parse(R"({"query":{"name":["x wing"],"type":["drop","trace"]},"ua":"membrane-cli"})"));

  r = c.request("PUT", "/v1/endpoint", R"({"name":"xwing"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, R"({"bytes":16,"name":"xwing"})");

  r = c.request("GET", "/v1/endpoint/1204");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, R"({"id":"1204"})");

  r = c.request("DELETE", "/v1/endpoint/1204");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, R"({"deleted":1204})");

  r = c.request("PUT", "/v1/endpoint", "not json");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->body, R"({"code":400,"error":"body must be a JSON object"})");
  // All of the above went over one kept-alive connection.
  EXPECT_EQ(server_->acceptedConnections(), 1u);
}

// HttpClient runs on threads whose stack a library sizes: the agent reads the
// proxy's stats from civetweb's scrape workers (100 KiB stacks in Debian's
// build). A request must leave that stack nearly untouched: it once put a
// 64 KiB receive buffer on it, which overflowed under ASan. Measured as the
// high-water mark of a pattern-filled stack the request runs on.
TEST_F(HttpTest, ClientRequestUsesLittleStack) {
  constexpr size_t kStack = 256 * 1024;
  std::vector<unsigned char> stack(kStack, 0xa5);
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstack(&attr, stack.data(), kStack), 0);
  struct Job {
    std::string sock;
    int status = 0;
  } job{sock_};
  pthread_t t;
  ASSERT_EQ(pthread_create(
                &t, &attr,
                [](void* arg) -> void* {
                  auto* j = static_cast<Job*>(arg);
                  HttpClient c(j->sock);
                  auto r = c.request("GET", "/v1/endpoint/7");
                  j->status = r ? r->status : -1;
                  return nullptr;
                },
                &job),
            0);
  ASSERT_EQ(pthread_join(t, nullptr), 0);
  pthread_attr_destroy(&attr);
  EXPECT_EQ(job.status, 200);
  size_t untouched = 0;
  while (untouched < kStack && stack[untouched] == 0xa5) ++untouched;
  const size_t used = kStack - untouched;
  EXPECT_LT(used, 40u * 1024) << "HttpClient::request used " << used << " bytes of stack";
}

TEST_F(HttpTest, KeepAliveTwoPipelinedRequestsOnOneConnection) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(),
          "GET /v1/endpoint/1 HTTP/1.1\r\nHost: x\r\n\r\n"
          "GET /v1/endpoint/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string out = rawReadUntil(fd.get(), "");
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"id\":\"1\"}"
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
            "{\"id\":\"2\"}");
  EXPECT_EQ(server_->acceptedConnections(), 1u);
}

TEST_F(HttpTest, ChunkedRequestBody) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(),
          "PUT /v1/endpoint HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
          "5\r\n{\"nam\r\n9\r\ne\":\"tie\"}\r\n0\r\n\r\n");
  std::string out = rawReadUntil(fd.get(), "");
  EXPECT_NE(out.find("HTTP/1.1 201 Created\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\r\n\r\n{\"bytes\":14,\"name\":\"tie\"}"), std::string::npos) << out;
}

TEST_F(HttpTest, MalformedRequestIs400AndCloses) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "GARBAGE\x01 / HTTP/1.1\r\n\r\n");
  std::string out = rawReadUntil(fd.get(), "");  // returns on close
  EXPECT_EQ(out.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << out;
  EXPECT_NE(out.find("Connection: close\r\n"), std::string::npos);
  auto body = json::parse(out.substr(out.find("\r\n\r\n") + 4));
  EXPECT_EQ(body["code"], 400);
  EXPECT_TRUE(body["error"].get<std::string>().starts_with("malformed HTTP message: HPE_INVALID_METHOD"))
      << body.dump();
}

TEST_F(HttpTest, BodyOver4MiBIs413) {
  HttpClient c(sock_);
  std::string big(5u << 20, 'x');
  auto r = c.request("PUT", "/v1/endpoint", big);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->body, R"({"code":413,"error":"request body of 5242880 bytes exceeds the limit of 4194304 bytes"})");
  // The client reconnects after the server closed.
  r = c.request("GET", "/v1/endpoint/3");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, R"({"id":"3"})");
}

TEST_F(HttpTest, ChunkedBodyOverLimitIs413) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "PUT /v1/endpoint HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  std::string chunk(1u << 20, 'y');
  std::string framed = "100000\r\n" + chunk + "\r\n";
  for (int i = 0; i < 5; ++i) rawSend(fd.get(), framed);
  std::string out = rawReadUntil(fd.get(), "");
  EXPECT_EQ(out.rfind("HTTP/1.1 413 Content Too Large\r\n", 0), 0u) << out.substr(0, 200);
}

TEST_F(HttpTest, HugeHeadersAre431) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "GET /v1/endpoint HTTP/1.1\r\nX-Big: " + std::string(70000, 'h') + "\r\n\r\n");
  std::string out = rawReadUntil(fd.get(), "");
  EXPECT_EQ(out.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u) << out.substr(0, 200);
}

TEST_F(HttpTest, UnknownPath404WrongMethod405HandlerThrows500) {
  HttpClient c(sock_);
  auto r = c.request("GET", "/v1/nothing");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, R"({"code":404,"error":"no such API path: GET /v1/nothing"})");

  r = c.request("POST", "/v1/endpoint/5");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->header("allow"), "DELETE, GET");
  EXPECT_EQ(json::parse(r->body)["code"], 405);

  r = c.request("GET", "/v1/throw");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->body, R"({"code":500,"error":"internal error: boom"})");
}

TEST_F(HttpTest, StreamDeliversLinesThenEnds) {
  HttpClient c(sock_);
  std::vector<std::string> lines;
  auto st = c.stream("/v1/monitor?type=drop&type=trace", [&](std::string_view l) {
    lines.emplace_back(l);
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(lines, (std::vector<std::string>{R"({"type":"drop"})", R"({"type":"trace"})", "last"}));
}

TEST_F(HttpTest, StreamHandlerSeesClientDisconnect) {
  HttpClient c(sock_);
  std::vector<std::string> lines;
  auto st = c.stream("/v1/monitor?type=policy-verdict&hold=1", [&](std::string_view l) {
    lines.emplace_back(l);
    return l != "last";  // close after the last line
  });
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(lines.size(), 2u);
  std::unique_lock lk(mu_);
  EXPECT_TRUE(cv_.wait_for(lk, 5s, [&] { return stream_saw_disconnect_; }));
  lk.unlock();
  EXPECT_TRUE(waitFor([&] { return server_->activeConnections() == 0; }));
}

TEST_F(HttpTest, StopUnblocksHeldStreamAndIdleConnections) {
  auto idle = rawConnect(sock_);
  std::thread t([&] {
    HttpClient c(sock_);
    (void)c.stream("/v1/monitor?hold=1", [](std::string_view) { return true; });
  });
  {
    std::unique_lock lk(mu_);
    ASSERT_TRUE(cv_.wait_for(lk, 5s, [&] { return stream_started_; }));
  }
  ASSERT_TRUE(waitFor([&] { return server_->activeConnections() == 2; }));
  auto t0 = std::chrono::steady_clock::now();
  server_->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  t.join();  // the stream ended because the server closed it
  EXPECT_EQ(server_->activeConnections(), 0u);
  EXPECT_TRUE(stream_saw_disconnect_);
  // The socket file is removed and the idle connection sees EOF.
  EXPECT_FALSE(std::filesystem::exists(sock_));
  char b;
  EXPECT_EQ(::recv(idle.get(), &b, 1, 0), 0);
}

TEST_F(HttpTest, IncompleteRequestTimesOutWith408) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "GET /v1/endpoint HTTP/1.1\r\nHost:");
  std::string out = rawReadUntil(fd.get(), "");
  EXPECT_EQ(out.rfind("HTTP/1.1 408 Request Timeout\r\n", 0), 0u) << out;
}

TEST_F(HttpTest, StalledClientDoesNotBlockOthers) {
  auto stalled = rawConnect(sock_);
  rawSend(stalled.get(), "PUT /v1/endpoint HTTP/1.1\r\nContent-Length: 100\r\n\r\n{");
  HttpClient c(sock_);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.request("GET", "/v1/endpoint/9");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST_F(HttpTest, ExpectContinueGets100ThenTheAnswer) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "PUT /v1/endpoint HTTP/1.1\r\nContent-Length: 14\r\nExpect: 100-continue\r\n\r\n");
  EXPECT_EQ(rawReadUntil(fd.get(), "\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
  rawSend(fd.get(), R"({"name":"tie"})");
  std::string out = rawReadUntil(fd.get(), "}");
  EXPECT_EQ(out.rfind("HTTP/1.1 201 Created\r\n", 0), 0u) << out;
  EXPECT_NE(out.find(R"({"bytes":14,"name":"tie"})"), std::string::npos) << out;
}

TEST_F(HttpTest, GarbageNeverCrashesAndServerKeepsServing) {
  // Deterministic pseudo-random inputs, plus prefixes of a valid request cut
  // at every byte and then closed.
  uint32_t seed = 12345;
  auto rnd = [&] { return seed = seed * 1103515245u + 12345u; };
  for (int i = 0; i < 40; ++i) {
    auto fd = rawConnect(sock_);
    std::string junk(static_cast<size_t>(rnd() % 3000), '\0');
    for (auto& ch : junk) ch = static_cast<char>(rnd() >> 16);
    if (i % 2) junk = "GET /v1/endpoint/" + junk;
    rawSend(fd.get(), junk);
    ::shutdown(fd.get(), SHUT_WR);
    rawReadUntil(fd.get(), "");
  }
  const std::string valid = "PUT /v1/endpoint?x=%zz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n";
  for (size_t cut = 0; cut < valid.size(); ++cut) {
    auto fd = rawConnect(sock_);
    rawSend(fd.get(), valid.substr(0, cut));
    ::shutdown(fd.get(), SHUT_WR);
    std::string out = rawReadUntil(fd.get(), "");
    EXPECT_TRUE(out.empty() || out.starts_with("HTTP/1.1 400 ")) << cut << ": " << out;
  }
  HttpClient c(sock_);
  auto r = c.request("GET", "/v1/endpoint/ok");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, R"({"id":"ok"})");
  EXPECT_TRUE(waitFor([&] { return server_->activeConnections() <= 1; }));
}

TEST_F(HttpTest, SecondServerOnSameSocketRefused) {
  HttpServer other(sock_);
  auto st = other.start();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "another membraned is already serving " + sock_);
}

TEST_F(HttpTest, StaleSocketIsReplaced) {
  server_->stop();
  // Leave a socket file behind with nobody listening, as a crashed agent would.
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, sock_.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  fd.reset();
  HttpServer again(sock_);
  again.route("GET", "/v1/healthz", [](const Request&) { return Response::json(200, {{"status", "ok"}}); });
  ASSERT_TRUE(again.start().ok());
  HttpClient c(sock_);
  auto r = c.request("GET", "/v1/healthz");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, R"({"status":"ok"})");
}

class HttpCapTest : public HttpTest {
  ServerOptions options() override {
    ServerOptions o;
    o.max_connections = 2;
    o.read_timeout = 2s;
    return o;
  }
};

TEST_F(HttpCapTest, ConnectionsBeyondCapGet503) {
  auto a = rawConnect(sock_);
  auto b = rawConnect(sock_);
  ASSERT_TRUE(waitFor([&] { return server_->activeConnections() == 2; }));
  auto c = rawConnect(sock_);
  std::string out = rawReadUntil(c.get(), "");
  EXPECT_EQ(out.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << out;
}

TEST(HttpClientTest, MissingSocketErrorText) {
  TempDir dir;
  std::string path = dir.path() + "/none.sock";
  HttpClient c(path);
  auto r = c.request("GET", "/v1/healthz");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(r.error().message,
            "cannot reach membraned at " + path +
                ": No such file or directory — is the agent running? Start it with 'membraned' (as root) or "
                "'systemctl start membraned', or point --socket / MEMBRANE_SOCKET at it");
  auto st = c.stream("/v1/monitor", [](std::string_view) { return true; });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, r.error().message);
}

TEST(HttpServerTest, StopBeforeStartAndTwiceIsHarmless) {
  TempDir dir;
  HttpServer s(dir.path() + "/a.sock");
  s.stop();
  ASSERT_TRUE(s.start().ok());
  EXPECT_FALSE(s.start().ok());
  s.stop();
  s.stop();
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/a.sock"));
}

size_t openFds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

TEST(HttpServerTest, StopLeaksNoFdsOrThreads) {
  TempDir dir;
  size_t before = openFds();
  {
    HttpServer s(dir.path() + "/a.sock");
    s.route("GET", "/v1/x", [](const Request&) { return Response::json(200, {{"x", 1}}); });
    s.routeStream("GET", "/v1/s", [](const Request&, StreamWriter& w) {
      while (w.alive()) std::this_thread::sleep_for(5ms);
    });
    ASSERT_TRUE(s.start().ok());
    HttpClient c(s.socketPath());
    ASSERT_TRUE(c.request("GET", "/v1/x").ok());
    std::thread streamer([&] {
      HttpClient sc(s.socketPath());
      (void)sc.stream("/v1/s", [](std::string_view) { return true; });
    });
    ASSERT_TRUE(waitFor([&] { return s.activeConnections() == 2; }));
    s.stop();
    streamer.join();
    EXPECT_EQ(s.activeConnections(), 0u);
  }
  EXPECT_EQ(openFds(), before);
}

TEST(HttpServerTest, RegularFileInTheWayIsAnError) {
  TempDir dir;
  std::string path = dir.path() + "/a.sock";
  { FILE* f = std::fopen(path.c_str(), "w"); std::fclose(f); }
  HttpServer s(path);
  auto st = s.start();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, path + " exists and is not a socket; move it away or choose another path");
}

}  // namespace
}  // namespace membrane::api
