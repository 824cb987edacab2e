#include <fmt/format.h>

#include <random>

#include "membrane/kvstore.h"

namespace membrane::kvstore {

namespace {
constexpr std::string_view kRead = "read";
constexpr std::string_view kSet = "set";
constexpr std::string_view kDelete = "delete";

template <typename R>
bool isOk(const R& r) {
  return r.ok();
}
}  // namespace

std::string scopeFromKey(std::string_view key) {
  // "cilium/state/<a>/<b>/..." -> "<a>/<b>" (Cilium: strings.SplitN(key, "/", 5)).
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (parts.size() < 4) {
    size_t slash = key.find('/', start);
    if (slash == std::string_view::npos) {
      parts.push_back(key.substr(start));
      break;
    }
    parts.push_back(key.substr(start, slash - start));
    start = slash + 1;
  }
  if (parts.size() < 4) return std::string(key.substr(0, 12));
  return fmt::format("{}/{}", parts[2], parts[3]);
}

std::string prefixEnd(std::string_view prefix) {
  std::string end(prefix);
  // Strip trailing 0xff bytes and increment the last remaining one; a prefix
  // of only 0xff bytes (or empty) ranges to the end of the keyspace: "\0".
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

void Backend::setObserver(Observer* observer, std::function<Clock::time_point()> now) {
  observer_ = observer;
  now_ = now ? std::move(now) : std::function<Clock::time_point()>(Clock::now);
}

template <typename R, typename F>
R Backend::observed(const std::string& key, std::string_view kind, std::string_view action, F&& f) {
  if (observer_ == nullptr) return f();
  auto start = now_();
  R r = f();
  std::chrono::duration<double> took = now_() - start;
  observer_->operation(scopeFromKey(key), kind, action, isOk(r) ? "success" : "fail", took.count());
  return r;
}

Result<std::optional<KeyValue>> Backend::get(const std::string& key, Consistency c) {
  return observed<Result<std::optional<KeyValue>>>(key, kRead, "Get", [&] { return doGet(key, c); });
}

Result<ListResult> Backend::list(const std::string& prefix, Consistency c) {
  return observed<Result<ListResult>>(prefix, kRead, "ListPrefix", [&] { return doList(prefix, c); });
}

Result<int64_t> Backend::put(const std::string& key, const std::string& value, LeaseId lease) {
  return observed<Result<int64_t>>(key, kSet, "Update", [&] { return doPut(key, value, lease); });
}

Result<CreateResult> Backend::createIfAbsent(const std::string& key, const std::string& value, LeaseId lease) {
  return observed<Result<CreateResult>>(key, kSet, "CreateOnly", [&]() -> Result<CreateResult> {
    Txn t;
    t.compares.push_back({Compare::Target::CreateRevision, Compare::Op::Equal, key, false, 0, {}});
    t.success.push_back(TxnOp::put(key, value, lease));
    t.failure.push_back(TxnOp::get(key));
    auto r = doTxn(t);
    if (!r.ok()) return r.error().wrap(fmt::format("create '{}'", key));
    CreateResult out;
    out.created = r->succeeded;
    out.revision = r->revision;
    if (!r->succeeded && !r->gets.empty()) out.existing = r->gets.front();
    return out;
  });
}

Result<bool> Backend::compareAndDelete(const std::string& key, int64_t mod_revision) {
  return observed<Result<bool>>(key, kDelete, "CompareAndDelete", [&]() -> Result<bool> {
    Txn t;
    t.compares.push_back({Compare::Target::ModRevision, Compare::Op::Equal, key, false, mod_revision, {}});
    t.success.push_back(TxnOp::del(key));
    auto r = doTxn(t);
    if (!r.ok()) return r.error().wrap(fmt::format("delete '{}' at revision {}", key, mod_revision));
    return r->succeeded;
  });
}

Result<int64_t> Backend::del(const std::string& key) {
  return observed<Result<int64_t>>(key, kDelete, "Delete", [&] { return doDeleteRange(key, false); });
}

Result<int64_t> Backend::deletePrefix(const std::string& prefix) {
  return observed<Result<int64_t>>(prefix, kDelete, "DeletePrefix", [&] { return doDeleteRange(prefix, true); });
}

Result<TxnResult> Backend::txn(const Txn& t) {
  // Scope: the first key the transaction writes, else the first it compares.
  std::string key = t.success.empty() ? (t.compares.empty() ? std::string() : t.compares.front().key)
                                      : t.success.front().key;
  return observed<Result<TxnResult>>(key, kSet, "Txn", [&] { return doTxn(t); });
}

Result<Lease> Backend::grantLease(int64_t ttl_seconds) { return doGrantLease(ttl_seconds); }
Result<int64_t> Backend::keepAlive(LeaseId lease) { return doKeepAlive(lease); }
Status Backend::revokeLease(LeaseId lease) { return doRevokeLease(lease); }

Result<std::string> Backend::lock(const std::string& name, LeaseId lease, Millis timeout) {
  return observed<Result<std::string>>(name, kSet, "Lock", [&] { return doLock(name, lease, timeout); });
}

Status Backend::unlock(const std::string& owner_key) {
  return observed<Status>(owner_key, kDelete, "Unlock", [&] { return doUnlock(owner_key); });
}

Result<std::unique_ptr<Watch>> Backend::watch(const std::string& prefix, int64_t from_revision) {
  return doWatch(prefix, from_revision);
}

Status Backend::compact(int64_t revision) { return doCompact(revision); }

Status probeQuorum(Backend& backend, Observer* observer, Millis timeout) {
  auto fail = [&](std::string_view what, Error e) -> Status {
    if (observer != nullptr) observer->quorumError(what);
    return std::move(e).wrap(fmt::format("kvstore quorum check on {}", backend.describe()));
  };
  // The lease outlives a probe that times out only by its TTL; revoked below.
  int64_t ttl = std::max<int64_t>(2, std::chrono::duration_cast<std::chrono::seconds>(timeout).count() * 2);
  auto lease = backend.grantLease(ttl);
  if (!lease.ok()) return fail("timeout", lease.error());
  std::random_device rd;
  std::string name = fmt::format("cilium/.initlock/{:016x}", (uint64_t(rd()) << 32) | rd());
  auto owner = backend.lock(name, lease->id, timeout);
  Status result = okStatus();
  if (!owner.ok()) {
    result = fail(owner.error().code == ETIMEDOUT ? "lock timeout" : "timeout", owner.error());
  } else {
    auto u = backend.unlock(*owner);
    if (!u.ok()) result = fail("timeout", u.error());
  }
  (void)backend.revokeLease(lease->id);  // best effort: the TTL ends it anyway
  return result;
}

}  // namespace membrane::kvstore
