// The response side of a connection's HTTP state machine: answers the
// pending requests strictly in pipeline order, with a local response (403,
// 400, 408, 431, 503) or the upstream's response relayed byte for byte as
// its parser frames it, and the tunnel's upstream-to-client direction.
#include <algorithm>
#include <cstdio>
#include <string_view>

#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {
namespace {

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

bool Proxy::Impl::writeLocal(Conn* c, Pending& e) {
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

// The upstream's close ended the response just forwarded (no length, not
// chunked): only closing the client connection ends it for the client too,
// so nothing may follow it. Requests pipelined behind it go unanswered on
// this connection (logged: forwarded ones with the upstream_reset error).
void Proxy::Impl::endAfterCloseDelimited(Conn* c) {
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
  c->stopRequests();
}

bool Proxy::Impl::processResponses(Conn* c) {
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
      if (reset_parser) c->resumeHttp();  // denied upgrade
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
      if (c->rs == ReqState::AwaitUpgrade && c->p_count == 0) c->resumeHttp();  // upgrade declined by the server
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

}  // namespace membrane::proxy
