// WatchQueue: the hand-off between whatever produces a watch's batches (the
// memory backend's writers, the etcd backend's stream thread) and the one
// consumer calling Watch::next(). Implements the Watch contract of
// membrane/kvstore.h: batches in order, at most one terminal item, cancel()
// from any thread wakes a blocked next().
//
// Thread-safety: every method is safe from any thread.
#pragma once

#include <condition_variable>
#include <deque>

#include "membrane/kvstore.h"
#include "membrane/mutex.h"
#include "membrane/thread_annotations.h"

namespace membrane::kvstore {

class WatchQueue {
 public:
  static bool isTerminal(WatchBatch::Kind k) {
    return k == WatchBatch::Kind::Compacted || k == WatchBatch::Kind::Broken || k == WatchBatch::Kind::Cancelled;
  }

  // Queues `b`. Returns false (and drops it) once a terminal item was queued
  // or the consumer cancelled: the producer should stop.
  bool push(WatchBatch b) {
    {
      MutexLock l(mu_);
      if (closed_) return false;
      closed_ = isTerminal(b.kind);
      queue_.push_back(std::move(b));
    }
    cv_.notify_all();
    return true;
  }

  // True once a terminal item was queued or cancel() was called.
  bool closed() const {
    MutexLock l(mu_);
    return closed_;
  }

  void cancel() {
    {
      MutexLock l(mu_);
      cancelled_ = true;
      closed_ = true;
    }
    cv_.notify_all();
  }

  bool cancelled() const {
    MutexLock l(mu_);
    return cancelled_;
  }

  WatchBatch next(Millis timeout) {
    MutexLock l(mu_);
    auto deadline = Clock::now() + timeout;
    while (queue_.empty() && !cancelled_ && !final_) {
      if (cv_.wait_until(mu_, deadline) == std::cv_status::timeout) break;
    }
    if (cancelled_) final_ = WatchBatch{WatchBatch::Kind::Cancelled, {}, 0, 0, Error(ECANCELED, "watch cancelled")};
    if (final_) return *final_;
    if (queue_.empty()) return WatchBatch{};  // Timeout
    WatchBatch b = std::move(queue_.front());
    queue_.pop_front();
    if (isTerminal(b.kind)) final_ = b;
    return b;
  }

 private:
  mutable Mutex mu_;
  std::condition_variable_any cv_;
  std::deque<WatchBatch> queue_ GUARDED_BY(mu_);
  bool closed_ GUARDED_BY(mu_) = false;
  bool cancelled_ GUARDED_BY(mu_) = false;
  std::optional<WatchBatch> final_ GUARDED_BY(mu_);
};

}  // namespace membrane::kvstore
