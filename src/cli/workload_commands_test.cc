#include "src/cli/workload_commands.h"

#include <gtest/gtest.h>

namespace membrane::cli {
namespace {

constexpr long kNow = 1795000000;  // 2026-11-18T...Z; ages are relative to it

std::string at(long seconds_ago) {
  time_t t = kNow - seconds_ago;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

TEST(WorkloadFormat, Age) {
  EXPECT_EQ(formatAge(at(5), kNow), "5s");
  EXPECT_EQ(formatAge(at(600), kNow), "10m");
  EXPECT_EQ(formatAge(at(3 * 3600), kNow), "3h");
  EXPECT_EQ(formatAge(at(3 * 86400), kNow), "3d");
  EXPECT_EQ(formatAge("", kNow), "<unknown>");
}

TEST(WorkloadFormat, PodsLikeKubectl) {
  Json pods = Json::array({
      {{"name", "deathstar-b4k2x"}, {"namespace", "default"}, {"ready", true}, {"status", "Running"}, {"restarts", 0},
       {"created", at(42)}, {"ip", "10.200.0.4"}, {"node", "localhost"}, {"endpoint_id", 3}},
      {{"name", "crasher"}, {"namespace", "team-a"}, {"ready", false}, {"status", "CrashLoopBackOff"}, {"restarts", 12},
       {"created", at(900)}, {"ip", "10.200.0.9"}, {"node", "localhost"}, {"endpoint_id", 11}},
  });
  EXPECT_EQ(formatPods(pods, false, false, kNow),
            "NAME              READY   STATUS             RESTARTS   AGE\n"
            "deathstar-b4k2x   1/1     Running            0          42s\n"
            "crasher           0/1     CrashLoopBackOff   12         15m\n");
  EXPECT_EQ(formatPods(pods, true, true, kNow),
            "NAMESPACE   NAME              READY   STATUS             RESTARTS   AGE   IP           NODE        ENDPOINT\n"
            "default     deathstar-b4k2x   1/1     Running            0          42s   10.200.0.4   localhost   3\n"
            "team-a      crasher           0/1     CrashLoopBackOff   12         15m   10.200.0.9   localhost   11\n");
}

TEST(WorkloadFormat, ServicesAndDeployments) {
  Json svcs = Json::array({{{"metadata", {{"name", "deathstar"}, {"namespace", "default"}, {"created", at(70)}}},
                            {"spec", {{"clusterIP", "10.96.0.1"}, {"ports", {{{"port", 80}, {"protocol", "TCP"}}}}}}}});
  EXPECT_EQ(formatServices(svcs, false, kNow),
            "NAME        TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE\n"
            "deathstar   ClusterIP   10.96.0.1    <none>        80/TCP    70s\n");
  Json deps = Json::array({{{"metadata", {{"name", "deathstar"}, {"namespace", "default"}}},
                            {"spec", {{"replicas", 2}}},
                            {"status", {{"replicas", 2}, {"readyReplicas", 1}}}}});
  EXPECT_EQ(formatDeployments(deps, false, kNow),
            "NAME        READY   UP-TO-DATE   AVAILABLE\n"
            "deathstar   1/2     2            1\n");
}

}  // namespace
}  // namespace membrane::cli
