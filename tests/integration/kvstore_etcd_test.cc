// kvstore against a real etcd (Debian's 3.4, started by the test on free
// loopback ports): the JSON gateway encoding, leases, locks, watches,
// compaction, the Reflector across an etcd restart, and two allocators
// racing through two EtcdBackends. No root needed.
#include <fmt/format.h>
#include <gtest/gtest.h>


#include "src/kvstore/allocation_race.h"
#include "src/kvstore/cluster_identity.h"
#include "src/kvstore/etcd_backend.h"
#include "src/kvstore/memory_backend.h"
#include "src/kvstore/recording_handler.h"
#include "src/kvstore/reflector.h"
#include "tests/support/etcd_process.h"

namespace membrane::kvstore {
namespace {

using namespace std::chrono_literals;
using membrane::testing::EtcdProcess;

class EtcdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string error;
    etcd_ = EtcdProcess::start(&error).release();
    ASSERT_NE(etcd_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(etcd_, nullptr);
    EtcdOptions o;
    o.op_timeout = 3s;
    backend_ = EtcdBackend::create(etcd_->clientUrl(), o).value();
    // Each test works under its own prefix.
    prefix_ = fmt::format("t/{}/", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  static std::unique_ptr<EtcdBackend> another() { return EtcdBackend::create(etcd_->clientUrl()).value(); }

  static EtcdProcess* etcd_;
  std::unique_ptr<EtcdBackend> backend_;
  std::string prefix_;
};
EtcdProcess* EtcdTest::etcd_ = nullptr;

TEST_F(EtcdTest, PutGetListTxnAndBinarySafety) {
  Backend& b = *backend_;
  const std::string k1 = prefix_ + "a", k2 = prefix_ + "b";
  const std::string binary("v\0\xff\x01;/{\"", 8);
  auto r1 = b.put(k1, binary);
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  auto r2 = b.put(k2, "2").value();
  EXPECT_EQ(r2, *r1 + 1);
  auto got = b.get(k1).value();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->value, binary);
  EXPECT_EQ(got->create_revision, *r1);
  EXPECT_EQ(got->version, 1);
  EXPECT_FALSE(b.get(prefix_ + "none").value().has_value());

  auto l = b.list(prefix_, Consistency::Serializable).value();
  ASSERT_EQ(l.kvs.size(), 2u);
  EXPECT_EQ(l.kvs[0].key, k1);
  EXPECT_EQ(l.kvs[1].key, k2);
  EXPECT_EQ(l.revision, r2);

  auto c1 = b.createIfAbsent(prefix_ + "c", "first").value();
  EXPECT_TRUE(c1.created);
  auto c2 = b.createIfAbsent(prefix_ + "c", "second").value();
  EXPECT_FALSE(c2.created);
  ASSERT_TRUE(c2.existing.has_value());
  EXPECT_EQ(c2.existing->value, "first");
  EXPECT_FALSE(b.compareAndDelete(prefix_ + "c", c2.existing->mod_revision - 1).value());
  EXPECT_TRUE(b.compareAndDelete(prefix_ + "c", c2.existing->mod_revision).value());

  // etcd compares an empty range as one absent key: "no key under P".
  Txn t;
  t.compares.push_back({Compare::Target::Version, Compare::Op::Equal, prefix_ + "empty/", true, 0, {}});
  t.success.push_back(TxnOp::put(prefix_ + "empty-was-empty", "1"));
  EXPECT_TRUE(b.txn(t).value().succeeded);
  ASSERT_TRUE(b.put(prefix_ + "empty/x", "1").ok());
  EXPECT_FALSE(b.txn(t).value().succeeded);

  EXPECT_EQ(b.deletePrefix(prefix_).value(), 4);
  EXPECT_TRUE(b.list(prefix_).value().kvs.empty());
}

TEST_F(EtcdTest, ALeaseOfOneSecondExpiresWithItsKeys) {
  Backend& b = *backend_;
  auto lease = b.grantLease(1);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  ASSERT_TRUE(b.put(prefix_ + "leased", "v", lease->id).ok());
  EXPECT_GE(b.keepAlive(lease->id).value(), 1);
  // etcd checks expiry every 500 ms; revocation lands within a few seconds.
  EXPECT_TRUE(membrane::testing::waitFor([&] { return !b.get(prefix_ + "leased").value().has_value(); }, 10s));
  auto gone = b.keepAlive(lease->id);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ENOENT);
  auto bad = b.put(prefix_ + "x", "v", lease->id);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ENOENT);
  EXPECT_EQ(bad.error().message,
            fmt::format("put '{}x': etcd {}: HTTP 404: etcdserver: requested lease not found (gRPC code 5)", prefix_,
                        etcd_->clientUrl()));
}

TEST_F(EtcdTest, LockIsExclusiveTimesOutCleanlyAndHandsOver) {
  Backend& b = *backend_;
  auto l1 = b.grantLease(30).value();
  auto l2 = b.grantLease(30).value();
  const std::string name = prefix_ + "lock";
  auto k1 = b.lock(name, l1.id, 2s);
  ASSERT_TRUE(k1.ok()) << k1.error().message;
  EXPECT_EQ(*k1, fmt::format("{}/{:x}", name, l1.id));
  auto start = Clock::now();
  auto waited = b.lock(name, l2.id, 300ms);
  ASSERT_FALSE(waited.ok());
  EXPECT_EQ(waited.error().code, ETIMEDOUT);
  EXPECT_LT(Clock::now() - start, 2s);
  // etcd cancelled the abandoned wait and removed its owner key.
  EXPECT_TRUE(membrane::testing::waitFor([&] { return b.list(name + "/").value().kvs.size() == 1; }, 5s));
  ASSERT_TRUE(b.unlock(*k1).ok());
  auto k2 = b.lock(name, l2.id, 2s);
  ASSERT_TRUE(k2.ok()) << k2.error().message;
  ASSERT_TRUE(b.revokeLease(l2.id).ok());  // the lock ends with its lease
  EXPECT_TRUE(b.list(name + "/").value().kvs.empty());
  EXPECT_EQ(b.lock(name, l2.id, 1s).error().code, ENOENT);
  ASSERT_TRUE(b.revokeLease(l1.id).ok());
}

TEST_F(EtcdTest, WatchDeliversEventsInOrderAndCompactionEndsIt) {
  Backend& b = *backend_;
  const int64_t from = b.put(prefix_ + "a", "1").value();
  ASSERT_TRUE(b.put(prefix_ + "a", "2").ok());
  ASSERT_TRUE(b.del(prefix_ + "a").ok());
  ASSERT_TRUE(b.put("other/" + prefix_, "x").ok());
  auto w = b.watch(prefix_, from).value();
  std::vector<std::string> seen;
  while (seen.size() < 3) {
    auto batch = w->next(5s);
    ASSERT_EQ(batch.kind, WatchBatch::Kind::Events) << batch.error.message;
    for (const auto& e : batch.events)
      seen.push_back(fmt::format("{} {}={}@{}", e.type == Event::Type::Put ? "put" : "delete", e.kv.key, e.kv.value,
                                 e.kv.mod_revision));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{fmt::format("put {}a=1@{}", prefix_, from),
                                            fmt::format("put {}a=2@{}", prefix_, from + 1),
                                            fmt::format("delete {}a=@{}", prefix_, from + 2)}));
  EXPECT_EQ(w->next(100ms).kind, WatchBatch::Kind::Timeout);
  auto start = Clock::now();
  w->cancel();
  EXPECT_EQ(w->next(5s).kind, WatchBatch::Kind::Cancelled);
  w.reset();
  EXPECT_LT(Clock::now() - start, 2s);

  const int64_t now = b.put(prefix_ + "b", "1").value();
  ASSERT_TRUE(b.compact(now).ok());
  auto old = b.watch(prefix_, from).value();
  auto c = old->next(5s);
  ASSERT_EQ(c.kind, WatchBatch::Kind::Compacted) << c.error.message;
  EXPECT_EQ(c.compact_revision, now);
}

// The watch the reflector opens after its list finds the revision compacted
// (the hook compacts just before the watch call, after changing the store):
// it re-lists and delivers exactly the difference.
TEST_F(EtcdTest, ReflectorRelistsAfterCompaction) {
  Backend& b = *backend_;
  ASSERT_TRUE(b.put(prefix_ + "a", "1").ok());
  ASSERT_TRUE(b.put(prefix_ + "b", "2").ok());
  FaultInjector f;
  FaultyBackend faulty(b, f);
  std::atomic<int> watches{0};
  auto raw = another();
  f.setHook([&](const std::string& method) {
    if (method != "watch" || watches++ != 0) return;
    ASSERT_TRUE(raw->del(prefix_ + "a").ok());
    ASSERT_TRUE(raw->put(prefix_ + "b", "2b").ok());
    ASSERT_TRUE(raw->compact(raw->put(prefix_ + "c", "3").value()).ok());
  });
  RecordingHandler log;
  ReflectorOptions o;
  o.backoff_min = 10ms;
  Reflector r(faulty, prefix_, log, o);
  r.start();
  ASSERT_TRUE(log.waitForLine(fmt::format("upsert {}c=3", prefix_)));
  auto lines = log.waitFor(7);
  ASSERT_EQ(lines.size(), 7u);
  EXPECT_EQ(std::vector<std::string>(lines.begin(), lines.begin() + 2),
            (std::vector<std::string>{fmt::format("upsert {}a=1", prefix_), fmt::format("upsert {}b=2", prefix_)}));
  EXPECT_EQ(std::vector<std::string>(lines.begin() + 3, lines.begin() + 6),
            (std::vector<std::string>{fmt::format("upsert {}b=2b", prefix_), fmt::format("upsert {}c=3", prefix_),
                                      fmt::format("delete {}a", prefix_)}));
  r.stop();
  EXPECT_EQ(r.stats().relists_compacted, 1u);
  EXPECT_EQ(r.stats().lists, 2u);
}

TEST_F(EtcdTest, TwoAllocatorsRacingGetOneNumberPerLabelSet) {
  auto b1 = another();
  auto b2 = another();
  auto make = [&](Backend& b, const std::string& ip, uint64_t seed) {
    ClusterIdentityConfig c;
    c.node_suffix = ip;
    c.lease = b.grantLease(30).value().id;
    c.base = prefix_ + "identities/v1";
    c.min_id = 256;
    c.max_id = 280;  // small: number collisions between the nodes happen
    c.seed = seed;
    c.backoff = 5ms;
    return ClusterIdentityAllocator::create(b, c).value();
  };
  auto n1 = make(*b1, "10.0.0.1", 1);
  auto n2 = make(*b2, "10.0.0.2", 2);
  constexpr int kSets = 6, kThreads = 3;
  std::vector<labels::LabelSet> sets;
  for (int i = 0; i < kSets; i++) sets.push_back(labels::parseLabels(fmt::format("app=s{}", i)).value());
  EXPECT_EQ(raceAllocations({n1.get(), n2.get()}, sets, kThreads), "");
  EXPECT_EQ(backend_->list(prefix_ + "identities/v1/id/").value().kvs.size(), size_t(kSets));
  EXPECT_EQ(backend_->list(prefix_ + "identities/v1/value/").value().kvs.size(), size_t(2 * kSets));
  EXPECT_TRUE(backend_->list(prefix_ + "identities/v1/locks/").value().kvs.empty());
}

TEST_F(EtcdTest, WrongUrlsAreClearErrorsAndAClosedPortFailsOver) {
  auto scheme = EtcdBackend::create("https://127.0.0.1:2379");
  ASSERT_FALSE(scheme.ok());
  EXPECT_EQ(scheme.error().message,
            "--kvstore-opt etcd.endpoints: 'https://127.0.0.1:2379': scheme 'https' is not supported yet (no TLS "
            "options); want http://HOST:PORT[,http://HOST:PORT...]");
  EXPECT_EQ(EtcdBackend::create("127.0.0.1:2379").error().message,
            "--kvstore-opt etcd.endpoints: '127.0.0.1:2379': no scheme; want http://HOST:PORT[,http://HOST:PORT...]");

  const int closed = membrane::testing::freePort();
  auto dead = EtcdBackend::create(fmt::format("http://127.0.0.1:{}", closed)).value();
  auto start = Clock::now();
  auto r = dead->get("k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ECONNREFUSED);
  EXPECT_EQ(r.error().message,
            fmt::format("get 'k': etcd http://127.0.0.1:{}: Couldn't connect to server", closed));
  EXPECT_LT(Clock::now() - start, 2s);

  auto both = EtcdBackend::create(fmt::format("http://127.0.0.1:{},{}", closed, etcd_->clientUrl())).value();
  ASSERT_TRUE(both->put(prefix_ + "k", "v").ok());
  EXPECT_EQ(both->get(prefix_ + "k").value()->value, "v");
}

// Last: restarts the suite's etcd. The reflector sees the stream break,
// retries while etcd is down, and converges once it is back.
TEST_F(EtcdTest, ReflectorConvergesAcrossAnEtcdRestart) {
  Backend& b = *backend_;
  ASSERT_TRUE(b.put(prefix_ + "a", "1").ok());
  ASSERT_TRUE(b.put(prefix_ + "b", "1").ok());
  RecordingHandler log;
  ReflectorOptions o;
  o.backoff_min = 20ms;
  o.backoff_max = 200ms;
  Reflector r(b, prefix_, log, o);
  r.start();
  ASSERT_EQ(log.waitFor(3).size(), 3u);

  etcd_->stop();
  ASSERT_TRUE(membrane::testing::waitFor([&] { return r.stats().relists_broken == 1; }, 10s));
  std::string error;
  ASSERT_TRUE(etcd_->restart(&error)) << error;
  auto writer = another();
  ASSERT_TRUE(writer->del(prefix_ + "a").ok());
  ASSERT_TRUE(writer->put(prefix_ + "c", "3").ok());
  EXPECT_TRUE(log.waitForLine(fmt::format("delete {}a", prefix_), 3));
  EXPECT_TRUE(log.waitForLine(fmt::format("upsert {}c=3", prefix_), 3));
  r.stop();
  auto s = r.stats();
  EXPECT_EQ(s.relists_broken, 1u);
  EXPECT_GE(s.lists, 2u);
  // Each key's final state was delivered exactly once after the restart.
  auto lines = log.lines();
  EXPECT_EQ(std::count(lines.begin(), lines.end(), fmt::format("delete {}a", prefix_)), 1);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), fmt::format("upsert {}c=3", prefix_)), 1);
}

}  // namespace
}  // namespace membrane::kvstore
