// MonitorHub: fans datapath events out to `membrane monitor` streams.
//
// The ring-buffer reader thread publishes each decoded event (one JSON line
// and its type); every subscriber has a bounded queue so a slow client can
// never stall the reader or grow memory: when its queue is full, events for
// that subscriber are dropped and counted (reported in the stream as a
// "lost" line). Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace membrane::daemon {

class MonitorHub {
 public:
  static constexpr size_t kQueueLimit = 16384;

  class Subscription {
   public:
    // Waits up to timeout_ms for events; returns the queued lines (maybe
    // empty) and the number lost since the last call. false once closed.
    bool next(std::vector<std::string>* lines, uint64_t* lost, int timeout_ms);
    bool wants(const std::string& type) const { return types_.empty() || types_.count(type) > 0; }

   private:
    friend class MonitorHub;
    std::set<std::string> types_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::string> q_;
    uint64_t lost_ = 0;
    bool closed_ = false;
  };

  // types: empty = every type ("drop", "policy-verdict", "trace", "l7").
  std::shared_ptr<Subscription> subscribe(std::set<std::string> types);
  void unsubscribe(const std::shared_ptr<Subscription>& s);
  void publish(const std::string& type, const std::string& line);
  void closeAll();
  size_t subscribers() const;
  // True if some subscriber receives events of this type (the L7 access-log
  // relay runs only then: formatting every request costs the proxy).
  bool wants(const std::string& type) const;
  // Called (under the hub's lock: it must not call into the hub) after every
  // subscribe, unsubscribe and closeAll, so a thread can wait for wants() to
  // change instead of polling it (the L7 access-log relay). Set it before the
  // first subscriber.
  void setOnChange(std::function<void()> fn) { on_change_ = std::move(fn); }

 private:
  std::function<void()> on_change_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Subscription>> subs_;
};

}  // namespace membrane::daemon
