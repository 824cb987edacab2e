// MessageParser: incremental HTTP/1.x message framing over llhttp for the
// proxy. It never copies bodies: the caller feeds raw bytes, learns how many
// belong to the current message and forwards exactly those bytes itself.
//
// execute() stops at the events the proxy acts on:
// - HeadersComplete (requests only): the bytes consumed so far in this message
//   are its request line + headers; method()/url()/headers() are valid.
// - MessageComplete: the message (with body, chunk framing, trailers) ended
//   at the returned position. For a response, status() tells an interim 1xx.
// - Upgrade: MessageComplete of a message that switches protocols (request
//   with Upgrade/CONNECT, response 101 or 2xx to CONNECT); everything after is
//   no longer HTTP. Call reset() to parse HTTP again (upgrade declined).
// - Error: malformed input (errorStatus() 400) or a limit exceeded (431).
//   The parser stays in error until reset().
//
// Requests are held to RFC 9112 strictly, because the proxy's verdict is only
// worth something if the server frames the bytes exactly as the policy saw
// them. llhttp runs in its strict mode (CRLF after chunk data and chunk sizes,
// LF after every CR, no whitespace before ':', URL bytes), and at the end of
// the head checkHead() refuses what llhttp still lets through (and the same
// line rules hold for the trailer section of a chunked request): obs-fold, bare
// CR/LF, a request line that is not exactly "METHOD SP target SP HTTP/1.x",
// HTTP versions other than 1.0/1.1, no Host (HTTP/1.1) or two Host fields, a
// Host with bytes no authority has, two Content-Length fields,
// Transfer-Encoding other than exactly "chunked" or on HTTP/1.0, CONNECT, and
// request targets normalizeTarget() refuses (http_path.h). A refused request
// is an Error 400 at HeadersComplete: nothing of it has been handed out yet.
// target() is the normalised target the rules match, and serializeHead()
// writes the head the upstream gets from what was parsed, never the raw bytes.
//
// Limits: request line/status line + headers at most max_header_bytes (names,
// values, URL, plus 4 bytes per field for ": " and CRLF), at most max_headers
// fields. No allocation in steady state: strings and the field table are
// reused from message to message.
//
// Thread-safety: none (one per connection direction).
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "src/proxy/config.h"
#include "src/proxy/http_path.h"

namespace membrane::proxy {

struct ParserLimits {
  size_t max_header_bytes = 16 * 1024;
  size_t max_headers = 100;
  EscapedSlashes escaped_slashes = EscapedSlashes::Reject;  // "%2F"/"%5C" in request paths
};

class MessageParser {
 public:
  enum class Kind { Request, Response };
  enum class Event { NeedMore, HeadersComplete, MessageComplete, Upgrade, Error };
  struct Step {
    Event event;
    size_t consumed;  // bytes of the input that belong to the stream up to the event
  };

  MessageParser(Kind kind, ParserLimits limits);
  MessageParser(const MessageParser&) = delete;
  MessageParser& operator=(const MessageParser&) = delete;

  Step execute(const char* data, size_t len);
  // End of input. Completes a read-until-close response body (MessageComplete);
  // Error when a message is cut short; NeedMore when between messages.
  Step finish();
  // Back to "between messages" with a fresh llhttp state.
  void reset();

  // Response parsing: how to frame the body of the response being parsed
  // (set before its headers complete). HEAD: no body; CONNECT: 2xx upgrades.
  void setRequestHint(bool head, bool connect) {
    hint_head_ = head;
    hint_connect_ = connect;
  }

  bool inMessage() const { return in_message_; }
  bool inHeaders() const { return in_message_ && !headers_done_; }

  // Valid from HeadersComplete (requests) / MessageComplete (responses) until
  // the next message begins.
  std::string_view method() const;
  bool isHead() const;
  bool isConnect() const;
  std::string_view url() const { return url_; }  // the request target as sent
  // The normalised request target ("/path[?query]", origin-form even for an
  // absolute-form request): what L7 rules match and the access log shows.
  std::string_view target() const { return norm_.target; }
  std::string_view host() const;  // Host header (the one; trimmed), "" when absent
  // The request head for the upstream: request line with the normalised
  // target (absolute-form kept as "http://authority/..."), every field as
  // "Name: value" (OWS trimmed), final CRLF. Valid at HeadersComplete.
  // 'edits' (Verdict::edits) are applied in order: DELETE drops every field
  // of its name, REPLACE drops them and appends "name: value", ADD appends
  // "name: value". The config refuses edits of framing fields, so the edited
  // head frames exactly as the parsed one.
  void serializeHead(std::string* out, std::span<const HeaderMatch* const> edits = {}) const;
  const HeaderField* headers() const { return fields_.data(); }
  size_t headerCount() const { return nfields_; }
  int status() const { return status_; }
  int versionMajor() const { return major_; }
  int versionMinor() const { return minor_; }
  bool keepAlive() const { return keep_alive_; }
  bool expectContinue() const { return expect_continue_; }
  bool hasBody() const { return has_body_; }
  bool upgrade() const { return upgrade_; }
  // 400 malformed, 431 limits; 0 when no error.
  int errorStatus() const { return error_status_; }
  std::string_view errorReason() const { return error_reason_; }

 private:
  static int onMessageBegin(llhttp_t* p);
  static int onUrl(llhttp_t* p, const char* at, size_t len);
  static int onStatus(llhttp_t* p, const char* at, size_t len);
  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValueComplete(llhttp_t* p);
  static int onHeadersComplete(llhttp_t* p);
  static int onMessageComplete(llhttp_t* p);
  static int onChunkHeader(llhttp_t* p);
  int addHeaderBytes(size_t n);
  HeaderField& currentField();
  // RFC 9112 checks on the complete request head (head_); "" when it passes.
  std::string_view checkHead();
  // Checks the complete lines of trailer_ not checked yet; "" when they pass.
  // *bad_line is set to the offset in trailer_ of the line that failed.
  std::string_view checkTrailerLines(size_t* bad_line);

  Kind kind_;
  ParserLimits limits_;
  llhttp_settings_t settings_;
  llhttp_t parser_;
  Event pending_ = Event::NeedMore;
  bool in_message_ = false, headers_done_ = false, in_value_ = false;
  bool hint_head_ = false, hint_connect_ = false;
  size_t header_bytes_ = 0;
  std::string url_;
  std::string head_;  // raw bytes of the request head being parsed (requests only)
  // The trailer section of a chunked request: the bytes after the last-chunk
  // line, checked line by line as they arrive (llhttp lets a bare LF end it).
  bool in_trailers_ = false, trailer_pause_ = false;
  std::string trailer_;
  size_t trailer_checked_ = 0;
  TargetNormal norm_;
  std::vector<HeaderField> fields_;
  size_t nfields_ = 0;
  uint8_t method_ = 0;
  int status_ = 0, major_ = 1, minor_ = 1;
  bool keep_alive_ = true, expect_continue_ = false, has_body_ = false, upgrade_ = false;
  int error_status_ = 0;
  std::string_view error_reason_;
};

}  // namespace membrane::proxy
