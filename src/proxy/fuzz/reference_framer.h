// A second HTTP/1.1 request framer, written from RFC 9112's grammar alone
// and sharing nothing with MessageParser or llhttp, for the fuzz target's
// differential check: the bytes membrane-proxy forwards upstream must frame,
// under this independent reading, into exactly the requests its policy
// decided on (same heads, same body boundaries, nothing extra). A server that
// frames the forwarded bytes differently from the policy is how request
// smuggling gets past an L7 rule.
//
// Strict on purpose: request-line = method SP request-target SP HTTP-version
// CRLF; field-line = field-name ":" OWS field-value OWS CRLF (no obs-fold);
// Content-Length = 1*DIGIT once; Transfer-Encoding exactly "chunked" once and
// not with Content-Length; chunk = chunk-size [ chunk-ext ] CRLF chunk-data
// CRLF; last-chunk, trailer fields, CRLF.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace membrane::proxy {

struct FramedRequest {
  std::string_view head;  // request line through the empty line, CRLFs included
  size_t body_raw = 0;    // bytes of the message after the head (chunk framing included)
};

enum class FrameResult {
  Complete,    // the stream ends exactly at a message boundary
  Incomplete,  // the last message needs more bytes (the ones before it are in *out)
  Invalid,     // a message breaks the grammar; *why says where
};

FrameResult frameRequests(std::string_view stream, std::vector<FramedRequest>* out, std::string* why);

}  // namespace membrane::proxy
