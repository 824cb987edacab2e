// HttpClient: HTTP/1.1 client of membraned's unix socket (used by the CLI and
// by tests).
//
// Keeps one connection open across request() calls (keep-alive) and
// reconnects transparently when the server closed it in between. Reads
// Content-Length, chunked and read-until-close responses.
//
// Thread-safety: none; one HttpClient per thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "membrane/result.h"
#include "membrane/unique_fd.h"
#include "src/api/http_message.h"

namespace membrane::api {

class HttpClient {
 public:
  // 'timeout' bounds each request() from sending to the last byte of the answer.
  explicit HttpClient(std::string socket_path, std::chrono::milliseconds timeout = std::chrono::seconds(120));

  // Sends one request (Content-Length body, Content-Type application/json when
  // non-empty) and returns the server's answer, whatever its status. Errors
  // only for transport failures: when the agent cannot be reached the message
  // is "cannot reach membraned at <path>: <strerror> — is the agent running? ...".
  Result<Response> request(std::string_view method, std::string_view target, std::string_view body = "");

  // GETs 'target' on a fresh connection and calls on_line for every line of
  // the (chunked) answer, without the trailing '\n'. Returns when the server
  // ends the stream (ok), when on_line returns false (ok), or on a transport
  // error. A non-2xx answer becomes an Error carrying the server's "error".
  Status stream(std::string_view target, const std::function<bool(std::string_view line)>& on_line);

  const std::string& socketPath() const { return path_; }

 private:
  Result<UniqueFd> connectSocket() const;
  Result<Response> requestOnce(std::string_view method, std::string_view target, std::string_view body,
                               bool* retryable);

  std::string path_;
  std::chrono::milliseconds timeout_;
  UniqueFd fd_;  // kept-alive connection, invalid when none
};

// The message shown when the agent's socket cannot be connected to.
std::string unreachableMessage(const std::string& path, int err);

}  // namespace membrane::api
