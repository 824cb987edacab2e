// A connection's upstream side: the connection to the original destination
// (transparent: the client's source address and the proxy mark), relaying
// the bytes queued for it, and what happens to pending requests when it
// closes, resets or never connects.
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {

uint32_t upstreamMark(Direction d, uint32_t identity) {
  return mb_mark_encode(d == Direction::Ingress ? kMarkProxyIngress : kMarkProxyEgress, identity);
}

void Proxy::Impl::startUpstream(Conn* c) {
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

void Proxy::Impl::onUpstreamEvent(Conn* c, uint32_t events) {
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
    else if (!wouldBlock(errno)) c->u_eof = true;  // reset: like EOF
  }
  if (c->us == UpState::Connected && (events & EPOLLOUT)) flushUpstream(c);
  drive(c);
}

void Proxy::Impl::flushUpstream(Conn* c) {
  if (c->us != UpState::Connected) return;
  bool sent = false;
  bool ok = sendQueued(c->ufd.get(), c->uout, &sent);
  if (sent) touch(c);
  if (!ok) failUpstream(c, UpstreamError::Reset);
}

void Proxy::Impl::closeUpstream(Conn* c) {
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
void Proxy::Impl::abortUpstream(Conn* c) {
  if (c->ufd) {
    struct ::linger lg{1, 0};  // "::": Impl has a linger() of its own
    setsockopt(c->ufd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  closeUpstream(c);
}

// The upstream failed or went away: requests still waiting for an answer
// get a local 503; a response already half sent cannot be repaired, so the
// client connection then closes after what it already has.
void Proxy::Impl::failUpstream(Conn* c, UpstreamError err) {
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

}  // namespace membrane::proxy
