// MemoryBackend: an in-memory kvstore::Backend with etcd's semantics, for
// unit tests of the code above the seam (Reflector, ClusterIdentityAllocator,
// later the agent's cluster wiring). What it models, as etcd 3.4 does it:
//   - one revision counter (starts at 1); every write transaction bumps it
//     once, and every key it writes gets that mod_revision;
//   - create_revision / version per key; txn compares on a key or a prefix
//     (an empty range compares as one absent key; Value on it is false);
//   - leases on a MANUAL clock: advance() moves it, and a lease whose TTL ran
//     out ends with all its keys deleted in one revision; keepAlive renews;
//   - the lock scheme of etcd's v3lock (owner key "<name>/<lease hex>",
//     acquired when no older owner key is left; the wait is bounded in REAL
//     time by the call's timeout);
//   - watches from a revision (history replayed), compaction (a watch from a
//     compacted revision gets Compacted), and test hooks that end every open
//     watch as etcd would on compaction or on a lost stream.
// What it does not model: consistency levels (every read is current), quotas,
// request size limits, clustering.
//
// FaultyBackend wraps any Backend and fails the Nth call with a chosen error.
//
// Thread-safety: both are safe from any thread (one internal mutex).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "membrane/kvstore.h"
#include "membrane/mutex.h"
#include "membrane/thread_annotations.h"

namespace membrane::kvstore {

class MemoryBackend final : public Backend {
 public:
  MemoryBackend() = default;
  ~MemoryBackend() override = default;

  std::string describe() const override { return "memory"; }

  // Moves the lease clock on by `d`; leases that ran out end (keys deleted).
  void advance(Millis d);
  // The current store revision.
  int64_t revision() const;
  // Live leases.
  size_t leaseCount() const;
  // Watches not yet finished (terminal item not delivered, not cancelled, not destroyed).
  size_t openWatches() const;
  // Waits (real time, at most `timeout`) until at least `n` watches are open.
  bool waitOpenWatches(size_t n, Millis timeout);
  // Ends every open watch with a Broken item carrying `why` (etcd down,
  // connection reset).
  void breakWatches(const Error& why);
  // Compacts at the current revision and ends every open watch with
  // Compacted (as etcd does to a watcher that fell behind a compaction).
  void compactWatches();

  // Shared with the Watch objects it hands out (which may outlive nothing:
  // destroy watches before the backend).
  struct WatchState;

 protected:
  Result<std::optional<KeyValue>> doGet(const std::string& key, Consistency c) override;
  Result<ListResult> doList(const std::string& prefix, Consistency c) override;
  Result<int64_t> doPut(const std::string& key, const std::string& value, LeaseId lease) override;
  Result<int64_t> doDeleteRange(const std::string& key, bool prefix) override;
  Result<TxnResult> doTxn(const Txn& t) override;
  Result<Lease> doGrantLease(int64_t ttl_seconds) override;
  Result<int64_t> doKeepAlive(LeaseId lease) override;
  Status doRevokeLease(LeaseId lease) override;
  Result<std::string> doLock(const std::string& name, LeaseId lease, Millis timeout) override;
  Status doUnlock(const std::string& owner_key) override;
  Result<std::unique_ptr<Watch>> doWatch(const std::string& prefix, int64_t from_revision) override;
  Status doCompact(int64_t revision) override;

 private:
  struct LeaseState {
    int64_t ttl = 0;
    Clock::time_point expiry;
    std::set<std::string> keys;
  };
  // One write transaction in progress: its revision and the events it made.
  struct Write {
    int64_t revision = 0;
    std::vector<Event> events;
  };

  Write beginWrite() REQUIRES(mu_) { return Write{revision_ + 1, {}}; }
  void applyPut(Write& w, const std::string& key, const std::string& value, LeaseId lease) REQUIRES(mu_);
  void applyDelete(Write& w, const std::string& key) REQUIRES(mu_);
  int64_t applyDeleteRange(Write& w, const std::string& key, bool prefix) REQUIRES(mu_);
  // Makes the write visible: bumps the revision (if it wrote), records
  // history, feeds watches, wakes lock waiters.
  void commit(Write& w) REQUIRES(mu_);
  bool holds(const Compare& c) const REQUIRES(mu_);
  std::vector<const KeyValue*> range(const std::string& key, bool prefix) const REQUIRES(mu_);
  void endLease(LeaseId id) REQUIRES(mu_);
  void endWatches(const WatchBatch& terminal) REQUIRES(mu_);
  size_t countOpenWatches() const REQUIRES(mu_);

  mutable Mutex mu_;
  std::condition_variable_any changed_;  // with mu_: any write (lock waiters), a new watch
  std::map<std::string, KeyValue> data_ GUARDED_BY(mu_);
  int64_t revision_ GUARDED_BY(mu_) = 1;
  int64_t compact_revision_ GUARDED_BY(mu_) = 0;
  std::vector<Event> history_ GUARDED_BY(mu_);  // every event after compact_revision_, in order
  std::map<LeaseId, LeaseState> leases_ GUARDED_BY(mu_);
  LeaseId next_lease_ GUARDED_BY(mu_) = 0x7a00000000000001;
  Clock::time_point now_ GUARDED_BY(mu_);  // the manual lease clock
  std::vector<std::weak_ptr<WatchState>> watches_ GUARDED_BY(mu_);
};

// Fault injection: the nth (1-based) matching call from arming on fails with
// Error(err, "injected fault: <method> call <n>: <strerror>") without reaching
// the wrapped backend; it fires once. Methods are the do*() names without
// "do", lower camel case: get, list, put, deleteRange, txn (createIfAbsent and
// compareAndDelete are transactions), grantLease, keepAlive, revokeLease,
// lock, unlock, watch, compact. Thread-safe.
class FaultInjector {
 public:
  void failNth(size_t n, int err = EIO, std::string method = "");
  void clear();
  // Calls seen since the last failNth/clear, in order.
  std::vector<std::string> calls() const;
  // The method whose call failed, if the fault fired.
  std::optional<std::string> fired() const;
  // Runs before every call (on the caller's thread, outside the injector's
  // lock), e.g. to hold a call until the test has changed the store.
  void setHook(std::function<void(const std::string& method)> hook);
  // For the wrapper: runs the hook, records the call, returns the injected
  // error if it is the one.
  Status check(const char* method);

 private:
  mutable Mutex mu_;
  size_t n_ GUARDED_BY(mu_) = 0;  // 0 = disarmed
  int err_ GUARDED_BY(mu_) = EIO;
  std::string method_ GUARDED_BY(mu_);
  size_t matched_ GUARDED_BY(mu_) = 0;
  std::vector<std::string> calls_ GUARDED_BY(mu_);
  std::optional<std::string> fired_ GUARDED_BY(mu_);
  std::function<void(const std::string&)> hook_ GUARDED_BY(mu_);
};

class FaultyBackend final : public Backend {
 public:
  FaultyBackend(Backend& inner, FaultInjector& faults) : inner_(inner), f_(faults) {}
  std::string describe() const override { return inner_.describe(); }

 protected:
  Result<std::optional<KeyValue>> doGet(const std::string& key, Consistency c) override;
  Result<ListResult> doList(const std::string& prefix, Consistency c) override;
  Result<int64_t> doPut(const std::string& key, const std::string& value, LeaseId lease) override;
  Result<int64_t> doDeleteRange(const std::string& key, bool prefix) override;
  Result<TxnResult> doTxn(const Txn& t) override;
  Result<Lease> doGrantLease(int64_t ttl_seconds) override;
  Result<int64_t> doKeepAlive(LeaseId lease) override;
  Status doRevokeLease(LeaseId lease) override;
  Result<std::string> doLock(const std::string& name, LeaseId lease, Millis timeout) override;
  Status doUnlock(const std::string& owner_key) override;
  Result<std::unique_ptr<Watch>> doWatch(const std::string& prefix, int64_t from_revision) override;
  Status doCompact(int64_t revision) override;

 private:
  Backend& inner_;
  FaultInjector& f_;
};

}  // namespace membrane::kvstore
