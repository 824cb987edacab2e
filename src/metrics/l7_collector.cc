// cilium_policy_l7_* and cilium_proxy_* from the L7 proxy's stats (read at
// scrape time; names, types and labels as Cilium's, reference/cilium-facts.md §1).
#include <limits>

#include "src/metrics/collectors.h"

namespace membrane::metrics::detail {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

ClientMetric counterOf(std::vector<ClientMetric::Label> labels, uint64_t v) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = static_cast<double>(v);
  return m;
}

}  // namespace

std::vector<MetricFamily> l7Families(const L7Stats& s) {
  std::vector<MetricFamily> out;
  auto single = [&](const char* name, const char* help, uint64_t v) {
    out.push_back(MetricFamily{name, help, MetricType::Counter, {counterOf({}, v)}});
  };
  single("cilium_policy_l7_received_total", "Number of total L7 requests/responses", s.received);
  single("cilium_policy_l7_forwarded_total", "Number of total L7 forwarded requests/responses", s.forwarded);
  single("cilium_policy_l7_denied_total", "Number of total L7 denied requests/responses due to policy", s.denied);
  single("cilium_policy_l7_parse_errors_total", "Number of total L7 parse errors", s.parse_errors);

  MetricFamily total{"cilium_policy_l7_total", "Number of total proxy requests handled", MetricType::Counter, {}};
  for (auto [rule, v] : {std::pair{"denied", s.denied}, {"forwarded", s.forwarded}, {"parse_errors", s.parse_errors},
                         {"received", s.received}})
    total.metric.push_back(counterOf({{"proxy_type", "http"}, {"rule", rule}}, v));
  out.push_back(std::move(total));

  ClientMetric redirects;
  redirects.label = {{"protocol_l7", "http"}};
  redirects.gauge.value = static_cast<double>(s.redirects_http);
  out.push_back(MetricFamily{"cilium_proxy_redirects", "Number of redirects installed for endpoints",
                             MetricType::Gauge, {redirects}});

  MetricFamily hist{"cilium_proxy_upstream_reply_seconds",
                    "Seconds waited to get a reply from a upstream server", MetricType::Histogram, {}};
  for (const auto& h : s.upstream_reply_seconds) {
    ClientMetric m;
    m.label = {{"error", h.error}, {"protocol_l7", h.protocol_l7}, {"scope", h.scope}};
    m.histogram.sample_count = h.count;
    m.histogram.sample_sum = h.sum;
    for (const auto& [le, c] : h.buckets) m.histogram.bucket.push_back({c, le});
    m.histogram.bucket.push_back({h.count, std::numeric_limits<double>::infinity()});
    hist.metric.push_back(std::move(m));
  }
  if (!hist.metric.empty()) out.push_back(std::move(hist));
  return out;
}

}  // namespace membrane::metrics::detail
