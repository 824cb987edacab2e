// AccessLog: fan-out of L7 access-log lines (NDJSON) to any number of
// subscribers (GET /v1/accesslog streams). Each subscriber has a bounded queue:
// a slow reader loses lines (counted), it never blocks the proxy's loop.
//
// Thread-safety: all methods are thread-safe. publish() is called by the loop
// thread; subscribers read on their own threads.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

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

}  // namespace membrane::proxy
