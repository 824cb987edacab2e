// MessageParser: incremental HTTP/1.1 message parser on top of llhttp, shared
// by HttpServer (requests) and HttpClient (responses). Internal to src/api.
//
// feed() consumes bytes until one message is complete, then stops (the rest
// belongs to the next, pipelined message); next() prepares for it. Limits are
// enforced while parsing, before anything is buffered beyond them.
// Thread-safety: none (one parser per connection).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "src/api/http_message.h"

namespace membrane::api {

class MessageParser {
 public:
  enum class Type { Request, Response };
  enum class State { Incomplete, Complete, Error };

  struct Limits {
    size_t max_header_bytes = 64u << 10;
    size_t max_body_bytes = 4u << 20;
  };

  MessageParser(Type type, Limits limits);
  ~MessageParser();
  MessageParser(const MessageParser&) = delete;
  MessageParser& operator=(const MessageParser&) = delete;

  // Parses as much of 'data' as belongs to the current message; returns the
  // number of bytes consumed (< data.size() only when the message completed
  // or on error).
  size_t feed(std::string_view data);
  // The peer closed: completes a read-until-close body, else an error if a
  // message was begun. Returns state().
  State finish();
  // Resets for the next message on the same connection (after Complete).
  void next();

  State state() const { return state_; }
  bool started() const { return started_; }
  // On Error: the HTTP status to answer (400, 413, 431) and a message.
  int errorStatus() const { return error_status_; }
  const std::string& errorMessage() const { return error_message_; }
  // True once headers asked for "Expect: 100-continue" (requests only).
  bool expectsContinue() const { return expect_continue_; }
  bool headersComplete() const { return headers_complete_; }
  // After Complete: whether the connection may carry another message.
  bool keepAlive() const { return keep_alive_; }

  // When set, body bytes are passed here instead of being accumulated (no body
  // limit applies then); returning false stops parsing with an error.
  std::function<bool(std::string_view)> on_body;

  // The message (valid after Complete; header fields also after headersComplete()).
  std::string method;
  std::string url;
  int status = 0;
  Headers headers;
  std::string body;

 private:
  struct Impl;
  friend struct Impl;
  std::unique_ptr<Impl> impl_;
  Type type_;
  Limits limits_;
  State state_ = State::Incomplete;
  bool started_ = false;
  bool headers_complete_ = false;
  bool expect_continue_ = false;
  bool keep_alive_ = false;
  int error_status_ = 0;
  std::string error_message_;
  size_t header_bytes_ = 0;
  std::string field_;
  std::string value_;
};

}  // namespace membrane::api
