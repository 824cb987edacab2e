// Mutex, TimedMutex and MutexLock under contention. Run in the TSan tier too:
// with std::timed_mutex (try_lock_for via pthread_mutex_clocklock, which
// clang 14's TSan does not intercept) TryLockForGuardsDataLikeLock reports
// "unlock of an unlocked mutex" and a data race.
#include "membrane/mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace membrane {
namespace {

using namespace std::chrono_literals;

TEST(TimedMutex, TryLockForGuardsDataLikeLock) {
  TimedMutex mu;
  long counter = 0;  // guarded by mu, deliberately not atomic
  constexpr int kRounds = 20000;
  std::atomic<int> timed_ok{0};
  std::thread timed([&] {
    for (int i = 0; i < kRounds; ++i) {
      if (mu.try_lock_for(1s)) {
        MutexLock l(mu, std::adopt_lock);
        ++counter;
        ++timed_ok;
      }
    }
  });
  for (int i = 0; i < kRounds; ++i) {
    MutexLock l(mu);
    ++counter;
  }
  timed.join();
  EXPECT_EQ(timed_ok.load(), kRounds);  // 1 s is ample: every wait succeeds
  EXPECT_EQ(counter, 2 * kRounds);
}

TEST(TimedMutex, TryLockForTimesOutWhileHeldAndSucceedsAfterUnlock) {
  TimedMutex mu;
  std::atomic<int> waited = -1;
  {
    MutexLock l(mu);
    std::thread waiter([&] {
      if (mu.try_lock_for(20ms)) {
        mu.unlock();
        waited = 1;
      } else {
        waited = 0;
      }
    });
    waiter.join();
  }
  EXPECT_EQ(waited.load(), 0);
  bool got = false;
  if (mu.try_lock_for(0ms)) {
    got = true;
    mu.unlock();
  }
  EXPECT_TRUE(got);
}

TEST(TimedMutex, UnlockWakesAWaiter) {
  TimedMutex mu;
  std::atomic<bool> got{false};
  std::thread waiter;
  {
    MutexLock l(mu);
    waiter = std::thread([&] {
      MutexLock l2(mu);
      got = true;
    });
    EXPECT_FALSE(got.load());
  }
  waiter.join();
  EXPECT_TRUE(got.load());
}

TEST(Mutex, MutexLockExcludes) {
  Mutex mu;
  long counter = 0;
  constexpr int kRounds = 20000;
  std::thread other([&] {
    for (int i = 0; i < kRounds; ++i) {
      MutexLock l(mu);
      ++counter;
    }
  });
  for (int i = 0; i < kRounds; ++i) {
    MutexLock l(mu);
    ++counter;
  }
  other.join();
  EXPECT_EQ(counter, 2 * kRounds);
  bool got = false;
  if (mu.try_lock()) {
    got = true;
    mu.unlock();
  }
  EXPECT_TRUE(got);
}

}  // namespace
}  // namespace membrane
