// Reflector: keeps a consumer in step with every key under a prefix, the way
// Cilium's etcd watcher does (cluster.md §1.5) and client-go's Reflector does
// for Kubernetes: list the prefix, deliver the snapshot, watch from the
// list's revision + 1; after a compaction or a broken stream, list again and
// deliver the difference (upserts for new or changed keys, deletions for keys
// that vanished meanwhile), with exponential backoff while the store fails.
//
// Delivery contract (ReflectorHandler):
//   - onUpsert(kv) for a key that is new or whose mod_revision changed;
//     never twice for the same (key, mod_revision);
//   - onDelete(key) only for a key previously delivered by onUpsert;
//   - onSynced(revision) after each complete list was delivered: from then on
//     the consumer's view equals the store at `revision` (the first call is
//     "initial sync done");
//   - calls come from the reflector's thread, one at a time, in revision
//     order. Values are delivered as stored: parsing (and rejecting foreign or
//     malformed values) is the consumer's business; nothing here looks at them.
// The time each handler call takes is reported as
// cilium_kvstore_events_queue_seconds{scope, action=create|modify|delete}.
//
// Thread-safety: start()/stop()/stats() from any thread; the handler runs
// on the reflector's thread. stop() must not be called from the handler.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "membrane/kvstore.h"
#include "membrane/mutex.h"
#include "membrane/thread_annotations.h"

namespace membrane::kvstore {

class ReflectorHandler {
 public:
  virtual ~ReflectorHandler() = default;
  virtual void onUpsert(const KeyValue& kv) = 0;
  virtual void onDelete(const std::string& key) = 0;
  virtual void onSynced(int64_t revision) = 0;
};

struct ReflectorOptions {
  Millis backoff_min{50};   // first wait after a failed list/watch or a broken stream
  Millis backoff_max{5000};
  Millis poll{1000};        // Watch::next() timeout (stop() wakes it earlier)
  Consistency list_consistency = Consistency::Serializable;  // Cilium's choice: works without quorum
  Observer* observer = nullptr;
  std::function<Clock::time_point()> now = Clock::now;
};

struct ReflectorStats {
  uint64_t lists = 0;              // successful lists (1 = initial only)
  uint64_t list_errors = 0;        // failed lists or watch creations
  uint64_t relists_compacted = 0;  // watches ended by compaction
  uint64_t relists_broken = 0;     // watches ended by a lost stream
  std::string last_error;          // the last failure's message ("" if none)
};

class Reflector {
 public:
  Reflector(Backend& backend, std::string prefix, ReflectorHandler& handler, ReflectorOptions options = {});
  ~Reflector();  // stop()
  Reflector(const Reflector&) = delete;
  Reflector& operator=(const Reflector&) = delete;

  void start();
  // Ends the watch, waits for the thread; no handler call after it returns.
  void stop();
  ReflectorStats stats() const;

 private:
  void run();
  // Delivers a list result as differences from what the consumer has.
  void deliverList(const ListResult& l);
  void deliverEvent(const Event& e);
  void report(const std::string& key, std::string_view action, Clock::time_point start);
  // Waits `d` unless stop() comes first; false when stopping.
  bool pause(Millis d);
  bool stopping() const;
  void fail(const Error& e, bool list_error);

  Backend& backend_;
  const std::string prefix_;
  ReflectorHandler& handler_;
  const ReflectorOptions options_;
  // What the consumer has: key -> mod_revision. Reflector thread only.
  std::map<std::string, int64_t> known_;

  mutable Mutex mu_;
  std::condition_variable_any cv_;
  bool stopping_ GUARDED_BY(mu_) = false;
  Watch* watch_ GUARDED_BY(mu_) = nullptr;  // the current watch, for stop() to cancel
  ReflectorStats stats_ GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace membrane::kvstore
