#include "src/kvstore/reflector.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "src/kvstore/memory_backend.h"
#include "src/kvstore/recording_handler.h"

namespace membrane::kvstore {
namespace {

using namespace std::chrono_literals;

using Log = RecordingHandler;

// Holds every `list` call while closed, so a test can change the store
// between a watch's end and the relist.
class ListGate {
 public:
  explicit ListGate(FaultInjector& f) {
    f.setHook([this](const std::string& method) {
      if (method != "list") return;
      std::unique_lock l(mu_);
      waiting_++;
      cv_.notify_all();
      cv_.wait(l, [&] { return open_; });
    });
  }
  void close() {
    std::lock_guard l(mu_);
    open_ = false;
    waiting_ = 0;
  }
  // Waits until a list call is held.
  bool waitHeld() {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, 10s, [&] { return waiting_ > 0; });
  }
  void open() {
    {
      std::lock_guard l(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int waiting_ = 0;
};

ReflectorOptions fast() {
  ReflectorOptions o;
  o.backoff_min = 1ms;
  o.backoff_max = 4ms;
  return o;
}

TEST(Reflector, DeliversTheSnapshotThenTheWatch) {
  MemoryBackend mem;
  ASSERT_TRUE(mem.put("p/a", "1").ok());  // rev 2
  ASSERT_TRUE(mem.put("p/b", "2").ok());  // rev 3
  ASSERT_TRUE(mem.put("q/x", "9").ok());  // rev 4, other prefix
  Log log;
  Reflector r(mem, "p/", log, fast());
  r.start();
  EXPECT_EQ(log.waitFor(3), (std::vector<std::string>{"upsert p/a=1", "upsert p/b=2", "synced 4"}));
  ASSERT_TRUE(mem.put("p/c", "3").ok());
  ASSERT_TRUE(mem.put("p/a", "1b").ok());
  ASSERT_TRUE(mem.del("p/b").ok());
  ASSERT_TRUE(mem.put("q/y", "0").ok());
  EXPECT_EQ(log.waitFor(6), (std::vector<std::string>{"upsert p/a=1", "upsert p/b=2", "synced 4", "upsert p/c=3",
                                                      "upsert p/a=1b", "delete p/b"}));
  r.stop();
  EXPECT_EQ(r.stats().lists, 1u);
  EXPECT_EQ(mem.openWatches(), 0u);
}

// The watch ends by compaction; while the reflector re-lists, p/a is deleted
// and p/b changed: the relist delivers exactly those differences (and not
// p/c again, which did not change).
TEST(Reflector, RelistsAfterCompactionAndDeliversTheDifference) {
  MemoryBackend mem;
  FaultInjector f;
  FaultyBackend b(mem, f);
  ListGate gate(f);
  ASSERT_TRUE(mem.put("p/a", "1").ok());
  ASSERT_TRUE(mem.put("p/b", "2").ok());
  ASSERT_TRUE(mem.put("p/c", "3").ok());
  Log log;
  Reflector r(b, "p/", log, fast());
  r.start();
  ASSERT_EQ(log.waitFor(4).size(), 4u);
  ASSERT_TRUE(mem.waitOpenWatches(1, 10s));

  gate.close();
  mem.compactWatches();
  ASSERT_TRUE(gate.waitHeld());
  ASSERT_TRUE(mem.del("p/a").ok());
  ASSERT_TRUE(mem.put("p/b", "2b").ok());
  gate.open();
  EXPECT_EQ(log.waitFor(7), (std::vector<std::string>{"upsert p/a=1", "upsert p/b=2", "upsert p/c=3", "synced 4",
                                                      "upsert p/b=2b", "delete p/a", "synced 6"}));
  // The new watch follows from the relist's revision on.
  ASSERT_TRUE(mem.waitOpenWatches(1, 10s));
  ASSERT_TRUE(mem.put("p/d", "4").ok());
  EXPECT_EQ(log.waitFor(8).back(), "upsert p/d=4");
  r.stop();
  auto s = r.stats();
  EXPECT_EQ(s.lists, 2u);
  EXPECT_EQ(s.relists_compacted, 1u);
  EXPECT_EQ(s.relists_broken, 0u);
  EXPECT_EQ(log.lines().size(), 8u);
}

TEST(Reflector, RelistsAfterABrokenStreamAndRetriesFailedLists) {
  MemoryBackend mem;
  FaultInjector f;
  FaultyBackend b(mem, f);
  ListGate gate(f);
  ASSERT_TRUE(mem.put("p/a", "1").ok());
  Log log;
  Reflector r(b, "p/", log, fast());
  r.start();
  ASSERT_EQ(log.waitFor(2).size(), 2u);
  ASSERT_TRUE(mem.waitOpenWatches(1, 10s));

  // etcd goes away: the stream breaks and the next two lists fail.
  gate.close();
  f.failNth(1, ECONNREFUSED, "list");
  mem.breakWatches(Error(ECONNRESET, "connection reset by peer"));
  ASSERT_TRUE(gate.waitHeld());
  ASSERT_TRUE(mem.del("p/a").ok());
  ASSERT_TRUE(mem.put("p/z", "26").ok());
  gate.open();
  EXPECT_EQ(log.waitFor(5), (std::vector<std::string>{"upsert p/a=1", "synced 2", "upsert p/z=26", "delete p/a",
                                                      "synced 4"}));
  r.stop();
  auto s = r.stats();
  EXPECT_EQ(s.relists_broken, 1u);
  EXPECT_EQ(s.list_errors, 1u);
  EXPECT_EQ(s.lists, 2u);
  EXPECT_EQ(s.last_error, "injected fault: list call 1: Connection refused");
}

TEST(Reflector, StopEndsABlockedWatchAtOnce) {
  MemoryBackend mem;
  Log log;
  ReflectorOptions o = fast();
  o.poll = 60s;  // stop() must not wait for the poll to end
  Reflector r(mem, "p/", log, o);
  r.start();
  ASSERT_EQ(log.waitFor(1).size(), 1u);
  auto start = Clock::now();
  r.stop();
  EXPECT_LT(Clock::now() - start, 5s);
}

// cilium_kvstore_events_queue_seconds: one sample per delivered event, with
// the handler's duration measured on the given clock.
TEST(Reflector, ReportsEventQueueTimes) {
  struct Obs : Observer {
    void operation(std::string_view, std::string_view, std::string_view, std::string_view, double) override {}
    void eventQueued(std::string_view scope, std::string_view action, double seconds) override {
      std::lock_guard l(mu);
      samples.push_back(fmt::format("{} {} {}", scope, action, seconds));
    }
    void quorumError(std::string_view) override {}
    std::mutex mu;
    std::vector<std::string> samples;
  } obs;
  MemoryBackend mem;
  const std::string prefix = "cilium/state/nodes/v1/";
  ASSERT_TRUE(mem.put(prefix + "n1", "{}").ok());
  Log log;
  ReflectorOptions o = fast();
  o.observer = &obs;
  std::atomic<int64_t> ticks{0};
  o.now = [&ticks] { return Clock::time_point(std::chrono::milliseconds(500 * ticks++)); };
  Reflector r(mem, prefix, log, o);
  r.start();
  ASSERT_EQ(log.waitFor(2).size(), 2u);
  ASSERT_TRUE(mem.waitOpenWatches(1, 10s));
  ASSERT_TRUE(mem.put(prefix + "n1", "{\"a\":1}").ok());
  ASSERT_TRUE(mem.del(prefix + "n1").ok());
  ASSERT_EQ(log.waitFor(4).size(), 4u);
  r.stop();
  std::lock_guard l(obs.mu);
  EXPECT_EQ(obs.samples,
            (std::vector<std::string>{"nodes/v1 create 0.5", "nodes/v1 modify 0.5", "nodes/v1 delete 0.5"}));
}

}  // namespace
}  // namespace membrane::kvstore
