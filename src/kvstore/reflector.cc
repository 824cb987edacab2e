#include "src/kvstore/reflector.h"

#include <algorithm>
#include <set>

namespace membrane::kvstore {

Reflector::Reflector(Backend& backend, std::string prefix, ReflectorHandler& handler, ReflectorOptions options)
    : backend_(backend), prefix_(std::move(prefix)), handler_(handler), options_(std::move(options)) {}

Reflector::~Reflector() { stop(); }

void Reflector::start() {
  MB_CHECK(!thread_.joinable());
  thread_ = std::thread([this] { run(); });
}

void Reflector::stop() {
  {
    MutexLock l(mu_);
    stopping_ = true;
    if (watch_ != nullptr) watch_->cancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

ReflectorStats Reflector::stats() const {
  MutexLock l(mu_);
  return stats_;
}

bool Reflector::stopping() const {
  MutexLock l(mu_);
  return stopping_;
}

bool Reflector::pause(Millis d) {
  MutexLock l(mu_);
  auto deadline = Clock::now() + d;
  while (!stopping_) {
    if (cv_.wait_until(mu_, deadline) == std::cv_status::timeout) break;
  }
  return !stopping_;
}

void Reflector::fail(const Error& e, bool list_error) {
  MutexLock l(mu_);
  if (list_error) stats_.list_errors++;
  stats_.last_error = e.message;
}

void Reflector::report(const std::string& key, std::string_view action, Clock::time_point start) {
  if (options_.observer == nullptr) return;
  std::chrono::duration<double> took = options_.now() - start;
  options_.observer->eventQueued(scopeFromKey(key), action, took.count());
}

void Reflector::deliverList(const ListResult& l) {
  std::set<std::string> present;
  for (const KeyValue& kv : l.kvs) {
    present.insert(kv.key);
    auto it = known_.find(kv.key);
    if (it != known_.end() && it->second == kv.mod_revision) continue;
    const bool created = it == known_.end();
    known_[kv.key] = kv.mod_revision;
    auto start = options_.now();
    handler_.onUpsert(kv);
    report(kv.key, created ? "create" : "modify", start);
  }
  // Keys the consumer has that the store no longer has: deleted while we
  // were not watching (the reason for a relist).
  std::vector<std::string> gone;
  for (const auto& [key, rev] : known_)
    if (!present.count(key)) gone.push_back(key);
  for (const auto& key : gone) {
    known_.erase(key);
    auto start = options_.now();
    handler_.onDelete(key);
    report(key, "delete", start);
  }
  handler_.onSynced(l.revision);
}

void Reflector::deliverEvent(const Event& e) {
  const std::string& key = e.kv.key;
  auto it = known_.find(key);
  auto start = options_.now();
  if (e.type == Event::Type::Delete) {
    if (it == known_.end()) return;
    known_.erase(it);
    handler_.onDelete(key);
    report(key, "delete", start);
    return;
  }
  if (it != known_.end() && it->second >= e.kv.mod_revision) return;  // already delivered
  const bool created = it == known_.end();
  known_[key] = e.kv.mod_revision;
  handler_.onUpsert(e.kv);
  report(key, created ? "create" : "modify", start);
}

void Reflector::run() {
  Millis backoff = options_.backoff_min;
  auto failed = [&](const Error& e, bool list_error) {
    fail(e, list_error);
    bool go_on = pause(backoff);
    backoff = std::min(backoff * 2, options_.backoff_max);
    return go_on;
  };
  while (!stopping()) {
    auto l = backend_.list(prefix_, options_.list_consistency);
    if (!l.ok()) {
      if (!failed(l.error(), true)) return;
      continue;
    }
    {
      MutexLock lk(mu_);
      stats_.lists++;
    }
    deliverList(*l);
    auto w = backend_.watch(prefix_, l->revision + 1);
    if (!w.ok()) {
      if (!failed(w.error(), true)) return;
      continue;
    }
    {
      MutexLock lk(mu_);
      if (stopping_) return;
      watch_ = w->get();
    }
    bool relist_now = false;
    while (!relist_now) {
      WatchBatch b = (*w)->next(options_.poll);
      switch (b.kind) {
        case WatchBatch::Kind::Events:
          backoff = options_.backoff_min;  // the store works again
          for (const Event& e : b.events) deliverEvent(e);
          break;
        case WatchBatch::Kind::Timeout:
          backoff = options_.backoff_min;
          break;
        case WatchBatch::Kind::Compacted: {
          // Cilium relists at once: the store works, only our revision is too old.
          MutexLock lk(mu_);
          stats_.relists_compacted++;
          relist_now = true;
          break;
        }
        case WatchBatch::Kind::Broken: {
          {
            MutexLock lk(mu_);
            stats_.relists_broken++;
          }
          relist_now = true;
          {
            MutexLock lk(mu_);
            watch_ = nullptr;
          }
          w->reset();
          if (!failed(b.error, false)) return;
          break;
        }
        case WatchBatch::Kind::Cancelled: {
          MutexLock lk(mu_);
          watch_ = nullptr;
          return;
        }
      }
    }
    MutexLock lk(mu_);
    watch_ = nullptr;
  }
}

}  // namespace membrane::kvstore
