// The proxy's epoll loop: one thread, every listener and connection
// (proxy_impl.h). Dispatches each event to its listener or connection, fires
// the timers, and ends each batch by freeing what it destroyed.
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {

const ProxyConfig& Proxy::Impl::currentConfig() {
  uint64_t g = cfg_gen.load(std::memory_order_acquire);
  if (g != loop_gen) {
    MutexLock lk(cfg_mu);
    loop_cfg = cfg;
    loop_gen = g;
  }
  return *loop_cfg;
}

void Proxy::Impl::epollSet(int fd, uint32_t* cur, uint32_t want, uint64_t tag) {
  if (*cur == want) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = tag;
  epoll_ctl(ep.get(), EPOLL_CTL_MOD, fd, &ev);
  *cur = want;
}

void Proxy::Impl::run() {
  std::vector<epoll_event> events(256);
  while (!stopping.load()) {
    {
      MutexLock lk(listeners_mu);
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
  for (TimerList* t : {&idle, &linger_timers})
    while (Conn* c = t->front()) destroy(c);
  reap();
}

void Proxy::Impl::wakeLoop() {
  uint64_t one = 1;
  ssize_t r = ::write(wake.get(), &one, sizeof(one));
  (void)r;
}

int Proxy::Impl::nextTimeoutMs() {
  Clock::time_point next = Clock::time_point::max();
  for (TimerList* t : {&idle, &linger_timers, &hdr, &conn_timers})
    if (Conn* c = t->front()) next = std::min(next, t->link(c).deadline);
  if (next == Clock::time_point::max()) return 1000;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
  return static_cast<int>(std::clamp<long long>(ms, 0, 1000));
}

void Proxy::Impl::expireTimers() {
  while (Conn* c = hdr.front()) {
    if (hdr.link(c).deadline > now) break;
    stats.timeouts_header.fetch_add(1);
    rejectRequest(c, 408);
    if (!c->dead) drive(c);
  }
  while (Conn* c = conn_timers.front()) {
    if (conn_timers.link(c).deadline > now) break;
    conn_timers.disarm(c);
    failUpstream(c, UpstreamError::Timeout);
    drive(c);
  }
  while (Conn* c = idle.front()) {
    if (idle.link(c).deadline > now) break;
    stats.timeouts_idle.fetch_add(1);
    destroy(c);
  }
  while (Conn* c = linger_timers.front()) {
    if (linger_timers.link(c).deadline > now) break;
    destroy(c);  // the client never ended its side: not an idle timeout
  }
}

void Proxy::Impl::reap() {
  for (Conn* c : graveyard) delete c;
  graveyard.clear();
}

}  // namespace membrane::proxy
