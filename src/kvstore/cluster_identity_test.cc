#include "src/kvstore/cluster_identity.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <set>

#include "src/kvstore/allocation_race.h"
#include "src/kvstore/memory_backend.h"

namespace membrane::kvstore {
namespace {

using namespace std::chrono_literals;
using labels::LabelSet;

LabelSet set(std::string_view text) { return labels::parseLabels(text).value(); }

TEST(LabelString, FormatsLikeCiliumAndRoundTrips) {
  auto pod = labels::endpointLabels("covalent", set("app=frontend"));
  const std::string s = formatLabelsForKVStore(pod);
  EXPECT_EQ(s,
            "k8s:app=frontend;k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=covalent;"
            "k8s:io.cilium.k8s.policy.cluster=default;k8s:io.cilium.k8s.policy.serviceaccount=default;"
            "k8s:io.kubernetes.pod.namespace=covalent;");
  EXPECT_EQ(parseLabelsFromKVStore(s).value(), pod);
  // Sorted by key, not by source: Cilium's order.
  LabelSet mixed;
  mixed.add("unspec", "b", "1");
  mixed.add("k8s", "c", "");
  mixed.add("reserved", "a", "");
  EXPECT_EQ(formatLabelsForKVStore(mixed), "reserved:a=;unspec:b=1;k8s:c=;");
  EXPECT_EQ(parseLabelsFromKVStore("reserved:a=;unspec:b=1;k8s:c=;").value(), mixed);
}

TEST(LabelString, RejectsEverythingNotCanonical) {
  const char* bad[] = {"",
                       "k8s:a=b",             // no trailing ';'
                       "k8s:b=1;k8s:a=2;",    // unsorted
                       "k8s:a=1;k8s:a=2;",    // repeated
                       "a=b;",                // no source
                       ":a=b;",               // empty source
                       "k8s:ab;",             // no '='
                       "k8s:=b;",             // no key
                       ";",                   // empty label
                       "{\"ID\":5}",          // JSON from another writer
                       "k8s:a=b;;"};
  for (const char* s : bad) EXPECT_FALSE(parseLabelsFromKVStore(s).ok()) << s;
}

struct Cluster {
  MemoryBackend mem;
  Clock::time_point clock{};
  std::unique_ptr<ClusterIdentityAllocator> node(const std::string& ip, uint64_t seed = 1, uint32_t min_id = 256,
                                                 uint32_t max_id = 65535) {
    ClusterIdentityConfig c;
    c.node_suffix = ip;
    c.lease = mem.grantLease(60).value().id;
    c.min_id = min_id;
    c.max_id = max_id;
    c.seed = seed;
    c.backoff = 1ms;
    c.gc_grace = 60s;
    c.now = [this] { return clock; };
    return ClusterIdentityAllocator::create(mem, c).value();
  }
  std::vector<std::string> keys(const std::string& prefix) {
    std::vector<std::string> out;
    ListResult l = mem.list(prefix).value();  // not a range-for over a temporary's member
    for (const auto& kv : l.kvs) out.push_back(kv.key + "=" + kv.value);
    return out;
  }
};

TEST(ClusterIdentity, SameLabelsSameNumberAcrossNodesWithCiliumsKeys) {
  Cluster c;
  auto a = c.node("10.0.0.1", 1);
  auto b = c.node("10.0.0.2", 2);
  const LabelSet web = set("app=web");
  uint32_t id = a->allocate(web).value();
  EXPECT_GE(id, 256u);
  EXPECT_EQ(b->allocate(web).value(), id);
  EXPECT_EQ(a->allocate(web).value(), id);  // local reference: no store write
  EXPECT_EQ(a->localRefs(web), 2u);
  EXPECT_EQ(c.keys("cilium/state/identities/v1/id/"),
            std::vector<std::string>{fmt::format("cilium/state/identities/v1/id/{}=k8s:app=web;", id)});
  EXPECT_EQ(c.keys("cilium/state/identities/v1/value/"),
            (std::vector<std::string>{fmt::format("cilium/state/identities/v1/value/k8s:app=web;/10.0.0.1={}", id),
                                      fmt::format("cilium/state/identities/v1/value/k8s:app=web;/10.0.0.2={}", id)}));
  EXPECT_TRUE(c.keys("cilium/state/identities/v1/locks/").empty());  // locks released
  EXPECT_EQ(a->lookup(id).value(), std::optional<LabelSet>(web));
  EXPECT_NE(b->allocate(set("app=db")).value(), id);
}

TEST(ClusterIdentity, RefusesNodeLocalAndReservedSets) {
  Cluster c;
  auto a = c.node("10.0.0.1");
  EXPECT_EQ(a->allocate(LabelSet()).error().code, EINVAL);
  EXPECT_EQ(a->allocate(labels::reservedLabels(labels::Reserved::Host)).error().code, EINVAL);
  EXPECT_EQ(a->allocate(labels::cidrIdentityLabels("10.0.0.0/8")).error().code, EINVAL);
  EXPECT_TRUE(c.keys("cilium/").empty());
  ClusterIdentityConfig bad;
  bad.node_suffix = "a/b";
  bad.lease = 1;
  EXPECT_EQ(ClusterIdentityAllocator::create(c.mem, bad).error().code, EINVAL);
}

TEST(ClusterIdentity, ExhaustsTheRange) {
  Cluster c;
  auto a = c.node("10.0.0.1", 7, 300, 302);
  std::set<uint32_t> ids;
  for (const char* l : {"a=1", "a=2", "a=3"}) ids.insert(a->allocate(set(l)).value());
  EXPECT_EQ(ids, (std::set<uint32_t>{300, 301, 302}));
  auto full = a->allocate(set("a=4"));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, ENOSPC);
  EXPECT_EQ(full.error().message,
            "allocate cluster identity for 'k8s:a=4;': all 3 identities in [300, 302] are taken");
}

// 8 threads on each of two nodes allocate the same 12 label sets in
// different orders: one number per label set, one label set per number.
TEST(ClusterIdentity, ConcurrentAllocationGivesOneNumberPerLabelSet) {
  Cluster c;
  auto a = c.node("10.0.0.1", 11, 256, 300);  // a small range: number collisions happen
  auto b = c.node("10.0.0.2", 12, 256, 300);
  constexpr int kSets = 12, kThreads = 8;
  std::vector<LabelSet> sets;
  for (int i = 0; i < kSets; i++) sets.push_back(set(fmt::format("app=a{}", i)));
  EXPECT_EQ(raceAllocations({a.get(), b.get()}, sets, kThreads), "");
  EXPECT_EQ(c.keys("cilium/state/identities/v1/id/").size(), size_t(kSets));
  EXPECT_EQ(c.keys("cilium/state/identities/v1/value/").size(), size_t(2 * kSets));
  for (int i = 0; i < kSets; i++) {
    EXPECT_EQ(a->localRefs(sets[i]), uint32_t(kThreads));
    EXPECT_EQ(b->localRefs(sets[i]), uint32_t(kThreads));
  }
}

TEST(ClusterIdentity, ReleaseThenGarbageCollectionAfterTheGrace) {
  Cluster c;
  auto a = c.node("10.0.0.1", 1);
  auto b = c.node("10.0.0.2", 2);
  const LabelSet web = set("app=web");
  uint32_t id = a->allocate(web).value();
  ASSERT_EQ(b->allocate(web).value(), id);
  ASSERT_TRUE(a->release(web).ok());
  EXPECT_EQ(a->release(web).error().code, ENOENT);
  EXPECT_EQ(c.keys("cilium/state/identities/v1/value/").size(), 1u);
  auto g1 = a->runGc().value();
  EXPECT_EQ(g1.in_use, 1u);
  EXPECT_EQ(g1.deleted, 0u);

  ASSERT_TRUE(b->release(web).ok());
  EXPECT_TRUE(c.keys("cilium/state/identities/v1/value/").empty());
  auto g2 = a->runGc().value();  // first seen unused: the grace starts
  EXPECT_EQ(g2.pending, 1u);
  c.clock += 59s;
  EXPECT_EQ(a->runGc().value().pending, 1u);
  c.clock += 1s;
  auto g3 = a->runGc().value();
  EXPECT_EQ(g3.deleted, 1u);
  EXPECT_TRUE(c.keys("cilium/state/identities/v1/id/").empty());
  EXPECT_EQ(a->lookup(id).value(), std::nullopt);
  EXPECT_TRUE(c.keys("cilium/state/identities/v1/gclock/").empty());
}

TEST(ClusterIdentity, AnUnusedIdentityIsReusedDuringItsGraceAndThenKept) {
  Cluster c;
  auto a = c.node("10.0.0.1", 1);
  auto b = c.node("10.0.0.2", 2);
  const LabelSet web = set("app=web");
  uint32_t id = a->allocate(web).value();
  ASSERT_TRUE(a->release(web).ok());
  EXPECT_EQ(b->runGc().value().pending, 1u);
  EXPECT_EQ(b->allocate(web).value(), id);  // the unreferenced id/ key is reused, no second number
  c.clock += 120s;
  auto g = b->runGc().value();
  EXPECT_EQ(g.deleted, 0u);
  EXPECT_EQ(g.in_use, 1u);
  EXPECT_EQ(c.keys("cilium/state/identities/v1/id/").size(), 1u);
}

TEST(ClusterIdentity, ANodesReferencesGoWithItsLease) {
  Cluster c;
  auto a = c.node("10.0.0.1", 1);
  const LabelSet web = set("app=web");
  ASSERT_TRUE(a->allocate(web).ok());
  c.mem.advance(61s);  // node a stopped renewing its lease
  EXPECT_TRUE(c.keys("cilium/state/identities/v1/value/").empty());
  auto gc = c.node("10.0.0.9", 9);
  EXPECT_EQ(gc->runGc().value().pending, 1u);
  c.clock += 60s;
  EXPECT_EQ(gc->runGc().value().deleted, 1u);
}

// Foreign or malformed values under the prefix: skipped, counted, never an
// identity, never garbage-collected, and their numbers never reused.
TEST(ClusterIdentity, ForeignValuesAreSkippedAndCounted) {
  Cluster c;
  const std::string base = "cilium/state/identities/v1";
  ASSERT_TRUE(c.mem.put(base + "/id/300", "garbage").ok());
  ASSERT_TRUE(c.mem.put(base + "/id/301", "k8s:b=1;k8s:a=2;").ok());  // not canonical
  ASSERT_TRUE(c.mem.put(base + "/id/abc", "k8s:a=1;").ok());
  ASSERT_TRUE(c.mem.put(base + "/value/k8s:x=1;/10.9.9.9", "not-a-number").ok());
  auto a = c.node("10.0.0.1", 3, 300, 302);
  // The only free number is 302 (300 and 301 are held by foreign keys).
  EXPECT_EQ(a->allocate(set("x=1")).value(), 302u);
  // value/…/10.9.9.9 (1) + id/300, id/301, id/abc (3).
  EXPECT_EQ(a->malformed(), 4u);
  EXPECT_EQ(a->lastMalformed(), "key 'cilium/state/identities/v1/id/abc': 'abc' is not an identity number");
  EXPECT_EQ(a->allocate(set("x=2")).error().code, ENOSPC);
  EXPECT_EQ(a->lookup(300).error().code, EINVAL);
  EXPECT_EQ(a->malformed(), 8u);  // x=2's look at id/ (3) + lookup (1)

  c.clock += 3600s;
  auto g = a->runGc().value();
  EXPECT_EQ(g.skipped, 3u);
  EXPECT_EQ(g.deleted, 0u);
  EXPECT_EQ(g.in_use, 1u);
  EXPECT_EQ(c.keys(base + "/id/").size(), 4u);
}

TEST(ClusterIdentity, AStoreFailureEndsTheCallAndLeavesNoLocalState) {
  Cluster c;
  FaultInjector f;
  FaultyBackend b(c.mem, f);
  ClusterIdentityConfig cfg;
  cfg.node_suffix = "10.0.0.1";
  cfg.lease = c.mem.grantLease(60).value().id;
  auto a = ClusterIdentityAllocator::create(b, cfg).value();
  f.failNth(1, ECONNREFUSED, "txn");
  auto r = a->allocate(set("app=web"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ECONNREFUSED);
  EXPECT_EQ(a->localRefs(set("app=web")), 0u);
  EXPECT_TRUE(c.keys("cilium/state/identities/v1/locks/").empty());  // unlocked on the error path
  EXPECT_TRUE(a->allocate(set("app=web")).ok());                      // a retry works
  // A failed release keeps the entry (refs 0): the next allocate reuses the key.
  f.failNth(1, EIO, "deleteRange");
  EXPECT_EQ(a->release(set("app=web")).error().code, EIO);
  EXPECT_EQ(c.keys("cilium/state/identities/v1/value/").size(), 1u);
  EXPECT_TRUE(a->allocate(set("app=web")).ok());
  EXPECT_EQ(a->localRefs(set("app=web")), 1u);
}

// etcd was unreachable longer than the lease: the node's references are
// gone. With a new lease, syncLocalKeys writes them again, re-creates a
// vanished id/ key, finishes a failed release and reports a number taken over.
TEST(ClusterIdentity, SyncLocalKeysRestoresReferencesAfterALostLease) {
  Cluster c;
  FaultInjector f;
  FaultyBackend b(c.mem, f);
  ClusterIdentityConfig cfg;
  cfg.node_suffix = "10.0.0.1";
  cfg.lease = c.mem.grantLease(60).value().id;
  cfg.seed = 5;
  auto a = ClusterIdentityAllocator::create(b, cfg).value();
  const std::string base = "cilium/state/identities/v1";
  uint32_t web = a->allocate(set("app=web")).value();
  uint32_t db = a->allocate(set("app=db")).value();
  uint32_t old = a->allocate(set("app=old")).value();
  ASSERT_TRUE(a->allocate(set("app=gone")).ok());
  f.failNth(1, EIO, "deleteRange");
  ASSERT_FALSE(a->release(set("app=gone")).ok());  // entry kept, key still there

  c.mem.advance(61s);  // the lease ran out: every reference is gone
  EXPECT_TRUE(c.keys(base + "/value/").empty());
  ASSERT_TRUE(c.mem.del(fmt::format("{}/id/{}", base, db)).ok());           // lost id/ key
  ASSERT_TRUE(c.mem.put(fmt::format("{}/id/{}", base, old), "k8s:x=y;").ok());  // taken over

  a->setLease(c.mem.grantLease(60).value().id);
  auto r = a->syncLocalKeys().value();
  EXPECT_EQ(r.written, 2u);   // web, db (with its id/ key)
  EXPECT_EQ(r.released, 1u);  // gone: its key went with the lease; the entry goes now
  EXPECT_EQ(r.failed, 1u);    // old
  EXPECT_EQ(r.first_error, fmt::format("identity {} of 'k8s:app=old;' now holds 'k8s:x=y;'", old));
  EXPECT_EQ(c.keys(base + "/value/"),
            (std::vector<std::string>{fmt::format("{}/value/k8s:app=db;/10.0.0.1={}", base, db),
                                      fmt::format("{}/value/k8s:app=web;/10.0.0.1={}", base, web)}));
  EXPECT_EQ(a->lookup(db).value(), std::optional<LabelSet>(set("app=db")));
  EXPECT_EQ(a->localRefs(set("app=gone")), 0u);
  // The references live on the new lease.
  c.mem.advance(30s);
  EXPECT_EQ(c.keys(base + "/value/").size(), 2u);
}

// Every store call of an allocation, of a second node's reference, of a
// release and of a GC round fails in turn: the call reports the error, leaves
// no lock behind and no half state (one id/ key with its references, or
// none), and a retry settles to the same keys as a run without faults.
TEST(ClusterIdentity, EveryFailedStoreCallLeavesAConsistentStore) {
  const std::string base = "cilium/state/identities/v1";
  auto scenario = [&](Cluster& c, Backend& b) -> std::vector<std::string> {
    auto make = [&](const std::string& ip) {
      ClusterIdentityConfig cfg;
      cfg.node_suffix = ip;
      cfg.lease = c.mem.grantLease(60).value().id;
      cfg.seed = 3;
      cfg.min_id = cfg.max_id = 300;  // one number: a retry cannot pick another
      cfg.gc_grace = 1s;
      cfg.now = [&c] { return c.clock; };
      return ClusterIdentityAllocator::create(b, cfg).value();
    };
    auto n1 = make("10.0.0.1");
    auto n2 = make("10.0.0.2");
    const LabelSet web = set("app=web");
    auto settle = [&](auto&& call) {
      for (int i = 0; i < 3 && !call(); i++) {
      }
    };
    settle([&] { return n1->allocate(web).ok(); });
    settle([&] { return n2->allocate(web).ok(); });
    settle([&] { return n1->release(web).ok(); });
    settle([&] { return n2->release(web).ok(); });
    settle([&] { return n1->runGc().ok(); });  // records the unused id
    std::vector<std::string> mid = c.keys(base + "/");
    c.clock += 1s;
    settle([&] { return n1->runGc().ok(); });  // deletes it after the grace
    EXPECT_TRUE(c.keys(base + "/locks/").empty());
    EXPECT_TRUE(c.keys(base + "/gclock/").empty());
    std::vector<std::string> end = c.keys(base + "/");
    mid.insert(mid.end(), end.begin(), end.end());
    return mid;
  };
  Cluster clean;
  FaultInjector counter;
  FaultyBackend counted(clean.mem, counter);
  const auto want = scenario(clean, counted);
  ASSERT_EQ(want, std::vector<std::string>{base + "/id/300=k8s:app=web;"});  // between the GC rounds only
  const size_t calls = counter.calls().size();
  ASSERT_EQ(calls, 20u);  // allocate 5 + reference 4 + releases 2 + GC rounds 4 and 5
  for (size_t n = 1; n <= calls; n++) {
    Cluster c;
    FaultInjector f;
    FaultyBackend b(c.mem, f);
    f.failNth(n, EIO);
    EXPECT_EQ(scenario(c, b), want) << "failing call " << n;
    EXPECT_TRUE(f.fired().has_value()) << "failing call " << n;
  }
}

}  // namespace
}  // namespace membrane::kvstore
