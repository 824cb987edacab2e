// The kvstore seam: what membrane's cluster mode needs from etcd (v3 API
// semantics: one revision counter for the whole store, leases, watches from a
// revision), as one small interface with two implementations:
//   kvstore::EtcdBackend   (src/kvstore/etcd_backend.h) etcd's JSON gateway over HTTP
//   kvstore::MemoryBackend (src/kvstore/memory_backend.h) an in-memory fake for tests
// Keys and values are byte strings (std::string); keys are stored as written
// (Cilium's etcd backend does not encode them either).
//
// Errors: every call returns Result/Status; the message names the endpoint,
// the key and what etcd said ("etcd http://127.0.0.1:2379 put key 'a': HTTP
// 404: etcdserver: requested lease not found"). Codes: ENOENT (lease not
// found / expired), ETIMEDOUT (the call's timeout passed), ECONNREFUSED (no
// endpoint reachable), ERANGE (revision compacted), EINVAL (bad argument or
// an answer that does not parse), EIO (anything else).
// Every call is bounded: unary calls by the backend's operation timeout,
// lock() by its own timeout, Watch::next() by its argument. Nothing blocks
// forever.
//
// Thread-safety: a Backend is safe to call from any number of threads. A
// Watch is used by one consumer thread; only cancel() may be called from
// another thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "membrane/result.h"

namespace membrane::kvstore {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;
using LeaseId = int64_t;
inline constexpr LeaseId kNoLease = 0;

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;  // writes since creation (1 after the first put)
  LeaseId lease = kNoLease;
  bool operator==(const KeyValue&) const = default;
};

// A prefix listing: every key starting with the prefix, sorted by key, and the
// store revision the listing reflects (a watch from revision + 1 misses nothing).
struct ListResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;
};

// Serializable reads are served by the member the client talks to (may be
// stale, but keep working without quorum: what Cilium's watchers use);
// linearizable reads go through the leader (what allocation decisions need).
enum class Consistency { Serializable, Linearizable };

// One condition of a transaction (etcd's Compare). With `prefix` set the
// condition holds for every key starting with `key`; an empty range compares
// as one absent key (version/create/mod revision 0), so
// {Version, Equal, key=P, prefix=true, number=0} means "no key under P".
struct Compare {
  enum class Target { Version, CreateRevision, ModRevision, Value };
  enum class Op { Equal, NotEqual, Greater, Less };
  Target target = Target::Version;
  Op op = Op::Equal;
  std::string key;
  bool prefix = false;
  int64_t number = 0;  // Version, CreateRevision, ModRevision
  std::string value;   // Value
};

// One operation of a transaction branch.
struct TxnOp {
  enum class Kind { Put, Delete, DeletePrefix, Get };
  Kind kind = Kind::Get;
  std::string key;
  std::string value;      // Put
  LeaseId lease = kNoLease;  // Put

  static TxnOp put(std::string k, std::string v, LeaseId l = kNoLease) {
    return {Kind::Put, std::move(k), std::move(v), l};
  }
  static TxnOp del(std::string k) { return {Kind::Delete, std::move(k), {}, kNoLease}; }
  static TxnOp get(std::string k) { return {Kind::Get, std::move(k), {}, kNoLease}; }
};

struct Txn {
  std::vector<Compare> compares;  // all must hold
  std::vector<TxnOp> success;     // run atomically when they do
  std::vector<TxnOp> failure;     // run atomically when they do not
};

struct TxnResult {
  bool succeeded = false;
  int64_t revision = 0;  // store revision after the transaction
  // One entry per op of the branch that ran, in order: the key for a Get
  // (nullopt when absent); nullopt for the other kinds.
  std::vector<std::optional<KeyValue>> gets;
};

// createIfAbsent's answer: created, or the value already there.
struct CreateResult {
  bool created = false;
  std::optional<KeyValue> existing;  // set when !created
  int64_t revision = 0;
};

struct Lease {
  LeaseId id = kNoLease;
  int64_t ttl_seconds = 0;  // granted TTL (etcd may raise a too-short one)
};

struct Event {
  enum class Type { Put, Delete };
  Type type = Type::Put;
  // For Delete: key and mod_revision (the deletion's revision) only.
  KeyValue kv;
};

// What Watch::next() returns. A watch delivers every change under its prefix
// in revision order, then at most one terminal item (Compacted, Broken or
// Cancelled) after which it is finished.
struct WatchBatch {
  enum class Kind {
    Events,     // `events` (non-empty), all of revision <= `revision`
    Timeout,    // nothing arrived within next()'s timeout; the watch goes on
    Compacted,  // terminal: the start revision was compacted away (`compact_revision`): re-list
    Broken,     // terminal: stream lost (etcd down, endpoint failed, bad data): `error` says why
    Cancelled,  // terminal: cancel() was called
  };
  Kind kind = Kind::Timeout;
  std::vector<Event> events;
  int64_t revision = 0;
  int64_t compact_revision = 0;
  Error error;
};

class Watch {
 public:
  virtual ~Watch() = default;  // stops the stream; waits for its thread, if any
  // Waits at most `timeout` for the next batch. After a terminal item every
  // further call returns the same terminal kind at once.
  virtual WatchBatch next(Millis timeout) = 0;
  // From any thread: ends the watch; a blocked next() returns Cancelled at once.
  virtual void cancel() = 0;
};

// The observer hook for Cilium's kvstore metrics. The agent implements it
// with its Prometheus registry; the backend calls it on the caller's thread
// (must be thread-safe and quick).
//   operation(): cilium_kvstore_operations_duration_seconds{scope,kind,action,outcome}
//     scope   = scopeFromKey(key) ("identities/v1", "nodes/v1", ...),
//     kind    = "read" | "set" | "delete",
//     action  = Cilium's names: "Get", "ListPrefix", "Update", "CreateOnly",
//               "CompareAndDelete", "Delete", "DeletePrefix", "Txn", "Lock", "Unlock",
//     outcome = "success" | "fail".
//   eventQueued(): cilium_kvstore_events_queue_seconds{scope,action}, from
//     kvstore::Reflector: action = "create" | "modify" | "delete", seconds =
//     time the consumer's handler took to take the event (Cilium: time blocked
//     sending into the watcher's channel).
//   quorumError(): cilium_kvstore_quorum_errors_total{error}, from
//     kvstore::probeQuorum(): error = "timeout" | "lock timeout".
// Lease calls are not reported (Cilium does not either).
class Observer {
 public:
  virtual ~Observer() = default;
  virtual void operation(std::string_view scope, std::string_view kind, std::string_view action,
                         std::string_view outcome, double seconds) = 0;
  virtual void eventQueued(std::string_view scope, std::string_view action, double seconds) = 0;
  virtual void quorumError(std::string_view error) = 0;
};

// Cilium's GetScopeFromKey: "cilium/state/identities/v1/id/5" -> "identities/v1";
// keys with fewer than 4 '/'-separated parts give their first 12 characters.
std::string scopeFromKey(std::string_view key);

// The smallest key greater than every key starting with `prefix` (etcd's
// range_end for a prefix); "\0" for the empty prefix (= the whole keyspace).
std::string prefixEnd(std::string_view prefix);

// The interface. Public calls are non-virtual: they time the call and report
// it to the observer, then run the implementation's do*() (NVI), so every
// implementation reports the same names.
class Backend {
 public:
  virtual ~Backend() = default;

  // Human-readable target, for messages ("etcd http://127.0.0.1:2379", "memory").
  virtual std::string describe() const = 0;

  // The value of `key`, nullopt when absent.
  Result<std::optional<KeyValue>> get(const std::string& key, Consistency c = Consistency::Linearizable);
  // Every key under `prefix` (sorted) and the revision of the snapshot.
  Result<ListResult> list(const std::string& prefix, Consistency c = Consistency::Serializable);
  // Creates or replaces `key`; with a lease the key is deleted when the lease
  // ends. ENOENT if the lease does not exist. Returns the new revision.
  Result<int64_t> put(const std::string& key, const std::string& value, LeaseId lease = kNoLease);
  // Puts `key` only if it does not exist (txn: create_revision == 0); else
  // returns the existing key-value.
  Result<CreateResult> createIfAbsent(const std::string& key, const std::string& value, LeaseId lease = kNoLease);
  // Deletes `key` only if its mod_revision is still `mod_revision`; false
  // (nothing deleted) when it changed or the key is gone.
  Result<bool> compareAndDelete(const std::string& key, int64_t mod_revision);
  // Deletes `key`; returns how many keys were deleted (0 or 1).
  Result<int64_t> del(const std::string& key);
  // Deletes every key under `prefix`; returns the count.
  Result<int64_t> deletePrefix(const std::string& prefix);
  // A general transaction (compares + two branches), atomic.
  Result<TxnResult> txn(const Txn& t);

  // Leases. keepAlive returns the remaining TTL; ENOENT once the lease expired
  // or was revoked (its keys are gone then). revoke deletes the lease's keys.
  Result<Lease> grantLease(int64_t ttl_seconds);
  Result<int64_t> keepAlive(LeaseId lease);
  Status revokeLease(LeaseId lease);

  // Distributed lock (etcd's v3lock service, the same scheme as etcd's
  // concurrency.Mutex that Cilium uses): the owner key is
  // "<name>/<lease id in hex>", attached to `lease`; waits up to `timeout` until
  // every older owner key under "<name>/" is gone. Returns the owner key (use it
  // in Compare{CreateRevision, Greater, key, 0} to make a write depend on still
  // holding the lock). The lock ends with unlock() or with the lease.
  // Mutual exclusion is between LEASES: two callers with the same lease share
  // one owner key and both "hold" the lock (callers serialise themselves).
  // ETIMEDOUT when not acquired in time; the owner key the wait created is
  // removed (by etcd when it sees the request abandoned, shortly after).
  // ENOENT when the lease does not exist.
  Result<std::string> lock(const std::string& name, LeaseId lease, Millis timeout);
  Status unlock(const std::string& owner_key);

  // Watches every change under `prefix` from `from_revision` on (0 = from now).
  Result<std::unique_ptr<Watch>> watch(const std::string& prefix, int64_t from_revision);

  // Compacts the history up to `revision` (watches from older revisions get
  // Compacted). For tests and maintenance.
  Status compact(int64_t revision);

  // Installs the metrics hook (nullptr: none) and the clock the durations are
  // measured with. Call before the backend is shared between threads.
  void setObserver(Observer* observer, std::function<Clock::time_point()> now = Clock::now);

 protected:
  virtual Result<std::optional<KeyValue>> doGet(const std::string& key, Consistency c) = 0;
  virtual Result<ListResult> doList(const std::string& prefix, Consistency c) = 0;
  virtual Result<int64_t> doPut(const std::string& key, const std::string& value, LeaseId lease) = 0;
  virtual Result<int64_t> doDeleteRange(const std::string& key, bool prefix) = 0;
  virtual Result<TxnResult> doTxn(const Txn& t) = 0;
  virtual Result<Lease> doGrantLease(int64_t ttl_seconds) = 0;
  virtual Result<int64_t> doKeepAlive(LeaseId lease) = 0;
  virtual Status doRevokeLease(LeaseId lease) = 0;
  virtual Result<std::string> doLock(const std::string& name, LeaseId lease, Millis timeout) = 0;
  virtual Status doUnlock(const std::string& owner_key) = 0;
  virtual Result<std::unique_ptr<Watch>> doWatch(const std::string& prefix, int64_t from_revision) = 0;
  virtual Status doCompact(int64_t revision) = 0;

 private:
  template <typename R, typename F>
  R observed(const std::string& key, std::string_view kind, std::string_view action, F&& f);

  Observer* observer_ = nullptr;
  std::function<Clock::time_point()> now_ = Clock::now;
};

// Cilium's quorum probe: acquire and release a lock under
// "cilium/.initlock/<random hex>" with a short lease. On failure reports
// quorumError("lock timeout") (lock not acquired in time) or
// quorumError("timeout") (any other failure) to `observer` (may be null) and
// returns the error.
Status probeQuorum(Backend& backend, Observer* observer, Millis timeout);

}  // namespace membrane::kvstore
