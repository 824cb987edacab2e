// Agent: datapath events (the ring-buffer reader and its attribution) and
// GET /v1/monitor streams; the event flags follow what clients subscribe to.
#include "src/daemon/agent.h"
#include "src/daemon/agent_internal.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "src/kernel/events.h"

namespace membrane::daemon {

using nlohmann::json;
using api::Request;

void Agent::eventLoop() {
  auto reader = kernel::EventReader::open(dp_->eventsFd(), [this](const mb_event& ev) {
    json j = kernel::eventToJson(ev, boot_to_real_ns_);
    std::string type = j.value("type", "");
    if (type == "policy-verdict" || type == "drop") {
      // Attribution (Cilium users keep asking for it): which policy allowed
      // or denied the flow, or that nothing matched ("default deny").
      if (ev.cookie != 0) {
        MutexLock lk(cookie_mu_);
        auto it = cookie_names_.find(ev.cookie);
        if (it != cookie_names_.end()) {
          auto slash = it->second.find('/');
          j["policy"] = slash == std::string::npos
                            ? json{{"name", it->second}, {"namespace", ""}}
                            : json{{"name", it->second.substr(slash + 1)}, {"namespace", it->second.substr(0, slash)}};
        }
      } else if (type == "policy-verdict" || ev.subtype == MB_DROP_POLICY) {
        j["policy"] = {{"name", "default deny"}, {"namespace", ""}};
      }
    }
    hub_.publish(type, j.dump());
  });
  if (!reader) {
    spdlog::error("event reader: {} (monitor will show nothing)", reader.error().message);
    return;
  }
  while (!stopping_) {
    auto n = reader->poll(200);
    if (!n.ok() && n.error().code != EINTR) {
      spdlog::error("event reader: {}", n.error().message);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

void Agent::monitor(const Request& req, std::shared_ptr<api::StreamWriter> out) {
  std::set<std::string> types;
  for (const auto& t : req.queryValues("type")) {
    if (t != "drop" && t != "policy-verdict" && t != "trace" && t != "l7") {
      out->push(json({{"type", "error"}, {"error", fmt::format("unknown event type '{}' (drop, policy-verdict, trace, l7)", t)}}).dump());
      out->close();
      return;
    }
    types.insert(t);
  }
  if (stopping_) {
    out->close();
    return;
  }
  // Paused until the datapath produces what this client asked for
  // (syncEventFlags), then {"type":"subscribed"} goes first: the CLI prints
  // its "Listening for events" banner on it, so every event caused after the
  // banner is shown (a script can wait for the banner instead of sleeping).
  // A client of l7 events also waits until the proxy logs every request to
  // the relay (setAccessLogLive).
  auto sub = hub_.subscribePaused(types, out);
  // Runs once, on an API worker, when the client leaves (noticed at once by
  // the API loop), the stream is closed or the agent stops; inline if that
  // already happened. The callback holds 'sub' (and so the stream) until then.
  out->onClose([this, sub] {
    hub_.unsubscribe(sub);
    {
      MutexLock lk(l7_relay_mu_);
      std::erase(l7_pending_, sub);
    }
    syncEventFlags();
  });
  syncEventFlags();
  if (proxy_ && sub->wants("l7")) {
    MutexLock lk(l7_relay_mu_);
    if (!l7_relay_live_) {
      l7_pending_.push_back(sub);
      return;
    }
  }
  hub_.resume(sub, kMonitorSubscribed);
}

void Agent::syncEventFlags() {
  std::lock_guard lk(event_flags_mu_);
  auto dc = dp_->config();
  if (!dc) {
    spdlog::warn("monitor: {}", dc.error().message);
    return;
  }
  uint32_t flags = dc->flags & ~(MB_CFG_F_TRACE_EVENTS | MB_CFG_F_NO_ALLOWED_VERDICTS);
  if (cfg_.trace_events && hub_.wants("trace")) flags |= MB_CFG_F_TRACE_EVENTS;
  if (!hub_.wants("policy-verdict")) flags |= MB_CFG_F_NO_ALLOWED_VERDICTS;
  if (flags == dc->flags) return;
  dc->flags = flags;
  if (auto st = dp_->setConfig(*dc); !st.ok()) spdlog::warn("monitor: {}", st.error().message);
}

}  // namespace membrane::daemon
