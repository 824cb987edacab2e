// An isolated membraned for one test: its own socket, state dir, bpf root,
// pod CIDR, host device and metrics port (all derived from the pid), and a
// cleanup that removes every netns, link, route, pin and process it created,
// also when the test fails.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace membrane::testing {

class AgentFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts membraned (waits until `membrane status` succeeds).
  void startAgent();
  // SIGTERM; returns its exit code.
  int stopAgent();

  // `membrane --socket … args…`
  RunResult cli(const std::vector<std::string>& args, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // `membrane exec -n <ns> pod -- cmd…`
  RunResult execIn(const std::string& pod, const std::vector<std::string>& cmd,
                   std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Creates a pod and returns its JSON fields (id, identity, ipv4).
  struct Pod {
    uint32_t id = 0;
    uint32_t identity = 0;
    std::string ip;
  };
  Pod createPod(const std::string& name, const std::string& labels);
  // Imports a policy given as text; returns the CLI result.
  RunResult importPolicy(const std::string& yaml);

  // The value of one sample on /metrics (0 if absent); labels must match exactly.
  double metric(const std::string& name, const std::map<std::string, std::string>& labels = {});
  std::string scrape();

  // examples/<rel> as shipped, with `namespace: <this test's namespace>` added to
  // its metadata: the tests import the files users import.
  std::string exampleInNamespace(const std::string& rel) const;

  // When `membraned cleanup` fails (say, a crash under a sanitizer), TearDown
  // still removes what this test's agent made, by the names the fixture derived:
  // pod netns and their processes, the proxy (pidfile + its control socket on
  // the command line), host device, routes, ip rule/table, iptables chain, pins.
  void forceCleanup();

  std::string bin(const std::string& name) const;
  std::vector<std::string> agentArgs() const;
  // Appended to agentArgs() (a test's own agent flags, set before startAgent()).
  std::vector<std::string> extra_agent_args_;
  std::string nsName() const { return ns_; }
  std::string dir() const { return dir_; }

  std::string build_dir_, source_dir_;
  std::string dir_, socket_, state_dir_, bpf_root_, pod_cidr_, service_cidr_, host_dev_, ns_;
  int metrics_port_ = 0;
  // L7 proxy plumbing, per test (pid-derived) so parallel agents never collide.
  std::string proxy_socket_, proxy_chain_;
  int proxy_port_ = 0;          // ingress listener; egress = +1
  int proxy_table_ = 0, proxy_rule_priority_ = 0;
  bool health_ = false;  // the health endpoint is an extra pod: off unless a test is about health
  std::optional<Child> agent_;
  std::vector<Child> children_;  // servers, monitors: stopped in TearDown
};

// tmpl with every "{ns}" replaced by ns (policy texts written for one test namespace).
std::string withNs(const char* tmpl, const std::string& ns);

}  // namespace membrane::testing
