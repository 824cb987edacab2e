#include "src/metrics/collectors.h"

#include <gtest/gtest.h>

#include <cmath>

namespace membrane::metrics::detail {
namespace {

using prometheus::MetricFamily;

const MetricFamily* find(const std::vector<MetricFamily>& fs, const std::string& name) {
  for (const auto& f : fs)
    if (f.name == name) return &f;
  return nullptr;
}

TEST(DatapathFamilies, CodesThatRenderAlikeAreSummed) {
  // 2 and 134 are both "Invalid packet"; directions 0 and 9 are both UNKNOWN.
  auto fs = datapathFamilies({{2, 0, 1, 100}, {134, 9, 2, 200}, {0, 0, 4, 40}, {0, 7, 1, 10}});
  const auto* drops = find(fs, "cilium_drop_count_total");
  ASSERT_NE(drops, nullptr);
  ASSERT_EQ(drops->metric.size(), 1u);
  EXPECT_EQ(drops->metric[0].label[0].value, "UNKNOWN");
  EXPECT_EQ(drops->metric[0].label[1].value, "Invalid packet");
  EXPECT_EQ(drops->metric[0].counter.value, 3);
  const auto* bytes = find(fs, "cilium_drop_bytes_total");
  ASSERT_NE(bytes, nullptr);
  EXPECT_EQ(bytes->metric[0].counter.value, 300);
  const auto* fwd = find(fs, "cilium_forward_count_total");
  ASSERT_NE(fwd, nullptr);
  ASSERT_EQ(fwd->metric.size(), 1u);
  EXPECT_EQ(fwd->metric[0].counter.value, 5);
}

TEST(DatapathFamilies, NonDropNonForwardCodesAreSkippedAndEmptyFamiliesOmitted) {
  // 3..129 are neither a drop (2, >=130) nor a forward (0).
  auto fs = datapathFamilies({{3, 1, 1, 1}, {129, 2, 1, 1}});
  EXPECT_TRUE(fs.empty());
  EXPECT_TRUE(datapathFamilies({}).empty());
}

TEST(DatapathFamilies, UnknownDropCodeRendersAsNumber) {
  auto fs = datapathFamilies({{250, 1, 1, 1}});
  const auto* drops = find(fs, "cilium_drop_count_total");
  ASSERT_NE(drops, nullptr);
  EXPECT_EQ(drops->metric[0].label[1].value, "250");
}

TEST(MapPressureFamilies, OneSeriesPerMapSortedLastWins) {
  auto fs = mapPressureFamilies({{"mb_policy_v1", 0.5}, {"mb_ct4_v1", 0.25}, {"mb_policy_v1", 0.75}});
  ASSERT_EQ(fs.size(), 1u);
  ASSERT_EQ(fs[0].metric.size(), 2u);
  EXPECT_EQ(fs[0].metric[0].label[0].value, "mb_ct4_v1");
  EXPECT_EQ(fs[0].metric[0].gauge.value, 0.25);
  EXPECT_EQ(fs[0].metric[1].gauge.value, 0.75);
  EXPECT_TRUE(mapPressureFamilies({}).empty());
}

TEST(MapOpsFamilies, CounterPerMapOperationOutcomeSummed) {
  auto fs = mapOpsFamilies({{"mb_policy_v1", "update", "success", 7},
                            {"mb_lxc_v1", "delete", "fail", 1},
                            {"mb_policy_v1", "update", "success", 3}});
  ASSERT_EQ(fs.size(), 1u);
  EXPECT_EQ(fs[0].name, "cilium_bpf_map_ops_total");
  EXPECT_EQ(fs[0].type, prometheus::MetricType::Counter);
  ASSERT_EQ(fs[0].metric.size(), 2u);
  const auto& m = fs[0].metric[1];
  ASSERT_EQ(m.label.size(), 3u);
  EXPECT_EQ(m.label[0].name, "map_name");
  EXPECT_EQ(m.label[0].value, "mb_policy_v1");
  EXPECT_EQ(m.label[1].name, "operation");
  EXPECT_EQ(m.label[1].value, "update");
  EXPECT_EQ(m.label[2].name, "outcome");
  EXPECT_EQ(m.label[2].value, "success");
  EXPECT_EQ(m.counter.value, 10);
  EXPECT_EQ(fs[0].metric[0].label[2].value, "fail");
  EXPECT_TRUE(mapOpsFamilies({}).empty());
}

TEST(ProcStat, ParsesFieldsAfterCommWithSpacesAndParens) {
  const std::string stat =
      "6382 (my (odd) comm) R 6372 6372 4185 0 -1 4194304 101 0 0 0 17 4 0 0 20 0 1 0 117916 "
      "3133440 389 18446744073709551615 93935556235264 0\n";
  auto s = parseProcStat(stat);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->utime_ticks, 17u);
  EXPECT_EQ(s->stime_ticks, 4u);
  EXPECT_EQ(s->starttime_ticks, 117916u);
  EXPECT_EQ(s->vsize_bytes, 3133440u);
  EXPECT_EQ(s->rss_pages, 389u);
}

TEST(ProcStat, RejectsTruncatedText) {
  auto s = parseProcStat("1 (x) R 0 0 0");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("expected at least 24"), std::string::npos);
  EXPECT_FALSE(parseProcStat("garbage").ok());
}

TEST(BootTime, FindsBtimeLine) {
  auto b = parseBootTime("cpu  1 2 3\nintr 5\nbtime 1795547278\nprocesses 9\n");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, 1795547278u);
  EXPECT_FALSE(parseBootTime("cpu 1\n").ok());
}

TEST(ProcessValues, ComputesGoCollectorValues) {
  ProcStat st{.utime_ticks = 150, .stime_ticks = 50, .starttime_ticks = 1050, .vsize_bytes = 4096000,
              .rss_pages = 100};
  auto v = processValues(st, 1'700'000'000, 100, 4096, 12, 1024);
  EXPECT_DOUBLE_EQ(v.cpu_seconds, 2.0);
  EXPECT_DOUBLE_EQ(v.resident_memory_bytes, 409600);
  EXPECT_DOUBLE_EQ(v.virtual_memory_bytes, 4096000);
  EXPECT_DOUBLE_EQ(v.open_fds, 12);
  EXPECT_DOUBLE_EQ(v.max_fds, 1024);
  EXPECT_DOUBLE_EQ(v.start_time_seconds, 1'700'000'010.5);
}

TEST(FormatValue, TextFormatSpelling) {
  EXPECT_EQ(formatValue(1e-5), "1e-05");
  EXPECT_EQ(formatValue(0.1), "0.1");
  EXPECT_EQ(formatValue(100), "100");
  EXPECT_EQ(formatValue(INFINITY), "+Inf");
  EXPECT_EQ(formatValue(-INFINITY), "-Inf");
  EXPECT_EQ(formatValue(NAN), "NaN");
}

}  // namespace
}  // namespace membrane::metrics::detail
