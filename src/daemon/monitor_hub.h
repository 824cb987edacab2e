// MonitorHub: fans datapath events out to `membrane monitor` streams.
//
// The ring-buffer reader thread (and the L7 access-log relay) publish each
// decoded event (one JSON line and its type). Every subscriber is an API
// stream (api::StreamWriter) with its own bounded buffer: publish() pushes the
// line and never waits, so a slow client can never stall the reader, another
// client or grow memory; when a client's buffer is full its lines are dropped,
// counted and reported in its stream as {"type":"lost","lost":N}. No thread is
// held per subscriber. Thread-safe; publish() holds the hub lock while pushing
// (pushes are non-blocking).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "membrane/mutex.h"
#include "src/api/http_server.h"

namespace membrane::daemon {

class MonitorHub {
 public:
  struct Subscription {
    std::set<std::string> types;  // empty = every type
    std::shared_ptr<api::StreamWriter> out;
    bool live = true;  // false between subscribePaused() and resume() (hub lock)
    bool wants(const std::string& type) const { return types.empty() || types.count(type) > 0; }
  };

  // types: empty = every type ("drop", "policy-verdict", "trace", "l7").
  // Lines of those types are pushed to 'out' from now on, until unsubscribe().
  std::shared_ptr<Subscription> subscribe(std::set<std::string> types, std::shared_ptr<api::StreamWriter> out);
  // Like subscribe(), but 'out' receives nothing until resume(): the
  // subscription already counts for wants() (so the datapath can start
  // producing the events it asks for) while the client is not yet told that
  // it listens.
  std::shared_ptr<Subscription> subscribePaused(std::set<std::string> types, std::shared_ptr<api::StreamWriter> out);
  // Pushes 'first_line', then every published line the subscription wants:
  // no event is delivered before first_line, none published after it is missed.
  void resume(const std::shared_ptr<Subscription>& s, const std::string& first_line);
  // Idempotent; after it returns no more lines reach s->out.
  void unsubscribe(const std::shared_ptr<Subscription>& s);
  // Pushes 'line' to every subscriber that wants 'type'; never blocks.
  void publish(const std::string& type, const std::string& line);
  // Ends every stream (queued lines are still delivered) and forgets the subscribers.
  void closeAll();
  size_t subscribers() const;
  // True if some subscriber receives events of this type (the L7 access-log
  // relay runs only then: formatting every request costs the proxy).
  bool wants(const std::string& type) const;
  // Called (under the hub's lock: it must not call into the hub) after every
  // subscribe, unsubscribe and closeAll, so a thread can wait for wants() to
  // change instead of polling it (the L7 access-log relay). Set it before the
  // first subscriber.
  void setOnChange(std::function<void()> fn) EXCLUDES(mu_) {
    MutexLock lk(mu_);
    on_change_ = std::move(fn);
  }

 private:
  std::shared_ptr<Subscription> add(std::set<std::string> types, std::shared_ptr<api::StreamWriter> out, bool live)
      EXCLUDES(mu_);
  mutable Mutex mu_;
  std::function<void()> on_change_ GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Subscription>> subs_ GUARDED_BY(mu_);
};

}  // namespace membrane::daemon
