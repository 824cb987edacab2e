// LogMetricsSink: counts the agent's warning and error log lines into
// cilium_errors_warnings_total{level,subsystem} (Cilium's top dashboard panel
// and a standard alert). main() puts the one sink (logMetricsSink()) on the
// logger before any thread starts; the agent attaches its AgentMetrics once
// they exist and detaches before they go, so lines logged without metrics
// (start-up, `membraned cleanup`) are simply not counted.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include <spdlog/sinks/base_sink.h>

#include "membrane/metrics.h"

namespace membrane::daemon {

class LogMetricsSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // subsystem: the label value for every line ("daemon": membraned logs
  // through one logger).
  explicit LogMetricsSink(std::string subsystem = "daemon") : subsystem_(std::move(subsystem)) {}
  // Counting starts; 'm' must stay alive until detach().
  void attach(metrics::AgentMetrics* m) {
    std::lock_guard lk(mutex_);
    metrics_ = m;
  }
  // Returns once no line is being counted into the attached metrics.
  void detach() { attach(nullptr); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  std::string subsystem_;
  metrics::AgentMetrics* metrics_ = nullptr;  // guarded by base_sink's mutex_
};

// The process's one sink (created on first use).
std::shared_ptr<LogMetricsSink> logMetricsSink();

}  // namespace membrane::daemon
