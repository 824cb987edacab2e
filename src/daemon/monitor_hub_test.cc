#include "src/daemon/monitor_hub.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace membrane::daemon {
namespace {

// A StreamWriter that records what it gets and holds at most 'limit' lines.
class FakeStream final : public api::StreamWriter {
 public:
  explicit FakeStream(size_t limit = 100) : limit_(limit) {}
  Push push(std::string_view line) override {
    std::lock_guard lk(mu_);
    if (closed_) return Push::Closed;
    if (lines_.size() >= limit_) {
      ++lost_;
      return Push::Dropped;
    }
    lines_.emplace_back(line);
    return Push::Queued;
  }
  bool write(std::string_view line) override { return push(line) == Push::Queued; }
  void close() override {
    std::lock_guard lk(mu_);
    closed_ = true;
  }
  bool alive() override {
    std::lock_guard lk(mu_);
    return !closed_;
  }
  uint64_t lost() const override {
    std::lock_guard lk(mu_);
    return lost_;
  }
  void onClose(std::function<void()>) override {}
  std::vector<std::string> lines() const {
    std::lock_guard lk(mu_);
    return lines_;
  }

 private:
  mutable std::mutex mu_;
  size_t limit_;
  std::vector<std::string> lines_;
  uint64_t lost_ = 0;
  bool closed_ = false;
};

TEST(MonitorHub, FiltersByTypeAndDelivers) {
  MonitorHub hub;
  auto d = std::make_shared<FakeStream>();
  auto a = std::make_shared<FakeStream>();
  auto drops = hub.subscribe({"drop"}, d);
  auto all = hub.subscribe({}, a);
  EXPECT_TRUE(hub.wants("drop"));
  EXPECT_TRUE(hub.wants("trace"));
  hub.publish("drop", "d1");
  hub.publish("policy-verdict", "v1");
  EXPECT_EQ(d->lines(), std::vector<std::string>{"d1"});
  EXPECT_EQ(a->lines(), (std::vector<std::string>{"d1", "v1"}));
  hub.unsubscribe(drops);
  hub.unsubscribe(drops);  // idempotent
  EXPECT_EQ(hub.subscribers(), 1u);
  hub.publish("drop", "d2");
  EXPECT_EQ(d->lines(), std::vector<std::string>{"d1"});
  hub.unsubscribe(all);
  EXPECT_FALSE(hub.wants("drop"));
}

TEST(MonitorHub, FullSubscriberLosesWithoutStallingOthers) {
  MonitorHub hub;
  auto slow = std::make_shared<FakeStream>(3);
  auto fast = std::make_shared<FakeStream>(1000);
  hub.subscribe({}, slow);
  hub.subscribe({"drop"}, fast);
  for (int i = 0; i < 8; ++i) hub.publish("drop", std::to_string(i));
  EXPECT_EQ(slow->lines(), (std::vector<std::string>{"0", "1", "2"}));
  EXPECT_EQ(slow->lost(), 5u);
  EXPECT_EQ(fast->lines().size(), 8u);
  EXPECT_EQ(fast->lost(), 0u);
}

TEST(MonitorHub, CloseAllEndsEveryStream) {
  MonitorHub hub;
  auto a = std::make_shared<FakeStream>();
  auto b = std::make_shared<FakeStream>();
  hub.subscribe({}, a);
  hub.subscribe({"trace"}, b);
  hub.closeAll();
  EXPECT_FALSE(a->alive());
  EXPECT_FALSE(b->alive());
  EXPECT_EQ(hub.subscribers(), 0u);
}

// `membrane monitor` prints its banner on the first line: nothing published
// before it may reach the client, nothing published after it may be missed,
// and the paused subscription already counts for wants() (the datapath then
// produces the events before the client is told it listens).
TEST(MonitorHub, PausedSubscriptionStartsWithTheFirstLine) {
  MonitorHub hub;
  auto out = std::make_shared<FakeStream>();
  auto s = hub.subscribePaused({"policy-verdict"}, out);
  EXPECT_TRUE(hub.wants("policy-verdict"));
  EXPECT_EQ(hub.subscribers(), 1u);
  hub.publish("policy-verdict", "before");
  EXPECT_TRUE(out->lines().empty());
  hub.resume(s, "first");
  hub.resume(s, "again");  // idempotent: one first line
  hub.publish("policy-verdict", "after");
  hub.publish("drop", "not wanted");
  EXPECT_EQ(out->lines(), (std::vector<std::string>{"first", "after"}));
}

TEST(MonitorHub, ConcurrentPublishAndSubscribe) {
  MonitorHub hub;
  std::atomic<bool> done{false};
  std::thread pub([&] {
    for (int i = 0; i < 20000; ++i) hub.publish("drop", "x");
    done = true;
  });
  while (!done) {
    auto s = hub.subscribe({}, std::make_shared<FakeStream>(10));
    hub.unsubscribe(s);
  }
  pub.join();
  EXPECT_EQ(hub.subscribers(), 0u);
}

}  // namespace
}  // namespace membrane::daemon
