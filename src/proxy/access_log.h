// AccessLog: fan-out of L7 access-log lines (NDJSON) to any number of
// subscribers (GET /v1/accesslog streams). Each subscriber has a bounded queue:
// a slow reader loses lines (counted), it never blocks the proxy's loop.
//
// Thread-safety: all methods are thread-safe. publish() is called by the loop
// thread; subscribers read on their own threads.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "src/proxy/stats.h"

namespace membrane::proxy {

class AccessLog {
 public:
  class Subscription {
   public:
    // Waits up to 'timeout' for lines; moves them into 'out' (cleared first).
    // Returns false when nothing arrived.
    bool next(std::vector<std::string>& out, std::chrono::milliseconds timeout);
    uint64_t dropped() const { return dropped_.load(); }

   private:
    friend class AccessLog;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::string> lines_;
    std::atomic<uint64_t> dropped_{0};
  };

  explicit AccessLog(size_t max_queue = 4096) : max_queue_(max_queue) {}
  std::shared_ptr<Subscription> subscribe();
  void unsubscribe(const std::shared_ptr<Subscription>& s);
  // Cheap check so the loop formats lines only when someone listens.
  bool active() const { return subscribers_.load(std::memory_order_relaxed) > 0; }
  void publish(const std::string& line);

 private:
  size_t max_queue_;
  std::atomic<int> subscribers_{0};
  std::mutex mu_;
  std::vector<std::shared_ptr<Subscription>> subs_;
};

// One access-log record: a request when the proxy decides it (l7_type
// "request"), or its answer when that ends (l7_type "response"). Views must
// outlive formatAccessRecord().
struct AccessRecord {
  bool response = false;
  std::string_view time;       // RFC 3339, UTC, microseconds
  std::string_view direction;  // "ingress" / "egress"
  std::string_view verdict;    // accessVerdict()
  std::string_view method, url, policy;
  int status = 0;              // response records only
  int64_t latency_us = 0;      // response records only
  std::string_view error;      // response records: upstream error label, "" = none
  sockaddr_in src{}, dst{};    // client, original destination
  uint32_t src_identity = 0, dst_identity = 0;
  bool header_mismatch = false;
};

// The NDJSON line (no trailing newline) for 'r': one JSON object with
//   type "l7", l7_type, time, direction, verdict, method, url,
//   protocol "HTTP/1.1", src and dst {ip, port, identity}, policy;
//   response records add status, latency_us and, when not "", error;
//   header_mismatch: true only when set.
// Strings are escaped (control bytes as \u00XX) and invalid UTF-8 is
// replaced by U+FFFD, so the line holds no byte below 0x20 and is valid UTF-8.
std::string formatAccessRecord(const AccessRecord& r);

// The record's verdict: "Forwarded" (sent upstream, or a forwarded response
// cut short: local_status 0), "Denied" (local 403), else "Error".
std::string_view accessVerdict(bool forward, bool response, int local_status, bool upstream_error);

// The access log's URL, as Cilium prints it: "http://" + the request's Host
// header + the request target; without a Host (HTTP/1.0) the original
// destination "IP:port" stands in. An absolute-form target ("http://…", as
// sent to proxies) is already a URL. Assigns into 'out' so a reused string
// keeps its capacity (no allocation per request in steady state).
void buildAccessUrl(std::string& out, std::string_view host, const sockaddr_in& odst, std::string_view target);

// The record of one pending request ('response' false) or of its answer.
// Entry is the proxy's per-request state, or the fuzz driver's model of it:
// any type with forward, status (local), error (UpstreamError), method, url,
// policy, src_id, dst_id and header_mismatch. status and latency_us count for
// response records only. The record points into 'e' and the strings given.
template <class Entry>
AccessRecord accessRecordOf(const Entry& e, std::string_view direction, std::string_view time,
                            const sockaddr_in& src, const sockaddr_in& dst, bool response, int status = 0,
                            int64_t latency_us = 0) {
  AccessRecord r;
  r.response = response;
  r.time = time;
  r.direction = direction;
  r.verdict = accessVerdict(e.forward, response, e.status, e.error != UpstreamError::None);
  r.method = e.method;
  r.url = e.url;
  r.policy = e.policy;
  if (response) {
    r.status = status;
    r.latency_us = latency_us;
    r.error = upstreamErrorName(e.error);
  }
  r.src = src;
  r.dst = dst;
  r.src_identity = e.src_id;
  r.dst_identity = e.dst_id;
  r.header_mismatch = e.header_mismatch;
  return r;
}

}  // namespace membrane::proxy
