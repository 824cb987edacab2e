#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
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

#include <fmt/format.h>
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
    server_->routeStream("GET", "/v1/events", [this](const Request& r, std::shared_ptr<StreamWriter> w) {
      if (r.hasQuery("first")) w->push(r.queryValue("first"));
      w->onClose([this] {
        std::lock_guard lk(mu_);
        ++async_closed_;
        cv_.notify_all();
      });
      std::lock_guard lk(mu_);
      streams_.push_back(std::move(w));
      cv_.notify_all();
    });
    server_->route("GET", "/v1/wait", [this](const Request& r, std::shared_ptr<PendingResponse> p) {
      if (r.hasQuery("now")) {
        p->complete(Response::json(200, {{"now", true}}));
        return;
      }
      if (r.hasQuery("expire_ms"))
        p->expireAfter(std::chrono::milliseconds(std::stoi(r.queryValue("expire_ms"))),
                       [] { return Response::error(408, "expired"); });
      std::lock_guard lk(mu_);
      pending_.push_back(std::move(p));
      cv_.notify_all();
    });
    ASSERT_TRUE(server_->start().ok());
  }
  void TearDown() override { server_->stop(); }
  // Waits until 'n' async streams / deferred requests were registered.
  bool waitStreams(size_t n) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, 5s, [&] { return streams_.size() >= n; });
  }
  bool waitPending(size_t n) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, 5s, [&] { return pending_.size() >= n; });
  }
  virtual ServerOptions options() {
    ServerOptions o;
    o.read_timeout = 2s;
    o.stream_buffer_bytes = 64u << 10;
    return o;
  }

  TempDir dir_;
  std::string sock_;
  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stream_started_ = false;
  bool stream_saw_disconnect_ = false;
  std::vector<std::shared_ptr<StreamWriter>> streams_;   // guarded by mu_
  std::vector<std::shared_ptr<PendingResponse>> pending_;  // guarded by mu_
  int async_closed_ = 0;                                  // guarded by mu_
};

// Decodes a chunked body ("<hex>\r\n<data>\r\n"... "0\r\n\r\n") into lines
// without their '\n'; *ended tells whether the last chunk was seen.
std::vector<std::string> chunkLines(std::string_view body, bool* ended) {
  std::vector<std::string> lines;
  *ended = false;
  while (!body.empty()) {
    size_t eol = body.find("\r\n");
    if (eol == std::string_view::npos) break;
    size_t len = std::stoul(std::string(body.substr(0, eol)), nullptr, 16);
    if (len == 0) {
      *ended = true;
      break;
    }
    if (body.size() < eol + 2 + len + 2) break;
    std::string_view data = body.substr(eol + 2, len);
    if (!data.empty() && data.back() == '\n') data.remove_suffix(1);
    lines.emplace_back(data);
    body.remove_prefix(eol + 2 + len + 2);
  }
  return lines;
}

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

TEST_F(HttpTest, ManyPipelinedRequestsAnsweredInOrder) {
  auto fd = rawConnect(sock_);
  std::string reqs, want;
  for (int i = 0; i < 50; ++i) {
    reqs += fmt::format("GET /v1/endpoint/{} HTTP/1.1\r\nHost: x\r\n{}\r\n", i, i == 49 ? "Connection: close\r\n" : "");
    std::string body = fmt::format(R"({{"id":"{}"}})", i);
    want += fmt::format("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{}",
                        body.size(), i == 49 ? "Connection: close\r\n" : "", body);
  }
  // One write: the server sees all 50 requests in its buffer at once.
  rawSend(fd.get(), reqs);
  EXPECT_EQ(rawReadUntil(fd.get(), ""), want);
  EXPECT_EQ(server_->acceptedConnections(), 1u);
}

TEST_F(HttpTest, HalfClosedClientStillGetsItsAnswer) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "GET /v1/endpoint/5 HTTP/1.1\r\nHost: x\r\n\r\n");
  ::shutdown(fd.get(), SHUT_WR);
  EXPECT_EQ(rawReadUntil(fd.get(), ""),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"id\":\"5\"}");
}

TEST_F(HttpTest, AsyncStreamDeliversPushedLinesAndEndsOnClose) {
  std::vector<std::string> lines;
  std::thread client([&] {
    HttpClient c(sock_);
    (void)c.stream("/v1/events?first=hello", [&](std::string_view l) {
      lines.emplace_back(l);
      return true;
    });
  });
  ASSERT_TRUE(waitStreams(1));
  std::shared_ptr<StreamWriter> w;
  {
    std::lock_guard lk(mu_);
    w = streams_[0];
  }
  // Pushed from two threads other than the handler's.
  std::thread a([&] { EXPECT_EQ(w->push("a"), StreamWriter::Push::Queued); });
  a.join();
  std::thread b([&] { EXPECT_EQ(w->push("b\n"), StreamWriter::Push::Queued); });
  b.join();
  w->close();
  client.join();
  EXPECT_EQ(lines, (std::vector<std::string>{"hello", "a", "b"}));
  EXPECT_EQ(w->push("late"), StreamWriter::Push::Closed);
  std::unique_lock lk(mu_);
  EXPECT_TRUE(cv_.wait_for(lk, 5s, [&] { return async_closed_ == 1; }));
  lk.unlock();
  EXPECT_TRUE(waitFor([&] { return server_->activeConnections() == 0; }));
}

TEST_F(HttpTest, AsyncStreamNoticesClosedClientPromptly) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(waitStreams(1));
  fd.reset();  // the client leaves without a word; nothing is being written to it
  auto t0 = std::chrono::steady_clock::now();
  std::unique_lock lk(mu_);
  ASSERT_TRUE(cv_.wait_for(lk, 5s, [&] { return async_closed_ == 1; }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  EXPECT_FALSE(streams_[0]->alive());
  EXPECT_EQ(streams_[0]->push("x"), StreamWriter::Push::Closed);
}

TEST_F(HttpTest, SlowReaderLosesExactlyTheOverflowAndIsToldHowMany) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(waitStreams(1));
  std::shared_ptr<StreamWriter> w;
  {
    std::lock_guard lk(mu_);
    w = streams_[0];
  }
  // The client reads nothing while 4000 lines of ~200 bytes (800 KB) are pushed:
  // more than its socket and its 64 KiB stream buffer hold. What was queued
  // and what was dropped is recorded line by line.
  const std::string pad(190, 'x');
  std::vector<std::string> expected;  // the lines the client must see, in order
  uint64_t run = 0, dropped = 0, queued = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 4000; ++i) {
    std::string line = fmt::format("{:04} {}", i, pad);
    auto r = w->push(line);
    ASSERT_NE(r, StreamWriter::Push::Closed);
    if (r == StreamWriter::Push::Dropped) {
      ++run;
      ++dropped;
      continue;
    }
    if (run) expected.push_back(fmt::format(R"({{"type":"lost","lost":{}}})", run));
    run = 0;
    expected.push_back(line);
    ++queued;
  }
  // The producer never waited for the client.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  if (run) expected.push_back(fmt::format(R"({{"type":"lost","lost":{}}})", run));
  EXPECT_EQ(w->lost(), dropped);
  EXPECT_EQ(queued + dropped, 4000u);
  ASSERT_GT(dropped, 0u) << "the test must overflow the buffer";
  w->close();
  std::string out = rawReadUntil(fd.get(), "");
  size_t head = out.find("\r\n\r\n");
  ASSERT_NE(head, std::string::npos);
  EXPECT_EQ(out.substr(0, head + 4),
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
            "Cache-Control: no-cache\r\nConnection: close\r\n\r\n");
  bool ended = false;
  auto lines = chunkLines(std::string_view(out).substr(head + 4), &ended);
  EXPECT_TRUE(ended);
  ASSERT_EQ(lines.size(), expected.size());
  EXPECT_EQ(lines, expected);
}

TEST_F(HttpTest, SlowStreamDoesNotStallOtherClients) {
  auto slow = rawConnect(sock_);
  rawSend(slow.get(), "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(waitStreams(1));
  std::shared_ptr<StreamWriter> w;
  {
    std::lock_guard lk(mu_);
    w = streams_[0];
  }
  for (int i = 0; i < 20000; ++i) (void)w->push(std::string(100, 'y'));
  HttpClient c(sock_);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.request("GET", "/v1/endpoint/3");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, R"({"id":"3"})");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST_F(HttpTest, DeferredAnswerCompletedLaterFromAnotherThread) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "GET /v1/wait HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/wait?now=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(waitPending(1));
  std::shared_ptr<PendingResponse> p;
  {
    std::lock_guard lk(mu_);
    p = pending_[0];
  }
  EXPECT_TRUE(p->pending());
  std::thread t([&] { EXPECT_TRUE(p->complete(Response::json(200, {{"later", 1}}))); });
  t.join();
  EXPECT_FALSE(p->complete(Response::json(200, {{"again", 1}})));
  EXPECT_FALSE(p->pending());
  // The pipelined second request is answered after the first, on the same connection.
  EXPECT_EQ(rawReadUntil(fd.get(), "\r\n\r\n", 2),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"later\":1}"
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"now\":true}");
  EXPECT_EQ(server_->acceptedConnections(), 1u);
}

TEST_F(HttpTest, DeferredAnswerExpires) {
  HttpClient c(sock_);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.request("GET", "/v1/wait?expire_ms=200");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 408);
  EXPECT_EQ(r->body, R"({"code":408,"error":"expired"})");
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 1500ms);
  std::lock_guard lk(mu_);
  ASSERT_EQ(pending_.size(), 1u);
  EXPECT_FALSE(pending_[0]->pending());
}

TEST_F(HttpTest, DeferredAnswerToGoneClientIsDropped) {
  auto fd = rawConnect(sock_);
  rawSend(fd.get(), "GET /v1/wait HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(waitPending(1));
  std::shared_ptr<PendingResponse> p;
  {
    std::lock_guard lk(mu_);
    p = pending_[0];
  }
  fd.reset();
  EXPECT_TRUE(waitFor([&] { return !p->pending(); }));
  EXPECT_FALSE(p->complete(Response::json(200, {})));
  EXPECT_TRUE(waitFor([&] { return server_->activeConnections() == 0; }));
}

// Raises the soft RLIMIT_NOFILE to the hard one (tests open ~2,000 fds).
void raiseFdLimit() {
  rlimit rl{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &rl), 0);
  ASSERT_GE(rl.rlim_cur, 2200u) << "this test needs RLIMIT_NOFILE >= 2200";
}

TEST_F(HttpTest, StopWithThousandIdleConnectionsReturnsPromptly) {
  raiseFdLimit();
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 1000; ++i) clients.push_back(rawConnect(sock_));
  ASSERT_TRUE(waitFor([&] { return server_->activeConnections() == 1000; }));
  auto t0 = std::chrono::steady_clock::now();
  server_->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(server_->activeConnections(), 0u);
  size_t eof = 0;
  for (auto& c : clients) {
    char b;
    if (::recv(c.get(), &b, 1, 0) == 0) ++eof;
  }
  EXPECT_EQ(eof, 1000u);
}

TEST_F(HttpTest, ThousandStreamsAndOrdinaryRequestsStillAnswerFast) {
  raiseFdLimit();
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 1000; ++i) {
    clients.push_back(rawConnect(sock_));
    rawSend(clients.back().get(), "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  ASSERT_TRUE(waitStreams(1000));
  EXPECT_EQ(server_->activeConnections(), 1000u);
  HttpClient c(sock_);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.request("GET", "/v1/endpoint/1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  clients.clear();
  std::unique_lock lk(mu_);
  EXPECT_TRUE(cv_.wait_for(lk, 5s, [&] { return async_closed_ == 1000; }));
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
  const std::string body = R"({"code":503,"error":"too many API connections (limit 2); retry later"})";
  EXPECT_EQ(out, fmt::format("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: "
                             "{}\r\nConnection: close\r\n\r\n{}",
                             body.size(), body));
  // A freed slot is usable again.
  a.reset();
  ASSERT_TRUE(waitFor([&] { return server_->activeConnections() == 1; }));
  HttpClient cl(sock_);
  auto r = cl.request("GET", "/v1/endpoint/4");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
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
