// Internal to src/metrics: the scrape-time collectors as pure functions of
// their input (so tests feed fixed rows or /proc text), and the flattening of
// prometheus-cpp families into Samples.
#pragma once

#include <prometheus/metric_family.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "membrane/metrics.h"
#include "membrane/result.h"

namespace membrane::metrics::detail {

// cilium_drop_{count,bytes}_total{reason,direction} and
// cilium_forward_{count,bytes}_total{direction} from metrics-map rows.
// Rows that map to the same label set are summed (codes 2 and 134 are both
// "Invalid packet"; unknown directions are all "UNKNOWN"). Families with no
// row are omitted. Series are sorted by label values.
std::vector<prometheus::MetricFamily> datapathFamilies(const std::vector<DatapathCounter>& rows);

// cilium_bpf_map_pressure{map_name}; a name given twice keeps the last ratio.
std::vector<prometheus::MetricFamily> mapPressureFamilies(const std::vector<MapPressure>& rows);
// cilium_bpf_maps_virtual_memory_max_bytes, cilium_bpf_progs_virtual_memory_max_bytes.
std::vector<prometheus::MetricFamily> bpfMemoryFamilies(const BpfMemory& m);

// cilium_bpf_map_ops_total{map_name,operation,outcome}; rows with the same
// labels are summed.
std::vector<prometheus::MetricFamily> mapOpsFamilies(const std::vector<MapOps>& rows);
// The L7 proxy's families (l7_collector.cc).
std::vector<prometheus::MetricFamily> l7Families(const L7Stats& s);

// The fields of /proc/<pid>/stat that the process collector needs.
struct ProcStat {
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  uint64_t starttime_ticks = 0;  // since boot
  uint64_t vsize_bytes = 0;
  uint64_t rss_pages = 0;
};
Result<ProcStat> parseProcStat(std::string_view text);
// `btime` (boot time, seconds since the epoch) from /proc/stat.
Result<uint64_t> parseBootTime(std::string_view text);

struct ProcessValues {
  double cpu_seconds = 0;
  double resident_memory_bytes = 0;
  double virtual_memory_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;
  double start_time_seconds = 0;
};
ProcessValues processValues(const ProcStat& stat, uint64_t boot_time, long ticks_per_second,
                            long page_size, uint64_t open_fds, uint64_t max_fds);

// cilium_process_* (Go's process collector with namespace "cilium"), read
// from /proc/self now. A part that cannot be read is left out (and logged
// once per failure streak); never fails as a whole.
std::vector<prometheus::MetricFamily> processFamilies();
std::vector<prometheus::MetricFamily> processFamilies(const ProcessValues& v);

// Flattens families as the text format exposes them (see Sample).
std::vector<Sample> flatten(const std::vector<prometheus::MetricFamily>& families);

// A double as the text format writes it: "+Inf", "-Inf", "NaN", otherwise the
// shortest representation that reads back to the same value.
std::string formatValue(double v);

}  // namespace membrane::metrics::detail
