#include "src/daemon/log_metrics.h"

namespace membrane::daemon {

void LogMetricsSink::sink_it_(const spdlog::details::log_msg& msg) {
  if (!metrics_) return;
  // Cilium's level names (metrics::kLogLevel*); critical counts as an error.
  if (msg.level == spdlog::level::warn)
    metrics_->recordLogLine(metrics::kLogLevelWarning, subsystem_);
  else if (msg.level == spdlog::level::err || msg.level == spdlog::level::critical)
    metrics_->recordLogLine(metrics::kLogLevelError, subsystem_);
}

std::shared_ptr<LogMetricsSink> logMetricsSink() {
  static const std::shared_ptr<LogMetricsSink> sink = std::make_shared<LogMetricsSink>();
  return sink;
}

}  // namespace membrane::daemon
