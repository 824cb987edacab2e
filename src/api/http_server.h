// HttpServer: a small HTTP/1.1 server on a unix stream socket (the REST API of
// membraned; see docs/api.md).
//
// - One epoll event loop thread does all socket I/O (accept, read, parse,
//   write) for up to ServerOptions::max_connections connections; a connection
//   beyond the cap gets 503 and is closed. Ordinary handlers (which may block,
//   e.g. on the agent lock) run on a fixed pool of ServerOptions::workers
//   threads fed by the loop, never on the loop thread; requests of one
//   connection are answered in order (pipelining), one at a time.
// - Keep-alive (HTTP/1.1 default, "Connection: close" honoured), Content-Length
//   and chunked request bodies, "Expect: 100-continue".
// - Errors are JSON {"error", "code"}: 400 malformed (connection closed), 404,
//   405 (+ Allow), 408 request not complete within read_timeout, 413 body over
//   max_body_bytes, 431 request line + headers over max_header_bytes, 500 a
//   handler threw, 503 too many connections.
// - Streaming routes answer "Transfer-Encoding: chunked", one chunk per line,
//   and close the connection when the stream ends. Event-driven streams
//   (routeStream with an AsyncStreamHandler) hold no thread: producers push
//   lines into the client's bounded buffer from any thread; when it is full
//   lines are dropped and counted, and the client gets {"type":"lost","lost":N}
//   before the next line it receives. A client that closes (EPOLLRDHUP/HUP) or
//   does not drain its socket within write_timeout ends its stream at once.
// - Deferred routes (route with a DeferredHandler) answer later through
//   PendingResponse, holding no thread while they wait.
// - stop() is never blocked by a client: it closes every connection, ends
//   every stream and waits only for handlers that are running.
//
// Thread-safety: route()/routeStream() only before start(); start()/stop() from
// one controlling thread; handlers run concurrently on worker threads and
// must do their own locking. StreamWriter and PendingResponse are thread-safe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
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

namespace detail {
struct ServerShared;  // the loop's inbox, shared with StreamWriter/PendingResponse (http_server.cc)
}

struct ServerOptions {
  size_t max_body_bytes = 4u << 20;
  size_t max_header_bytes = 64u << 10;
  // Open connections (streams included); one more is answered 503 and closed.
  size_t max_connections = 4096;
  // Threads running ordinary handlers (and stream/deferred handlers' setup).
  size_t workers = 4;
  // Bytes (chunk framing included) one stream may have queued and unsent
  // beyond its socket buffer; lines that do not fit are dropped and counted.
  size_t stream_buffer_bytes = 1u << 20;
  // Time allowed to receive one whole request (also the keep-alive idle time).
  std::chrono::milliseconds read_timeout{30000};
  // Time a single write may wait for the client to drain its socket.
  std::chrono::milliseconds write_timeout{30000};
  mode_t socket_mode = 0660;
};

// The output of one streaming response. Every method is thread-safe; none
// runs user code while holding the writer's lock except as noted.
class StreamWriter {
 public:
  enum class Push { Queued, Dropped, Closed };
  virtual ~StreamWriter() = default;
  // Queues 'line' (a '\n' is appended unless present) as one chunk; never
  // blocks. Dropped: the client's buffer (ServerOptions::stream_buffer_bytes)
  // has no room; the line is counted and the client receives
  // {"type":"lost","lost":N} before the next line it gets. Closed: the stream
  // has ended (client gone, server stopping, close() called).
  virtual Push push(std::string_view line) = 0;
  // Like push() but waits (up to write_timeout) for room instead of dropping;
  // false once the stream ended or the wait timed out. Blocks: only for the
  // thread-held StreamHandler, never on a thread that others wait for.
  virtual bool write(std::string_view line) = 0;
  // Ends the stream: queued lines are still sent, then the last chunk, then
  // the connection is closed. Idempotent.
  virtual void close() = 0;
  // false once the stream ended or close() was called.
  virtual bool alive() = 0;
  // Lines dropped on this stream so far.
  virtual uint64_t lost() const = 0;
  // 'fn' runs exactly once when the stream ends for any reason (client gone,
  // server stopping, close() completed), on a worker thread; if it has already
  // ended, fn runs before onClose returns, on the caller's thread. Set it at
  // most once. Do not call push()/close() of this stream from fn.
  virtual void onClose(std::function<void()> fn) = 0;
};

// The answer of a deferred request. Thread-safe.
class PendingResponse {
 public:
  virtual ~PendingResponse() = default;
  // Sends 'r' (the connection stays open per keep-alive as usual). The first
  // call wins: true if this call completed it, false when already completed,
  // expired or the client is gone. Never blocks.
  virtual bool complete(Response r) = 0;
  // Not completed yet and the client still connected.
  virtual bool pending() const = 0;
  // If still pending after 'after', 'fn' runs on a worker thread and its
  // response is sent. Call at most once (later calls are ignored).
  virtual void expireAfter(std::chrono::milliseconds after, std::function<Response()> fn) = 0;
};

class HttpServer {
 public:
  explicit HttpServer(std::string socket_path, ServerOptions opts = {});
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void route(std::string method, std::string pattern, Handler handler);
  // A deferred route: the handler runs on a worker and may answer later.
  void route(std::string method, std::string pattern, DeferredHandler handler);
  // A thread-held stream: the handler runs on a thread of its own until it returns.
  void routeStream(std::string method, std::string pattern, StreamHandler handler);
  // An event-driven stream: the handler runs on a worker, registers the
  // writer and returns; the stream stays open until close() or the client leaves.
  void routeStream(std::string method, std::string pattern, AsyncStreamHandler handler);

  // Creates the parent directory (0755) if missing, removes a stale socket
  // file (only when nothing answers on it), binds, chmods to socket_mode,
  // listens and starts the event loop and worker threads. Errors: "another membraned is
  // already serving <path>", a non-socket file in the way, bind/permission
  // failures. Calling start() twice is an error.
  Status start();
  // Idempotent. Closes the listener and every connection, ends every stream
  // (push() returns Closed, onClose callbacks run), drops pending deferred
  // answers, joins all threads and removes the socket file if it is still the
  // one this server bound. Handlers that are running are waited for.
  void stop();

  const std::string& socketPath() const { return path_; }
  // Connections open right now / accepted since start (for tests and metrics).
  size_t activeConnections() const { return active_.load(); }
  uint64_t acceptedConnections() const { return accepted_.load(); }

 private:
  class Loop;
  class Workers;

  std::string path_;
  ServerOptions opts_;
  Router router_;
  UniqueFd listen_fd_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<size_t> active_{0};
  bool started_ = false;
  bool stopped_ = false;
  dev_t sock_dev_ = 0;
  ino_t sock_ino_ = 0;
  // Outlives the server when handlers keep a StreamWriter/PendingResponse.
  std::shared_ptr<detail::ServerShared> shared_;
  std::unique_ptr<Workers> workers_;
  std::unique_ptr<Loop> loop_;
  std::thread loop_thread_;
};

}  // namespace membrane::api
