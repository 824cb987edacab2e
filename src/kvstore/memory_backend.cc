#include "src/kvstore/memory_backend.h"

#include <fmt/format.h>

#include <algorithm>

#include "src/kvstore/watch_queue.h"

namespace membrane::kvstore {

struct MemoryBackend::WatchState {
  std::string prefix;
  WatchQueue queue;
};

namespace {

bool startsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

class MemoryWatch final : public Watch {
 public:
  explicit MemoryWatch(std::shared_ptr<MemoryBackend::WatchState> st) : st_(std::move(st)) {}
  ~MemoryWatch() override { st_->queue.cancel(); }
  WatchBatch next(Millis timeout) override { return st_->queue.next(timeout); }
  void cancel() override { st_->queue.cancel(); }

 private:
  std::shared_ptr<MemoryBackend::WatchState> st_;
};

template <typename T>
bool compareNumbers(Compare::Op op, T a, T b) {
  switch (op) {
    case Compare::Op::Equal: return a == b;
    case Compare::Op::NotEqual: return a != b;
    case Compare::Op::Greater: return a > b;
    case Compare::Op::Less: return a < b;
  }
  return false;
}

Error leaseNotFound(LeaseId lease) {
  return Error::notFound(fmt::format("memory: lease {:x}: requested lease not found", lease));
}

}  // namespace

void MemoryBackend::applyPut(Write& w, const std::string& key, const std::string& value, LeaseId lease) {
  KeyValue& kv = data_[key];
  if (kv.create_revision == 0) {
    kv.key = key;
    kv.create_revision = w.revision;
  }
  if (kv.lease != kNoLease && kv.lease != lease) {
    auto it = leases_.find(kv.lease);
    if (it != leases_.end()) it->second.keys.erase(key);
  }
  kv.value = value;
  kv.mod_revision = w.revision;
  kv.version++;
  kv.lease = lease;
  if (lease != kNoLease) leases_[lease].keys.insert(key);
  w.events.push_back(Event{Event::Type::Put, kv});
}

void MemoryBackend::applyDelete(Write& w, const std::string& key) {
  auto it = data_.find(key);
  if (it == data_.end()) return;
  if (it->second.lease != kNoLease) {
    auto l = leases_.find(it->second.lease);
    if (l != leases_.end()) l->second.keys.erase(key);
  }
  data_.erase(it);
  KeyValue gone;
  gone.key = key;
  gone.mod_revision = w.revision;
  w.events.push_back(Event{Event::Type::Delete, gone});
}

int64_t MemoryBackend::applyDeleteRange(Write& w, const std::string& key, bool prefix) {
  std::vector<std::string> keys;
  for (const KeyValue* kv : range(key, prefix)) keys.push_back(kv->key);
  for (const auto& k : keys) applyDelete(w, k);
  return static_cast<int64_t>(keys.size());
}

void MemoryBackend::commit(Write& w) {
  if (w.events.empty()) return;
  revision_ = w.revision;
  history_.insert(history_.end(), w.events.begin(), w.events.end());
  // etcd delivers one transaction's events to a watcher in one response.
  std::vector<std::weak_ptr<WatchState>> alive;
  for (auto& weak : watches_) {
    auto st = weak.lock();
    if (!st || st->queue.closed()) continue;
    WatchBatch b;
    b.kind = WatchBatch::Kind::Events;
    b.revision = w.revision;
    for (const Event& e : w.events)
      if (startsWith(e.kv.key, st->prefix)) b.events.push_back(e);
    if (!b.events.empty()) st->queue.push(std::move(b));
    alive.push_back(weak);
  }
  watches_ = std::move(alive);
  changed_.notify_all();
}

std::vector<const KeyValue*> MemoryBackend::range(const std::string& key, bool prefix) const {
  std::vector<const KeyValue*> out;
  if (!prefix) {
    auto it = data_.find(key);
    if (it != data_.end()) out.push_back(&it->second);
    return out;
  }
  for (auto it = data_.lower_bound(key); it != data_.end() && startsWith(it->first, key); ++it)
    out.push_back(&it->second);
  return out;
}

bool MemoryBackend::holds(const Compare& c) const {
  auto one = [&c](const KeyValue& kv) {
    switch (c.target) {
      case Compare::Target::Version: return compareNumbers(c.op, kv.version, c.number);
      case Compare::Target::CreateRevision: return compareNumbers(c.op, kv.create_revision, c.number);
      case Compare::Target::ModRevision: return compareNumbers(c.op, kv.mod_revision, c.number);
      case Compare::Target::Value: return compareNumbers(c.op, kv.value, c.value);
    }
    return false;
  };
  auto kvs = range(c.key, c.prefix);
  // etcd (mvcc applyCompare): an empty range compares as one zero key-value,
  // except that a Value compare on it fails.
  if (kvs.empty()) return c.target != Compare::Target::Value && one(KeyValue{});
  return std::all_of(kvs.begin(), kvs.end(), [&](const KeyValue* kv) { return one(*kv); });
}

void MemoryBackend::endLease(LeaseId id) {
  auto it = leases_.find(id);
  if (it == leases_.end()) return;
  std::set<std::string> keys = std::move(it->second.keys);
  leases_.erase(it);
  Write w = beginWrite();
  for (const auto& k : keys) applyDelete(w, k);
  commit(w);
}

void MemoryBackend::endWatches(const WatchBatch& terminal) {
  for (auto& weak : watches_)
    if (auto st = weak.lock()) st->queue.push(terminal);
  watches_.clear();
}

void MemoryBackend::advance(Millis d) {
  MutexLock l(mu_);
  now_ += d;
  std::vector<LeaseId> expired;
  for (const auto& [id, st] : leases_)
    if (st.expiry <= now_) expired.push_back(id);
  for (LeaseId id : expired) endLease(id);
}

int64_t MemoryBackend::revision() const {
  MutexLock l(mu_);
  return revision_;
}

size_t MemoryBackend::leaseCount() const {
  MutexLock l(mu_);
  return leases_.size();
}

size_t MemoryBackend::countOpenWatches() const {
  size_t n = 0;
  for (const auto& weak : watches_)
    if (auto st = weak.lock(); st && !st->queue.closed()) n++;
  return n;
}

size_t MemoryBackend::openWatches() const {
  MutexLock l(mu_);
  return countOpenWatches();
}

bool MemoryBackend::waitOpenWatches(size_t n, Millis timeout) {
  auto deadline = Clock::now() + timeout;
  MutexLock l(mu_);
  while (countOpenWatches() < n) {
    if (changed_.wait_until(mu_, deadline) == std::cv_status::timeout) return countOpenWatches() >= n;
  }
  return true;
}

void MemoryBackend::breakWatches(const Error& why) {
  MutexLock l(mu_);
  endWatches(WatchBatch{WatchBatch::Kind::Broken, {}, revision_, 0, why});
}

void MemoryBackend::compactWatches() {
  MutexLock l(mu_);
  compact_revision_ = revision_;
  history_.clear();
  endWatches(WatchBatch{WatchBatch::Kind::Compacted, {}, revision_, compact_revision_,
                        Error(ERANGE, "memory: mvcc: required revision has been compacted")});
}

Result<std::optional<KeyValue>> MemoryBackend::doGet(const std::string& key, Consistency) {
  MutexLock l(mu_);
  auto it = data_.find(key);
  if (it == data_.end()) return std::optional<KeyValue>();
  return std::optional<KeyValue>(it->second);
}

Result<ListResult> MemoryBackend::doList(const std::string& prefix, Consistency) {
  MutexLock l(mu_);
  ListResult out;
  out.revision = revision_;
  for (const KeyValue* kv : range(prefix, true)) out.kvs.push_back(*kv);
  return out;
}

Result<int64_t> MemoryBackend::doPut(const std::string& key, const std::string& value, LeaseId lease) {
  MutexLock l(mu_);
  if (lease != kNoLease && !leases_.count(lease)) return leaseNotFound(lease).wrap(fmt::format("put '{}'", key));
  Write w = beginWrite();
  applyPut(w, key, value, lease);
  commit(w);
  return revision_;
}

Result<int64_t> MemoryBackend::doDeleteRange(const std::string& key, bool prefix) {
  MutexLock l(mu_);
  Write w = beginWrite();
  int64_t n = applyDeleteRange(w, key, prefix);
  commit(w);
  return n;
}

Result<TxnResult> MemoryBackend::doTxn(const Txn& t) {
  MutexLock l(mu_);
  // etcd checks the leases of every put of both branches before running either.
  for (const auto* branch : {&t.success, &t.failure})
    for (const TxnOp& op : *branch)
      if (op.kind == TxnOp::Kind::Put && op.lease != kNoLease && !leases_.count(op.lease))
        return leaseNotFound(op.lease).wrap(fmt::format("txn put '{}'", op.key));
  TxnResult out;
  out.succeeded = true;
  for (const Compare& c : t.compares) out.succeeded = out.succeeded && holds(c);
  Write w = beginWrite();
  for (const TxnOp& op : out.succeeded ? t.success : t.failure) {
    switch (op.kind) {
      case TxnOp::Kind::Put: applyPut(w, op.key, op.value, op.lease); out.gets.emplace_back(); break;
      case TxnOp::Kind::Delete: applyDelete(w, op.key); out.gets.emplace_back(); break;
      case TxnOp::Kind::DeletePrefix: applyDeleteRange(w, op.key, true); out.gets.emplace_back(); break;
      case TxnOp::Kind::Get: {
        auto it = data_.find(op.key);
        out.gets.push_back(it == data_.end() ? std::nullopt : std::optional<KeyValue>(it->second));
        break;
      }
    }
  }
  commit(w);
  out.revision = revision_;
  return out;
}

Result<Lease> MemoryBackend::doGrantLease(int64_t ttl_seconds) {
  if (ttl_seconds <= 0) return Error::invalid(fmt::format("memory: lease TTL {} must be positive", ttl_seconds));
  MutexLock l(mu_);
  LeaseId id = next_lease_++;
  leases_[id] = LeaseState{ttl_seconds, now_ + std::chrono::seconds(ttl_seconds), {}};
  return Lease{id, ttl_seconds};
}

Result<int64_t> MemoryBackend::doKeepAlive(LeaseId lease) {
  MutexLock l(mu_);
  auto it = leases_.find(lease);
  if (it == leases_.end()) return leaseNotFound(lease).wrap("keepalive");
  it->second.expiry = now_ + std::chrono::seconds(it->second.ttl);
  return it->second.ttl;
}

Status MemoryBackend::doRevokeLease(LeaseId lease) {
  MutexLock l(mu_);
  if (!leases_.count(lease)) return leaseNotFound(lease).wrap("revoke");
  endLease(lease);
  return okStatus();
}

Result<std::string> MemoryBackend::doLock(const std::string& name, LeaseId lease, Millis timeout) {
  std::string key = fmt::format("{}/{:x}", name, lease);
  auto deadline = Clock::now() + timeout;
  MutexLock l(mu_);
  if (!leases_.count(lease)) return leaseNotFound(lease).wrap(fmt::format("lock '{}'", name));
  if (!data_.count(key)) {
    Write w = beginWrite();
    applyPut(w, key, "", lease);
    commit(w);
  }
  const int64_t mine = data_[key].create_revision;
  const std::string owners = name + "/";
  for (;;) {
    auto it = data_.find(key);
    if (it == data_.end() || it->second.create_revision != mine)
      return Error::notFound(fmt::format("memory: lock '{}': owner key deleted while waiting (lease ended)", name));
    bool older = false;
    for (const KeyValue* kv : range(owners, true)) older = older || kv->create_revision < mine;
    if (!older) return key;
    if (changed_.wait_until(mu_, deadline) == std::cv_status::timeout) {
      Write w = beginWrite();
      applyDelete(w, key);
      commit(w);
      return Error(ETIMEDOUT, fmt::format("memory: lock '{}': not acquired within {} ms", name, timeout.count()));
    }
  }
}

Status MemoryBackend::doUnlock(const std::string& owner_key) {
  MutexLock l(mu_);
  Write w = beginWrite();
  applyDelete(w, owner_key);
  commit(w);
  return okStatus();
}

Result<std::unique_ptr<Watch>> MemoryBackend::doWatch(const std::string& prefix, int64_t from_revision) {
  MutexLock l(mu_);
  auto st = std::make_shared<WatchState>();
  st->prefix = prefix;
  if (from_revision != 0 && from_revision <= compact_revision_) {
    st->queue.push(WatchBatch{WatchBatch::Kind::Compacted, {}, revision_, compact_revision_,
                              Error(ERANGE, "memory: mvcc: required revision has been compacted")});
    return std::unique_ptr<Watch>(std::make_unique<MemoryWatch>(st));
  }
  // Replay the history from from_revision, one batch per revision.
  WatchBatch b;
  b.kind = WatchBatch::Kind::Events;
  for (const Event& e : history_) {
    if (from_revision == 0 || e.kv.mod_revision < from_revision || !startsWith(e.kv.key, prefix)) continue;
    if (!b.events.empty() && b.revision != e.kv.mod_revision) {
      st->queue.push(b);
      b.events.clear();
    }
    b.revision = e.kv.mod_revision;
    b.events.push_back(e);
  }
  if (!b.events.empty()) st->queue.push(b);
  watches_.push_back(st);
  changed_.notify_all();
  return std::unique_ptr<Watch>(std::make_unique<MemoryWatch>(st));
}

Status MemoryBackend::doCompact(int64_t revision) {
  MutexLock l(mu_);
  if (revision > revision_)
    return Error(ERANGE, fmt::format("memory: compact {}: mvcc: required revision is a future revision", revision));
  if (revision <= compact_revision_)
    return Error(ERANGE, fmt::format("memory: compact {}: mvcc: required revision has been compacted", revision));
  compact_revision_ = revision;
  std::erase_if(history_, [revision](const Event& e) { return e.kv.mod_revision <= revision; });
  return okStatus();
}

// --- fault injection ---------------------------------------------------------

void FaultInjector::failNth(size_t n, int err, std::string method) {
  MutexLock l(mu_);
  n_ = n;
  err_ = err;
  method_ = std::move(method);
  matched_ = 0;
  calls_.clear();
  fired_.reset();
}

void FaultInjector::clear() { failNth(0); }

std::vector<std::string> FaultInjector::calls() const {
  MutexLock l(mu_);
  return calls_;
}

std::optional<std::string> FaultInjector::fired() const {
  MutexLock l(mu_);
  return fired_;
}

void FaultInjector::setHook(std::function<void(const std::string&)> hook) {
  MutexLock l(mu_);
  hook_ = std::move(hook);
}

Status FaultInjector::check(const char* method) {
  std::function<void(const std::string&)> hook;
  {
    MutexLock l(mu_);
    hook = hook_;
  }
  if (hook) hook(method);
  MutexLock l(mu_);
  calls_.emplace_back(method);
  if (n_ == 0 || (!method_.empty() && method_ != method)) return okStatus();
  if (++matched_ != n_) return okStatus();
  n_ = 0;
  fired_ = method;
  return Error(err_, fmt::format("injected fault: {} call {}: {}", method, matched_, errnoText(err_)));
}

#define MB_FAULT(method)                \
  do {                                  \
    auto injected = f_.check(method);   \
    if (!injected.ok()) return injected.error(); \
  } while (0)

Result<std::optional<KeyValue>> FaultyBackend::doGet(const std::string& key, Consistency c) {
  MB_FAULT("get");
  return inner_.get(key, c);
}
Result<ListResult> FaultyBackend::doList(const std::string& prefix, Consistency c) {
  MB_FAULT("list");
  return inner_.list(prefix, c);
}
Result<int64_t> FaultyBackend::doPut(const std::string& key, const std::string& value, LeaseId lease) {
  MB_FAULT("put");
  return inner_.put(key, value, lease);
}
Result<int64_t> FaultyBackend::doDeleteRange(const std::string& key, bool prefix) {
  MB_FAULT("deleteRange");
  return prefix ? inner_.deletePrefix(key) : inner_.del(key);
}
Result<TxnResult> FaultyBackend::doTxn(const Txn& t) {
  MB_FAULT("txn");
  return inner_.txn(t);
}
Result<Lease> FaultyBackend::doGrantLease(int64_t ttl_seconds) {
  MB_FAULT("grantLease");
  return inner_.grantLease(ttl_seconds);
}
Result<int64_t> FaultyBackend::doKeepAlive(LeaseId lease) {
  MB_FAULT("keepAlive");
  return inner_.keepAlive(lease);
}
Status FaultyBackend::doRevokeLease(LeaseId lease) {
  MB_FAULT("revokeLease");
  return inner_.revokeLease(lease);
}
Result<std::string> FaultyBackend::doLock(const std::string& name, LeaseId lease, Millis timeout) {
  MB_FAULT("lock");
  return inner_.lock(name, lease, timeout);
}
Status FaultyBackend::doUnlock(const std::string& owner_key) {
  MB_FAULT("unlock");
  return inner_.unlock(owner_key);
}
Result<std::unique_ptr<Watch>> FaultyBackend::doWatch(const std::string& prefix, int64_t from_revision) {
  MB_FAULT("watch");
  return inner_.watch(prefix, from_revision);
}
Status FaultyBackend::doCompact(int64_t revision) {
  MB_FAULT("compact");
  return inner_.compact(revision);
}
#undef MB_FAULT

}  // namespace membrane::kvstore
