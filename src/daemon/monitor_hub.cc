#include "src/daemon/monitor_hub.h"

#include <algorithm>
#include <chrono>

namespace membrane::daemon {

bool MonitorHub::Subscription::next(std::vector<std::string>* lines, uint64_t* lost, int timeout_ms) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return closed_ || !q_.empty() || lost_ > 0; });
  lines->assign(std::make_move_iterator(q_.begin()), std::make_move_iterator(q_.end()));
  q_.clear();
  *lost = lost_;
  lost_ = 0;
  return !closed_ || !lines->empty();
}

std::shared_ptr<MonitorHub::Subscription> MonitorHub::subscribe(std::set<std::string> types) {
  auto s = std::make_shared<Subscription>();
  s->types_ = std::move(types);
  std::lock_guard lk(mu_);
  subs_.push_back(s);
  if (on_change_) on_change_();
  return s;
}

void MonitorHub::unsubscribe(const std::shared_ptr<Subscription>& s) {
  std::lock_guard lk(mu_);
  subs_.erase(std::remove(subs_.begin(), subs_.end(), s), subs_.end());
  if (on_change_) on_change_();
}

void MonitorHub::publish(const std::string& type, const std::string& line) {
  std::lock_guard lk(mu_);
  for (auto& s : subs_) {
    if (!s->wants(type)) continue;
    {
      std::lock_guard slk(s->mu_);
      if (s->q_.size() >= kQueueLimit)
        ++s->lost_;
      else
        s->q_.push_back(line);
    }
    s->cv_.notify_one();
  }
}

void MonitorHub::closeAll() {
  std::lock_guard lk(mu_);
  for (auto& s : subs_) {
    {
      std::lock_guard slk(s->mu_);
      s->closed_ = true;
    }
    s->cv_.notify_all();
  }
  subs_.clear();
  if (on_change_) on_change_();
}

size_t MonitorHub::subscribers() const {
  std::lock_guard lk(mu_);
  return subs_.size();
}

bool MonitorHub::wants(const std::string& type) const {
  std::lock_guard lk(mu_);
  for (const auto& s : subs_)
    if (s->wants(type)) return true;
  return false;
}

}  // namespace membrane::daemon
