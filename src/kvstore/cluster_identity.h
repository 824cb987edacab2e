// Cluster-wide security identities in etcd, with Cilium's algorithm and key
// layout (docs/cluster.md, ../shared/reference/cluster.md §1.1, §1.2, §1.4):
//
//   <base>/id/<ID>                      = "<label string>"  no lease ("master key")
//   <base>/value/<label string>/<node>  = "<ID>"            this node's lease ("slave key": a reference)
//   <base>/locks/<label string>/<lease> (etcd lock, per label set, while allocating)
//   <base>/gclock/<lease>               (etcd lock, one garbage collector at a time)
// with <base> = "cilium/state/identities/v1" and the label string as Cilium
// writes it (formatLabelsForKVStore).
//
// allocate(L): a label set already used on this node only takes a local
// reference (no I/O). Otherwise, under the per-label-set lock:
//   1. another node's reference under value/<L>/ names the ID: add ours, in a
//      txn that requires id/<ID> to still hold L and the lock to be held;
//   2. else an id/<ID> key holding L that no node references (released,
//      awaiting GC): reuse it, the same way;
//   3. else pick a free number at random in [min_id, max_id] (random, so
//      nodes allocating different label sets at once rarely pick the same)
//      and create id/<ID> and our reference in one txn that requires
//      create_revision(id/<ID>) == 0 and the lock: a number taken meanwhile
//      by another label set makes the txn fail and we retry with another.
// So one label set never gets two numbers in use (every reference is added
// under its lock after looking at the others) and one number never gets two
// label sets (create-if-absent). Lost races retry up to `max_attempts` times
// with exponential backoff; a store error ends the call (the caller retries
// later: the endpoint waits for its identity).
//
// release(L): the last local user deletes this node's reference key. The
// id/ key stays until the GC finds it unused.
//
// runGc(): under the GC lock, lists id/ and value/; an id/ key no reference
// points to is remembered with its mod_revision and deleted once it stayed
// unused for `gc_grace` (two-phase, as Cilium's operator does), in a txn that
// requires the same mod_revision, still no key under value/<L>/, and the GC
// lock. Combined with step 1-2's txn (which requires id/<ID> to exist), a
// reference can never point to a deleted ID.
//
// Foreign or malformed data under <base>/ (another writer, an older version)
// never crashes and never yields an identity: an id/ key whose number or label
// string does not parse (or is not in canonical form) still blocks its number
// but is otherwise skipped, and counted in malformed(); such keys are never
// garbage-collected. Node-local identities (CIDR, 1<<24|n) are not allocated
// here: label sets with `cidr:` labels or equal to a reserved identity's are
// refused (EINVAL).
//
// Thread-safety: all methods from any thread. Concurrent allocate/release of
// the SAME label set on one allocator are serialised locally (the etcd lock is
// per lease, so it cannot tell this node's threads apart); different label
// sets run in parallel. No lock of the allocator is held across store I/O
// except the GC's own.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>

#include "membrane/identity.h"
#include "membrane/kvstore.h"
#include "membrane/labels.h"
#include "membrane/mutex.h"
#include "membrane/thread_annotations.h"

namespace membrane::kvstore {

inline constexpr std::string_view kIdentitiesBase = "cilium/state/identities/v1";

// Cilium's label string (pkg/labels FormatForKVStore): every label as
// "source:key=value;", sorted by key (then source), concatenated:
// "k8s:app=web;k8s:io.kubernetes.pod.namespace=default;".
std::string formatLabelsForKVStore(const labels::LabelSet& labels);
// The inverse; accepts only the canonical form (what formatLabelsForKVStore
// writes), so a string either round-trips exactly or is an EINVAL error
// saying why.
Result<labels::LabelSet> parseLabelsFromKVStore(std::string_view text);

struct ClusterIdentityConfig {
  std::string node_suffix;       // this node's IP: the last element of its reference keys (no '/')
  LeaseId lease = kNoLease;      // this node's references live on it (the agent keeps it alive)
  // For the locks; kNoLease: `lease`. Must differ between nodes; keep its TTL
  // short (Cilium: 25 s): a crashed node's lock blocks that label set until it ends.
  LeaseId lock_lease = kNoLease;
  uint32_t min_id = identity::kMinAllocated;
  uint32_t max_id = identity::kMaxAllocated;
  std::string base = std::string(kIdentitiesBase);
  Millis lock_timeout{10000};
  int max_attempts = 16;         // Cilium's maxAllocAttempts
  Millis backoff{20};            // first retry delay after a lost race, doubling
  Millis gc_grace{std::chrono::minutes(15)};  // an unused ID survives at least this long
  std::function<Clock::time_point()> now = Clock::now;  // the GC grace clock
  uint64_t seed = 0;             // random number choice; 0 = from std::random_device
};

struct SyncResult {
  size_t written = 0;   // references (and vanished id/ keys) written again
  size_t released = 0;  // failed releases completed
  size_t failed = 0;    // sets that could not be synced (see first_error)
  std::string first_error;
};

struct GcResult {
  size_t deleted = 0;    // id/ keys deleted this round
  size_t pending = 0;    // unused, still in their grace period
  size_t in_use = 0;     // referenced by at least one node
  size_t skipped = 0;    // malformed or outside [min_id, max_id]: left alone
};

class ClusterIdentityAllocator {
 public:
  // Errors: empty or '/'-containing node suffix, no lease, bad range (EINVAL).
  static Result<std::unique_ptr<ClusterIdentityAllocator>> create(Backend& backend, ClusterIdentityConfig config);

  // The cluster-wide number of `labels`, taking one local reference.
  // Errors: refused label set (EINVAL), range exhausted (ENOSPC), lost races
  // `max_attempts` times (EAGAIN), store errors (as the backend reports them).
  Result<uint32_t> allocate(const labels::LabelSet& labels);
  // Drops one local reference; the last one deletes this node's reference key.
  // ENOENT if this node holds no reference. If the delete fails the local
  // entry is kept (with no users) and the error returned: calling release
  // again retries the delete; an allocate of the set reuses the key; the
  // key goes with the lease anyway.
  Status release(const labels::LabelSet& labels);

  // Cilium's syncLocalKeys: for every label set in local use, writes this
  // node's reference again (with the current lease) and re-creates its id/
  // key if it vanished (master-key protection); completes releases whose
  // delete failed. Run after setLease() (the old lease expired while etcd was
  // unreachable) or when etcd may have lost data. Each set is busy while it
  // is synced, so a concurrent release cannot be undone (Cilium #35451). A
  // set whose number now holds other labels is counted in `failed` (EEXIST):
  // the caller re-allocates it. An error only if every set failed.
  Result<SyncResult> syncLocalKeys();
  // Replaces the leases for later writes (kNoLease lock_lease: `lease`).
  void setLease(LeaseId lease, LeaseId lock_lease = kNoLease);

  // The label set of `id` as stored (nullopt: no such key). A malformed value
  // is an EINVAL error (and counted).
  Result<std::optional<labels::LabelSet>> lookup(uint32_t id);

  // One garbage-collection round (see above).
  Result<GcResult> runGc();

  // Malformed id/ or value/ entries met so far (each encounter counts).
  uint64_t malformed() const { return malformed_.load(); }
  std::string lastMalformed() const;
  // Local references held on `labels` (0 if none).
  uint32_t localRefs(const labels::LabelSet& labels) const;

 private:
  ClusterIdentityAllocator(Backend& backend, ClusterIdentityConfig config);

  struct LocalEntry {
    uint32_t id = 0;
    uint32_t refs = 0;
    bool busy = false;  // an allocate/release of this set is talking to the store
  };
  struct Outcome {  // one attempt under the lock
    std::optional<uint32_t> id;
    bool retry = false;  // lost a race: try again
  };
  struct GcCandidate {
    int64_t mod_revision = 0;
    Clock::time_point since;
  };

  std::string idKey(uint32_t id) const;
  std::string valuePrefix(const std::string& labels) const;
  Result<uint32_t> allocateInStore(const std::string& labels);
  Result<Outcome> attempt(const std::string& labels, const std::string& owner);
  // txn: reference `id` for `labels` if id/<id> holds `labels` and the lock is held.
  Result<Outcome> reference(const std::string& labels, uint32_t id, const std::string& owner);
  // Parses "<base>/id/<n>" keys' numbers and values; counts what does not parse.
  std::optional<uint32_t> parseIdKey(const std::string& key);
  std::optional<uint32_t> parseIdNumber(std::string_view text, const std::string& where);
  void countMalformed(std::string what);
  Status gcRound(const std::string& owner, GcResult& out) REQUIRES(gc_mu_);
  Status restoreReference(const std::string& labels, uint32_t id);
  // lock()/unlock() with the lock lease; an owner key whose unlock failed is
  // remembered and its unlock retried before the next store call.
  Result<std::string> lockFor(const std::string& name);
  void unlockOrRemember(const std::string& owner);
  void retryStaleUnlocks();
  Status deleteReference(const std::string& labels);
  // Waits until no allocate/release of `labels` is in flight; returns the entry (may be null).
  LocalEntry* settled(const std::string& labels) REQUIRES(mu_);

  Backend& backend_;
  const ClusterIdentityConfig config_;
  std::atomic<LeaseId> lease_;
  std::atomic<LeaseId> lock_lease_;

  mutable Mutex mu_;
  std::condition_variable_any settled_cv_;  // with mu_: an entry stopped being busy
  std::map<std::string, LocalEntry> local_ GUARDED_BY(mu_);  // by label string
  std::mt19937_64 rng_ GUARDED_BY(mu_);
  std::string last_malformed_ GUARDED_BY(mu_);
  std::set<std::string> stale_owners_ GUARDED_BY(mu_);  // lock keys whose unlock failed
  std::atomic<uint64_t> malformed_{0};

  Mutex gc_mu_;  // one GC round at a time (held across its store I/O: only GC waits on it)
  std::map<uint32_t, GcCandidate> gc_candidates_ GUARDED_BY(gc_mu_);
};

}  // namespace membrane::kvstore
