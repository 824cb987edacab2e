// Proxy: membrane's transparent HTTP/1.1 L7 policy proxy (docs/l7.md).
//
// One event-loop thread (epoll, non-blocking sockets, no thread per
// connection) serves every listener and connection. For each accepted
// connection the original destination is the socket's local address (TPROXY)
// and the client is its peer; each request is matched against the rules of
// the pod (ingress: the destination, egress: the client) on the original
// destination port. Allowed requests are forwarded byte for byte to the
// original destination, denied ones answered "403 Access denied\r\n" in
// pipeline order; the connection stays usable.
//
// Thread-safety: applyConfig(), config(), stats(), accessLog(), boundPort()
// may be called from any thread at any time; start()/stop() from one
// controlling thread. A new configuration applies to the next request;
// existing connections are never dropped by a configuration change (removing
// a listener closes only the listening socket).
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "membrane/result.h"
#include "src/proxy/access_log.h"
#include "bpf/shared/datapath.h"
#include "src/proxy/config.h"
#include "src/proxy/message_parser.h"
#include "src/proxy/stats.h"

namespace membrane::proxy {

// Marks of proxy-originated packets (Cilium's MARK_MAGIC_PROXY_*): the
// datapath skips the redirect for them and takes the source identity from
// the mark (mb_mark_encode/mb_mark_identity in bpf/shared/datapath.h).
inline constexpr uint32_t kMarkProxyIngress = MB_MARK_MAGIC_PROXY_INGRESS;
inline constexpr uint32_t kMarkProxyEgress = MB_MARK_MAGIC_PROXY_EGRESS;
// 'identity' must be <= MB_MARK_IDENTITY_MAX (ProxyConfig refuses larger ones).
uint32_t upstreamMark(Direction d, uint32_t identity);

// The policy decision for one request on a connection from 'client' to the
// original destination 'odst' accepted on a 'dir' listener: the pod's rules
// (ingress: odst's, egress: client's) on odst's port, evaluated for the peer's
// identity (ingress: the client's, egress: the destination's). An egress
// request to a destination with ingress rules on that port must pass those
// too (ingress_checked; the upstream then carries the PROXY_INGRESS mark).
// No allocation; 'view' as for ProxyConfig::evaluate().
struct RequestDecision {
  Verdict verdict;
  uint32_t src_id = 0, dst_id = 0;
  bool ingress_checked = false;
};
RequestDecision decideRequest(const ProxyConfig& cfg, Direction dir, const sockaddr_in& client,
                              const sockaddr_in& odst, const RequestView& view);

struct ProxyOptions {
  std::string listen_address = "0.0.0.0";
  // IP_TRANSPARENT on listeners (TPROXY): needs CAP_NET_ADMIN.
  bool transparent_listeners = true;
  // Upstream sockets keep the client's source address (IP_TRANSPARENT + bind
  // to the client IP, port 0) and carry SO_MARK; false = plain connect().
  bool transparent_upstream = true;
  // Tests and manual runs without TPROXY: use this instead of getsockname().
  std::optional<sockaddr_in> original_dst_override;
  ParserLimits limits;
  // Per direction and connection, while bytes are in flight. Must exceed
  // limits.max_header_bytes (the whole header block is held before the verdict).
  size_t buffer_size = 32 * 1024;
  std::chrono::milliseconds header_timeout{10000};  // first byte -> end of headers (slowloris)
  std::chrono::milliseconds idle_timeout{300000};   // no byte in either direction
  std::chrono::milliseconds connect_timeout{5000};  // upstream connect
  // After the proxy ends a connection itself (a closing 400/403/408, a
  // close-delimited response): it sends its FIN, then reads and discards what
  // the client still sends, this long at most, before closing. Closing with
  // unread bytes would reset the connection and can destroy the response
  // (nginx's lingering close).
  std::chrono::milliseconds linger_timeout{5000};
  size_t max_connections = 200000;
  size_t max_pipelined = 32;  // requests awaiting their response per connection
};

class Proxy {
 public:
  // Creates the epoll loop (not started). Errors: epoll/eventfd creation.
  static Result<std::unique_ptr<Proxy>> create(ProxyOptions opts);
  ~Proxy();  // stop(); closes every connection
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Opens the listeners the config adds (before anything changes: a bind
  // failure leaves the old config fully in place and returns the error),
  // closes the listening sockets it removes, then makes 'cfg' the config of
  // the next request.
  Status applyConfig(std::shared_ptr<const ProxyConfig> cfg);
  std::shared_ptr<const ProxyConfig> config() const;

  Status start();  // runs the loop on its own thread
  void stop();     // idempotent; joins the loop thread

  // Port bound for the configured listener (port 0 listeners: by direction);
  // 0 when there is none.
  uint16_t boundPort(uint16_t configured_port, Direction d) const;

  ProxyStats& stats();
  AccessLog& accessLog();
  // Connection buffers taken from the pool now / at most since resetBufferPeak()
  // (each is buffer_size bytes); updated by the loop after every event batch.
  size_t buffersInUse() const;
  size_t buffersPeak() const;
  void resetBufferPeak();

  struct Impl;

 private:
  explicit Proxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace membrane::proxy
