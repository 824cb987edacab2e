#include "src/api/http_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "src/api/http_parser.h"

namespace membrane::api {

namespace {

using Clock = std::chrono::steady_clock;
constexpr Clock::time_point kNever = Clock::time_point::max();

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

// One line as one chunk: "<hex len>\r\n<line>\n\r\n".
std::string encodeChunk(std::string_view line) {
  bool nl = !line.empty() && line.back() == '\n';
  size_t len = line.size() + (nl ? 0 : 1);
  std::string chunk = fmt::format("{:x}\r\n", len);
  chunk.append(line);
  if (!nl) chunk.push_back('\n');
  chunk += "\r\n";
  return chunk;
}

std::string lostChunk(uint64_t n) { return encodeChunk(fmt::format(R"({{"type":"lost","lost":{}}})", n)); }

constexpr std::string_view kStreamHead =
    "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
    "Cache-Control: no-cache\r\nConnection: close\r\n\r\n";

Response handlerFailed(const char* what) {
  return Response::error(500, what ? std::string("internal error: ") + what : std::string("internal error"));
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

}  // namespace

// What handlers on other threads hand back to the loop. Owned jointly by the
// server and every StreamWriter/PendingResponse, so those stay safe to call
// after the server is gone (they then do nothing).
struct detail::ServerShared {
  struct Completion {
    uint64_t conn;
    std::string bytes;
    bool keep_alive;
  };
  std::atomic<bool> stopping{false};
  UniqueFd wake_fd;  // eventfd in the loop's epoll set
  std::mutex mu;
  bool stopped = false;                 // guarded by mu: nothing is queued any more
  std::vector<Completion> completions;  // guarded by mu
  std::vector<uint64_t> flush;          // guarded by mu: streams with output or a close
  std::vector<uint64_t> timers;         // guarded by mu: deferred answers that set an expiry

  void complete(uint64_t conn, std::string bytes, bool keep_alive) {
    enqueue([&] { completions.push_back({conn, std::move(bytes), keep_alive}); });
  }
  void needsFlush(uint64_t conn) {
    enqueue([&] { flush.push_back(conn); });
  }
  void timerSet(uint64_t conn) {
    enqueue([&] { timers.push_back(conn); });
  }

 private:
  template <typename F>
  void enqueue(F add) {
    bool was_empty;
    {
      std::lock_guard lk(mu);
      if (stopped) return;
      was_empty = completions.empty() && flush.empty() && timers.empty();
      add();
    }
    // One wake-up per batch: the loop swaps all three lists out at once.
    if (was_empty) {
      uint64_t one = 1;
      if (::write(wake_fd.get(), &one, sizeof(one)) < 0) {
        // EAGAIN only when the counter is near overflow: the loop is awake anyway.
      }
    }
  }
};

namespace {

// The bounded, thread-safe output of one streaming connection. Producers
// append encoded chunks; the loop thread sends them (flushTo). Lock order:
// a stream's mu_ before Shared::mu, never the reverse.
class ConnStream final : public StreamWriter {
 public:
  enum class Flush { Drained, Pending, Finished, Failed };

  ConnStream(std::shared_ptr<detail::ServerShared> shared, uint64_t conn, size_t limit,
             std::chrono::milliseconds write_timeout)
      : shared_(std::move(shared)), conn_(conn), limit_(limit), write_timeout_(write_timeout), buf_(kStreamHead) {}

  Push push(std::string_view line) override {
    std::string chunk = encodeChunk(line);
    std::lock_guard lk(mu_);
    if (ended_ || closing_) return Push::Closed;
    std::string lost = lost_pending_ ? lostChunk(lost_pending_) : std::string();
    if (pendingLocked() + lost.size() + chunk.size() > limit_) {
      ++lost_pending_;
      ++lost_total_;
      return Push::Dropped;
    }
    appendLocked(lost, chunk);
    return Push::Queued;
  }

  bool write(std::string_view line) override {
    std::string chunk = encodeChunk(line);
    std::unique_lock lk(mu_);
    auto deadline = Clock::now() + write_timeout_;
    bool room = room_.wait_until(lk, deadline, [&] {
      return ended_ || closing_ || pendingLocked() == 0 || pendingLocked() + chunk.size() <= limit_;
    });
    if (ended_ || closing_ || !room) return false;
    std::string lost = lost_pending_ ? lostChunk(lost_pending_) : std::string();
    appendLocked(lost, chunk);
    return true;
  }

  void close() override {
    std::lock_guard lk(mu_);
    if (ended_ || closing_) return;
    closing_ = true;
    scheduleLocked();
  }

  bool alive() override {
    std::lock_guard lk(mu_);
    return !ended_ && !closing_;
  }

  uint64_t lost() const override {
    std::lock_guard lk(mu_);
    return lost_total_;
  }

  void onClose(std::function<void()> fn) override {
    std::unique_lock lk(mu_);
    if (ended_) {
      lk.unlock();
      if (fn) fn();
      return;
    }
    on_close_ = std::move(fn);
  }

  // Loop thread: sends what is queued without blocking. After close() and a
  // full drain, sends the last chunk and reports Finished.
  Flush flushTo(int fd, bool* progress) {
    std::lock_guard lk(mu_);
    scheduled_ = false;
    for (;;) {
      while (off_ < buf_.size()) {
        ssize_t n = ::send(fd, buf_.data() + off_, buf_.size() - off_, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          off_ += static_cast<size_t>(n);
          *progress = true;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          // Compact so a long-lived stream's buffer does not grow by what was sent.
          if (off_ > (64u << 10) && off_ * 2 > buf_.size()) {
            buf_.erase(0, off_);
            off_ = 0;
          }
          if (*progress) room_.notify_all();
          return Flush::Pending;
        }
        return Flush::Failed;
      }
      buf_.clear();
      off_ = 0;
      if (*progress) room_.notify_all();
      // Lines were dropped and none fitted since: say so now rather than
      // leaving the client unaware until the next event.
      if (lost_pending_) {
        buf_ = lostChunk(lost_pending_);
        lost_pending_ = 0;
        continue;
      }
      if (closing_ && !terminated_) {
        terminated_ = true;
        buf_ = "0\r\n\r\n";
        continue;
      }
      return terminated_ ? Flush::Finished : Flush::Drained;
    }
  }

  // Loop thread (or stop): the stream is over; returns the onClose callback to run.
  std::function<void()> end() {
    std::lock_guard lk(mu_);
    ended_ = true;
    room_.notify_all();
    return std::exchange(on_close_, nullptr);
  }

 private:
  size_t pendingLocked() const { return buf_.size() - off_; }
  void appendLocked(const std::string& lost, const std::string& chunk) {
    buf_ += lost;
    buf_ += chunk;
    lost_pending_ = 0;
    scheduleLocked();
  }
  void scheduleLocked() {
    if (scheduled_) return;
    scheduled_ = true;
    shared_->needsFlush(conn_);
  }

  const std::shared_ptr<detail::ServerShared> shared_;
  const uint64_t conn_;
  const size_t limit_;
  const std::chrono::milliseconds write_timeout_;
  mutable std::mutex mu_;
  std::condition_variable room_;  // signalled when bytes were sent or the stream ended
  std::string buf_;               // encoded chunks; [off_, size) not sent yet
  size_t off_ = 0;
  uint64_t lost_pending_ = 0;  // dropped since the last line that was queued
  uint64_t lost_total_ = 0;
  bool scheduled_ = false;  // conn_ is in Shared::flush
  bool closing_ = false;    // close() called
  bool terminated_ = false; // last chunk queued
  bool ended_ = false;      // connection gone or server stopping
  std::function<void()> on_close_;
};

class ConnDeferred final : public PendingResponse {
 public:
  ConnDeferred(std::shared_ptr<detail::ServerShared> shared, uint64_t conn, bool keep_alive)
      : shared_(std::move(shared)), conn_(conn), keep_alive_(keep_alive) {}

  bool complete(Response r) override {
    {
      std::lock_guard lk(mu_);
      if (done_) return false;
      done_ = true;
      expire_fn_ = nullptr;
    }
    bool ka = keep_alive_ && !shared_->stopping;
    shared_->complete(conn_, serialize(r, ka), ka);
    return true;
  }

  bool pending() const override {
    std::lock_guard lk(mu_);
    return !done_;
  }

  void expireAfter(std::chrono::milliseconds after, std::function<Response()> fn) override {
    {
      std::lock_guard lk(mu_);
      if (done_ || expire_set_ || !fn) return;
      expire_set_ = true;
      expire_at_ = Clock::now() + after;
      expire_fn_ = std::move(fn);
    }
    shared_->timerSet(conn_);
  }

  // Loop thread: the expiry callback when due (and the time it is due).
  std::function<Response()> takeExpired(Clock::time_point now, Clock::time_point* at) {
    std::lock_guard lk(mu_);
    *at = kNever;
    if (done_ || !expire_fn_) return nullptr;
    if (now < expire_at_) {
      *at = expire_at_;
      return nullptr;
    }
    return std::exchange(expire_fn_, nullptr);
  }

  // Loop thread: the client left or the server stops; nothing will be sent.
  void cancel() {
    std::lock_guard lk(mu_);
    done_ = true;
    expire_fn_ = nullptr;
  }

 private:
  const std::shared_ptr<detail::ServerShared> shared_;
  const uint64_t conn_;
  const bool keep_alive_;
  mutable std::mutex mu_;
  bool done_ = false;
  bool expire_set_ = false;
  Clock::time_point expire_at_ = kNever;
  std::function<Response()> expire_fn_;
};

}  // namespace

// A fixed pool running handlers. stopAndJoin() runs what is queued, then ends.
class HttpServer::Workers {
 public:
  explicit Workers(size_t n) {
    for (size_t i = 0; i < n; ++i) threads_.emplace_back([this] { run(); });
  }
  ~Workers() { stopAndJoin(); }

  void post(std::function<void()> job) {
    {
      std::lock_guard lk(mu_);
      if (!stop_) {
        q_.push_back(std::move(job));
        cv_.notify_one();
        return;
      }
    }
    job();  // after stop only stop()'s own thread posts; run it there
  }

  void stopAndJoin() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;
        job = std::move(q_.front());
        q_.pop_front();
      }
      job();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// The event loop. Everything here runs on the loop thread, except init()
// (start()) and joinStreamThreads() (stop(), after the loop ended).
class HttpServer::Loop {
 public:
  explicit Loop(HttpServer& s) : s_(s) {}

  Status init() {
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return Error::fromErrno(errno, "epoll_create1");
    ep_.reset(ep);
    MB_TRY(ctl(EPOLL_CTL_ADD, s_.listen_fd_.get(), EPOLLIN, kListenId));
    MB_TRY(ctl(EPOLL_CTL_ADD, s_.shared_->wake_fd.get(), EPOLLIN, kWakeId));
    return okStatus();
  }

  void run() {
    std::vector<epoll_event> evs(256);
    while (!s_.stopping_) {
      int n = ::epoll_wait(ep_.get(), evs.data(), static_cast<int>(evs.size()), timeoutMs());
      if (n < 0 && errno != EINTR) break;
      for (int i = 0; i < n; ++i) {
        uint64_t id = evs[i].data.u64;
        if (id == kListenId) {
          acceptAll();
        } else if (id == kWakeId) {
          drainWake();
        } else if (auto it = conns_.find(id); it != conns_.end()) {
          onEvent(*it->second, evs[i].events);
        }
      }
      sweep();
      reap();
    }
    for (auto& [id, c] : conns_) closeConn(*c);
    reap();
  }

  void joinStreamThreads() {
    for (auto& t : stream_threads_)
      if (t.thread.joinable()) t.thread.join();
    stream_threads_.clear();
  }

 private:
  static constexpr uint64_t kListenId = 0;
  static constexpr uint64_t kWakeId = 1;

  enum class St {
    Reading,    // waiting for (the rest of) a request
    Busy,       // a handler or deferred answer is pending
    Streaming,  // a streaming response
    Closing,    // sending the last response, then close
  };

  struct Conn {
    Conn(uint64_t i, int f, MessageParser::Limits l) : id(i), fd(f), parser(MessageParser::Type::Request, l) {}
    uint64_t id;
    UniqueFd fd;
    MessageParser parser;
    St st = St::Reading;
    std::string in;  // received, not yet parsed (pipelined requests)
    std::string out;
    size_t out_off = 0;
    bool peer_closed = false;  // EOF or RDHUP: the client sends nothing more
    bool sent_continue = false;
    bool rdhup_busy = false;  // RDHUP seen while Busy
    bool stream_pending = false;  // the stream has unsent bytes (wants EPOLLOUT)
    bool dead = false;
    uint32_t events = 0;  // registered with epoll
    Clock::time_point read_deadline = kNever;
    Clock::time_point write_deadline = kNever;
    std::shared_ptr<ConnStream> stream;
    std::shared_ptr<ConnDeferred> deferred;
  };

  struct StreamThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  Status ctl(int op, int fd, uint32_t events, uint64_t id) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = id;
    if (::epoll_ctl(ep_.get(), op, fd, &ev) != 0) return Error::fromErrno(errno, "epoll_ctl");
    return okStatus();
  }

  void arm(Clock::time_point t) { next_sweep_ = std::min(next_sweep_, t); }

  int timeoutMs() const {
    auto now = Clock::now();
    if (next_sweep_ <= now) return 0;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next_sweep_ - now).count() + 1;
    return static_cast<int>(std::min<long long>(ms, 1000));
  }

  void acceptAll() {
    for (int i = 0; i < 64; ++i) {
      int fd = ::accept4(s_.listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          // EMFILE and friends: stop watching the listener for a while
          // instead of spinning on it while it stays readable.
          (void)ctl(EPOLL_CTL_DEL, s_.listen_fd_.get(), 0, kListenId);
          listen_paused_until_ = Clock::now() + std::chrono::milliseconds(100);
          arm(listen_paused_until_);
        }
        return;
      }
      UniqueFd cfd(fd);
      ++s_.accepted_;
      if (conns_.size() >= s_.opts_.max_connections) {
        auto r = Response::error(
            503, fmt::format("too many API connections (limit {}); retry later", s_.opts_.max_connections));
        std::string out = serialize(r, false);
        // Best effort without waiting: the socket buffer of a fresh connection has room.
        (void)!::send(cfd.get(), out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        continue;
      }
      uint64_t id = next_id_++;
      auto c = std::make_unique<Conn>(id, cfd.release(),
                                      MessageParser::Limits{s_.opts_.max_header_bytes, s_.opts_.max_body_bytes});
      c->events = EPOLLIN | EPOLLRDHUP;
      if (!ctl(EPOLL_CTL_ADD, c->fd.get(), c->events, id).ok()) continue;
      c->read_deadline = Clock::now() + s_.opts_.read_timeout;
      arm(c->read_deadline);
      conns_.emplace(id, std::move(c));
      s_.active_ = conns_.size();
    }
  }

  void drainWake() {
    uint64_t v;
    (void)!::read(s_.shared_->wake_fd.get(), &v, sizeof(v));
    std::vector<detail::ServerShared::Completion> done;
    std::vector<uint64_t> flush, timers;
    {
      std::lock_guard lk(s_.shared_->mu);
      done.swap(s_.shared_->completions);
      flush.swap(s_.shared_->flush);
      timers.swap(s_.shared_->timers);
    }
    for (auto& d : done) {
      Conn* c = find(d.conn);
      if (!c || c->st != St::Busy) continue;
      c->deferred.reset();
      queueBytes(*c, std::move(d.bytes), d.keep_alive);
      process(*c);
      update(*c);
    }
    for (uint64_t id : flush) {
      Conn* c = find(id);
      if (!c || !c->stream) continue;
      flushStream(*c);
      update(*c);
    }
    for (uint64_t id : timers) {
      Conn* c = find(id);
      if (!c || !c->deferred) continue;
      Clock::time_point at;
      if (auto fn = c->deferred->takeExpired(Clock::now(), &at)) {
        expire(*c, std::move(fn));
      } else {
        arm(at);
      }
    }
  }

  Conn* find(uint64_t id) {
    auto it = conns_.find(id);
    return it == conns_.end() || it->second->dead ? nullptr : it->second.get();
  }

  void onEvent(Conn& c, uint32_t ev) {
    if (c.dead) return;
    if (ev & (EPOLLERR | EPOLLHUP)) {
      // Both directions are gone: nothing more can be read or delivered.
      closeConn(c);
      return;
    }
    if (ev & EPOLLOUT) {
      if (c.stream) {
        flushStream(c);
      } else {
        writeOut(c);
      }
      if (c.dead) return;
    }
    if (c.st == St::Streaming) {
      // A stream has no more requests: a half-close or EOF means the client left.
      if (ev & EPOLLRDHUP) {
        closeConn(c);
        return;
      }
      if (ev & EPOLLIN) {
        char buf[4096];
        ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          closeConn(c);
          return;
        }
      }
    } else if (c.st == St::Reading && (ev & (EPOLLIN | EPOLLRDHUP))) {
      readIn(c);
      if (c.dead) return;
      process(c);
    } else if (c.st == St::Busy && (ev & EPOLLRDHUP)) {
      // Half-closed while its answer is pending: stop watching (level-triggered
      // RDHUP would spin); the EOF is read once the answer is out.
      c.rdhup_busy = true;
    }
    update(c);
  }

  void readIn(Conn& c) {
    char buf[16384];
    // Bounded per wake-up so one fast client cannot starve the others.
    for (int i = 0; i < 16 && !c.peer_closed; ++i) {
      ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) {
        c.peer_closed = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      closeConn(c);
      return;
    }
  }

  // Parses and dispatches what is buffered, as long as the connection reads.
  void process(Conn& c) {
    while (!c.dead && c.st == St::Reading) {
      if (!c.in.empty()) {
        size_t used = c.parser.feed(c.in);
        c.in.erase(0, used);
      }
      if (c.parser.state() == MessageParser::State::Incomplete) {
        if (c.parser.expectsContinue() && !c.sent_continue) {
          c.sent_continue = true;
          c.out += "HTTP/1.1 100 Continue\r\n\r\n";
          writeOut(c);
          if (c.dead) return;
        }
        if (!c.peer_closed) return;  // wait for more bytes
        if (c.parser.finish() != MessageParser::State::Complete) {
          // The client went away mid-request (or idle): nobody to answer.
          if (c.out_off < c.out.size()) {
            c.st = St::Closing;
          } else {
            closeConn(c);
          }
          return;
        }
      }
      if (c.parser.state() == MessageParser::State::Error) {
        queueResponse(c, Response::error(c.parser.errorStatus(), c.parser.errorMessage()), false);
        return;
      }
      dispatch(c);
    }
  }

  void dispatch(Conn& c) {
    auto& p = c.parser;
    Request req;
    req.method = std::move(p.method);
    req.target = std::move(p.url);
    req.headers = std::move(p.headers);
    req.body = std::move(p.body);
    bool keep_alive = p.keepAlive();
    p.next();
    c.sent_continue = false;
    std::string_view target = req.target;
    if (auto hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
    size_t q = target.find('?');
    req.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) req.query = parseQuery(target.substr(q + 1));

    if (req.path.empty() || req.path.front() != '/') {
      queueResponse(c, Response::error(400, "request target must be an absolute path such as /v1/healthz"), false);
      return;
    }
    Router::Match m = s_.router_.match(req.method, req.path);
    if (m.kind == Router::Match::Kind::NotFound) {
      queueResponse(c, Response::error(404, fmt::format("no such API path: {} {}", req.method, req.path)), keep_alive);
      return;
    }
    if (m.kind == Router::Match::Kind::MethodNotAllowed) {
      auto r = Response::error(405, fmt::format("method {} not allowed on {} (allowed: {})", req.method, req.path, m.allow));
      r.headers["Allow"] = m.allow;
      queueResponse(c, std::move(r), keep_alive);
      return;
    }
    req.params = std::move(m.params);
    const Router::Route* route = m.route;
    auto shared = s_.shared_;
    c.read_deadline = kNever;

    if (route->stream || route->async_stream) {
      c.st = St::Streaming;
      c.in.clear();
      auto stream = std::make_shared<ConnStream>(shared, c.id, s_.opts_.stream_buffer_bytes, s_.opts_.write_timeout);
      c.stream = stream;
      flushStream(c);  // the response head
      if (c.dead) return;
      if (route->async_stream) {
        s_.workers_->post([route, req = std::move(req), stream] {
          try {
            route->async_stream(req, stream);
          } catch (const std::exception& e) {
            streamFailed(*stream, e.what());
          } catch (...) {
            streamFailed(*stream, nullptr);
          }
        });
      } else {
        auto done = std::make_shared<std::atomic<bool>>(false);
        std::thread t([route, req = std::move(req), stream, done] {
          try {
            route->stream(req, *stream);
          } catch (const std::exception& e) {
            streamFailed(*stream, e.what());
          } catch (...) {
            streamFailed(*stream, nullptr);
          }
          stream->close();
          *done = true;
        });
        stream_threads_.push_back({std::move(t), std::move(done)});
      }
      return;
    }

    c.st = St::Busy;
    if (route->deferred) {
      auto d = std::make_shared<ConnDeferred>(shared, c.id, keep_alive);
      c.deferred = d;
      s_.workers_->post([route, req = std::move(req), d] {
        // Handlers are ours, but an exception escaping one must cost a 500, not the agent.
        try {
          route->deferred(req, d);
        } catch (const std::exception& e) {
          d->complete(handlerFailed(e.what()));
        } catch (...) {
          d->complete(handlerFailed(nullptr));
        }
      });
      return;
    }
    HttpServer* server = &s_;
    uint64_t id = c.id;
    s_.workers_->post([server, route, req = std::move(req), keep_alive, shared, id] {
      Response resp;
      try {
        resp = route->handler(req);
      } catch (const std::exception& e) {
        resp = handlerFailed(e.what());
      } catch (...) {
        resp = handlerFailed(nullptr);
      }
      bool ka = keep_alive && !server->stopping_;
      shared->complete(id, serialize(resp, ka), ka);
    });
  }

  static void streamFailed(StreamWriter& out, const char* what) {
    out.push(nlohmann::json({{"type", "error"},
                             {"error", what ? std::string("stream handler failed: ") + what : "stream handler failed"}})
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    out.close();
  }

  void queueResponse(Conn& c, const Response& r, bool keep_alive) {
    bool ka = keep_alive && !s_.stopping_;
    queueBytes(c, serialize(r, ka), ka);
  }

  // A response is ready: send it; read the next request, or close after it.
  void queueBytes(Conn& c, std::string bytes, bool keep_alive) {
    c.out += bytes;
    if (keep_alive && !c.peer_closed) {
      c.st = St::Reading;
      c.read_deadline = Clock::now() + s_.opts_.read_timeout;
      arm(c.read_deadline);
    } else if (keep_alive) {
      c.st = St::Reading;  // pipelined requests may still be buffered; EOF ends it
    } else {
      c.st = St::Closing;
    }
    writeOut(c);
  }

  void writeOut(Conn& c) {
    bool progress = false;
    while (c.out_off < c.out.size()) {
      ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
        progress = true;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (progress || c.write_deadline == kNever) {
          c.write_deadline = Clock::now() + s_.opts_.write_timeout;
          arm(c.write_deadline);
        }
        return;
      }
      closeConn(c);
      return;
    }
    c.out.clear();
    c.out_off = 0;
    c.write_deadline = kNever;
    if (c.st == St::Closing) closeConn(c);
  }

  void flushStream(Conn& c) {
    bool progress = false;
    auto r = c.stream->flushTo(c.fd.get(), &progress);
    if (r == ConnStream::Flush::Failed || r == ConnStream::Flush::Finished) {
      closeConn(c);
      return;
    }
    c.stream_pending = r == ConnStream::Flush::Pending;
    if (!c.stream_pending) {
      c.write_deadline = kNever;
    } else if (progress || c.write_deadline == kNever) {
      c.write_deadline = Clock::now() + s_.opts_.write_timeout;
      arm(c.write_deadline);
    }
  }

  void expire(Conn& c, std::function<Response()> fn) {
    auto d = c.deferred;
    s_.workers_->post([d, fn = std::move(fn)] {
      Response r;
      try {
        r = fn();
      } catch (const std::exception& e) {
        r = handlerFailed(e.what());
      } catch (...) {
        r = handlerFailed(nullptr);
      }
      d->complete(std::move(r));
    });
  }

  // Sets the epoll interest to what the connection's state needs now.
  void update(Conn& c) {
    if (c.dead) return;
    uint32_t ev = 0;
    switch (c.st) {
      case St::Reading:
        if (!c.peer_closed) ev = EPOLLIN | EPOLLRDHUP;
        break;
      case St::Busy:
        if (!c.rdhup_busy) ev = EPOLLRDHUP;
        break;
      case St::Streaming:
        ev = EPOLLIN | EPOLLRDHUP;
        break;
      case St::Closing:
        break;
    }
    if (c.out_off < c.out.size() || c.stream_pending) ev |= EPOLLOUT;
    if (ev == c.events) return;
    if (!ctl(EPOLL_CTL_MOD, c.fd.get(), ev, c.id).ok()) {
      closeConn(c);
      return;
    }
    c.events = ev;
  }

  void closeConn(Conn& c) {
    if (c.dead) return;
    c.dead = true;
    c.fd.reset();  // leaves the epoll set; the client sees EOF now
    if (c.stream) {
      if (auto fn = c.stream->end()) s_.workers_->post(std::move(fn));
    }
    if (c.deferred) c.deferred->cancel();
    dead_.push_back(c.id);
  }

  void reap() {
    for (uint64_t id : dead_) conns_.erase(id);
    dead_.clear();
    s_.active_ = conns_.size();
  }

  // Deadlines: request read (408), response write, deferred expiry, listener pause.
  void sweep() {
    auto now = Clock::now();
    if (now < next_sweep_) return;
    auto next = now + std::chrono::seconds(1);
    if (listen_paused_until_ != kNever) {
      if (now >= listen_paused_until_) {
        listen_paused_until_ = kNever;
        (void)ctl(EPOLL_CTL_ADD, s_.listen_fd_.get(), EPOLLIN, kListenId);
      } else {
        next = std::min(next, listen_paused_until_);
      }
    }
    for (auto& [id, cp] : conns_) {
      Conn& c = *cp;
      if (c.dead) continue;
      if (c.write_deadline != kNever) {
        if (now >= c.write_deadline) {
          closeConn(c);
          continue;
        }
        next = std::min(next, c.write_deadline);
      }
      if (c.st == St::Reading && c.read_deadline != kNever) {
        if (now >= c.read_deadline) {
          if (c.parser.started() || !c.in.empty()) {
            queueResponse(c, Response::error(408, fmt::format("request not complete within {} ms",
                                                              s_.opts_.read_timeout.count())),
                          false);
            update(c);
          } else {
            closeConn(c);
          }
          continue;
        }
        next = std::min(next, c.read_deadline);
      }
      if (c.deferred) {
        Clock::time_point at;
        if (auto fn = c.deferred->takeExpired(now, &at)) {
          expire(c, std::move(fn));
        } else {
          next = std::min(next, at);
        }
      }
    }
    next_sweep_ = next;
    for (auto it = stream_threads_.begin(); it != stream_threads_.end();) {
      if (*it->done) {
        it->thread.join();
        it = stream_threads_.erase(it);
      } else {
        ++it;
      }
    }
  }

  HttpServer& s_;
  UniqueFd ep_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::vector<uint64_t> dead_;
  uint64_t next_id_ = 2;
  Clock::time_point next_sweep_ = Clock::now();
  Clock::time_point listen_paused_until_ = kNever;
  std::list<StreamThread> stream_threads_;
};

HttpServer::HttpServer(std::string socket_path, ServerOptions opts) : path_(std::move(socket_path)), opts_(opts) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::route(std::string method, std::string pattern, Handler handler) {
  MB_CHECK(!started_);
  router_.add(std::move(method), std::move(pattern), std::move(handler));
}

void HttpServer::route(std::string method, std::string pattern, DeferredHandler handler) {
  MB_CHECK(!started_);
  router_.addDeferred(std::move(method), std::move(pattern), std::move(handler));
}

void HttpServer::routeStream(std::string method, std::string pattern, StreamHandler handler) {
  MB_CHECK(!started_);
  router_.addStream(std::move(method), std::move(pattern), std::move(handler));
}

void HttpServer::routeStream(std::string method, std::string pattern, AsyncStreamHandler handler) {
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
  // A burst of clients (a thousand monitors starting at once) must not find
  // the backlog full: their connect() would fail with EAGAIN.
  if (::listen(lfd.get(), SOMAXCONN) != 0) {
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
  if (::fcntl(lfd.get(), F_SETFL, ::fcntl(lfd.get(), F_GETFL) | O_NONBLOCK) != 0) {
    int err = errno;
    ::close(efd);
    ::unlink(path_.c_str());
    return Error::fromErrno(err, "make listener non-blocking");
  }
  shared_ = std::make_shared<detail::ServerShared>();
  shared_->wake_fd.reset(efd);
  listen_fd_ = std::move(lfd);
  loop_ = std::make_unique<Loop>(*this);
  if (auto st = loop_->init(); !st.ok()) {
    loop_.reset();
    listen_fd_.reset();
    ::unlink(path_.c_str());
    return st;
  }
  workers_ = std::make_unique<Workers>(std::max<size_t>(1, opts_.workers));
  started_ = true;
  loop_thread_ = std::thread([this] { loop_->run(); });
  return okStatus();
}

void HttpServer::stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stopping_ = true;
  shared_->stopping = true;
  {
    std::lock_guard lk(shared_->mu);
    shared_->stopped = true;
  }
  uint64_t one = 1;
  (void)!::write(shared_->wake_fd.get(), &one, sizeof(one));
  // The loop closes every connection on its way out: streams end (their
  // onClose callbacks are queued to the workers), deferred answers are dropped.
  if (loop_thread_.joinable()) loop_thread_.join();
  listen_fd_.reset();
  // Runs what is queued (handlers already accepted, onClose callbacks), then ends.
  workers_->stopAndJoin();
  loop_->joinStreamThreads();
  loop_.reset();
  active_ = 0;
  struct stat st{};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == sock_dev_ && st.st_ino == sock_ino_) ::unlink(path_.c_str());
}

}  // namespace membrane::api
