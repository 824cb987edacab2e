#include "src/metrics/collectors.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "membrane/drop_reason.h"

namespace membrane::metrics::detail {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

ClientMetric::Label label(std::string name, std::string value) {
  return ClientMetric::Label{std::move(name), std::move(value)};
}

ClientMetric counterMetric(std::vector<ClientMetric::Label> labels, double v) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  return m;
}

ClientMetric gaugeMetric(std::vector<ClientMetric::Label> labels, double v) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = v;
  return m;
}

struct Totals {
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

}  // namespace

std::vector<MetricFamily> datapathFamilies(const std::vector<DatapathCounter>& rows) {
  // std::map keys give sorted, deduplicated series (several codes or
  // directions can render to the same strings).
  std::map<std::pair<std::string, std::string>, Totals> drops;  // (direction, reason)
  std::map<std::string, Totals> forwards;                       // direction
  for (const auto& r : rows) {
    Totals* t;
    if (isDropReason(r.reason))
      t = &drops[{directionString(r.direction), dropReasonString(r.reason)}];
    else if (r.reason == 0)
      t = &forwards[directionString(r.direction)];
    else
      continue;  // 1..129 other than 2: not a drop and not a forward (Cilium skips these too)
    t->packets += r.packets;
    t->bytes += r.bytes;
  }

  MetricFamily drop_count{"cilium_drop_count_total",
                          "Total dropped packets, tagged by drop reason and ingress/egress direction",
                          MetricType::Counter,
                          {}};
  MetricFamily drop_bytes{"cilium_drop_bytes_total",
                          "Total dropped bytes, tagged by drop reason and ingress/egress direction",
                          MetricType::Counter,
                          {}};
  MetricFamily fwd_count{"cilium_forward_count_total",
                         "Total forwarded packets, tagged by ingress/egress direction",
                         MetricType::Counter,
                         {}};
  MetricFamily fwd_bytes{"cilium_forward_bytes_total",
                         "Total forwarded bytes, tagged by ingress/egress direction",
                         MetricType::Counter,
                         {}};
  for (const auto& [key, t] : drops) {
    const auto& [direction, reason] = key;
    // Label order in the text format is by name: direction, reason.
    std::vector<ClientMetric::Label> labels{label("direction", direction), label("reason", reason)};
    drop_count.metric.push_back(counterMetric(labels, static_cast<double>(t.packets)));
    drop_bytes.metric.push_back(counterMetric(labels, static_cast<double>(t.bytes)));
  }
  for (const auto& [direction, t] : forwards) {
    std::vector<ClientMetric::Label> labels{label("direction", direction)};
    fwd_count.metric.push_back(counterMetric(labels, static_cast<double>(t.packets)));
    fwd_bytes.metric.push_back(counterMetric(labels, static_cast<double>(t.bytes)));
  }
  std::vector<MetricFamily> out;
  for (auto* f : {&drop_bytes, &drop_count, &fwd_bytes, &fwd_count})
    if (!f->metric.empty()) out.push_back(std::move(*f));
  return out;
}

std::vector<MetricFamily> mapPressureFamilies(const std::vector<MapPressure>& rows) {
  std::map<std::string, double> by_name;
  for (const auto& r : rows) by_name[r.map_name] = r.ratio;
  MetricFamily f{"cilium_bpf_map_pressure", "Fill percentage of map, tagged by map name",
                 MetricType::Gauge, {}};
  for (const auto& [name, ratio] : by_name) f.metric.push_back(gaugeMetric({label("map_name", name)}, ratio));
  if (f.metric.empty()) return {};
  std::vector<MetricFamily> out{std::move(f)};
  // Cilium: "Map types with size of 65536 are not emitted, missing map types can be assumed to be 65536".
  std::map<std::string, uint64_t> capacity;
  for (const auto& r : rows)
    if (r.max_entries != 0 && r.max_entries != 65536) capacity[r.map_name] = r.max_entries;
  MetricFamily c{"cilium_bpf_map_capacity",
                 "Capacity of map, tagged by map group. All maps with a capacity of 65536 are grouped under 'default'",
                 MetricType::Gauge, {}};
  for (const auto& [name, n] : capacity) c.metric.push_back(gaugeMetric({label("map_group", name)}, static_cast<double>(n)));
  if (!c.metric.empty()) out.push_back(std::move(c));
  return out;
}

std::vector<MetricFamily> bpfMemoryFamilies(const BpfMemory& m) {
  return {MetricFamily{"cilium_bpf_maps_virtual_memory_max_bytes", "BPF maps kernel max memory usage size in bytes.",
                       MetricType::Gauge, {gaugeMetric({}, static_cast<double>(m.maps_bytes))}},
          MetricFamily{"cilium_bpf_progs_virtual_memory_max_bytes",
                       "BPF programs kernel max memory usage size in bytes.", MetricType::Gauge,
                       {gaugeMetric({}, static_cast<double>(m.progs_bytes))}}};
}

std::vector<MetricFamily> mapOpsFamilies(const std::vector<MapOps>& rows) {
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> sums;
  for (const auto& r : rows) sums[{r.map_name, r.operation, r.outcome}] += r.count;
  MetricFamily f{"cilium_bpf_map_ops_total", "Total operations on map, tagged by map name", MetricType::Counter, {}};
  for (const auto& [k, n] : sums)
    f.metric.push_back(counterMetric(
        {label("map_name", std::get<0>(k)), label("operation", std::get<1>(k)), label("outcome", std::get<2>(k))},
        static_cast<double>(n)));
  if (f.metric.empty()) return {};
  return {std::move(f)};
}

// --- process ------------------------------------------------------------------

Result<ProcStat> parseProcStat(std::string_view text) {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // fields are counted from the LAST ')'.
  auto close = text.rfind(')');
  if (close == std::string_view::npos) return Error::invalid("/proc/self/stat: no ')' after comm");
  std::vector<std::string_view> fields;  // fields[0] = field 3 (state)
  size_t i = close + 1;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n')) ++i;
    size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != '\n') ++j;
    if (j > i) fields.push_back(text.substr(i, j - i));
    i = j;
  }
  // proc(5) numbering: utime 14, stime 15, starttime 22, vsize 23, rss 24.
  auto field = [&](int n, uint64_t& out) -> bool {
    size_t idx = static_cast<size_t>(n - 3);
    if (idx >= fields.size()) return false;
    auto f = fields[idx];
    // rss is signed in the kernel's format; a negative value never happens
    // for a live process, and we read it as 0 rather than fail.
    if (!f.empty() && f[0] == '-') {
      out = 0;
      return true;
    }
    auto [p, ec] = std::from_chars(f.data(), f.data() + f.size(), out);
    return ec == std::errc() && p == f.data() + f.size();
  };
  ProcStat s;
  if (!field(14, s.utime_ticks) || !field(15, s.stime_ticks) || !field(22, s.starttime_ticks) ||
      !field(23, s.vsize_bytes) || !field(24, s.rss_pages))
    return Error::invalid(fmt::format("/proc/self/stat: expected at least 24 numeric fields, got {}",
                                      fields.size() + 2));
  return s;
}

Result<uint64_t> parseBootTime(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    auto line = text.substr(pos, eol - pos);
    if (line.substr(0, 6) == "btime ") {
      auto v = line.substr(6);
      uint64_t out = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
      if (ec != std::errc() || p == v.data()) return Error::invalid("/proc/stat: malformed btime line");
      return out;
    }
    pos = eol + 1;
  }
  return Error::notFound("/proc/stat: no btime line");
}

ProcessValues processValues(const ProcStat& stat, uint64_t boot_time, long ticks_per_second,
                            long page_size, uint64_t open_fds, uint64_t max_fds) {
  ProcessValues v;
  const double hz = static_cast<double>(ticks_per_second);
  v.cpu_seconds = static_cast<double>(stat.utime_ticks + stat.stime_ticks) / hz;
  v.resident_memory_bytes = static_cast<double>(stat.rss_pages) * static_cast<double>(page_size);
  v.virtual_memory_bytes = static_cast<double>(stat.vsize_bytes);
  v.open_fds = static_cast<double>(open_fds);
  v.max_fds = static_cast<double>(max_fds);
  v.start_time_seconds = static_cast<double>(boot_time) + static_cast<double>(stat.starttime_ticks) / hz;
  return v;
}

std::vector<MetricFamily> processFamilies(const ProcessValues& v) {
  // Names, types and help texts of Go's process collector (namespace "cilium").
  auto gauge = [](std::string name, std::string help, double value) {
    return MetricFamily{std::move(name), std::move(help), MetricType::Gauge, {gaugeMetric({}, value)}};
  };
  std::vector<MetricFamily> out;
  out.push_back(MetricFamily{"cilium_process_cpu_seconds_total",
                             "Total user and system CPU time spent in seconds.",
                             MetricType::Counter,
                             {counterMetric({}, v.cpu_seconds)}});
  out.push_back(gauge("cilium_process_max_fds", "Maximum number of open file descriptors.", v.max_fds));
  out.push_back(gauge("cilium_process_open_fds", "Number of open file descriptors.", v.open_fds));
  out.push_back(gauge("cilium_process_resident_memory_bytes", "Resident memory size in bytes.",
                      v.resident_memory_bytes));
  out.push_back(gauge("cilium_process_start_time_seconds",
                      "Start time of the process since unix epoch in seconds.", v.start_time_seconds));
  out.push_back(gauge("cilium_process_virtual_memory_bytes", "Virtual memory size in bytes.",
                      v.virtual_memory_bytes));
  return out;
}

namespace {

Result<std::string> readFile(const char* path) {
  std::ifstream in(path);
  if (!in) return Error::fromErrno(errno, fmt::format("open {}", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<uint64_t> countOpenFds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return Error::fromErrno(errno, "open /proc/self/fd");
  uint64_t n = 0;
  while (const dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  // The directory stream's own fd was counted; it is not the agent's.
  return n > 0 ? n - 1 : 0;
}

std::atomic<bool> g_process_failing{false};

}  // namespace

std::vector<MetricFamily> processFamilies() {
  auto stat_text = readFile("/proc/self/stat");
  auto boot_text = readFile("/proc/stat");
  Result<ProcStat> stat = stat_text ? parseProcStat(*stat_text) : Result<ProcStat>(stat_text.error());
  Result<uint64_t> boot = boot_text ? parseBootTime(*boot_text) : Result<uint64_t>(boot_text.error());
  auto fds = countOpenFds();
  rlimit lim{};
  const bool lim_ok = ::getrlimit(RLIMIT_NOFILE, &lim) == 0;
  if (!stat.ok() || !boot.ok() || !fds.ok() || !lim_ok) {
    if (!g_process_failing.exchange(true)) {
      std::string why = !stat.ok() ? stat.error().message
                        : !boot.ok() ? boot.error().message
                        : !fds.ok()  ? fds.error().message
                                     : "getrlimit(RLIMIT_NOFILE) failed";
      spdlog::warn("metrics: cilium_process_* left out of scrapes: {}", why);
    }
    return {};
  }
  g_process_failing.store(false);
  auto v = processValues(*stat, *boot, ::sysconf(_SC_CLK_TCK), ::sysconf(_SC_PAGESIZE), *fds,
                         lim.rlim_cur == RLIM_INFINITY ? 0 : static_cast<uint64_t>(lim.rlim_cur));
  if (lim.rlim_cur == RLIM_INFINITY) v.max_fds = std::numeric_limits<double>::infinity();
  return processFamilies(v);
}

// --- flattening ---------------------------------------------------------------

std::string formatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

std::vector<Sample> flatten(const std::vector<MetricFamily>& families) {
  std::vector<Sample> out;
  for (const auto& f : families) {
    for (const auto& m : f.metric) {
      std::map<std::string, std::string> labels;
      for (const auto& l : m.label) labels[l.name] = l.value;
      switch (f.type) {
        case MetricType::Counter:
          out.push_back({f.name, labels, m.counter.value});
          break;
        case MetricType::Gauge:
          out.push_back({f.name, labels, m.gauge.value});
          break;
        case MetricType::Untyped:
          out.push_back({f.name, labels, m.untyped.value});
          break;
        case MetricType::Histogram: {
          for (const auto& b : m.histogram.bucket) {
            auto bl = labels;
            bl["le"] = formatValue(b.upper_bound);
            out.push_back({f.name + "_bucket", std::move(bl), static_cast<double>(b.cumulative_count)});
          }
          // The text format always ends the buckets with +Inf = count.
          bool has_inf = !m.histogram.bucket.empty() && std::isinf(m.histogram.bucket.back().upper_bound);
          if (!has_inf) {
            auto bl = labels;
            bl["le"] = "+Inf";
            out.push_back({f.name + "_bucket", std::move(bl), static_cast<double>(m.histogram.sample_count)});
          }
          out.push_back({f.name + "_sum", labels, m.histogram.sample_sum});
          out.push_back({f.name + "_count", labels, static_cast<double>(m.histogram.sample_count)});
          break;
        }
        case MetricType::Summary: {
          for (const auto& q : m.summary.quantile) {
            auto ql = labels;
            ql["quantile"] = formatValue(q.quantile);
            out.push_back({f.name, std::move(ql), q.value});
          }
          out.push_back({f.name + "_sum", labels, m.summary.sample_sum});
          out.push_back({f.name + "_count", labels, static_cast<double>(m.summary.sample_count)});
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace membrane::metrics::detail
