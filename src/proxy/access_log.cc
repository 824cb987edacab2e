#include "src/proxy/access_log.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

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

namespace {

std::string ipString(const sockaddr_in& a) {
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a.sin_addr, buf, sizeof(buf));
  return buf;
}

}  // namespace

std::string formatAccessRecord(const AccessRecord& r) {
  nlohmann::json j;
  j["type"] = "l7";
  j["l7_type"] = r.response ? "response" : "request";
  j["time"] = std::string(r.time);
  j["direction"] = std::string(r.direction);
  j["verdict"] = std::string(r.verdict);
  j["method"] = std::string(r.method);
  j["url"] = std::string(r.url);
  j["protocol"] = "HTTP/1.1";
  if (r.response) {
    j["status"] = r.status;
    j["latency_us"] = r.latency_us;
    if (!r.error.empty()) j["error"] = std::string(r.error);
  }
  j["src"] = {{"ip", ipString(r.src)}, {"port", ntohs(r.src.sin_port)}, {"identity", r.src_identity}};
  j["dst"] = {{"ip", ipString(r.dst)}, {"port", ntohs(r.dst.sin_port)}, {"identity", r.dst_identity}};
  j["policy"] = std::string(r.policy);
  if (r.header_mismatch) j["header_mismatch"] = true;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string_view accessVerdict(bool forward, bool response, int local_status, bool upstream_error) {
  if (forward || (response && local_status == 0)) return "Forwarded";
  if (upstream_error) return "Error";
  return local_status == 403 ? "Denied" : "Error";
}

void buildAccessUrl(std::string& out, std::string_view host, const sockaddr_in& odst, std::string_view target) {
  if (target.find("://") != std::string_view::npos) {
    out.assign(target);
    return;
  }
  out.assign("http://");
  if (!host.empty()) {
    out.append(host);
  } else {
    char buf[INET_ADDRSTRLEN + 8] = {};
    inet_ntop(AF_INET, &odst.sin_addr, buf, INET_ADDRSTRLEN);
    size_t n = strlen(buf);
    snprintf(buf + n, sizeof(buf) - n, ":%u", static_cast<unsigned>(ntohs(odst.sin_port)));
    out.append(buf);
  }
  out.append(target);
}

}  // namespace membrane::proxy
