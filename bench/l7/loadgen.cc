// loadgen: a small open-loop (fixed-rate) HTTP/1.1 load generator for bench/l7/run.sh.
//
//   loadgen --url http://IP[:PORT]/PATH --rate R --seconds D [--connections K]
//           [--timeout-ms T] [--drain-ms M]
//
// Sends R requests/s in total for D seconds (exactly R*D requests, GET, keep-alive) over K
// connections, one request in flight per connection. Request i is *intended* at
// start + i/R; if every connection is busy it waits in a FIFO and is sent as soon as one frees
// up, and its latency is still measured from the intended time (no coordinated omission, as
// wrk2 does it). A request unanswered after T ms (default 2000) counts as a timeout and its
// connection is reopened. After D s, in-flight requests get M ms (default 2000) to finish;
// requests never answered by then count as timeouts, never-sent ones as "unsent".
// Bounded: at most 1,000,000 requests/s, 120 s, 1000 connections; the process always stops.
//
// Output (stdout, one line of JSON): counts (sent, ok = 2xx, non2xx, errors, timeouts,
// unsent), achieved_rps, and latency percentiles p50/p90/p99/p999/max in microseconds over
// every answered request (2xx and non-2xx), exact (sorted samples, nearest rank).
// Exit status: 0 if the run completed (even with errors: the caller judges), 2 on bad usage,
// 1 if the target cannot be reached at all.
//
// Single thread, epoll + timerfd (absolute CLOCK_MONOTONIC deadlines, 1 ns timer slack) so
// sends are not quantised to epoll_wait's milliseconds.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "membrane/result.h"

#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "loadgen_core.h"

namespace {

using membrane::bench::parseUrl;
using membrane::bench::percentile;
using membrane::bench::ResponseFramer;
using membrane::bench::Schedule;

uint64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "loadgen: %s\nusage: loadgen --url http://IP[:PORT]/PATH --rate R --seconds D "
               "[--connections K] [--timeout-ms T] [--drain-ms M]\n"
               "  R 1..1000000 requests/s in total, D 1..120 s, K 1..1000 (default 16), "
               "T 1..60000 (default 2000), M 0..60000 (default 2000)\n",
               why);
  std::exit(2);
}

uint64_t parseNum(const char* flag, const char* s, uint64_t lo, uint64_t hi) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    std::string m = std::string(flag) + ": '" + s + "' is not an integer in " + std::to_string(lo) + ".." +
                    std::to_string(hi);
    usage(m.c_str());
  }
  return v;
}

struct Conn {
  int fd = -1;
  bool connected = false;
  bool busy = false;
  uint64_t intended_ns = 0;  // of the request in flight
  uint64_t sent_ns = 0;
  size_t out_off = 0;        // bytes of the request already written
  ResponseFramer framer;
};

struct Stats {
  uint64_t sent = 0, ok = 0, non2xx = 0, errors = 0, timeouts = 0, unsent = 0;
  std::vector<uint64_t> lat_ns;
};

class LoadGen {
 public:
  LoadGen(sockaddr_in addr, std::string request, Schedule sched, size_t conns, uint64_t timeout_ns,
          uint64_t drain_ns)
      : addr_(addr), request_(std::move(request)), sched_(sched), conns_(conns), timeout_ns_(timeout_ns),
        drain_ns_(drain_ns) {}

  ~LoadGen() {
    for (Conn& c : conns_)
      if (c.fd >= 0) close(c.fd);
    if (tfd_ >= 0) close(tfd_);
    if (ep_ >= 0) close(ep_);
  }

  int run(Stats* st) {
    st_ = st;
    st_->lat_ns.reserve(sched_.count());
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    tfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ep_ < 0 || tfd_ < 0) return perr("epoll_create1/timerfd_create");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = UINT64_MAX;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, tfd_, &ev) < 0) return perr("epoll_ctl timerfd");
    for (size_t i = 0; i < conns_.size(); ++i)
      if (!open(i)) return 1;
    // Wait for every connection before the clock starts: connect time is not request latency,
    // and a target that refuses connections is a setup error, not a measurement.
    uint64_t deadline = nowNs() + 5000000000ULL;
    while (!allConnected()) {
      if (nowNs() > deadline) {
        std::fprintf(stderr, "loadgen: could not connect %zu connections to the target within 5 s\n",
                     conns_.size());
        return 1;
      }
      if (!poll(deadline)) return 1;
      if (fatal_) return 1;
    }
    start_ns_ = nowNs();
    const uint64_t send_end = start_ns_ + sched_.intendedNs(sched_.count() ? sched_.count() - 1 : 0);
    const uint64_t hard_end = send_end + drain_ns_;
    while (true) {
      uint64_t now = nowNs();
      uint64_t due = sched_.dueBy(now - start_ns_);
      while (next_ < due) pending_.push_back(start_ns_ + sched_.intendedNs(next_++));
      dispatch(now);
      expire(now);
      if (fatal_) return 1;
      if (next_ == sched_.count() && pending_.empty() && inFlight() == 0) break;
      if (now >= hard_end) break;
      uint64_t wake = hard_end;
      if (next_ < sched_.count()) wake = std::min(wake, start_ns_ + sched_.intendedNs(next_));
      for (const Conn& c : conns_)
        if (c.busy) wake = std::min(wake, c.intended_ns + timeout_ns_);
      if (!poll(wake)) return 1;
    }
    end_ns_ = nowNs();
    for (const Conn& c : conns_)
      if (c.busy) ++st_->timeouts;
    st_->unsent = pending_.size() + (sched_.count() - next_);
    return 0;
  }

  uint64_t elapsedNs() const { return end_ns_ - start_ns_; }

 private:
  int perr(const char* what) {
    std::fprintf(stderr, "loadgen: %s: %s\n", what, membrane::errnoText(errno).c_str());
    return 1;
  }
  bool allConnected() const {
    for (const Conn& c : conns_)
      if (!c.connected) return false;
    return true;
  }
  size_t inFlight() const {
    size_t n = 0;
    for (const Conn& c : conns_) n += c.busy;
    return n;
  }

  bool open(size_t i) {
    Conn& c = conns_[i];
    if (c.fd >= 0) close(c.fd);
    c = Conn{};
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return perr("socket") == 0;
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_) < 0 && errno != EINPROGRESS) {
      char m[96];
      std::snprintf(m, sizeof m, "connect to %s:%u", inet_ntoa(addr_.sin_addr), ntohs(addr_.sin_port));
      perr(m);
      return false;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.u64 = i;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) < 0) return perr("epoll_ctl") == 0;
    return true;
  }

  // A connection broke or timed out: the request in flight (if any) is accounted by the
  // caller; reopen so the configured concurrency stays K.
  void reopen(size_t i) {
    if (!open(i)) fatal_ = true;
  }

  void dispatch(uint64_t now) {
    for (size_t i = 0; i < conns_.size() && !pending_.empty(); ++i) {
      Conn& c = conns_[i];
      if (!c.connected || c.busy) continue;
      c.busy = true;
      c.intended_ns = pending_.front();
      pending_.pop_front();
      c.sent_ns = now;
      c.out_off = 0;
      c.framer.reset();
      ++st_->sent;
      writeMore(i);
    }
  }

  void writeMore(size_t i) {
    Conn& c = conns_[i];
    while (c.out_off < request_.size()) {
      ssize_t n = send(c.fd, request_.data() + c.out_off, request_.size() - c.out_off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN) return;  // EPOLLOUT continues it
        ++st_->errors;
        reopen(i);
        return;
      }
      c.out_off += static_cast<size_t>(n);
    }
  }

  void expire(uint64_t now) {
    for (size_t i = 0; i < conns_.size(); ++i) {
      Conn& c = conns_[i];
      if (c.busy && now >= c.intended_ns + timeout_ns_) {
        ++st_->timeouts;
        reopen(i);
      }
    }
  }

  void onReadable(size_t i) {
    Conn& c = conns_[i];
    char buf[16384];
    while (true) {
      ssize_t n = recv(c.fd, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {  // closed or reset
        if (c.busy) ++st_->errors;
        reopen(i);
        return;
      }
      if (n < 0) return;
      if (!c.busy) {  // bytes nobody asked for: the stream is out of sync
        ++st_->errors;
        reopen(i);
        return;
      }
      size_t used = 0;
      auto s = c.framer.feed(buf, static_cast<size_t>(n), &used);
      if (s == ResponseFramer::State::Incomplete) continue;
      if (s == ResponseFramer::State::Error || used != static_cast<size_t>(n)) {
        if (s == ResponseFramer::State::Error && !reported_framing_) {
          std::fprintf(stderr, "loadgen: bad response: %s\n", c.framer.error().c_str());
          reported_framing_ = true;
        }
        ++st_->errors;
        reopen(i);
        return;
      }
      uint64_t t = nowNs();
      st_->lat_ns.push_back(t - c.intended_ns);
      if (c.framer.status() >= 200 && c.framer.status() < 300)
        ++st_->ok;
      else
        ++st_->non2xx;
      c.busy = false;
      if (!c.framer.keepAlive()) {
        reopen(i);
        return;
      }
      // Hand the freed connection the oldest waiting request right away.
      dispatch(t);
      return;
    }
  }

  // Waits for events until `deadline_ns` (absolute). False on a syscall failure.
  bool poll(uint64_t deadline_ns) {
    itimerspec its{};
    uint64_t d = std::max<uint64_t>(deadline_ns, 1);
    its.it_value.tv_sec = static_cast<time_t>(d / 1000000000ULL);
    its.it_value.tv_nsec = static_cast<long>(d % 1000000000ULL);
    if (timerfd_settime(tfd_, TFD_TIMER_ABSTIME, &its, nullptr) < 0) return perr("timerfd_settime") == 0;
    epoll_event evs[64];
    int n = epoll_wait(ep_, evs, 64, 1000);
    if (n < 0) {
      if (errno == EINTR) return true;
      return perr("epoll_wait") == 0;
    }
    for (int k = 0; k < n; ++k) {
      if (evs[k].data.u64 == UINT64_MAX) {
        uint64_t x;
        (void)!read(tfd_, &x, sizeof x);
        continue;
      }
      size_t i = evs[k].data.u64;
      Conn& c = conns_[i];
      if (!c.connected && (evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
          if (start_ns_ == 0) {  // still connecting the initial set: the target is unreachable
            std::fprintf(stderr, "loadgen: connect to %s:%u: %s\n", inet_ntoa(addr_.sin_addr),
                         ntohs(addr_.sin_port), membrane::errnoText(err).c_str());
            fatal_ = true;
            return true;
          }
          ++st_->errors;
          reopen(i);
          continue;
        }
        c.connected = true;
        // From now on only readability matters unless a send is short.
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u64 = i;
        epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
        if (start_ns_ != 0) dispatch(nowNs());
        continue;
      }
      if (evs[k].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) onReadable(i);
      if (conns_[i].busy && conns_[i].out_off < request_.size()) writeMore(i);
    }
    return true;
  }

  sockaddr_in addr_;
  std::string request_;
  Schedule sched_;
  std::vector<Conn> conns_;
  uint64_t timeout_ns_, drain_ns_;
  int ep_ = -1, tfd_ = -1;
  uint64_t start_ns_ = 0, end_ns_ = 0, next_ = 0;
  std::deque<uint64_t> pending_;  // intended times of due, not yet sent requests (FIFO)
  Stats* st_ = nullptr;
  bool fatal_ = false;
  bool reported_framing_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  const char* url = nullptr;
  uint64_t rate = 0, seconds = 0, conns = 16, timeout_ms = 2000, drain_ms = 2000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf(
          "loadgen: open-loop (fixed-rate) HTTP/1.1 GET load generator (bench/l7/run.sh --half-load)\n"
          "usage: loadgen --url http://IP[:PORT]/PATH --rate R --seconds D [--connections K]\n"
          "               [--timeout-ms T] [--drain-ms M]\n"
          "Sends exactly R*D requests, request i intended at start + i/R, over K keep-alive\n"
          "connections (one in flight each; due requests wait in a FIFO). Latency is measured from\n"
          "the intended send time, so a stall is charged to every request it delays.\n"
          "Prints one JSON line: sent ok non2xx errors timeouts unsent achieved_rps\n"
          "p50_us p90_us p99_us p999_us max_us. Limits: R<=1000000, D<=120, K<=1000.\n");
      return 0;
    }
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--url") url = v;
    else if (a == "--rate") rate = parseNum("--rate", v, 1, 1000000);
    else if (a == "--seconds") seconds = parseNum("--seconds", v, 1, 120);
    else if (a == "--connections") conns = parseNum("--connections", v, 1, 1000);
    else if (a == "--timeout-ms") timeout_ms = parseNum("--timeout-ms", v, 1, 60000);
    else if (a == "--drain-ms") drain_ms = parseNum("--drain-ms", v, 0, 60000);
    else usage(("unknown flag " + a).c_str());
  }
  if (!url || !rate || !seconds) usage("--url, --rate and --seconds are required");
  // Every latency sample is kept (exact percentiles): 8 bytes each, so cap the total at 20 M.
  if (rate * seconds > 20000000) usage("--rate * --seconds must be <= 20000000 requests");
  auto u = parseUrl(url);
  if (!u) usage("--url must look like http://10.0.0.2:8080/path");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(u->port);
  if (inet_pton(AF_INET, u->host.c_str(), &addr.sin_addr) != 1)
    usage("--url: the host must be an IPv4 address (no DNS in a benchmark)");
  // Default timer slack (50 us) would delay every timerfd wake-up by up to 50 us: the error
  // we are trying to measure.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  std::string req = "GET " + u->path + " HTTP/1.1\r\nHost: " + u->host +
                    (u->port != 80 ? ":" + std::to_string(u->port) : std::string()) +
                    "\r\nUser-Agent: membrane-loadgen\r\nAccept: */*\r\n\r\n";
  Stats st;
  LoadGen g(addr, req, Schedule(rate, rate * seconds), conns, timeout_ms * 1000000ULL, drain_ms * 1000000ULL);
  if (g.run(&st) != 0) return 1;
  std::sort(st.lat_ns.begin(), st.lat_ns.end());
  auto us = [&](double q) { return static_cast<double>(percentile(st.lat_ns, q)) / 1000.0; };
  double secs = static_cast<double>(g.elapsedNs()) / 1e9;
  std::printf(
      "{\"rate\": %llu, \"seconds\": %llu, \"connections\": %llu, \"sent\": %llu, \"ok\": %llu, "
      "\"non2xx\": %llu, \"errors\": %llu, \"timeouts\": %llu, \"unsent\": %llu, \"achieved_rps\": %.1f, "
      "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f}\n",
      (unsigned long long)rate, (unsigned long long)seconds, (unsigned long long)conns,
      (unsigned long long)st.sent, (unsigned long long)st.ok, (unsigned long long)st.non2xx,
      (unsigned long long)st.errors, (unsigned long long)st.timeouts, (unsigned long long)st.unsent,
      secs > 0 ? static_cast<double>(st.ok + st.non2xx) / secs : 0.0, us(0.5), us(0.9), us(0.99), us(0.999),
      us(1.0));
  return 0;
}
