#include "src/proxy/proxy.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "membrane/unique_fd.h"
#include "src/proxy/buffer.h"

namespace membrane::proxy {

using Clock = std::chrono::steady_clock;

uint32_t upstreamMark(Direction d, uint32_t identity) {
  return mb_mark_encode(d == Direction::Ingress ? kMarkProxyIngress : kMarkProxyEgress, identity);
}

RequestDecision decideRequest(const ProxyConfig& cfg, Direction dir, const sockaddr_in& client,
                              const sockaddr_in& odst, const RequestView& view) {
  RequestDecision d;
  d.src_id = cfg.identityOf(client.sin_addr.s_addr);
  d.dst_id = cfg.identityOf(odst.sin_addr.s_addr);
  const bool ingress = dir == Direction::Ingress;
  const in_addr_t pod = ingress ? odst.sin_addr.s_addr : client.sin_addr.s_addr;
  const PortPolicy* pp = cfg.find(pod, dir, ntohs(odst.sin_port));
  Verdict& v = d.verdict;
  v = ProxyConfig::evaluate(pp, ingress ? d.src_id : d.dst_id, view);
  // Egress L7 towards a destination that has ingress L7 rules on this port
  // (a local pod): this proxy applies those too, and marks its upstream
  // PROXY_INGRESS so the datapath does not send it to a second proxy (a
  // hairpin from the destination's veth cannot reach the stack). Both must allow.
  if (!ingress) {
    const PortPolicy* in = cfg.find(odst.sin_addr.s_addr, Direction::Ingress, ntohs(odst.sin_port));
    if (in) {
      d.ingress_checked = true;
      if (v.allowed) {
        Verdict vi = ProxyConfig::evaluate(in, d.src_id, view);
        if (!vi.allowed) {
          v = std::move(vi);
        } else {
          // Both sets of edits apply, egress first. The ingress rules decide on
          // the request as the client sent it (in Cilium the destination's
          // proxy would see the egress edits; here an ingress rule that needs
          // an egress edit denies: fail closed).
          v.header_mismatch_logged = v.header_mismatch_logged || vi.header_mismatch_logged;
          v.edits.insert(v.edits.end(), vi.edits.begin(), vi.edits.end());
        }
      }
    }
  }
  return d;
}

namespace {

constexpr uint64_t kTagClient = 0, kTagUpstream = 1, kTagListener = 2, kTagWake = 3;

struct Conn;

struct TimerLink {
  Conn* prev = nullptr;
  Conn* next = nullptr;
  Clock::time_point deadline;
  bool linked = false;
};

// Intrusive FIFO of connections with one timeout duration: deadlines are
// appended in increasing order, so the head is always the next to expire.
class TimerList {
 public:
  explicit TimerList(TimerLink Conn::*link) : link_(link) {}
  void arm(Conn* c, Clock::time_point deadline);
  void disarm(Conn* c);
  Conn* front() const { return head_; }
  TimerLink& link(Conn* c) const;

 private:
  TimerLink Conn::*link_;
  Conn* head_ = nullptr;
  Conn* tail_ = nullptr;
};

struct ListenerSock {
  UniqueFd fd;
  uint32_t key = 0;
  uint16_t bound = 0;
  std::atomic<Direction> direction{Direction::Ingress};
};

// One request awaiting its response, in pipeline order.
struct Pending {
  bool forward = false;    // answered by the upstream; else by a local response
  int status = 0;          // local response status
  UpstreamError error = UpstreamError::None;
  bool close_after = false;  // close the client connection after this response
  bool is_head = false, is_connect = false, upgrade = false;
  bool response_started = false;
  bool header_mismatch = false;
  std::string_view method;
  std::string url;
  std::shared_ptr<const ProxyConfig> cfg;  // keeps 'policy' alive
  std::string_view policy;
  uint32_t src_id = 0, dst_id = 0;
  Clock::time_point start, sent;
};

enum class ReqState { Headers, ForwardHeaders, Body, AwaitUpgrade, Tunnel, Done };
enum class UpState { None, Connecting, Connected };

struct Conn {
  Conn(Proxy::Impl* p, BufferPool* pool, const ParserLimits& limits, size_t ring)
      : px(p), cin(pool), cout(pool), uin(pool), uout(pool),
        req(MessageParser::Kind::Request, limits), resp(MessageParser::Kind::Response, limits), pending(ring) {}

  Proxy::Impl* px;
  UniqueFd cfd, ufd;
  // Egress connection whose destination's ingress L7 rules this proxy applies
  // too (its upstream then carries the PROXY_INGRESS mark).
  bool ingress_checked = false;
  Direction dir = Direction::Ingress;
  sockaddr_in client{}, odst{};
  Buffer cin, cout, uin, uout;
  MessageParser req, resp;
  ReqState rs = ReqState::Headers;
  UpState us = UpState::None;
  size_t parsed = 0;          // bytes at the front of cin the request parser has seen
  std::string fwd_head;       // the allowed request's head as sent upstream (serializeHead)
  size_t fwd_off = 0;         // how much of fwd_head is in uout already
  bool cur_forward = false;   // the current request's bytes go upstream (else dropped)
  bool c_eof = false, u_eof = false;
  bool u_polled = false;  // ufd is registered with epoll
  bool closing = false;       // close once every pending response is written
  bool lingering = false;     // FIN sent; discarding client bytes until its EOF (linger())
  bool dead = false;
  uint32_t cmask = 0, umask = 0;
  Clock::time_point msg_start;
  std::vector<Pending> pending;
  size_t p_head = 0, p_count = 0;
  TimerLink idle_link, hdr_link, conn_link;

  Pending& front() { return pending[p_head]; }
  Pending& back() { return pending[(p_head + p_count - 1) % pending.size()]; }
  Pending& at(size_t i) { return pending[(p_head + i) % pending.size()]; }
  bool ringFull() const { return p_count == pending.size(); }
  Pending& push() {
    Pending& p = pending[(p_head + p_count) % pending.size()];
    ++p_count;
    return p;
  }
  void pop() {
    front().cfg.reset();
    p_head = (p_head + 1) % pending.size();
    --p_count;
  }
};

TimerLink& TimerList::link(Conn* c) const { return c->*link_; }

void TimerList::arm(Conn* c, Clock::time_point deadline) {
  disarm(c);
  TimerLink& l = link(c);
  l.deadline = deadline;
  l.linked = true;
  l.prev = tail_;
  l.next = nullptr;
  if (tail_) link(tail_).next = c;
  else head_ = c;
  tail_ = c;
}

void TimerList::disarm(Conn* c) {
  TimerLink& l = link(c);
  if (!l.linked) return;
  if (l.prev) link(l.prev).next = l.next;
  else head_ = l.next;
  if (l.next) link(l.next).prev = l.prev;
  else tail_ = l.prev;
  l.prev = l.next = nullptr;
  l.linked = false;
}

std::string nowRfc3339() {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(us / 1000000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof(buf) - n, ".%06lldZ", static_cast<long long>(us % 1000000));
  return buf;
}

std::string_view reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

std::string_view localBody(int status) {
  switch (status) {
    case 403: return "Access denied\r\n";  // Cilium's exact body
    case 400: return "Bad Request\r\n";
    case 408: return "Request Timeout\r\n";
    case 431: return "Request Header Fields Too Large\r\n";
    case 503: return "upstream connect error or disconnect/reset before headers\r\n";
    default: return "Error\r\n";
  }
}

}  // namespace

struct Proxy::Impl {
  explicit Impl(ProxyOptions o)
      : opts(std::move(o)), pool(opts.buffer_size), idle(&Conn::idle_link), hdr(&Conn::hdr_link),
        conn_timers(&Conn::conn_link) {}

  ProxyOptions opts;
  ProxyStats stats;
  AccessLog log;
  UniqueFd ep, wake;
  std::thread thread;
  std::atomic<bool> stopping{false};
  bool started = false;

  // Config, shared with control threads.
  mutable std::mutex cfg_mu;
  std::shared_ptr<const ProxyConfig> cfg = ProxyConfig::empty();
  std::atomic<uint64_t> cfg_gen{1};
  std::mutex apply_mu;  // serialises applyConfig
  mutable std::mutex listeners_mu;
  std::map<uint32_t, std::unique_ptr<ListenerSock>> listeners;
  std::vector<std::unique_ptr<ListenerSock>> retired;  // freed by the loop

  // Loop thread only.
  std::shared_ptr<const ProxyConfig> loop_cfg;
  uint64_t loop_gen = 0;
  BufferPool pool;
  TimerList idle, hdr, conn_timers;
  std::vector<Conn*> graveyard;
  size_t conn_count = 0;
  Clock::time_point now;
  std::atomic<size_t> buffers_in_use{0}, buffers_peak{0};
  std::atomic<bool> reset_peak{false};

  // --- helpers -----------------------------------------------------------
  const ProxyConfig& currentConfig() {
    uint64_t g = cfg_gen.load(std::memory_order_acquire);
    if (g != loop_gen) {
      std::lock_guard lk(cfg_mu);
      loop_cfg = cfg;
      loop_gen = g;
    }
    return *loop_cfg;
  }

  void epollSet(int fd, uint32_t* cur, uint32_t want, uint64_t tag) {
    if (*cur == want) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = tag;
    epoll_ctl(ep.get(), EPOLL_CTL_MOD, fd, &ev);
    *cur = want;
  }

  static uint64_t tagOf(void* p, uint64_t tag) { return reinterpret_cast<uint64_t>(p) | tag; }

  // --- listeners ----------------------------------------------------------
  static uint32_t keyOf(const Listener& l) {
    return l.port ? l.port : 0x10000u | static_cast<uint32_t>(l.direction);
  }

  Result<std::unique_ptr<ListenerSock>> openListener(const Listener& l) {
    auto ls = std::make_unique<ListenerSock>();
    ls->key = keyOf(l);
    ls->direction = l.direction;
    std::string where = fmt::format("listener {}:{}", opts.listen_address, l.port);
    ls->fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!ls->fd) return Error::fromErrno(errno, where + ": socket");
    int one = 1;
    setsockopt(ls->fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (opts.transparent_listeners &&
        setsockopt(ls->fd.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) != 0)
      return Error::fromErrno(errno, where + ": IP_TRANSPARENT (needs CAP_NET_ADMIN)");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(l.port);
    if (inet_pton(AF_INET, opts.listen_address.c_str(), &a.sin_addr) != 1)
      return Error::invalid(where + ": bad listen address");
    if (::bind(ls->fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
      return Error::fromErrno(errno, where + ": bind");
    if (::listen(ls->fd.get(), 4096) != 0) return Error::fromErrno(errno, where + ": listen");
    socklen_t len = sizeof(a);
    getsockname(ls->fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    ls->bound = ntohs(a.sin_port);
    return ls;
  }

  Status apply(std::shared_ptr<const ProxyConfig> c) {
    std::lock_guard alk(apply_mu);
    std::vector<std::unique_ptr<ListenerSock>> opened;
    {
      std::lock_guard lk(listeners_mu);
      for (const auto& l : c->listeners()) {
        if (listeners.count(keyOf(l))) continue;
        auto r = openListener(l);
        if (!r.ok()) {
          stats.config_errors.fetch_add(1);
          return r.error().wrap(fmt::format("apply proxy config revision {}", c->revision()));
        }
        opened.push_back(std::move(r).value());
      }
      for (auto& ls : opened) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tagOf(ls.get(), kTagListener);
        epoll_ctl(ep.get(), EPOLL_CTL_ADD, ls->fd.get(), &ev);
        uint32_t key = ls->key;
        listeners[key] = std::move(ls);
      }
      for (auto it = listeners.begin(); it != listeners.end();) {
        const Listener* want = nullptr;
        for (const auto& l : c->listeners())
          if (keyOf(l) == it->first) want = &l;
        if (want) {
          it->second->direction = want->direction;
          ++it;
          continue;
        }
        // Only the listening socket goes; accepted connections stay.
        epoll_ctl(ep.get(), EPOLL_CTL_DEL, it->second->fd.get(), nullptr);
        retired.push_back(std::move(it->second));
        it = listeners.erase(it);
      }
      if (!started) retired.clear();
    }
    {
      std::lock_guard lk(cfg_mu);
      cfg = c;
    }
    cfg_gen.fetch_add(1, std::memory_order_release);
    stats.config_revision = c->revision();
    stats.redirects_http = c->redirectCount();
    stats.config_loads.fetch_add(1);
    return okStatus();
  }

  // --- loop ---------------------------------------------------------------
  void run() {
    std::vector<epoll_event> events(256);
    while (!stopping.load()) {
      {
        std::lock_guard lk(listeners_mu);
        retired.clear();
      }
      now = Clock::now();
      int timeout_ms = nextTimeoutMs();
      int n = epoll_wait(ep.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
      now = Clock::now();
      for (int i = 0; i < n; ++i) {
        uint64_t d = events[i].data.u64;
        uint64_t tag = d & 3;
        void* ptr = reinterpret_cast<void*>(d & ~uint64_t{3});
        if (tag == kTagWake) {
          uint64_t v;
          ssize_t r = ::read(wake.get(), &v, sizeof(v));
          (void)r;
          continue;
        }
        if (tag == kTagListener) {
          acceptAll(static_cast<ListenerSock*>(ptr));
          continue;
        }
        Conn* c = static_cast<Conn*>(ptr);
        if (c->dead) continue;
        if (tag == kTagClient) onClientEvent(c, events[i].events);
        else onUpstreamEvent(c, events[i].events);
      }
      expireTimers();
      reap();
      if (reset_peak.exchange(false)) pool.resetPeak();
      buffers_in_use.store(pool.inUse(), std::memory_order_relaxed);
      buffers_peak.store(pool.peakInUse(), std::memory_order_relaxed);
    }
    // Shutdown: close everything.
    while (Conn* c = idle.front()) destroy(c);
    reap();
  }

  int nextTimeoutMs() {
    Clock::time_point next = Clock::time_point::max();
    for (TimerList* t : {&idle, &hdr, &conn_timers})
      if (Conn* c = t->front()) next = std::min(next, t->link(c).deadline);
    if (next == Clock::time_point::max()) return 1000;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
    return static_cast<int>(std::clamp<long long>(ms, 0, 1000));
  }

  // The proxy ends the connection while the client may still be sending (a
  // closing error response, a close-delimited response, a tunnel's end):
  // send the FIN now, so the client sees the end of the response at once,
  // and read and discard until the client's EOF or linger_timeout. Closing
  // with unread bytes instead would send a reset, which fails the client's
  // pending send and can drop the response from its receive queue.
  void linger(Conn* c) {
    closeUpstream(c);
    hdr.disarm(c);
    c->cin.clear();
    c->parsed = 0;
    c->rs = ReqState::Done;
    if (::shutdown(c->cfd.get(), SHUT_WR) != 0) {
      destroy(c);
      return;
    }
    c->lingering = true;
    idle.arm(c, now + opts.linger_timeout);  // not extended by what arrives
    epollSet(c->cfd.get(), &c->cmask, EPOLLIN, tagOf(c, kTagClient));
  }

  void drainLingering(Conn* c, uint32_t events) {
    if (events & EPOLLERR) {
      destroy(c);
      return;
    }
    // MSG_TRUNC on TCP discards without copying. Bounded per event so one
    // fast sender cannot hold the loop; the rest comes with the next event.
    for (int i = 0; i < 16; ++i) {
      ssize_t n = ::recv(c->cfd.get(), nullptr, 1 << 20, MSG_TRUNC | MSG_DONTWAIT);
      if (n > 0) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      destroy(c);  // EOF (or error): the client has finished
      return;
    }
  }

  void expireTimers() {
    while (Conn* c = hdr.front()) {
      if (hdr.link(c).deadline > now) break;
      hdr.disarm(c);
      stats.timeouts_header.fetch_add(1);
      if (c->ringFull()) {
        destroy(c);
        continue;
      }
      pushLocal(c, 408, true);
      c->rs = ReqState::Done;
      c->cin.clear();
      c->parsed = 0;
      drive(c);
    }
    while (Conn* c = conn_timers.front()) {
      if (conn_timers.link(c).deadline > now) break;
      conn_timers.disarm(c);
      failUpstream(c, UpstreamError::Timeout);
      drive(c);
    }
    while (Conn* c = idle.front()) {
      if (idle.link(c).deadline > now) break;
      if (!c->lingering) stats.timeouts_idle.fetch_add(1);
      destroy(c);
    }
  }

  void acceptAll(ListenerSock* ls) {
    for (int i = 0; i < 128; ++i) {
      sockaddr_in peer{};
      socklen_t len = sizeof(peer);
      int fd = accept4(ls->fd.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or EMFILE (retried on the next wakeup)
      UniqueFd cfd(fd);
      if (conn_count >= opts.max_connections || peer.sin_family != AF_INET) {
        stats.connections_rejected.fetch_add(1);
        continue;
      }
      auto* c = new Conn(this, &pool, opts.limits, opts.max_pipelined);
      c->cfd = std::move(cfd);
      c->dir = ls->direction.load();
      c->client = peer;
      if (opts.original_dst_override) {
        c->odst = *opts.original_dst_override;
      } else {
        len = sizeof(c->odst);
        getsockname(c->cfd.get(), reinterpret_cast<sockaddr*>(&c->odst), &len);
      }
      int one = 1;
      setsockopt(c->cfd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tagOf(c, kTagClient);
      if (epoll_ctl(ep.get(), EPOLL_CTL_ADD, c->cfd.get(), &ev) != 0) {
        delete c;
        stats.connections_rejected.fetch_add(1);
        continue;
      }
      c->cmask = EPOLLIN;
      ++conn_count;
      stats.connections_accepted.fetch_add(1);
      stats.connections_active.fetch_add(1);
      touch(c);
    }
  }

  void touch(Conn* c) { idle.arm(c, now + opts.idle_timeout); }

  void destroy(Conn* c) {
    if (c->dead) return;
    c->dead = true;
    idle.disarm(c);
    hdr.disarm(c);
    conn_timers.disarm(c);
    if (c->cfd) epoll_ctl(ep.get(), EPOLL_CTL_DEL, c->cfd.get(), nullptr);
    if (c->ufd && c->u_polled) epoll_ctl(ep.get(), EPOLL_CTL_DEL, c->ufd.get(), nullptr);
    c->cfd.reset();
    c->ufd.reset();
    // Release buffers now so the pool sees them free at once.
    c->cin.clear();
    c->cout.clear();
    c->uin.clear();
    c->uout.clear();
    --conn_count;
    stats.connections_active.fetch_sub(1);
    graveyard.push_back(c);
  }

  void reap() {
    for (Conn* c : graveyard) delete c;
    graveyard.clear();
  }

  // --- I/O ------------------------------------------------------------------
  // Reads once into 'b'. Returns false on EOF or error (sets *eof/*err).
  static ssize_t readSome(int fd, Buffer& b) {
    size_t avail = 0;
    char* p = b.writePtr(&avail);
    ssize_t n = ::recv(fd, p, avail, 0);
    if (n > 0) b.commit(static_cast<size_t>(n));
    else if (b.empty()) b.clear();  // give an unused block back
    return n;
  }

  void onClientEvent(Conn* c, uint32_t events) {
    if (c->lingering) {
      drainLingering(c, events);
      return;
    }
    if (events & (EPOLLERR | EPOLLHUP)) {
      // Reset, or closed both ways: nothing can reach the client any more.
      if (c->rs == ReqState::Tunnel) flushUpstream(c);
      destroy(c);
      return;
    }
    if (events & EPOLLIN) {
      if (!c->c_eof && !c->cin.full()) {
        ssize_t n = readSome(c->cfd.get(), c->cin);
        if (n > 0) touch(c);
        else if (n == 0) c->c_eof = true;
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          destroy(c);
          return;
        }
      }
    }
    if (events & EPOLLOUT) flushClient(c);
    drive(c);
  }

  void onUpstreamEvent(Conn* c, uint32_t events) {
    if (c->us == UpState::Connecting) {
      if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(c->ufd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      conn_timers.disarm(c);
      if (err != 0) {
        stats.upstream_connect_errors.fetch_add(1);
        failUpstream(c, UpstreamError::ConnectFailed);
        drive(c);
        return;
      }
      c->us = UpState::Connected;
      touch(c);
    }
    if (c->us == UpState::Connected && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->u_eof && !c->uin.full()) {
      ssize_t n = readSome(c->ufd.get(), c->uin);
      if (n > 0) touch(c);
      else if (n == 0) c->u_eof = true;
      else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c->u_eof = true;  // reset: like EOF
    }
    if (c->us == UpState::Connected && (events & EPOLLOUT)) flushUpstream(c);
    drive(c);
  }

  void flushClient(Conn* c) {
    while (!c->cout.empty() && !c->dead) {
      ssize_t n = ::send(c->cfd.get(), c->cout.data(), c->cout.size(), MSG_NOSIGNAL);
      if (n > 0) {
        c->cout.consume(static_cast<size_t>(n));
        touch(c);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
      } else {
        destroy(c);  // the client is gone
        return;
      }
    }
  }

  void flushUpstream(Conn* c) {
    while (c->us == UpState::Connected && !c->uout.empty()) {
      ssize_t n = ::send(c->ufd.get(), c->uout.data(), c->uout.size(), MSG_NOSIGNAL);
      if (n > 0) {
        c->uout.consume(static_cast<size_t>(n));
        touch(c);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
      } else {
        failUpstream(c, UpstreamError::Reset);
        return;
      }
    }
  }

  // --- upstream -------------------------------------------------------------
  void startUpstream(Conn* c) {
    const Pending& e = c->back();
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      failUpstream(c, UpstreamError::ConnectFailed);
      return;
    }
    c->ufd.reset(fd);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (opts.transparent_upstream) {
      // The server must see the client's own address (as with Cilium), and the
      // datapath must recognise proxy traffic and its source identity.
      sockaddr_in src = c->client;
      src.sin_port = 0;
      uint32_t mark = upstreamMark(c->ingress_checked ? Direction::Ingress : c->dir, e.src_id);
      if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) != 0 ||
          setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
          setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0 ||
          ::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
        stats.upstream_connect_errors.fetch_add(1);
        failUpstream(c, UpstreamError::ConnectFailed);
        return;
      }
    }
    int r = ::connect(fd, reinterpret_cast<sockaddr*>(&c->odst), sizeof(c->odst));
    if (r != 0 && errno != EINPROGRESS) {
      stats.upstream_connect_errors.fetch_add(1);
      failUpstream(c, UpstreamError::ConnectFailed);
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = tagOf(c, kTagUpstream);
    epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev);
    c->umask = EPOLLOUT;
    c->u_polled = true;
    c->us = UpState::Connecting;
    c->u_eof = false;
    c->resp.reset();
    conn_timers.arm(c, now + opts.connect_timeout);
  }

  void closeUpstream(Conn* c) {
    if (c->ufd) {
      if (c->u_polled) epoll_ctl(ep.get(), EPOLL_CTL_DEL, c->ufd.get(), nullptr);
      c->ufd.reset();
    }
    conn_timers.disarm(c);
    c->us = UpState::None;
    c->umask = 0;
    c->u_polled = false;
    c->u_eof = false;
    c->uin.clear();
    c->uout.clear();
    c->resp.reset();
    // The rest of a request being forwarded now has nowhere to go: drop it.
    // Queued for the next upstream connection it would come first there, and
    // that server would read body bytes as requests nobody judged.
    if (c->rs == ReqState::ForwardHeaders || c->rs == ReqState::Body) c->cur_forward = false;
  }

  // closeUpstream() with a reset instead of a FIN: the server must not take
  // the request it has so far as complete.
  void abortUpstream(Conn* c) {
    if (c->ufd) {
      struct ::linger lg{1, 0};  // "::": Impl has a linger() of its own
      setsockopt(c->ufd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    closeUpstream(c);
  }

  // The upstream failed or went away: requests still waiting for an answer
  // get a local 503; a response already half sent cannot be repaired, so the
  // client connection then closes after what it already has.
  void failUpstream(Conn* c, UpstreamError err) {
    if (c->rs == ReqState::Tunnel) {
      closeUpstream(c);
      c->closing = true;
      c->rs = ReqState::Done;
      return;
    }
    closeUpstream(c);
    for (size_t i = 0; i < c->p_count; ++i) {
      Pending& e = c->at(i);
      if (!e.forward) continue;
      if (e.response_started) {
        c->closing = true;
        c->rs = ReqState::Done;
        e.forward = false;
        e.status = 0;  // nothing more to write for it
        continue;
      }
      e.forward = false;
      e.status = 503;
      e.error = err;
    }
  }

  // The upstream's close ended the response just forwarded (no length, not
  // chunked): only closing the client connection ends it for the client too,
  // so nothing may follow it. Requests pipelined behind it go unanswered on
  // this connection (logged: forwarded ones with the upstream_reset error).
  void endAfterCloseDelimited(Conn* c) {
    while (c->p_count > 0) {
      Pending& e = c->front();
      if (e.forward) {
        e.forward = false;
        e.status = 0;
        e.error = UpstreamError::Reset;
      }
      finishEntry(c, e, 0);
      c->pop();
    }
    c->closing = true;
    c->rs = ReqState::Done;
    c->cin.clear();
    c->parsed = 0;
  }

  // --- requests -------------------------------------------------------------
  void pushLocal(Conn* c, int status, bool close_after) {
    Pending& e = c->push();
    std::string url = std::move(e.url);  // keep the slot's capacity (no allocation)
    e = Pending{};
    e.url = std::move(url);
    e.status = status;
    e.close_after = close_after;
    e.start = now;
    e.method = {};
    buildAccessUrl(e.url, c->req.host(), c->odst, c->req.url());
    if (close_after) c->closing = true;
  }

  void onRequestHeaders(Conn* c) {
    const ProxyConfig& cfg = currentConfig();
    const MessageParser& rq = c->req;
    // Rules see the normalised target (message_parser.h), the upstream gets it.
    RequestView view{rq.method(), rq.target(), rq.host(), rq.headers(), rq.headerCount()};
    RequestDecision d = decideRequest(cfg, c->dir, c->client, c->odst, view);
    if (d.ingress_checked) c->ingress_checked = true;
    const Verdict& v = d.verdict;
    const uint32_t src_id = d.src_id, dst_id = d.dst_id;

    Pending& e = c->push();
    e.forward = v.allowed;
    e.status = v.allowed ? 0 : 403;
    e.error = UpstreamError::None;
    e.is_head = rq.isHead();
    e.is_connect = rq.isConnect();
    e.upgrade = rq.upgrade() || rq.isConnect();
    e.response_started = false;
    e.header_mismatch = v.header_mismatch_logged;
    e.method = rq.method();
    buildAccessUrl(e.url, rq.host(), c->odst, rq.target());
    e.cfg = loop_cfg;
    e.policy = v.policy;
    e.src_id = src_id;
    e.dst_id = dst_id;
    e.start = c->msg_start;
    e.sent = now;
    // A denied request announcing a body with "Expect: 100-continue" may never
    // send that body: close after the 403 instead of guessing. A request that
    // does not keep the connection alive closes it too.
    e.close_after = !v.allowed && (!rq.keepAlive() || (rq.expectContinue() && rq.hasBody()));
    stats.received.fetch_add(1, std::memory_order_relaxed);
    if (v.allowed) stats.forwarded.fetch_add(1, std::memory_order_relaxed);
    else stats.denied.fetch_add(1, std::memory_order_relaxed);
    c->cur_forward = v.allowed;
    logLine(c, e, /*response=*/false, 0);
    // The raw head is done with: the upstream gets the head re-serialised
    // from what the parser framed and the policy judged, never these bytes.
    c->cin.consume(c->parsed);
    c->parsed = 0;
    c->fwd_off = 0;
    if (v.allowed) rq.serializeHead(&c->fwd_head, v.edits);
    else c->fwd_head.clear();
    if (e.close_after) {
      c->closing = true;
      c->rs = ReqState::Done;
      c->cin.clear();
      c->parsed = 0;
      return;
    }
    c->rs = ReqState::ForwardHeaders;
    if (v.allowed && c->us == UpState::None) startUpstream(c);
  }

  bool processRequests(Conn* c) {
    switch (c->rs) {
      case ReqState::Headers: {
        if (c->closing || c->ringFull()) return false;
        if (c->parsed == c->cin.size()) {
          if (c->cin.empty()) return false;
          return false;
        }
        bool was_in = c->req.inMessage();
        auto step = c->req.execute(c->cin.data() + c->parsed, c->cin.size() - c->parsed);
        c->parsed += step.consumed;
        if (!was_in && c->req.inMessage()) {
          c->msg_start = now;
          hdr.arm(c, now + opts.header_timeout);
        }
        switch (step.event) {
          case MessageParser::Event::NeedMore:
            if (!c->req.inMessage()) {  // only CRLFs between messages
              c->cin.consume(c->parsed);
              c->parsed = 0;
            } else if (c->cin.full()) {
              parseError(c, 431);
              return true;
            }
            return step.consumed > 0;
          case MessageParser::Event::HeadersComplete:
            hdr.disarm(c);
            onRequestHeaders(c);
            return true;
          default:
            parseError(c, c->req.errorStatus() ? c->req.errorStatus() : 400);
            return true;
        }
      }
      case ReqState::ForwardHeaders: {
        size_t k = 0;
        if (c->cur_forward && c->fwd_off < c->fwd_head.size()) {
          k = c->uout.append(c->fwd_head.data() + c->fwd_off, c->fwd_head.size() - c->fwd_off);
          c->fwd_off += k;
          if (k) flushUpstream(c);
        }
        if (c->cur_forward && c->fwd_off < c->fwd_head.size()) return k > 0;  // upstream buffer full: wait
        c->rs = ReqState::Body;
        return true;
      }
      case ReqState::Body: {
        size_t n = c->cin.size();
        if (c->cur_forward) n = std::min(n, c->uout.freeSpace());
        auto step = c->req.execute(c->cin.data(), n);
        if (step.consumed) {
          if (c->cur_forward) {
            c->uout.append(c->cin.data(), step.consumed);
            c->cin.consume(step.consumed);
            flushUpstream(c);
          } else {
            c->cin.consume(step.consumed);
          }
        }
        switch (step.event) {
          case MessageParser::Event::NeedMore:
            return step.consumed > 0;
          case MessageParser::Event::MessageComplete:
            c->rs = ReqState::Headers;
            if (!c->req.keepAlive()) {
              c->closing = true;
              c->rs = ReqState::Done;
            }
            return true;
          case MessageParser::Event::Upgrade:
            if (c->cur_forward) {
              c->rs = ReqState::AwaitUpgrade;  // the server's answer decides
            } else {
              c->req.reset();  // denied: no tunnel, the connection speaks HTTP on
              c->rs = ReqState::Headers;
            }
            return true;
          default: {
            // Broken body framing. What was forwarded cannot be taken back,
            // but nothing after the error goes upstream: the upstream is
            // reset, and the client gets a 400 and a close in that request's
            // place (a reset when earlier answers were still due from the
            // same upstream connection).
            stats.parse_errors.fetch_add(1);
            Pending* cur = c->p_count > 0 ? &c->back() : nullptr;
            if (cur && cur->forward && !cur->response_started) {
              for (size_t i = 0; i + 1 < c->p_count; ++i) {
                if (c->at(i).forward) {
                  destroy(c);
                  return true;
                }
              }
              abortUpstream(c);
              cur->forward = false;
              cur->status = 400;
              cur->close_after = true;
            }
            c->closing = true;
            c->rs = ReqState::Done;
            c->cin.clear();
            return true;
          }
        }
      }
      case ReqState::Tunnel: {
        if (c->cin.empty() || c->us != UpState::Connected) return false;
        size_t k = c->uout.append(c->cin.data(), c->cin.size());
        c->cin.consume(k);
        if (k) flushUpstream(c);
        return k > 0;
      }
      case ReqState::AwaitUpgrade:
      case ReqState::Done:
        return false;
    }
    return false;
  }

  void parseError(Conn* c, int status) {
    hdr.disarm(c);
    stats.parse_errors.fetch_add(1);
    if (c->ringFull()) {
      destroy(c);
      return;
    }
    pushLocal(c, status, true);
    c->rs = ReqState::Done;
    c->cin.clear();
    c->parsed = 0;
  }

  // --- responses ------------------------------------------------------------
  bool writeLocal(Conn* c, Pending& e) {
    if (e.status == 0) return true;  // a cut-short forwarded response: nothing to add
    char buf[512];
    std::string_view body = localBody(e.status);
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %.*s\r\ncontent-length: %zu\r\ncontent-type: text/plain\r\n%s\r\n%.*s", e.status,
                     static_cast<int>(reason(e.status).size()), reason(e.status).data(), body.size(),
                     e.close_after ? "connection: close\r\n" : "",
                     // HEAD: the length a GET would get, no body (RFC 9110 9.3.2);
                     // a body here would be read as the start of the next response.
                     static_cast<int>(e.is_head ? 0 : body.size()), body.data());
    if (n <= 0 || static_cast<size_t>(n) > c->cout.freeSpace()) return false;
    c->cout.append(buf, static_cast<size_t>(n));
    return true;
  }

  void finishEntry(Conn* c, Pending& e, int status) {
    auto total = now - e.start;
    if (e.forward) {
      stats.observe(UpstreamError::None, Scope::TotalTime, total);
    } else if (e.error != UpstreamError::None) {
      stats.observe(e.error, Scope::TotalTime, total);
      stats.observe(e.error, Scope::UpstreamTime, now - e.sent);
    }
    logLine(c, e, /*response=*/true, status);
  }

  bool processResponses(Conn* c) {
    bool progress = false;
    if (c->rs == ReqState::Tunnel) {
      if (!c->uin.empty()) {
        size_t k = c->cout.append(c->uin.data(), c->uin.size());
        c->uin.consume(k);
        progress = k > 0;
      }
      return progress;
    }
    while (c->p_count > 0 && !c->dead) {
      Pending& f = c->front();
      if (!f.forward) {
        if (!writeLocal(c, f)) break;
        finishEntry(c, f, f.status);
        bool reset_parser = f.upgrade && c->rs == ReqState::AwaitUpgrade;
        bool close_after = f.close_after;
        c->pop();
        if (reset_parser) {  // denied upgrade: the connection speaks HTTP on
          c->req.reset();
          c->rs = ReqState::Headers;
        }
        if (close_after) c->closing = true;
        progress = true;
        continue;
      }
      if (c->uin.empty()) {
        if (c->u_eof) {
          if (c->resp.inMessage()) {
            auto step = c->resp.finish();
            if (step.event == MessageParser::Event::MessageComplete) {
              finishEntry(c, f, c->resp.status());
              c->pop();
              closeUpstream(c);
              endAfterCloseDelimited(c);
              progress = true;
              continue;
            }
          }
          failUpstream(c, UpstreamError::Reset);
          progress = true;
          continue;
        }
        break;
      }
      size_t n = std::min(c->uin.size(), c->cout.freeSpace());
      if (n == 0) break;
      c->resp.setRequestHint(f.is_head, f.is_connect);
      auto step = c->resp.execute(c->uin.data(), n);
      if (step.consumed) {
        if (!f.response_started) {
          f.response_started = true;
          stats.observe(UpstreamError::None, Scope::UpstreamTime, now - f.sent);
        }
        c->cout.append(c->uin.data(), step.consumed);
        c->uin.consume(step.consumed);
        progress = true;
      }
      if (step.event == MessageParser::Event::NeedMore) {
        if (step.consumed == 0) break;
        continue;
      }
      if (step.event == MessageParser::Event::MessageComplete) {
        int st = c->resp.status();
        if (st >= 100 && st < 200) continue;  // interim (100 Continue, 103): the real answer follows
        bool keep = c->resp.keepAlive();
        finishEntry(c, f, st);
        c->pop();
        if (c->rs == ReqState::AwaitUpgrade && c->p_count == 0) {  // upgrade declined by the server
          c->req.reset();
          c->rs = ReqState::Headers;
        }
        if (!keep) {
          closeUpstream(c);
          failUpstream(c, UpstreamError::Reset);  // pipelined requests the server will not answer
        }
        progress = true;
        continue;
      }
      if (step.event == MessageParser::Event::Upgrade) {
        finishEntry(c, f, c->resp.status());
        c->pop();
        c->rs = ReqState::Tunnel;  // both directions are raw bytes from here on
        return true;
      }
      // Malformed response from the upstream.
      failUpstream(c, UpstreamError::Reset);
      progress = true;
    }
    if (c->p_count == 0 && c->us != UpState::None && (!c->uin.empty() || c->u_eof)) {
      closeUpstream(c);  // bytes nobody asked for, or an idle upstream that closed
      progress = true;
    }
    return progress;
  }

  // Runs both directions until nothing moves, then writes, updates epoll
  // interest and closes the connection when it is finished.
  void drive(Conn* c) {
    for (int guard = 0; guard < 1024 && !c->dead; ++guard) {
      bool p = processRequests(c);
      if (c->dead) return;
      p |= processResponses(c);
      if (c->dead) return;
      if (!c->cout.empty()) flushClient(c);
      if (c->dead) return;
      if (!p) break;
    }
    if (c->rs == ReqState::Tunnel) {
      // No half-close in a tunnel: once one side ends, deliver what the other
      // side still has to receive, then close both.
      if (c->u_eof && c->uin.empty() && c->us != UpState::None) {
        closeUpstream(c);
        c->closing = true;
      }
      if (c->us == UpState::None && c->cout.empty()) {
        destroy(c);
        return;
      }
      if (c->c_eof && c->cin.empty() && c->uout.empty()) {
        destroy(c);
        return;
      }
    } else if (c->c_eof) {
      // Client EOF: answer what is pending, then close.
      bool unprocessed = (c->rs == ReqState::Headers && c->parsed < c->cin.size()) || c->rs == ReqState::ForwardHeaders ||
                         (c->rs == ReqState::Body && !c->cin.empty());
      if (!unprocessed && c->rs != ReqState::AwaitUpgrade) {
        if (c->rs == ReqState::Body && c->cur_forward) {
          destroy(c);  // a forwarded request cut short
          return;
        }
        c->closing = true;
        c->rs = ReqState::Done;
      }
    }
    if (c->closing && c->p_count == 0 && c->cout.empty()) {
      if (c->c_eof) destroy(c);  // everything the client sent was read
      else linger(c);
      return;
    }
    // Interest: read only while there is room (backpressure), write while
    // something is queued.
    uint32_t cm = 0;
    if (!c->c_eof && !c->cin.full() && c->rs != ReqState::Done) cm |= EPOLLIN;
    if (!c->cout.empty()) cm |= EPOLLOUT;
    epollSet(c->cfd.get(), &c->cmask, cm, tagOf(c, kTagClient));
    if (c->ufd && c->u_eof && c->u_polled) {
      // EOF seen: stop polling (EPOLLHUP cannot be masked); what is left in
      // uin is driven by the client's events.
      epoll_ctl(ep.get(), EPOLL_CTL_DEL, c->ufd.get(), nullptr);
      c->u_polled = false;
    }
    if (c->ufd && c->u_polled) {
      uint32_t um = 0;
      if (c->us == UpState::Connecting) {
        um = EPOLLOUT;
      } else {
        if (!c->u_eof && !c->uin.full()) um |= EPOLLIN;
        if (!c->uout.empty()) um |= EPOLLOUT;
      }
      epollSet(c->ufd.get(), &c->umask, um, tagOf(c, kTagUpstream));
    }
  }

  // --- access log -----------------------------------------------------------
  void logLine(Conn* c, const Pending& e, bool response, int status) {
    if (!log.active()) return;
    const std::string time = nowRfc3339();
    const int64_t latency_us =
        response ? std::chrono::duration_cast<std::chrono::microseconds>(now - e.start).count() : 0;
    log.publish(formatAccessRecord(
        accessRecordOf(e, directionName(c->dir), time, c->client, c->odst, response, status, latency_us)));
  }
};

Proxy::Proxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Proxy::~Proxy() { stop(); }

Result<std::unique_ptr<Proxy>> Proxy::create(ProxyOptions opts) {
  if (opts.buffer_size <= opts.limits.max_header_bytes + 1024)
    return Error::invalid("proxy: buffer_size must exceed max_header_bytes + 1024");
  if (opts.max_pipelined == 0) return Error::invalid("proxy: max_pipelined must be positive");
  auto impl = std::make_unique<Impl>(std::move(opts));
  impl->ep.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!impl->ep) return Error::fromErrno(errno, "proxy: epoll_create1");
  impl->wake.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!impl->wake) return Error::fromErrno(errno, "proxy: eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagWake;
  epoll_ctl(impl->ep.get(), EPOLL_CTL_ADD, impl->wake.get(), &ev);
  return std::unique_ptr<Proxy>(new Proxy(std::move(impl)));
}

Status Proxy::applyConfig(std::shared_ptr<const ProxyConfig> cfg) {
  if (!cfg) return Error::invalid("proxy: null config");
  return impl_->apply(std::move(cfg));
}

std::shared_ptr<const ProxyConfig> Proxy::config() const {
  std::lock_guard lk(impl_->cfg_mu);
  return impl_->cfg;
}

Status Proxy::start() {
  std::lock_guard lk(impl_->listeners_mu);
  if (impl_->started) return Error::invalid("proxy: already started");
  impl_->started = true;
  impl_->thread = std::thread([this] { impl_->run(); });
  return okStatus();
}

void Proxy::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->stopping = true;
  uint64_t one = 1;
  ssize_t r = ::write(impl_->wake.get(), &one, sizeof(one));
  (void)r;
  impl_->thread.join();
}

uint16_t Proxy::boundPort(uint16_t configured_port, Direction d) const {
  std::lock_guard lk(impl_->listeners_mu);
  Listener l{configured_port, d};
  auto it = impl_->listeners.find(Impl::keyOf(l));
  return it == impl_->listeners.end() ? 0 : it->second->bound;
}

ProxyStats& Proxy::stats() { return impl_->stats; }
AccessLog& Proxy::accessLog() { return impl_->log; }
size_t Proxy::buffersInUse() const { return impl_->buffers_in_use.load(); }
size_t Proxy::buffersPeak() const { return impl_->buffers_peak.load(); }
void Proxy::resetBufferPeak() {
  impl_->reset_peak = true;
  uint64_t one = 1;
  ssize_t r = ::write(impl_->wake.get(), &one, sizeof(one));
  (void)r;
}

}  // namespace membrane::proxy
