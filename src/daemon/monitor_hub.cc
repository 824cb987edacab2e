#include "src/daemon/monitor_hub.h"

#include <algorithm>

namespace membrane::daemon {

std::shared_ptr<MonitorHub::Subscription> MonitorHub::add(std::set<std::string> types,
                                                          std::shared_ptr<api::StreamWriter> out, bool live) {
  auto s = std::make_shared<Subscription>();
  s->types = std::move(types);
  s->out = std::move(out);
  s->live = live;
  MutexLock lk(mu_);
  subs_.push_back(s);
  if (on_change_) on_change_();
  return s;
}

std::shared_ptr<MonitorHub::Subscription> MonitorHub::subscribe(std::set<std::string> types,
                                                                std::shared_ptr<api::StreamWriter> out) {
  return add(std::move(types), std::move(out), true);
}

std::shared_ptr<MonitorHub::Subscription> MonitorHub::subscribePaused(std::set<std::string> types,
                                                                      std::shared_ptr<api::StreamWriter> out) {
  return add(std::move(types), std::move(out), false);
}

void MonitorHub::resume(const std::shared_ptr<Subscription>& s, const std::string& first_line) {
  MutexLock lk(mu_);  // publish() holds it too: nothing can come between
  if (s->live) return;
  s->live = true;
  (void)s->out->push(first_line);
}

void MonitorHub::unsubscribe(const std::shared_ptr<Subscription>& s) {
  MutexLock lk(mu_);
  subs_.erase(std::remove(subs_.begin(), subs_.end(), s), subs_.end());
  if (on_change_) on_change_();
}

void MonitorHub::publish(const std::string& type, const std::string& line) {
  MutexLock lk(mu_);
  for (auto& s : subs_)
    if (s->live && s->wants(type)) (void)s->out->push(line);  // Dropped/Closed: counted by the stream / onClose unsubscribes
}

void MonitorHub::closeAll() {
  std::vector<std::shared_ptr<Subscription>> subs;
  {
    MutexLock lk(mu_);
    subs.swap(subs_);
  }
  {
    MutexLock lk(mu_);
    if (on_change_) on_change_();
  }
  // Outside the lock: a stream's onClose callback may call unsubscribe().
  for (auto& s : subs) s->out->close();
}

size_t MonitorHub::subscribers() const {
  MutexLock lk(mu_);
  return subs_.size();
}

bool MonitorHub::wants(const std::string& type) const {
  MutexLock lk(mu_);
  for (const auto& s : subs_)
    if (s->wants(type)) return true;
  return false;
}

}  // namespace membrane::daemon
