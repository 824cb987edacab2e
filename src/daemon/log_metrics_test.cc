// cilium_errors_warnings_total counts exactly the warning and error lines
// logged while the sink is attached.
#include "src/daemon/log_metrics.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

namespace membrane::daemon {
namespace {

double count(const metrics::AgentMetrics& m, const std::string& level) {
  for (const auto& s : m.samples())
    if (s.name == "cilium_errors_warnings_total" && s.labels.at("level") == level &&
        s.labels.at("subsystem") == "daemon")
      return s.value;
  return -1;
}

TEST(LogMetricsSink, CountsWarningsAndErrorsWhileAttached) {
  metrics::AgentMetrics m;
  auto sink = std::make_shared<LogMetricsSink>();
  spdlog::logger log("test", sink);
  log.set_level(spdlog::level::debug);
  log.warn("before attach: not counted");
  sink->attach(&m);
  log.info("info: not counted");
  log.debug("debug: not counted");
  log.warn("one");
  log.warn("two");
  log.error("three");
  log.critical("four: counts as an error");
  sink->detach();
  log.error("after detach: not counted");
  EXPECT_EQ(count(m, "WARN"), 2);
  EXPECT_EQ(count(m, "ERROR"), 2);
}

}  // namespace
}  // namespace membrane::daemon
