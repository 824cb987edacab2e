// Listening sockets: opened and closed as configs come and go (control
// threads, Proxy::applyConfig), and the loop's accept of new connections.
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <string>
#include <vector>

#include <fmt/format.h>

#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {

uint32_t Proxy::Impl::keyOf(const Listener& l) {
  return l.port ? l.port : 0x10000u | static_cast<uint32_t>(l.direction);
}

Result<std::unique_ptr<ListenerSock>> Proxy::Impl::openListener(const Listener& l) {
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

Status Proxy::Impl::apply(std::shared_ptr<const ProxyConfig> c) {
  MutexLock alk(apply_mu);
  std::vector<std::unique_ptr<ListenerSock>> opened;
  {
    MutexLock lk(listeners_mu);
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
    MutexLock lk(cfg_mu);
    cfg = c;
  }
  cfg_gen.fetch_add(1, std::memory_order_release);
  stats.config_revision = c->revision();
  stats.redirects_http = c->redirectCount();
  stats.config_loads.fetch_add(1);
  return okStatus();
}

void Proxy::Impl::acceptAll(ListenerSock* ls) {
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
    auto* c = new Conn(&pool, opts.limits, opts.max_pipelined);
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

}  // namespace membrane::proxy
