// Conn: the state of one proxied client connection, its upstream connection
// and the requests awaiting their responses (proxy_impl.h drives it).
//
// Ownership: Proxy::Impl creates a Conn on accept (listeners.cc), and it
// lives until destroy() (connection.cc) closes its sockets, gives its buffers
// back and queues it for deletion at the end of the event batch (reap()), so
// events already fetched for it see 'dead' instead of freed memory.
//
// Thread-safety: none; a Conn belongs to the loop thread.
#pragma once

#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "membrane/unique_fd.h"
#include "src/proxy/buffer.h"
#include "src/proxy/config.h"
#include "src/proxy/message_parser.h"
#include "src/proxy/stats.h"
#include "src/proxy/timer_list.h"

namespace membrane::proxy {

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

// Where the client's byte stream is: reading a request head, sending the
// allowed head upstream, passing (or dropping) its body, waiting for the
// server's answer to an upgrade, a raw tunnel, or no more requests.
enum class ReqState { Headers, ForwardHeaders, Body, AwaitUpgrade, Tunnel, Done };
enum class UpState { None, Connecting, Connected };

struct Conn {
  Conn(BufferPool* pool, const ParserLimits& limits, size_t ring)
      : cin(pool), cout(pool), uin(pool), uout(pool),
        req(MessageParser::Kind::Request, limits), resp(MessageParser::Kind::Response, limits), pending(ring) {}

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
  std::vector<Pending> pending;  // ring of max_pipelined entries, allocated once
  size_t p_head = 0, p_count = 0;
  TimerLink idle_link, linger_link, hdr_link, conn_link;

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

  // No more requests are read on this connection: what the client sent and
  // the parser has not turned into a request yet is dropped.
  void stopRequests() {
    rs = ReqState::Done;
    cin.clear();
    parsed = 0;
  }
  // After an upgrade that did not happen (denied, or declined by the server):
  // the connection speaks HTTP on.
  void resumeHttp() {
    req.reset();
    rs = ReqState::Headers;
  }
};

}  // namespace membrane::proxy
