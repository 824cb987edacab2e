#include "src/kvstore/memory_backend.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <thread>

namespace membrane::kvstore {
namespace {

using namespace std::chrono_literals;

TEST(MemoryBackend, RevisionsVersionsAndPrefixList) {
  MemoryBackend b;
  EXPECT_EQ(b.revision(), 1);
  ASSERT_EQ(b.put("a/1", "x").value(), 2);
  ASSERT_EQ(b.put("a/2", "y").value(), 3);
  ASSERT_EQ(b.put("a/1", "z").value(), 4);
  ASSERT_EQ(b.put("b/1", "w").value(), 5);

  auto kv = b.get("a/1").value();
  ASSERT_TRUE(kv.has_value());
  EXPECT_EQ(*kv, (KeyValue{"a/1", "z", 2, 4, 2, kNoLease}));
  EXPECT_FALSE(b.get("a/3").value().has_value());

  auto l = b.list("a/").value();
  EXPECT_EQ(l.revision, 5);
  ASSERT_EQ(l.kvs.size(), 2u);
  EXPECT_EQ(l.kvs[0].key, "a/1");
  EXPECT_EQ(l.kvs[1].key, "a/2");

  EXPECT_EQ(b.deletePrefix("a/").value(), 2);
  EXPECT_EQ(b.revision(), 6);  // one revision for the whole range
  EXPECT_EQ(b.del("a/1").value(), 0);
  EXPECT_EQ(b.revision(), 6);  // deleting nothing writes nothing
}

TEST(MemoryBackend, CreateIfAbsentAndCompareAndDelete) {
  MemoryBackend b;
  auto c1 = b.createIfAbsent("k", "first").value();
  EXPECT_TRUE(c1.created);
  EXPECT_FALSE(c1.existing.has_value());
  auto c2 = b.createIfAbsent("k", "second").value();
  EXPECT_FALSE(c2.created);
  ASSERT_TRUE(c2.existing.has_value());
  EXPECT_EQ(c2.existing->value, "first");
  EXPECT_EQ(c2.existing->mod_revision, 2);

  EXPECT_FALSE(b.compareAndDelete("k", 1).value());
  EXPECT_TRUE(b.get("k").value().has_value());
  EXPECT_TRUE(b.compareAndDelete("k", 2).value());
  EXPECT_FALSE(b.get("k").value().has_value());
  EXPECT_FALSE(b.compareAndDelete("k", 2).value());
}

TEST(MemoryBackend, TxnPrefixCompareTreatsAnEmptyRangeAsOneAbsentKey) {
  MemoryBackend b;
  Txn t;
  t.compares.push_back({Compare::Target::Version, Compare::Op::Equal, "v/", true, 0, {}});
  t.success.push_back(TxnOp::put("done", "1"));
  EXPECT_TRUE(b.txn(t).value().succeeded);
  ASSERT_TRUE(b.put("v/x", "1").ok());
  EXPECT_FALSE(b.txn(t).value().succeeded);

  Txn value_on_empty;
  value_on_empty.compares.push_back({Compare::Target::Value, Compare::Op::Equal, "nothing", false, 0, ""});
  EXPECT_FALSE(b.txn(value_on_empty).value().succeeded);
}

TEST(MemoryBackend, LeasesExpireOnTheManualClockAndTakeTheirKeys) {
  MemoryBackend b;
  auto lease = b.grantLease(10).value();
  ASSERT_TRUE(b.put("leased", "v", lease.id).ok());
  ASSERT_TRUE(b.put("plain", "v").ok());
  EXPECT_EQ(b.put("bad", "v", 12345).error().code, ENOENT);

  b.advance(9s);
  EXPECT_EQ(b.keepAlive(lease.id).value(), 10);
  b.advance(9s);
  EXPECT_TRUE(b.get("leased").value().has_value());
  b.advance(1s);  // 10 s after the keepalive
  EXPECT_FALSE(b.get("leased").value().has_value());
  EXPECT_TRUE(b.get("plain").value().has_value());
  EXPECT_EQ(b.keepAlive(lease.id).error().code, ENOENT);
  EXPECT_EQ(b.leaseCount(), 0u);
}

TEST(MemoryBackend, WatchReplaysFromARevisionThenFollows) {
  MemoryBackend b;
  ASSERT_TRUE(b.put("w/a", "1").ok());  // rev 2
  ASSERT_TRUE(b.put("x/a", "1").ok());  // rev 3, other prefix
  ASSERT_TRUE(b.put("w/b", "2").ok());  // rev 4
  auto w = b.watch("w/", 3).value();
  auto first = w->next(1s);
  ASSERT_EQ(first.kind, WatchBatch::Kind::Events);
  ASSERT_EQ(first.events.size(), 1u);
  EXPECT_EQ(first.events[0].kv.key, "w/b");
  EXPECT_EQ(first.revision, 4);
  EXPECT_EQ(w->next(0ms).kind, WatchBatch::Kind::Timeout);

  ASSERT_TRUE(b.del("w/a").ok());  // rev 5
  auto del = w->next(1s);
  ASSERT_EQ(del.kind, WatchBatch::Kind::Events);
  EXPECT_EQ(del.events[0].type, Event::Type::Delete);
  EXPECT_EQ(del.events[0].kv.key, "w/a");
  EXPECT_EQ(del.events[0].kv.mod_revision, 5);
}

TEST(MemoryBackend, WatchFromACompactedRevisionIsCompacted) {
  MemoryBackend b;
  ASSERT_TRUE(b.put("w/a", "1").ok());
  ASSERT_TRUE(b.put("w/a", "2").ok());
  ASSERT_TRUE(b.compact(3).ok());
  EXPECT_EQ(b.compact(3).error().code, ERANGE);
  auto w = b.watch("w/", 2).value();
  auto r = w->next(1s);
  EXPECT_EQ(r.kind, WatchBatch::Kind::Compacted);
  EXPECT_EQ(r.compact_revision, 3);
  EXPECT_EQ(w->next(0ms).kind, WatchBatch::Kind::Compacted);  // terminal stays
  auto ok = b.watch("w/", 4).value();
  EXPECT_EQ(ok->next(0ms).kind, WatchBatch::Kind::Timeout);
}

TEST(MemoryBackend, CancelWakesABlockedNext) {
  MemoryBackend b;
  auto w = b.watch("w/", 0).value();
  std::thread t([&] { w->cancel(); });
  auto start = Clock::now();
  EXPECT_EQ(w->next(10s).kind, WatchBatch::Kind::Cancelled);
  EXPECT_LT(Clock::now() - start, 5s);
  t.join();
  EXPECT_EQ(b.openWatches(), 0u);
}

TEST(MemoryBackend, BreakWatchesEndsEveryOpenWatch) {
  MemoryBackend b;
  auto w1 = b.watch("a/", 0).value();
  auto w2 = b.watch("b/", 0).value();
  EXPECT_EQ(b.openWatches(), 2u);
  b.breakWatches(Error(ECONNRESET, "reset"));
  EXPECT_EQ(w1->next(0ms).kind, WatchBatch::Kind::Broken);
  EXPECT_EQ(w2->next(0ms).error.message, "reset");
  EXPECT_EQ(b.openWatches(), 0u);
}

TEST(MemoryBackend, LockIsExclusiveBetweenLeasesAndTimesOut) {
  MemoryBackend b;
  auto l1 = b.grantLease(30).value();
  auto l2 = b.grantLease(30).value();
  auto k1 = b.lock("locks/x", l1.id, 1s).value();
  EXPECT_EQ(k1, fmt::format("locks/x/{:x}", l1.id));
  auto late = b.lock("locks/x", l2.id, 20ms);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code, ETIMEDOUT);
  EXPECT_EQ(b.list("locks/x/").value().kvs.size(), 1u);  // the waiter left no key

  // A waiter gets the lock as soon as the holder unlocks.
  // (Whether the unlock lands before or after the waiter queues, it must get the lock.)
  std::thread t([&] { ASSERT_TRUE(b.unlock(k1).ok()); });
  auto k2 = b.lock("locks/x", l2.id, 10s);
  t.join();
  ASSERT_TRUE(k2.ok());
  EXPECT_EQ(*k2, fmt::format("locks/x/{:x}", l2.id));
}

TEST(MemoryBackend, LockIsReleasedWhenTheHoldersLeaseEnds) {
  MemoryBackend b;
  auto l1 = b.grantLease(5).value();
  auto l2 = b.grantLease(60).value();
  ASSERT_TRUE(b.lock("L", l1.id, 1s).ok());
  b.advance(6s);
  EXPECT_TRUE(b.lock("L", l2.id, 0ms).ok());
}

TEST(FaultyBackend, FailsTheNthMatchingCallOnce) {
  MemoryBackend mem;
  FaultInjector f;
  FaultyBackend b(mem, f);
  f.failNth(2, ETIMEDOUT, "put");
  EXPECT_TRUE(b.put("a", "1").ok());
  EXPECT_TRUE(b.get("a").ok());
  auto failed = b.put("b", "1");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, ETIMEDOUT);
  EXPECT_EQ(failed.error().message, "injected fault: put call 2: Connection timed out");
  EXPECT_FALSE(mem.get("b").value().has_value());
  EXPECT_TRUE(b.put("b", "1").ok());
  EXPECT_EQ(f.calls(), (std::vector<std::string>{"put", "get", "put", "put"}));
  EXPECT_EQ(f.fired(), std::optional<std::string>("put"));
}

// The observer hook reports Cilium's label values and the exact duration
// measured with the installed clock.
struct Recorded {
  std::string scope, kind, action, outcome;
  double seconds;
  bool operator==(const Recorded&) const = default;
};
class RecordingObserver : public Observer {
 public:
  void operation(std::string_view scope, std::string_view kind, std::string_view action, std::string_view outcome,
                 double seconds) override {
    ops.push_back({std::string(scope), std::string(kind), std::string(action), std::string(outcome), seconds});
  }
  void eventQueued(std::string_view, std::string_view, double) override {}
  void quorumError(std::string_view e) override { quorum.emplace_back(e); }
  std::vector<Recorded> ops;
  std::vector<std::string> quorum;
};

TEST(BackendObserver, ReportsScopeKindActionOutcomeAndDuration) {
  MemoryBackend mem;
  FaultInjector f;
  FaultyBackend b(mem, f);
  RecordingObserver obs;
  // Every call to the clock moves it by 250 ms: each operation takes exactly 0.25 s.
  Clock::time_point t{};
  b.setObserver(&obs, [&t] { return t += 250ms; });
  const std::string id_key = "cilium/state/identities/v1/id/300";
  ASSERT_TRUE(b.createIfAbsent(id_key, "k8s:a=b;").value().created);
  ASSERT_TRUE(b.get(id_key).ok());
  ASSERT_TRUE(b.list("cilium/state/nodes/v1/").ok());
  f.failNth(1, EIO, "put");
  ASSERT_FALSE(b.put("cilium/state/ip/v1/default/10.0.0.1", "{}").ok());
  ASSERT_TRUE(b.del(id_key).ok());
  ASSERT_TRUE(b.deletePrefix("x").ok());

  std::vector<Recorded> want = {
      {"identities/v1", "set", "CreateOnly", "success", 0.25},
      {"identities/v1", "read", "Get", "success", 0.25},
      {"nodes/v1", "read", "ListPrefix", "success", 0.25},
      {"ip/v1", "set", "Update", "fail", 0.25},
      {"identities/v1", "delete", "Delete", "success", 0.25},
      {"x", "delete", "DeletePrefix", "success", 0.25},
  };
  EXPECT_EQ(obs.ops, want);
}

TEST(BackendObserver, QuorumProbeReportsALockTimeout) {
  MemoryBackend mem;
  FaultInjector f;
  FaultyBackend b(mem, f);
  RecordingObserver obs;
  ASSERT_TRUE(probeQuorum(b, &obs, 1s).ok());
  EXPECT_TRUE(obs.quorum.empty());
  f.failNth(1, ETIMEDOUT, "lock");
  auto s = probeQuorum(b, &obs, 1s);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(obs.quorum, (std::vector<std::string>{"lock timeout"}));
  f.failNth(1, ECONNREFUSED, "grantLease");
  ASSERT_FALSE(probeQuorum(b, &obs, 1s).ok());
  EXPECT_EQ(obs.quorum, (std::vector<std::string>{"lock timeout", "timeout"}));
  EXPECT_EQ(mem.leaseCount(), 0u);  // probes revoke their lease
  EXPECT_TRUE(mem.list("cilium/.initlock/").value().kvs.empty());
}

TEST(ScopeFromKey, FollowsCilium) {
  EXPECT_EQ(scopeFromKey("cilium/state/identities/v1/id/300"), "identities/v1");
  EXPECT_EQ(scopeFromKey("cilium/state/nodes/v1"), "nodes/v1");
  EXPECT_EQ(scopeFromKey("cilium/.initlock/abcdef0123"), "cilium/.init");
  EXPECT_EQ(scopeFromKey("short"), "short");
}

TEST(PrefixEnd, IncrementsTheLastByte) {
  EXPECT_EQ(prefixEnd("a/"), "a0");
  EXPECT_EQ(prefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(prefixEnd(""), std::string(1, '\0'));
}

}  // namespace
}  // namespace membrane::kvstore
