// The request side of a connection's HTTP state machine (ReqState): frames
// the client's requests, has each head decided (decideRequest), queues its
// answer in pipeline order (Pending), and forwards an allowed request's
// re-serialised head and body to the upstream, or drops a denied one's.
#include <algorithm>
#include <string>
#include <utility>

#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {

void Proxy::Impl::pushLocal(Conn* c, int status, bool close_after) {
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

void Proxy::Impl::onRequestHeaders(Conn* c) {
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
    c->stopRequests();
    return;
  }
  c->rs = ReqState::ForwardHeaders;
  if (v.allowed && c->us == UpState::None) startUpstream(c);
}

bool Proxy::Impl::processRequests(Conn* c) {
  switch (c->rs) {
    case ReqState::Headers: {
      if (c->closing || c->ringFull()) return false;
      if (c->parsed == c->cin.size()) return false;
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
            c->resumeHttp();  // denied: no tunnel
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
          c->stopRequests();
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

void Proxy::Impl::rejectRequest(Conn* c, int status) {
  hdr.disarm(c);
  if (c->ringFull()) {
    destroy(c);
    return;
  }
  pushLocal(c, status, true);
  c->stopRequests();
}

void Proxy::Impl::parseError(Conn* c, int status) {
  stats.parse_errors.fetch_add(1);
  rejectRequest(c, status);
}

}  // namespace membrane::proxy
