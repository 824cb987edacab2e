#include "src/daemon/monitor_hub.h"

#include <gtest/gtest.h>

#include <thread>

namespace membrane::daemon {

TEST(MonitorHub, FiltersByTypeAndDelivers) {
  MonitorHub hub;
  auto drops = hub.subscribe({"drop"});
  auto all = hub.subscribe({});
  hub.publish("drop", "d1");
  hub.publish("policy-verdict", "v1");
  std::vector<std::string> lines;
  uint64_t lost = 0;
  ASSERT_TRUE(drops->next(&lines, &lost, 10));
  EXPECT_EQ(lines, std::vector<std::string>{"d1"});
  ASSERT_TRUE(all->next(&lines, &lost, 10));
  EXPECT_EQ(lines, (std::vector<std::string>{"d1", "v1"}));
  EXPECT_EQ(lost, 0u);
  hub.unsubscribe(drops);
  EXPECT_EQ(hub.subscribers(), 1u);
}

TEST(MonitorHub, BoundedQueueCountsLost) {
  MonitorHub hub;
  auto s = hub.subscribe({});
  for (size_t i = 0; i < MonitorHub::kQueueLimit + 5; ++i) hub.publish("drop", "x");
  std::vector<std::string> lines;
  uint64_t lost = 0;
  ASSERT_TRUE(s->next(&lines, &lost, 10));
  EXPECT_EQ(lines.size(), MonitorHub::kQueueLimit);
  EXPECT_EQ(lost, 5u);
}

TEST(MonitorHub, CloseWakesWaiters) {
  MonitorHub hub;
  auto s = hub.subscribe({});
  std::thread t([&] { hub.closeAll(); });
  std::vector<std::string> lines;
  uint64_t lost = 0;
  bool more = true;
  for (int i = 0; i < 100 && more; ++i) more = s->next(&lines, &lost, 50);
  t.join();
  EXPECT_FALSE(more);
}

}  // namespace membrane::daemon
