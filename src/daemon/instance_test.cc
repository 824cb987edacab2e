// --instance NAME derivation and the ownership locks (no root).
#include "src/daemon/instance.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

namespace membrane::daemon {
namespace {

TEST(Instance, DerivesEveryPerAgentName) {
  Config cfg;
  ASSERT_TRUE(applyInstance(cfg, "m2", {}).ok());
  const unsigned s = instanceSlot("m2");
  ASSERT_GE(s, 1u);
  ASSERT_LE(s, 250u);
  EXPECT_EQ(cfg.api_socket, "/var/run/membrane-m2/membrane.sock");
  EXPECT_EQ(cfg.state_dir, "/var/lib/membrane-m2");
  EXPECT_EQ(cfg.bpf_root, "/sys/fs/bpf/membrane-m2");
  EXPECT_EQ(cfg.host_device, "mb_m2");
  EXPECT_EQ(cfg.pod_cidr, fmt::format("10.201.{}.0/24", s - 1));
  EXPECT_EQ(cfg.service_cidr, fmt::format("10.97.{}.0/24", s - 1));
  EXPECT_EQ(cfg.prometheus_serve_addr, fmt::format(":{}", 9970 + s));
  EXPECT_EQ(cfg.proxy_control_socket, "/var/run/membrane-m2/proxy.sock");
  EXPECT_EQ(cfg.proxy_port_range, fmt::format("{}-{}", 15001 + 2 * s, 15002 + 2 * s));
  EXPECT_EQ(cfg.proxy_route_table, 2004 + s);
  EXPECT_EQ(cfg.proxy_rule_priority, 9 + s);
  EXPECT_EQ(cfg.proxy_iptables_chain, "MEMBRANE_M2_mangle");
  // Every derived value differs from the default agent's.
  const Config def;
  const auto mine = OwnershipLocks::resources(cfg), theirs = OwnershipLocks::resources(def);
  ASSERT_EQ(mine.size(), theirs.size());
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_NE(mine[i].second, theirs[i].second) << mine[i].first;
}

TEST(Instance, ExplicitFlagsWinAndBadNamesAreRefused) {
  Config cfg;
  cfg.state_dir = "/srv/mine";
  ASSERT_TRUE(applyInstance(cfg, "a-1", {"--state-dir"}).ok());
  EXPECT_EQ(cfg.state_dir, "/srv/mine");
  EXPECT_EQ(cfg.host_device, "mb_a-1");
  EXPECT_EQ(cfg.proxy_iptables_chain, "MEMBRANE_A_1_mangle");
  for (const char* bad : {"", "-a", "A", "a/b", "a b", "elevenchars"}) {
    Config c;
    auto st = applyInstance(c, bad, {});
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.error().message.find("--instance"), std::string::npos);
    EXPECT_EQ(c.state_dir, Config{}.state_dir) << "nothing changes on a refusal";
  }
}

TEST(OwnershipLocks, ASecondOwnerIsRefusedByNameUntilTheFirstLetsGo) {
  const std::string dir = fmt::format("{}/membrane-locks-{}", ::testing::TempDir(), getpid());
  std::filesystem::remove_all(dir);
  Config a;
  ASSERT_TRUE(applyInstance(a, "one", {}).ok());
  Config b = a;
  b.state_dir = "/var/lib/membrane-other";  // only the state dir differs... the rest still collides
  {
    auto first = OwnershipLocks::acquire(a, dir);
    ASSERT_TRUE(first.ok()) << first.error().message;
    EXPECT_EQ(first->size(), OwnershipLocks::resources(a).size());
    auto second = OwnershipLocks::acquire(b, dir);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.error().code, EBUSY);
    // The first resource b shares with a, the owner's pid, and what to do.
    EXPECT_NE(second.error().message.find("bpf-root /sys/fs/bpf/membrane-one is in use by another membraned: pid " +
                                          std::to_string(getpid())),
              std::string::npos)
        << second.error().message;
    EXPECT_NE(second.error().message.find("--instance NAME, or the --bpf-root flag"), std::string::npos);
    // A different instance shares nothing.
    Config c;
    ASSERT_TRUE(applyInstance(c, "two", {}).ok());
    if (instanceSlot("two") != instanceSlot("one")) {
      auto third = OwnershipLocks::acquire(c, dir);
      EXPECT_TRUE(third.ok()) << third.error().message;
    }
  }
  // A clean exit removes the lock files (a failed acquire removes what it took).
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  // The first owner is gone: b gets them.
  auto again = OwnershipLocks::acquire(b, dir);
  EXPECT_TRUE(again.ok()) << again.error().message;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace membrane::daemon
