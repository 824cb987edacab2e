#include "src/api/http_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "src/api/http_parser.h"

namespace membrane::api {

namespace {

using Clock = std::chrono::steady_clock;

enum class Wait { Ready, Timeout, Stopped, Error };

// Waits until 'fd' has 'events', the deadline passes or the stop eventfd fires.
Wait waitFd(int fd, short events, int stop_fd, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Wait::Timeout;
    pollfd p[2] = {{fd, events, 0}, {stop_fd, POLLIN, 0}};
    int n = ::poll(p, 2, static_cast<int>(std::min<long long>(left, 1000 * 1000)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Wait::Error;
    }
    if (n == 0) continue;  // loop re-checks the deadline
    if (p[1].revents) return Wait::Stopped;
    if (p[0].revents) return Wait::Ready;  // POLLHUP/POLLERR surface in the following recv/send
  }
}

// Writes all of 'data' to the non-blocking socket. false on a gone peer,
// timeout or stop.
bool writeAll(int fd, std::string_view data, int stop_fd, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (waitFd(fd, POLLOUT, stop_fd, deadline) != Wait::Ready) return false;
      continue;
    }
    return false;
  }
  return true;
}

// Header values come from handlers; CR/LF in them would split the response.
std::string headerSafe(std::string_view v) {
  std::string out;
  for (char c : v)
    if (c != '\r' && c != '\n') out.push_back(c);
  return out;
}

std::string serialize(const Response& r, bool keep_alive) {
  int status = (r.status >= 100 && r.status <= 999) ? r.status : 500;
  std::string out = fmt::format("HTTP/1.1 {} {}\r\n", status, reasonPhrase(status));
  if (!r.body.empty() || !r.content_type.empty()) out += fmt::format("Content-Type: {}\r\n", headerSafe(r.content_type));
  out += fmt::format("Content-Length: {}\r\n", r.body.size());
  if (!keep_alive) out += "Connection: close\r\n";
  for (const auto& [k, v] : r.headers) {
    if (CaseInsensitiveLess::equal(k, "content-length") || CaseInsensitiveLess::equal(k, "content-type") ||
        CaseInsensitiveLess::equal(k, "connection") || CaseInsensitiveLess::equal(k, "transfer-encoding"))
      continue;
    out += fmt::format("{}: {}\r\n", headerSafe(k), headerSafe(v));
  }
  out += "\r\n";
  out += r.body;
  return out;
}

Result<UniqueFd> unixSocket() {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::fromErrno(errno, "socket(AF_UNIX)");
  return UniqueFd(fd);
}

Result<sockaddr_un> unixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return Error(ENAMETOOLONG, fmt::format("socket path '{}' must be 1..{} bytes", path, sizeof(addr.sun_path) - 1));
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// mkdir -p of the socket's directory, 0755 for what it creates.
Status makeParentDirs(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return okStatus();
  std::string dir = path.substr(0, slash);
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    std::string part = dir.substr(0, i);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return Error::fromErrno(errno, "create directory " + part);
  }
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0) return Error::fromErrno(errno, "stat " + dir);
  if (!S_ISDIR(st.st_mode)) return Error(ENOTDIR, dir + " is not a directory");
  return okStatus();
}

class ConnectionStream final : public StreamWriter {
 public:
  ConnectionStream(int fd, int stop_fd, const std::atomic<bool>& stopping, std::chrono::milliseconds timeout)
      : fd_(fd), stop_fd_(stop_fd), stopping_(stopping), timeout_(timeout) {}

  bool write(std::string_view line) override {
    if (broken_ || stopping_) return false;
    bool nl = !line.empty() && line.back() == '\n';
    size_t len = line.size() + (nl ? 0 : 1);
    std::string chunk = fmt::format("{:x}\r\n", len);
    chunk.append(line);
    if (!nl) chunk.push_back('\n');
    chunk += "\r\n";
    if (!writeAll(fd_, chunk, stop_fd_, timeout_)) broken_ = true;
    return !broken_;
  }

  bool alive() override {
    if (broken_ || stopping_) return false;
    pollfd p{fd_, POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return true;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) {
      broken_ = true;
    } else if (p.revents & POLLIN) {
      char c;
      ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) broken_ = true;
    }
    return !broken_;
  }

  bool broken() const { return broken_; }

 private:
  int fd_;
  int stop_fd_;
  const std::atomic<bool>& stopping_;
  std::chrono::milliseconds timeout_;
  bool broken_ = false;
};

}  // namespace

struct HttpServer::Connection {
  UniqueFd fd;
  std::thread thread;
  std::atomic<bool> done{false};
};

HttpServer::HttpServer(std::string socket_path, ServerOptions opts) : path_(std::move(socket_path)), opts_(opts) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::route(std::string method, std::string pattern, Handler handler) {
  MB_CHECK(!started_);
  router_.add(std::move(method), std::move(pattern), std::move(handler));
}

void HttpServer::routeStream(std::string method, std::string pattern, StreamHandler handler) {
  MB_CHECK(!started_);
  router_.addStream(std::move(method), std::move(pattern), std::move(handler));
}

Status HttpServer::start() {
  if (started_) return Error::invalid("HttpServer::start called twice");
  MB_ASSIGN(sockaddr_un addr, unixAddress(path_));
  MB_TRY(makeParentDirs(path_));

  struct stat st{};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Error(EEXIST, fmt::format("{} exists and is not a socket; move it away or choose another path", path_));
    MB_ASSIGN(UniqueFd probe, unixSocket());
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0)
      return Error(EADDRINUSE, "another membraned is already serving " + path_);
    int err = errno;
    if (err != ECONNREFUSED) return Error::fromErrno(err, "probe existing socket " + path_);
    // Nothing listens: a leftover from an agent that did not shut down cleanly.
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) return Error::fromErrno(errno, "remove stale socket " + path_);
  } else if (errno != ENOENT) {
    return Error::fromErrno(errno, "stat " + path_);
  }

  MB_ASSIGN(UniqueFd lfd, unixSocket());
  if (::bind(lfd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return Error::fromErrno(errno, "bind " + path_);
  // The socket appears with the umask's mode; tighten it before listen() so no
  // client can connect through a wider mode.
  if (::chmod(path_.c_str(), opts_.socket_mode) != 0) {
    int err = errno;
    ::unlink(path_.c_str());
    return Error::fromErrno(err, "chmod " + path_);
  }
  if (::lstat(path_.c_str(), &st) == 0) {
    sock_dev_ = st.st_dev;
    sock_ino_ = st.st_ino;
  }
  if (::listen(lfd.get(), 128) != 0) {
    int err = errno;
    ::unlink(path_.c_str());
    return Error::fromErrno(err, "listen " + path_);
  }
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    int err = errno;
    ::unlink(path_.c_str());
    return Error::fromErrno(err, "eventfd");
  }
  stop_fd_.reset(efd);
  listen_fd_ = std::move(lfd);
  started_ = true;
  accept_thread_ = std::thread([this] { acceptLoop(); });
  return okStatus();
}

void HttpServer::stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stopping_ = true;
  uint64_t one = 1;
  // The eventfd stays readable from now on: every poll() in the server wakes.
  if (::write(stop_fd_.get(), &one, sizeof(one)) < 0) {
    // Cannot happen for an eventfd far from overflow; the flag alone still ends
    // loops within their poll interval.
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  listen_fd_.reset();
  reapFinished(true);
  struct stat st{};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == sock_dev_ && st.st_ino == sock_ino_) ::unlink(path_.c_str());
}

size_t HttpServer::activeConnections() const {
  std::lock_guard lk(conns_mu_);
  size_t n = 0;
  for (const auto& c : conns_)
    if (!c->done) ++n;
  return n;
}

void HttpServer::reapFinished(bool all) {
  std::list<std::unique_ptr<Connection>> finished;
  {
    std::lock_guard lk(conns_mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (all || (*it)->done) {
        finished.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Join outside the lock: activeConnections() must not wait for a handler.
  for (auto& c : finished)
    if (c->thread.joinable()) c->thread.join();
}

void HttpServer::acceptLoop() {
  while (!stopping_) {
    pollfd p[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    // The timeout only bounds how long finished connections wait to be joined.
    int n = ::poll(p, 2, 1000);
    reapFinished(false);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0 || p[1].revents) continue;
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      // EMFILE and friends: back off instead of spinning on a readable listener.
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) ::poll(nullptr, 0, 100);
      continue;
    }
    UniqueFd cfd(fd);
    ++accepted_;
    if (activeConnections() >= opts_.max_connections) {
      auto r = Response::error(503, fmt::format("too many API connections (limit {}); retry later", opts_.max_connections));
      std::string out = serialize(r, false);
      // Best effort without waiting: the socket buffer of a fresh connection has room.
      (void)!::send(cfd.get(), out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      continue;
    }
    auto conn = std::make_unique<Connection>();
    conn->fd = std::move(cfd);
    Connection* c = conn.get();
    {
      std::lock_guard lk(conns_mu_);
      conns_.push_back(std::move(conn));
    }
    c->thread = std::thread([this, c] {
      serveConnection(*c);
      c->fd.reset();  // the client sees EOF now, not when the thread is reaped
      c->done = true;
    });
  }
}

void HttpServer::serveConnection(Connection& c) {
  const int fd = c.fd.get();
  const int sfd = stop_fd_.get();
  MessageParser parser(MessageParser::Type::Request, {opts_.max_header_bytes, opts_.max_body_bytes});
  std::string pending;  // received, not yet parsed (pipelined requests)
  char buf[16384];
  auto sendError = [&](int status, std::string_view msg) {
    writeAll(fd, serialize(Response::error(status, msg), false), sfd, opts_.write_timeout);
  };

  while (!stopping_) {
    auto deadline = Clock::now() + opts_.read_timeout;
    bool sent_continue = false;
    while (parser.state() == MessageParser::State::Incomplete) {
      if (!pending.empty()) {
        size_t used = parser.feed(pending);
        pending.erase(0, used);
        if (parser.state() != MessageParser::State::Incomplete) break;
      }
      if (parser.expectsContinue() && !sent_continue) {
        sent_continue = true;
        if (!writeAll(fd, "HTTP/1.1 100 Continue\r\n\r\n", sfd, opts_.write_timeout)) return;
      }
      Wait w = waitFd(fd, POLLIN, sfd, deadline);
      if (w == Wait::Timeout) {
        if (parser.started() || !pending.empty())
          sendError(408, fmt::format("request not complete within {} ms", opts_.read_timeout.count()));
        return;
      }
      if (w != Wait::Ready) return;
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        return;
      }
      if (n == 0) {
        if (parser.finish() != MessageParser::State::Complete) return;  // client gone mid-request
        break;
      }
      pending.append(buf, static_cast<size_t>(n));
    }
    if (parser.state() == MessageParser::State::Error) {
      sendError(parser.errorStatus(), parser.errorMessage());
      return;
    }

    Request req;
    req.method = parser.method;
    req.target = parser.url;
    req.headers = std::move(parser.headers);
    req.body = std::move(parser.body);
    std::string_view target = req.target;
    if (auto hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
    size_t q = target.find('?');
    req.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) req.query = parseQuery(target.substr(q + 1));
    bool keep_alive = parser.keepAlive();

    if (req.path.empty() || req.path.front() != '/') {
      sendError(400, "request target must be an absolute path such as /v1/healthz");
      return;
    }

    Router::Match m = router_.match(req.method, req.path);
    if (m.kind == Router::Match::Kind::Found && m.route->stream) {
      req.params = std::move(m.params);
      std::string head =
          "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
          "Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
      if (!writeAll(fd, head, sfd, opts_.write_timeout)) return;
      ConnectionStream out(fd, sfd, stopping_, opts_.write_timeout);
      try {
        m.route->stream(req, out);
      } catch (const std::exception& e) {
        out.write(nlohmann::json({{"type", "error"}, {"error", std::string("stream handler failed: ") + e.what()}})
                      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      } catch (...) {
        out.write(R"({"type":"error","error":"stream handler failed"})");
      }
      if (!out.broken()) writeAll(fd, "0\r\n\r\n", sfd, opts_.write_timeout);
      return;
    }

    Response resp;
    if (m.kind == Router::Match::Kind::NotFound) {
      resp = Response::error(404, fmt::format("no such API path: {} {}", req.method, req.path));
    } else if (m.kind == Router::Match::Kind::MethodNotAllowed) {
      resp = Response::error(405, fmt::format("method {} not allowed on {} (allowed: {})", req.method, req.path, m.allow));
      resp.headers["Allow"] = m.allow;
    } else {
      req.params = std::move(m.params);
      // Handlers are ours, but an exception escaping one must cost a 500, not the agent.
      try {
        resp = m.route->handler(req);
      } catch (const std::exception& e) {
        resp = Response::error(500, std::string("internal error: ") + e.what());
      } catch (...) {
        resp = Response::error(500, "internal error");
      }
    }
    keep_alive = keep_alive && !stopping_;
    if (!writeAll(fd, serialize(resp, keep_alive), sfd, opts_.write_timeout) || !keep_alive) return;
    parser.next();
  }
}

}  // namespace membrane::api
