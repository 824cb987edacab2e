#include "src/kvstore/cluster_identity.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>
#include <tuple>
#include <thread>

namespace membrane::kvstore {

std::string formatLabelsForKVStore(const labels::LabelSet& set) {
  // Cilium keys its label map by key and sorts by it; membrane's LabelSet
  // sorts by (source, key). Sort by (key, source) to write what Cilium writes.
  std::vector<const labels::Label*> sorted;
  for (const auto& l : set) sorted.push_back(&l);
  std::sort(sorted.begin(), sorted.end(), [](const labels::Label* a, const labels::Label* b) {
    return std::tie(a->key, a->source) < std::tie(b->key, b->source);
  });
  std::string out;
  for (const auto* l : sorted) out += fmt::format("{}:{}={};", l->source, l->key, l->value);
  return out;
}

Result<labels::LabelSet> parseLabelsFromKVStore(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Error::invalid(fmt::format("label string '{}': {}", text.substr(0, 256), why));
  };
  if (text.empty()) return bad("empty");
  if (text.back() != ';') return bad("does not end with ';'");
  std::vector<labels::Label> items;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(';', start);
    std::string_view item = text.substr(start, end - start);
    start = end + 1;
    size_t colon = item.find(':');
    size_t eq = colon == std::string_view::npos ? std::string_view::npos : item.find('=', colon + 1);
    if (colon == 0 || colon == std::string_view::npos) return bad(fmt::format("label '{}' has no source", item));
    if (eq == std::string_view::npos) return bad(fmt::format("label '{}' has no '='", item));
    if (eq == colon + 1) return bad(fmt::format("label '{}' has no key", item));
    items.push_back(labels::Label{std::string(item.substr(0, colon)), std::string(item.substr(colon + 1, eq - colon - 1)),
                                  std::string(item.substr(eq + 1))});
  }
  size_t n = items.size();
  labels::LabelSet set(std::move(items));
  if (set.size() != n) return bad("a label is repeated");
  // Only the canonical form: what round-trips is what a membrane or Cilium
  // agent wrote; anything else (unsorted, duplicates) is foreign.
  if (formatLabelsForKVStore(set) != text) return bad("not in canonical form (labels sorted by key)");
  return set;
}

Result<std::unique_ptr<ClusterIdentityAllocator>> ClusterIdentityAllocator::create(Backend& backend,
                                                                                   ClusterIdentityConfig config) {
  if (config.node_suffix.empty() || config.node_suffix.find('/') != std::string::npos)
    return Error::invalid(fmt::format("cluster identities: node suffix '{}' must be non-empty without '/'",
                                      config.node_suffix));
  if (config.lease == kNoLease) return Error::invalid("cluster identities: no lease for this node's references");
  if (config.min_id < identity::kMinAllocated || config.min_id > config.max_id ||
      identity::isLocalScope(config.max_id))
    return Error::invalid(fmt::format("cluster identities: bad range [{}, {}]", config.min_id, config.max_id));
  if (config.lock_lease == kNoLease) config.lock_lease = config.lease;
  if (config.max_attempts < 1) config.max_attempts = 1;
  return std::unique_ptr<ClusterIdentityAllocator>(new ClusterIdentityAllocator(backend, std::move(config)));
}

ClusterIdentityAllocator::ClusterIdentityAllocator(Backend& backend, ClusterIdentityConfig config)
    : backend_(backend), config_(std::move(config)), lease_(config_.lease), lock_lease_(config_.lock_lease) {
  MutexLock l(mu_);
  rng_.seed(config_.seed != 0 ? config_.seed : (uint64_t(std::random_device{}()) << 32) | std::random_device{}());
}

std::string ClusterIdentityAllocator::idKey(uint32_t id) const { return fmt::format("{}/id/{}", config_.base, id); }

std::string ClusterIdentityAllocator::valuePrefix(const std::string& labels) const {
  return fmt::format("{}/value/{}/", config_.base, labels);
}

void ClusterIdentityAllocator::countMalformed(std::string what) {
  malformed_++;
  MutexLock l(mu_);
  last_malformed_ = std::move(what);
}

std::string ClusterIdentityAllocator::lastMalformed() const {
  MutexLock l(mu_);
  return last_malformed_;
}

uint32_t ClusterIdentityAllocator::localRefs(const labels::LabelSet& labels) const {
  MutexLock l(mu_);
  auto it = local_.find(formatLabelsForKVStore(labels));
  return it == local_.end() ? 0 : it->second.refs;
}

std::optional<uint32_t> ClusterIdentityAllocator::parseIdNumber(std::string_view text, const std::string& where) {
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  // Canonical decimal only ("0300" or "+3" are foreign).
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || std::to_string(v) != text) {
    countMalformed(fmt::format("{}: '{}' is not an identity number", where, text.substr(0, 64)));
    return std::nullopt;
  }
  return v;
}

std::optional<uint32_t> ClusterIdentityAllocator::parseIdKey(const std::string& key) {
  const std::string prefix = config_.base + "/id/";
  if (key.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  return parseIdNumber(std::string_view(key).substr(prefix.size()), fmt::format("key '{}'", key));
}

ClusterIdentityAllocator::LocalEntry* ClusterIdentityAllocator::settled(const std::string& labels) {
  for (;;) {
    auto it = local_.find(labels);
    if (it == local_.end()) return nullptr;
    if (!it->second.busy) return &it->second;
    settled_cv_.wait(mu_);
  }
}

Result<uint32_t> ClusterIdentityAllocator::allocate(const labels::LabelSet& set) {
  if (set.empty()) return Error::invalid("cluster identity: empty label set");
  if (labels::reservedFor(set)) return Error::invalid(fmt::format("cluster identity: '{}' is reserved", set.toString()));
  if (set.hasSource(labels::kSourceCidr))
    return Error::invalid(fmt::format("cluster identity: '{}' is node-local (cidr labels)", set.toString()));
  const std::string s = formatLabelsForKVStore(set);
  {
    MutexLock l(mu_);
    if (LocalEntry* e = settled(s); e != nullptr) {
      e->refs++;
      return e->id;
    }
    local_[s].busy = true;
  }
  auto id = allocateInStore(s);
  {
    MutexLock l(mu_);
    if (id.ok()) local_[s] = LocalEntry{*id, 1, false};
    else local_.erase(s);
  }
  settled_cv_.notify_all();
  if (!id.ok()) return id.error().wrap(fmt::format("allocate cluster identity for '{}'", s));
  return id;
}

Status ClusterIdentityAllocator::release(const labels::LabelSet& set) {
  const std::string s = formatLabelsForKVStore(set);
  {
    MutexLock l(mu_);
    LocalEntry* e = settled(s);
    if (e == nullptr)
      return Error::notFound(fmt::format("release cluster identity: this node holds no reference on '{}'", s));
    // refs == 0: an earlier release whose delete failed; this one retries it.
    if (e->refs > 0 && --e->refs > 0) return okStatus();
    e->busy = true;
  }
  retryStaleUnlocks();
  auto deleted = backend_.del(valuePrefix(s) + config_.node_suffix);
  {
    MutexLock l(mu_);
    if (deleted.ok()) local_.erase(s);
    else local_[s].busy = false;  // kept with refs 0: the key is still ours
  }
  settled_cv_.notify_all();
  if (!deleted.ok()) return deleted.error().wrap(fmt::format("release cluster identity for '{}'", s));
  return okStatus();
}

void ClusterIdentityAllocator::setLease(LeaseId lease, LeaseId lock_lease) {
  lease_.store(lease);
  lock_lease_.store(lock_lease == kNoLease ? lease : lock_lease);
}

Result<std::string> ClusterIdentityAllocator::lockFor(const std::string& name) {
  MB_ASSIGN(std::string owner, backend_.lock(name, lock_lease_.load(), config_.lock_timeout));
  // Held again (same lease, same owner key): no longer stale.
  MutexLock l(mu_);
  stale_owners_.erase(owner);
  return owner;
}

void ClusterIdentityAllocator::unlockOrRemember(const std::string& owner) {
  // A leaked lock blocks that label set on every other node until the lock
  // lease ends (Cilium #9855): one immediate retry for a transient failure,
  // then again before this allocator's next store call.
  if (backend_.unlock(owner).ok() || backend_.unlock(owner).ok()) return;
  MutexLock l(mu_);
  stale_owners_.insert(owner);
}

void ClusterIdentityAllocator::retryStaleUnlocks() {
  std::set<std::string> stale;
  {
    MutexLock l(mu_);
    stale.swap(stale_owners_);
  }
  for (const auto& owner : stale) unlockOrRemember(owner);
}

Result<SyncResult> ClusterIdentityAllocator::syncLocalKeys() {
  retryStaleUnlocks();
  std::vector<std::string> todo;
  {
    MutexLock l(mu_);
    for (const auto& [s, e] : local_)
      if (!e.busy) todo.push_back(s);
  }
  SyncResult out;
  std::optional<Error> first_error;
  for (const std::string& s : todo) {
    uint32_t id = 0;
    bool drop = false;
    {
      // Busy while synced: a release of this set waits, so the sync cannot
      // re-create a key that release just deleted (Cilium #35451).
      MutexLock l(mu_);
      auto it = local_.find(s);
      if (it == local_.end() || it->second.busy) continue;
      it->second.busy = true;
      id = it->second.id;
      drop = it->second.refs == 0;  // a release whose delete failed earlier
    }
    auto done = drop ? deleteReference(s) : restoreReference(s, id);
    {
      MutexLock l(mu_);
      if (drop && done.ok()) local_.erase(s);
      else local_[s].busy = false;
    }
    settled_cv_.notify_all();
    if (!done.ok()) {
      out.failed++;
      if (!first_error) first_error = done.error();
      continue;
    }
    (drop ? out.released : out.written)++;
  }
  if (first_error && out.written + out.released == 0) return first_error->wrap("sync cluster identity references");
  if (first_error) out.first_error = first_error->message;
  return out;
}

Status ClusterIdentityAllocator::deleteReference(const std::string& labels) {
  MB_TRY(backend_.del(valuePrefix(labels) + config_.node_suffix));
  return okStatus();
}

Status ClusterIdentityAllocator::restoreReference(const std::string& labels, uint32_t id) {
  // Our reference, if id/<id> still holds our labels.
  const std::string ref = valuePrefix(labels) + config_.node_suffix;
  Txn t;
  t.compares.push_back({Compare::Target::Value, Compare::Op::Equal, idKey(id), false, 0, labels});
  t.success.push_back(TxnOp::put(ref, std::to_string(id), lease_.load()));
  t.failure.push_back(TxnOp::get(idKey(id)));
  MB_ASSIGN(TxnResult r, backend_.txn(t));
  if (r.succeeded) return okStatus();
  if (!r.gets.empty() && r.gets.front())
    return Error::exists(fmt::format("identity {} of '{}' now holds '{}'", id, labels, r.gets.front()->value));
  // The id/ key vanished while in use here (etcd data loss, a foreign
  // delete): re-create it (Cilium's master-key protection) with our reference.
  Txn create;
  create.compares.push_back({Compare::Target::CreateRevision, Compare::Op::Equal, idKey(id), false, 0, {}});
  create.success.push_back(TxnOp::put(idKey(id), labels));
  create.success.push_back(TxnOp::put(ref, std::to_string(id), lease_.load()));
  MB_ASSIGN(TxnResult c, backend_.txn(create));
  if (!c.succeeded) return Error::exists(fmt::format("identity {} of '{}' was re-created by another writer", id, labels));
  return okStatus();
}

Result<std::optional<labels::LabelSet>> ClusterIdentityAllocator::lookup(uint32_t id) {
  MB_ASSIGN(auto kv, backend_.get(idKey(id), Consistency::Serializable));
  if (!kv) return std::optional<labels::LabelSet>();
  auto set = parseLabelsFromKVStore(kv->value);
  if (!set.ok()) {
    countMalformed(fmt::format("key '{}': {}", kv->key, set.error().message));
    return set.error().wrap(fmt::format("cluster identity {}", id));
  }
  return std::optional<labels::LabelSet>(std::move(set).value());
}

Result<uint32_t> ClusterIdentityAllocator::allocateInStore(const std::string& labels) {
  retryStaleUnlocks();
  Millis delay = config_.backoff;
  for (int attempt = 1; attempt <= config_.max_attempts; attempt++) {
    MB_ASSIGN(std::string owner, lockFor(fmt::format("{}/locks/{}", config_.base, labels)));
    auto outcome = this->attempt(labels, owner);
    unlockOrRemember(owner);
    if (!outcome.ok()) return outcome.error();
    if (outcome->id) return *outcome->id;
    if (attempt < config_.max_attempts) {
      // Backoff after a lost race (not a wait for a condition): lets the winner finish.
      std::this_thread::sleep_for(delay);
      delay *= 2;
    }
  }
  return Error(EAGAIN, fmt::format("lost the race {} times", config_.max_attempts));
}

Result<ClusterIdentityAllocator::Outcome> ClusterIdentityAllocator::reference(const std::string& labels, uint32_t id,
                                                                              const std::string& owner) {
  Txn t;
  t.compares.push_back({Compare::Target::Value, Compare::Op::Equal, idKey(id), false, 0, labels});
  t.compares.push_back({Compare::Target::CreateRevision, Compare::Op::Greater, owner, false, 0, {}});
  t.success.push_back(TxnOp::put(valuePrefix(labels) + config_.node_suffix, std::to_string(id), lease_.load()));
  MB_ASSIGN(TxnResult r, backend_.txn(t));
  if (r.succeeded) return Outcome{id, false};
  return Outcome{std::nullopt, true};
}

Result<ClusterIdentityAllocator::Outcome> ClusterIdentityAllocator::attempt(const std::string& labels,
                                                                            const std::string& owner) {
  // 1. Other nodes' references name the number.
  const std::string vprefix = valuePrefix(labels);
  MB_ASSIGN(ListResult refs, backend_.list(vprefix, Consistency::Linearizable));
  std::set<uint32_t> named;
  for (const KeyValue& kv : refs.kvs) {
    // Cilium's prefixMatchesKey: the node suffix is what follows the last '/'.
    if (kv.key.find('/', vprefix.size()) != std::string::npos) continue;
    auto id = parseIdNumber(kv.value, fmt::format("key '{}'", kv.key));
    if (id && *id >= config_.min_id && *id <= config_.max_id) named.insert(*id);
  }
  for (uint32_t id : named) {
    MB_ASSIGN(Outcome o, reference(labels, id, owner));
    if (o.id) return o;
  }

  // 2. An unreferenced id/ key with our labels, else 3. a free number.
  MB_ASSIGN(ListResult ids, backend_.list(config_.base + "/id/", Consistency::Linearizable));
  std::set<uint32_t> taken;
  std::optional<uint32_t> orphan;
  for (const KeyValue& kv : ids.kvs) {
    auto id = parseIdKey(kv.key);
    if (!id) continue;
    taken.insert(*id);
    if (kv.value == labels) {
      if (!orphan || *id < *orphan) orphan = *id;
    } else if (auto parsed = parseLabelsFromKVStore(kv.value); !parsed.ok()) {
      countMalformed(fmt::format("key '{}': {}", kv.key, parsed.error().message));
    }
  }
  if (orphan && *orphan >= config_.min_id && *orphan <= config_.max_id) {
    MB_ASSIGN(Outcome o, reference(labels, *orphan, owner));
    if (o.id) return o;
  }
  const uint64_t range = uint64_t(config_.max_id) - config_.min_id + 1;
  uint64_t in_range = std::count_if(taken.begin(), taken.end(),
                                    [&](uint32_t id) { return id >= config_.min_id && id <= config_.max_id; });
  if (in_range >= range)
    return Error(ENOSPC, fmt::format("all {} identities in [{}, {}] are taken", range, config_.min_id, config_.max_id));
  uint32_t pick = 0;
  {
    // The k-th free number for a random k: uniform over the free ones.
    MutexLock l(mu_);
    uint64_t k = std::uniform_int_distribution<uint64_t>(0, range - in_range - 1)(rng_);
    for (uint32_t id = config_.min_id;; id++) {
      if (taken.count(id)) continue;
      if (k-- == 0) {
        pick = id;
        break;
      }
    }
  }
  Txn t;
  t.compares.push_back({Compare::Target::CreateRevision, Compare::Op::Equal, idKey(pick), false, 0, {}});
  t.compares.push_back({Compare::Target::CreateRevision, Compare::Op::Greater, owner, false, 0, {}});
  t.success.push_back(TxnOp::put(idKey(pick), labels));
  t.success.push_back(TxnOp::put(vprefix + config_.node_suffix, std::to_string(pick), lease_.load()));
  MB_ASSIGN(TxnResult r, backend_.txn(t));
  if (r.succeeded) return Outcome{pick, false};
  return Outcome{std::nullopt, true};  // the number was taken meanwhile, or the lock lost
}

Result<GcResult> ClusterIdentityAllocator::runGc() {
  MutexLock gc(gc_mu_);
  retryStaleUnlocks();
  MB_ASSIGN(std::string owner, lockFor(config_.base + "/gclock"));
  GcResult out;
  Status s = gcRound(owner, out);
  unlockOrRemember(owner);
  if (!s.ok()) return s.error().wrap("cluster identity GC");
  return out;
}

Status ClusterIdentityAllocator::gcRound(const std::string& owner, GcResult& out) {
  MB_ASSIGN(ListResult ids, backend_.list(config_.base + "/id/", Consistency::Linearizable));
  MB_ASSIGN(ListResult refs, backend_.list(config_.base + "/value/", Consistency::Linearizable));
  std::set<std::string> referenced;
  const size_t vlen = config_.base.size() + std::string_view("/value/").size();
  for (const KeyValue& kv : refs.kvs) {
    size_t slash = kv.key.rfind('/');
    if (slash != std::string::npos && slash >= vlen) referenced.insert(kv.key.substr(vlen, slash - vlen));
  }
  const auto now = config_.now();
  std::set<uint32_t> seen;
  for (const KeyValue& kv : ids.kvs) {
    auto id = parseIdKey(kv.key);
    if (!id || *id < config_.min_id || *id > config_.max_id) {
      out.skipped++;
      continue;
    }
    if (auto parsed = parseLabelsFromKVStore(kv.value); !parsed.ok()) {
      countMalformed(fmt::format("key '{}': {}", kv.key, parsed.error().message));
      out.skipped++;
      continue;
    }
    seen.insert(*id);
    if (referenced.count(kv.value)) {
      gc_candidates_.erase(*id);
      out.in_use++;
      continue;
    }
    // Two-phase: first seen unused now (or rewritten since): wait the grace.
    auto [it, fresh] = gc_candidates_.try_emplace(*id, GcCandidate{kv.mod_revision, now});
    if (!fresh && it->second.mod_revision != kv.mod_revision) it->second = GcCandidate{kv.mod_revision, now};
    if (now - it->second.since < config_.gc_grace) {
      out.pending++;
      continue;
    }
    Txn t;
    t.compares.push_back({Compare::Target::ModRevision, Compare::Op::Equal, kv.key, false, kv.mod_revision, {}});
    t.compares.push_back({Compare::Target::Version, Compare::Op::Equal, valuePrefix(kv.value), true, 0, {}});
    t.compares.push_back({Compare::Target::CreateRevision, Compare::Op::Greater, owner, false, 0, {}});
    t.success.push_back(TxnOp::del(kv.key));
    MB_ASSIGN(TxnResult r, backend_.txn(t));
    if (r.succeeded) out.deleted++;
    else out.in_use++;  // referenced or rewritten meanwhile: looked at again next round
    gc_candidates_.erase(*id);
  }
  std::erase_if(gc_candidates_, [&seen](const auto& c) { return !seen.count(c.first); });
  return okStatus();
}

}  // namespace membrane::kvstore
