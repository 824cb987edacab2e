// Proxy::Impl: the parts of the proxy behind proxy.h, for its own .cc files.
//
// One file per responsibility; each group of declarations below names its file:
//   proxy.cc            the public Proxy API (any thread) on top of this
//   listeners.cc        listening sockets from the config (control threads), accept (loop)
//   event_loop.cc       the epoll loop: event dispatch, timers, end-of-batch work
//   connection.cc       a connection's lifecycle, client-side I/O and drive()
//   requests.cc         the request side of the HTTP state machine: parse, decide, forward
//   responses.cc        the answers in pipeline order: local responses, relayed upstream ones
//   upstream.cc         the upstream connection: connect, relay I/O, close, failure
//   request_log.cc      what a finished request leaves: latency histograms, access-log records
//   request_decision.cc decideRequest(), the policy decision (pure)
//
// Threads: the loop thread runs every method except the ones marked "control
// thread", which run on whatever thread calls Proxy::applyConfig() etc.
// State the loop thread alone touches is in LoopState; everything else in Impl
// is shared and says what guards it. The loop takes two locks: cfg_mu after
// a config change (a pointer copy), and listeners_mu once per batch to free
// retired listeners (apply() holds it while it opens sockets).
#pragma once

#include <sys/epoll.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "membrane/mutex.h"
#include "membrane/unique_fd.h"
#include "src/proxy/buffer.h"
#include "src/proxy/connection.h"
#include "src/proxy/proxy.h"
#include "src/proxy/timer_list.h"

namespace membrane::proxy {

// epoll_event.data.u64: an object pointer (8-byte aligned) with what it is in
// the low two bits.
constexpr uint64_t kTagClient = 0, kTagUpstream = 1, kTagListener = 2, kTagWake = 3;
inline uint64_t tagOf(void* p, uint64_t tag) { return reinterpret_cast<uint64_t>(p) | tag; }

// errno after a failed non-blocking recv/send that is no failure: try again
// on the next event.
inline bool wouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// One recv() into 'b' (connection.cc); returns recv()'s result. A buffer that
// stays empty gives its block back to the pool.
ssize_t readSome(int fd, Buffer& b);
// send()s what 'b' holds until it is empty or the socket's buffer is full.
// Returns false when the socket failed (the peer is gone); *sent: bytes went out.
bool sendQueued(int fd, Buffer& b, bool* sent);

// A listening socket. Created and retired by a control thread (under
// listeners_mu); the loop reads it on accept, so a removed one is freed by the
// loop (Impl::retired), never while an event for it may be in hand.
struct ListenerSock {
  UniqueFd fd;
  uint32_t key = 0;
  uint16_t bound = 0;
  std::atomic<Direction> direction{Direction::Ingress};
};

// The loop thread's own state: every connection and what serves them. The
// seam for a multi-worker proxy: one LoopState (with its own epoll set) per
// worker thread, the shared part of Impl once. Today there is one, and Impl
// derives from it so the loop's methods name its members directly.
struct LoopState {
  explicit LoopState(size_t buffer_size)
      : pool(buffer_size),
        idle(&Conn::idle_link),
        linger_timers(&Conn::linger_link),
        hdr(&Conn::hdr_link),
        conn_timers(&Conn::conn_link) {}

  std::shared_ptr<const ProxyConfig> loop_cfg;  // the config requests are decided with (currentConfig())
  uint64_t loop_gen = 0;                        // Impl::cfg_gen that loop_cfg was taken at
  BufferPool pool;
  // One list per timeout, so each list's head is its next deadline (timer_list.h).
  // Every live connection is on exactly one of idle (idle_timeout, re-armed by
  // traffic) and linger_timers (linger_timeout from linger(), not extended);
  // hdr: first byte of a request head -> end of head; conn_timers: upstream connect.
  TimerList idle, linger_timers, hdr, conn_timers;
  std::vector<Conn*> graveyard;  // destroyed in this event batch, deleted by reap()
  size_t conn_count = 0;
  Clock::time_point now;  // taken after each epoll_wait: one clock read per batch
};

struct Proxy::Impl : LoopState {
  explicit Impl(ProxyOptions o) : LoopState(o.buffer_size), opts(std::move(o)) {}

  // --- shared with other threads -------------------------------------------
  const ProxyOptions opts;
  ProxyStats stats;  // atomics: the loop writes, anyone reads
  AccessLog log;     // thread-safe (access_log.h)
  // epoll set: the loop waits on it and (de)registers connections; control
  // threads add and remove listeners (epoll_ctl is thread-safe).
  UniqueFd ep;
  UniqueFd wake;  // eventfd in 'ep': wakes the loop for stop() and resetBufferPeak()
  std::thread thread;  // the loop; started and joined by the controlling thread
  std::atomic<bool> stopping{false};
  // Pool figures the loop publishes after every event batch (Proxy::buffers*()).
  std::atomic<size_t> buffers_in_use{0}, buffers_peak{0};
  std::atomic<bool> reset_peak{false};

  // --- config, shared with control threads --------------------------------
  mutable Mutex cfg_mu;
  std::shared_ptr<const ProxyConfig> cfg GUARDED_BY(cfg_mu) = ProxyConfig::empty();
  // Bumped after every change of 'cfg', so the loop takes cfg_mu only then.
  std::atomic<uint64_t> cfg_gen{1};
  Mutex apply_mu;  // serialises apply()
  mutable Mutex listeners_mu;
  std::map<uint32_t, std::unique_ptr<ListenerSock>> listeners GUARDED_BY(listeners_mu);  // by keyOf()
  std::vector<std::unique_ptr<ListenerSock>> retired GUARDED_BY(listeners_mu);  // freed by the loop
  bool started GUARDED_BY(listeners_mu) = false;

  // --- listeners.cc ---------------------------------------------------------
  // The listeners map key: the configured port, or the direction for port 0.
  static uint32_t keyOf(const Listener& l);
  // Control thread: a bound, listening socket for 'l' (not yet in epoll).
  Result<std::unique_ptr<ListenerSock>> openListener(const Listener& l);
  // Control thread: Proxy::applyConfig() (its contract is in proxy.h).
  Status apply(std::shared_ptr<const ProxyConfig> c);
  // Accepts what is queued on 'ls' (bounded per event): a Conn per connection,
  // registered for client reads, idle timer armed.
  void acceptAll(ListenerSock* ls);

  // --- event_loop.cc --------------------------------------------------------
  void run();  // the loop thread's body, until 'stopping'; then closes every connection
  // The config for the next request; takes cfg_mu only after a change.
  const ProxyConfig& currentConfig();
  // EPOLL_CTL_MOD of 'fd' to 'want' unless *cur already is; updates *cur.
  void epollSet(int fd, uint32_t* cur, uint32_t want, uint64_t tag);
  int nextTimeoutMs();  // until the earliest timer, at most 1 s
  // header: 408 + close; connect: failUpstream(Timeout); idle, linger: destroy
  void expireTimers();
  void reap();          // deletes the graveyard
  // Any thread: makes the loop run a batch soon (to see 'stopping', 'reset_peak').
  void wakeLoop();

  // --- connection.cc --------------------------------------------------------
  void onClientEvent(Conn* c, uint32_t events);
  void flushClient(Conn* c);  // writes cout; destroy() when the client is gone
  // Runs both directions until nothing moves, then writes, updates epoll
  // interest and closes the connection when it is finished. May destroy 'c'.
  void drive(Conn* c);
  void touch(Conn* c);  // re-arms the idle timer
  // Closes both sockets now and queues 'c' for reap(); idempotent.
  void destroy(Conn* c);
  // FIN to the client, then discard its bytes until EOF or linger_timeout
  // (moves 'c' from the idle list to linger_timers).
  void linger(Conn* c);
  void drainLingering(Conn* c, uint32_t events);

  // --- requests.cc ----------------------------------------------------------
  // Moves the client's bytes along in state c->rs; true when something moved.
  bool processRequests(Conn* c);
  // A complete request head: decide, queue its Pending, start the upstream.
  void onRequestHeaders(Conn* c);
  // Queues a local answer 'status' (close_after: then close the connection).
  void pushLocal(Conn* c, int status, bool close_after);
  // The request being read cannot be served: a closing local 'status' in its
  // place and no further requests (destroy() when the ring has no room).
  void rejectRequest(Conn* c, int status);
  void parseError(Conn* c, int status);  // rejectRequest(), counted as a parse error

  // --- responses.cc ---------------------------------------------------------
  // Answers pending requests in order into cout; true when something moved.
  bool processResponses(Conn* c);
  bool writeLocal(Conn* c, Pending& e);  // false: no room in cout yet
  // The upstream's close ended a response: nothing may follow it on 'c'.
  void endAfterCloseDelimited(Conn* c);

  // --- upstream.cc ----------------------------------------------------------
  // Connects to c->odst for the request just queued (c->back()); on failure
  // that request is answered 503.
  void startUpstream(Conn* c);
  void onUpstreamEvent(Conn* c, uint32_t events);
  void flushUpstream(Conn* c);  // writes uout; failUpstream(Reset) on error
  void closeUpstream(Conn* c);
  void abortUpstream(Conn* c);  // closeUpstream() with a reset instead of a FIN
  // Requests still waiting for the upstream get a local 503 ('err' logged); a
  // response already half relayed, or a tunnel, ends with the client connection.
  void failUpstream(Conn* c, UpstreamError err);

  // --- request_log.cc -------------------------------------------------------
  // A request's answer is complete ('status': what the client got, 0 = none).
  void finishEntry(Conn* c, Pending& e, int status);
  // An access-log record for 'e' (the request, or its response), when anyone listens.
  void logLine(Conn* c, const Pending& e, bool response, int status);
};

}  // namespace membrane::proxy
