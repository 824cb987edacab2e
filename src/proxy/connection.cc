// A client connection's lifecycle (idle timer, lingering close, destroy), its
// client-side I/O, and drive(): the step that runs the request and response
// sides (requests.cc, responses.cc) and sets epoll interest from the result.
#include <sys/epoll.h>
#include <sys/socket.h>

#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {

ssize_t readSome(int fd, Buffer& b) {
  size_t avail = 0;
  char* p = b.writePtr(&avail);
  ssize_t n = ::recv(fd, p, avail, 0);
  if (n > 0) b.commit(static_cast<size_t>(n));
  else if (b.empty()) b.clear();  // give an unused block back
  return n;
}

bool sendQueued(int fd, Buffer& b, bool* sent) {
  while (!b.empty()) {
    ssize_t n = ::send(fd, b.data(), b.size(), MSG_NOSIGNAL);
    if (n > 0) {
      b.consume(static_cast<size_t>(n));
      *sent = true;
    } else if (n < 0 && wouldBlock(errno)) {
      return true;
    } else {
      return false;
    }
  }
  return true;
}

void Proxy::Impl::touch(Conn* c) { idle.arm(c, now + opts.idle_timeout); }

void Proxy::Impl::destroy(Conn* c) {
  if (c->dead) return;
  c->dead = true;
  idle.disarm(c);
  linger_timers.disarm(c);
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

// The proxy ends the connection while the client may still be sending (a
// closing error response, a close-delimited response, a tunnel's end):
// send the FIN now, so the client sees the end of the response at once,
// and read and discard until the client's EOF or linger_timeout. Closing
// with unread bytes instead would send a reset, which fails the client's
// pending send and can drop the response from its receive queue.
void Proxy::Impl::linger(Conn* c) {
  closeUpstream(c);
  hdr.disarm(c);
  c->stopRequests();
  if (::shutdown(c->cfd.get(), SHUT_WR) != 0) {
    destroy(c);
    return;
  }
  c->lingering = true;
  // Its own list: on the idle list this deadline would wait behind the
  // (longer) idle deadlines armed before it.
  idle.disarm(c);
  linger_timers.arm(c, now + opts.linger_timeout);  // not extended by what arrives
  epollSet(c->cfd.get(), &c->cmask, EPOLLIN, tagOf(c, kTagClient));
}

void Proxy::Impl::drainLingering(Conn* c, uint32_t events) {
  if (events & EPOLLERR) {
    destroy(c);
    return;
  }
  // MSG_TRUNC on TCP discards without copying. Bounded per event so one
  // fast sender cannot hold the loop; the rest comes with the next event.
  for (int i = 0; i < 16; ++i) {
    ssize_t n = ::recv(c->cfd.get(), nullptr, 1 << 20, MSG_TRUNC | MSG_DONTWAIT);
    if (n > 0) continue;
    if (n < 0 && wouldBlock(errno)) return;
    destroy(c);  // EOF (or error): the client has finished
    return;
  }
}

void Proxy::Impl::onClientEvent(Conn* c, uint32_t events) {
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
      else if (!wouldBlock(errno)) {
        destroy(c);
        return;
      }
    }
  }
  if (events & EPOLLOUT) flushClient(c);
  drive(c);
}

void Proxy::Impl::flushClient(Conn* c) {
  if (c->dead) return;
  bool sent = false;
  bool ok = sendQueued(c->cfd.get(), c->cout, &sent);
  if (sent) touch(c);
  if (!ok) destroy(c);  // the client is gone
}

void Proxy::Impl::drive(Conn* c) {
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

}  // namespace membrane::proxy
