// HttpServer: a small HTTP/1.1 server on a unix stream socket (the REST API of
// membraned; see docs/api.md).
//
// - One thread per connection, at most ServerOptions::max_connections at once;
//   a connection beyond the cap gets 503 and is closed. Every read and write
//   waits with poll() on the socket and on a stop eventfd, so a stalled client
//   only holds its own thread, never another, and stop() is never blocked.
// - Keep-alive (HTTP/1.1 default, "Connection: close" honoured), Content-Length
//   and chunked request bodies, "Expect: 100-continue".
// - Errors are JSON {"error", "code"}: 400 malformed (connection closed), 404,
//   405 (+ Allow), 408 request not complete within read_timeout, 413 body over
//   max_body_bytes, 431 request line + headers over max_header_bytes, 500 a
//   handler threw, 503 too many connections.
// - Streaming routes answer "Transfer-Encoding: chunked" and close the
//   connection when the handler returns.
//
// Thread-safety: route()/routeStream() only before start(); start()/stop() from
// one controlling thread; handlers run concurrently on connection threads and
// must do their own locking.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "membrane/result.h"
#include "membrane/unique_fd.h"
#include "src/api/http_message.h"
#include "src/api/router.h"

namespace membrane::api {

struct ServerOptions {
  size_t max_body_bytes = 4u << 20;
  size_t max_header_bytes = 64u << 10;
  size_t max_connections = 64;
  // Time allowed to receive one whole request (also the keep-alive idle time).
  std::chrono::milliseconds read_timeout{30000};
  // Time a single write may wait for the client to drain its socket.
  std::chrono::milliseconds write_timeout{30000};
  mode_t socket_mode = 0660;
};

// Handed to a streaming handler; writes one chunk per call. Used only on the
// connection's own thread (not thread-safe).
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  // Sends 'line' (a '\n' is appended unless present) as one chunk. false once
  // the client is gone, a write timed out or the server is stopping; the
  // handler should then return.
  virtual bool write(std::string_view line) = 0;
  // Non-blocking: false when the client has closed its end or the server is
  // stopping. Lets a handler that waits for data notice a gone client.
  virtual bool alive() = 0;
};

class HttpServer {
 public:
  explicit HttpServer(std::string socket_path, ServerOptions opts = {});
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void route(std::string method, std::string pattern, Handler handler);
  void routeStream(std::string method, std::string pattern, StreamHandler handler);

  // Creates the parent directory (0755) if missing, removes a stale socket
  // file (only when nothing answers on it), binds, chmods to socket_mode,
  // listens and starts the accept thread. Errors: "another membraned is
  // already serving <path>", a non-socket file in the way, bind/permission
  // failures. Calling start() twice is an error.
  Status start();
  // Idempotent. Closes the listener, wakes every connection and streaming
  // handler (their writes fail, alive() turns false), joins all threads and
  // removes the socket file if it is still the one this server bound.
  // Non-streaming handlers that are running are waited for.
  void stop();

  const std::string& socketPath() const { return path_; }
  // Connections open right now / accepted since start (for tests and metrics).
  size_t activeConnections() const;
  uint64_t acceptedConnections() const { return accepted_.load(); }

 private:
  struct Connection;
  void acceptLoop();
  void reapFinished(bool all);
  void serveConnection(Connection& c);

  std::string path_;
  ServerOptions opts_;
  Router router_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;  // eventfd, readable once stop() begins
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> accepted_{0};
  bool started_ = false;
  bool stopped_ = false;
  dev_t sock_dev_ = 0;
  ino_t sock_ino_ = 0;
  std::thread accept_thread_;
  mutable std::mutex conns_mu_;
  std::list<std::unique_ptr<Connection>> conns_;
};

}  // namespace membrane::api
