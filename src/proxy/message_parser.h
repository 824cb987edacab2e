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
#include <string>
#include <string_view>
#include <vector>

#include "src/proxy/config.h"

namespace membrane::proxy {

struct ParserLimits {
  size_t max_header_bytes = 16 * 1024;
  size_t max_headers = 100;
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
  std::string_view url() const { return url_; }
  std::string_view host() const;  // Host header, "" when absent
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
  int addHeaderBytes(size_t n);
  HeaderField& currentField();

  Kind kind_;
  ParserLimits limits_;
  llhttp_settings_t settings_;
  llhttp_t parser_;
  Event pending_ = Event::NeedMore;
  bool in_message_ = false, headers_done_ = false, in_value_ = false;
  bool hint_head_ = false, hint_connect_ = false;
  size_t header_bytes_ = 0;
  std::string url_;
  std::vector<HeaderField> fields_;
  size_t nfields_ = 0;
  uint8_t method_ = 0;
  int status_ = 0, major_ = 1, minor_ = 1;
  bool keep_alive_ = true, expect_continue_ = false, has_body_ = false, upgrade_ = false;
  int error_status_ = 0;
  std::string_view error_reason_;
};

}  // namespace membrane::proxy
