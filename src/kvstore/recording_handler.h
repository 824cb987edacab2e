// Test support: a ReflectorHandler that records every call as a line
// ("upsert KEY=VALUE", "delete KEY", "synced REV") and lets a test wait for
// lines with a deadline. Never linked into a binary.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "src/kvstore/reflector.h"

namespace membrane::kvstore {

class RecordingHandler : public ReflectorHandler {
 public:
  void onUpsert(const KeyValue& kv) override { add(fmt::format("upsert {}={}", kv.key, kv.value)); }
  void onDelete(const std::string& key) override { add("delete " + key); }
  void onSynced(int64_t revision) override { add(fmt::format("synced {}", revision)); }

  // Waits (at most `timeout`) until `n` lines arrived; returns them all.
  std::vector<std::string> waitFor(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock l(mu_);
    cv_.wait_for(l, timeout, [&] { return lines_.size() >= n; });
    return lines_;
  }
  // Waits until a line equal to `line` arrived after the first `from` lines.
  bool waitForLine(const std::string& line, size_t from = 0,
                   std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, timeout, [&] {
      for (size_t i = from; i < lines_.size(); i++)
        if (lines_[i] == line) return true;
      return false;
    });
  }
  std::vector<std::string> lines() {
    std::lock_guard l(mu_);
    return lines_;
  }

 private:
  void add(std::string line) {
    {
      std::lock_guard l(mu_);
      lines_.push_back(std::move(line));
    }
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

}  // namespace membrane::kvstore
