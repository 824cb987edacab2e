// TimedMutex under contention. Run in the TSan tier: with std::timed_mutex
// (try_lock_for via pthread_mutex_clocklock, not intercepted by clang 14's
// TSan) this test reports "unlock of an unlocked mutex" and a data race.
#include "membrane/timed_mutex.h"

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
      std::unique_lock l(mu, std::defer_lock);
      if (l.try_lock_for(1s)) {
        ++counter;
        ++timed_ok;
      }
    }
  });
  for (int i = 0; i < kRounds; ++i) {
    std::lock_guard l(mu);
    ++counter;
  }
  timed.join();
  EXPECT_EQ(timed_ok.load(), kRounds);  // 1 s is ample: every wait succeeds
  EXPECT_EQ(counter, 2 * kRounds);
}

TEST(TimedMutex, TryLockForTimesOutWhileHeldAndSucceedsAfterUnlock) {
  TimedMutex mu;
  mu.lock();
  std::atomic<int> result{-1};
  std::thread waiter([&] { result = mu.try_lock_for(20ms) ? 1 : 0; });
  waiter.join();
  EXPECT_EQ(result.load(), 0);
  EXPECT_FALSE(mu.try_lock());
  mu.unlock();
  EXPECT_TRUE(mu.try_lock_for(0ms));
  mu.unlock();
}

TEST(TimedMutex, UnlockWakesAWaiter) {
  TimedMutex mu;
  mu.lock();
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    mu.lock();
    got = true;
    mu.unlock();
  });
  EXPECT_FALSE(got.load());
  mu.unlock();
  waiter.join();
  EXPECT_TRUE(got.load());
}

}  // namespace
}  // namespace membrane
