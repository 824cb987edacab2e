#include "src/proxy/access_log.h"

#include <algorithm>

namespace membrane::proxy {

bool AccessLog::Subscription::next(std::vector<std::string>& out, std::chrono::milliseconds timeout) {
  out.clear();
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return !lines_.empty(); });
  while (!lines_.empty()) {
    out.push_back(std::move(lines_.front()));
    lines_.pop_front();
  }
  return !out.empty();
}

std::shared_ptr<AccessLog::Subscription> AccessLog::subscribe() {
  auto s = std::make_shared<Subscription>();
  std::lock_guard lk(mu_);
  subs_.push_back(s);
  subscribers_.store(static_cast<int>(subs_.size()));
  return s;
}

void AccessLog::unsubscribe(const std::shared_ptr<Subscription>& s) {
  std::lock_guard lk(mu_);
  subs_.erase(std::remove(subs_.begin(), subs_.end(), s), subs_.end());
  subscribers_.store(static_cast<int>(subs_.size()));
}

void AccessLog::publish(const std::string& line) {
  std::lock_guard lk(mu_);
  for (auto& s : subs_) {
    {
      std::lock_guard sl(s->mu_);
      if (s->lines_.size() >= max_queue_) {
        s->dropped_.fetch_add(1);
        continue;
      }
      s->lines_.push_back(line);
    }
    s->cv_.notify_one();
  }
}

}  // namespace membrane::proxy
