// TimedMutex: a mutex whose lock can be awaited for a bounded time
// (TimedLockable: lock, unlock, try_lock, try_lock_for).
//
// Why not std::timed_mutex: libstdc++ 12 implements try_lock_for with
// pthread_mutex_clocklock, which clang 14's ThreadSanitizer does not
// intercept. TSan then never sees the lock taken, reports "unlock of an
// unlocked mutex" and data races on everything the mutex guards. This one is
// a flag guarded by a std::mutex and a condition variable; both are
// intercepted (pthread_cond_clockwait is), so TSan sees every happens-before
// edge. It is not fair and not recursive, like std::mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace membrane {

class TimedMutex {
 public:
  TimedMutex() = default;
  TimedMutex(const TimedMutex&) = delete;
  TimedMutex& operator=(const TimedMutex&) = delete;

  void lock() {
    std::unique_lock l(m_);
    cv_.wait(l, [this] { return !held_; });
    held_ = true;
  }
  bool try_lock() {
    std::lock_guard l(m_);
    if (held_) return false;
    held_ = true;
    return true;
  }
  // Waits at most `d` for the lock; false (and not held) on timeout.
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    std::unique_lock l(m_);
    if (!cv_.wait_for(l, d, [this] { return !held_; })) return false;
    held_ = true;
    return true;
  }
  void unlock() {
    {
      std::lock_guard l(m_);
      held_ = false;
    }
    cv_.notify_one();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool held_ = false;
};

}  // namespace membrane
