// Mutexes the thread-safety analysis understands (thread_annotations.h).
//
//   Mutex       std::mutex, annotated as a capability.
//   TimedMutex  a mutex whose lock can be awaited for a bounded time.
//   MutexLock   the scoped lock for both (std::lock_guard is not annotated,
//               so the analysis would not know the lock is held).
//   MutexUnlock the reverse: releases a held lock for its scope (slow I/O in
//               the middle of a locked section), takes it again at the end.
//
// Why TimedMutex is not std::timed_mutex: libstdc++ 12 implements
// try_lock_for with pthread_mutex_clocklock, which clang 14's ThreadSanitizer
// does not intercept. TSan then never sees the lock taken, reports "unlock of
// an unlocked mutex" and data races on everything the mutex guards. This one
// is a flag guarded by a std::mutex and a condition variable; both are
// intercepted (pthread_cond_clockwait is), so TSan sees every happens-before
// edge. Neither is fair or recursive, like std::mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "membrane/thread_annotations.h"

namespace membrane {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  void lock() ACQUIRE() { m_.lock(); }
  bool try_lock() TRY_ACQUIRE(true) { return m_.try_lock(); }
  void unlock() RELEASE() { m_.unlock(); }

 private:
  std::mutex m_;
};

class CAPABILITY("mutex") TimedMutex {
 public:
  TimedMutex() = default;
  TimedMutex(const TimedMutex&) = delete;
  TimedMutex& operator=(const TimedMutex&) = delete;

  void lock() ACQUIRE() {
    std::unique_lock l(m_);
    cv_.wait(l, [this] { return !held_; });
    held_ = true;
  }
  bool try_lock() TRY_ACQUIRE(true) {
    std::lock_guard l(m_);
    if (held_) return false;
    held_ = true;
    return true;
  }
  // Waits at most `d` for the lock; false (and not held) on timeout.
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) TRY_ACQUIRE(true) {
    std::unique_lock l(m_);
    if (!cv_.wait_for(l, d, [this] { return !held_; })) return false;
    held_ = true;
    return true;
  }
  void unlock() RELEASE() {
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

// Holds a Mutex or TimedMutex for its scope. The adopting form takes over a
// lock the caller already acquired (e.g. with try_lock_for).
template <class M>
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(M& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  MutexLock(M& mu, std::adopt_lock_t) REQUIRES(mu) : mu_(mu) {}
  ~MutexLock() RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  M& mu_;
};
// Releases a lock the caller holds for its scope and re-acquires it at the
// end. Guarded state must not be touched inside (the analysis checks it), and
// whatever the caller read before may have changed after (other threads ran).
// The destructor is RELEASE() by clang's convention for scoped capabilities:
// it ends the scope, which for this class means "held again".
template <class M>
class SCOPED_CAPABILITY MutexUnlock {
 public:
  explicit MutexUnlock(M& mu) RELEASE(mu) : mu_(mu) { mu_.unlock(); }
  ~MutexUnlock() RELEASE() { mu_.lock(); }
  MutexUnlock(const MutexUnlock&) = delete;
  MutexUnlock& operator=(const MutexUnlock&) = delete;

 private:
  M& mu_;
};
template <class M>
MutexUnlock(M&) -> MutexUnlock<M>;

template <class M>
MutexLock(M&) -> MutexLock<M>;
template <class M>
MutexLock(M&, std::adopt_lock_t) -> MutexLock<M>;

}  // namespace membrane
