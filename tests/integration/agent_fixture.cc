#include "tests/integration/agent_fixture.h"

#include <signal.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace membrane::testing {

std::string AgentFixture::bin(const std::string& name) const { return build_dir_ + "/bin/" + name; }

void AgentFixture::SetUp() {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (BPF, network namespaces)";
  const char* b = std::getenv("MEMBRANE_BUILD_DIR");
  const char* s = std::getenv("MEMBRANE_SOURCE_DIR");
  ASSERT_NE(b, nullptr);
  ASSERT_NE(s, nullptr);
  build_dir_ = b;
  source_dir_ = s;
  int pid = getpid();
  dir_ = fmt::format("/tmp/membrane-it-{}", pid);
  mkdir(dir_.c_str(), 0700);
  socket_ = dir_ + "/membrane.sock";
  state_dir_ = dir_ + "/state";
  bpf_root_ = fmt::format("/sys/fs/bpf/membrane-it-{}", pid);
  pod_cidr_ = fmt::format("10.{}.{}.0/24", 240 + (pid / 256) % 10, pid % 256);
  // Service CIDR: per agent like the pod CIDR (its unreachable route is node-global).
  service_cidr_ = fmt::format("10.{}.{}.0/24", 230 + (pid / 256) % 10, pid % 256);
  host_dev_ = fmt::format("mbit{}", pid % 100000000);
  ns_ = fmt::format("it{}", pid);
  metrics_port_ = freePort();
  proxy_socket_ = dir_ + "/proxy.sock";
  proxy_chain_ = fmt::format("MBIT_{}", pid);
  proxy_port_ = 20000 + (pid % 5000) * 2;  // below the ephemeral range (32768+)
  proxy_table_ = 10000 + pid % 100000;
  proxy_rule_priority_ = 1000 + pid % 20000;
}

std::vector<std::string> AgentFixture::agentArgs() const {
  std::vector<std::string> args{bin("membraned"), "--api-socket", socket_, "--state-dir", state_dir_, "--bpf-root", bpf_root_,
          "--pod-cidr", pod_cidr_, "--service-cidr", service_cidr_, "--host-device", host_dev_, "--prometheus-serve-addr",
          fmt::format("127.0.0.1:{}", metrics_port_), "--log-level", "debug",
          "--enable-health-checking", health_ ? "true" : "false", "--health-check-interval", "1",
          "--proxy-control-socket", proxy_socket_, "--proxy-port-range",
          fmt::format("{}-{}", proxy_port_, proxy_port_ + 1), "--proxy-route-table", std::to_string(proxy_table_),
          "--proxy-rule-priority", std::to_string(proxy_rule_priority_), "--proxy-iptables-chain", proxy_chain_,
          "--lock-dir", dir_ + "/locks"};
  args.insert(args.end(), extra_agent_args_.begin(), extra_agent_args_.end());
  return args;
}

void AgentFixture::startAgent() {
  agent_ = Child::spawn(agentArgs(), dir_ + "/membraned.log");
  bool up = waitFor([&] { return cli({"status", "--brief"}, std::chrono::seconds(5)).exit_code == 0; },
                    std::chrono::seconds(20));
  ASSERT_TRUE(up) << "membraned did not come up; log:\n" << readFileOrEmpty(dir_ + "/membraned.log");
}

int AgentFixture::stopAgent() {
  if (!agent_) return -1;
  int rc = agent_->stop(SIGTERM, std::chrono::seconds(15));
  agent_.reset();
  return rc;
}

void AgentFixture::TearDown() {
  if (geteuid() != 0) return;
  // SetUp stopped before deriving the names (no MEMBRANE_BUILD_DIR: the
  // binary run outside ctest): nothing was started, and the cleanup below
  // would run on empty names ("ip rule del priority 0" removes the host's
  // local-table rule, "ip route flush table 0" flushes every IPv4 table).
  if (proxy_table_ == 0 || proxy_rule_priority_ == 0 || host_dev_.empty()) return;
  for (auto& c : children_) c.stop(SIGTERM, std::chrono::seconds(3));
  children_.clear();
  stopAgent();
  // Remove everything the agent created, then check nothing is left.
  auto args = agentArgs();
  args.insert(args.begin() + 1, "cleanup");
  auto r = run(args, std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  if (r.exit_code != 0) forceCleanup();
  auto netns = run({"ip", "netns", "list"});
  EXPECT_EQ(netns.out.find(host_dev_ + "_" + ns_ + "_"), std::string::npos) << netns.out;
  struct stat st {};
  EXPECT_NE(stat(bpf_root_.c_str(), &st), 0) << bpf_root_ << " still exists";
  auto links = run({"ip", "link", "show", host_dev_});
  EXPECT_NE(links.exit_code, 0) << "host device " << host_dev_ << " still exists";
  // The L7 plumbing and the proxy process are gone too.
  auto rules = run({"ip", "-4", "rule", "show", "table", std::to_string(proxy_table_)});
  EXPECT_EQ(rules.out, "") << "ip rules for table " << proxy_table_ << " left behind";
  auto routes = run({"ip", "-4", "route", "show", "table", std::to_string(proxy_table_)});
  EXPECT_EQ(routes.out, "") << "routes in table " << proxy_table_ << " left behind";
  auto chain = run({"iptables", "-w", "5", "-t", "mangle", "-n", "-L", proxy_chain_});
  EXPECT_NE(chain.exit_code, 0) << "iptables chain " << proxy_chain_ << " still exists";
  EXPECT_NE(stat(proxy_socket_.c_str(), &st), 0) << proxy_socket_ << " still exists";
  if (!HasFailure()) run({"rm", "-rf", dir_});
  else std::fprintf(stderr, "agent log kept in %s/membraned.log\n", dir_.c_str());
}

void AgentFixture::forceCleanup() {
  // Pods and what they started live in this agent's netns (<host-device>_<ns>_<pod>).
  std::istringstream netns(run({"ip", "netns", "list"}).out);
  for (std::string line; std::getline(netns, line);) {
    const std::string name = line.substr(0, line.find(' '));
    if (name.rfind(host_dev_ + "_", 0) != 0) continue;
    std::istringstream pids(run({"ip", "netns", "pids", name}).out);
    for (int pid; pids >> pid;) ::kill(pid, SIGKILL);
    run({"ip", "netns", "delete", name});
  }
  // The proxy, by its pidfile, only while its command line names this test's control socket.
  const int proxy = std::atoi(readFileOrEmpty(state_dir_ + "/proxy.pid").c_str());
  if (proxy > 0 && readFileOrEmpty(fmt::format("/proc/{}/cmdline", proxy)).find(proxy_socket_) != std::string::npos)
    ::kill(proxy, SIGKILL);
  run({"ip", "link", "delete", host_dev_});
  for (const auto& cidr : {pod_cidr_, service_cidr_}) run({"ip", "-4", "route", "del", "unreachable", cidr});
  run({"ip", "-4", "rule", "del", "priority", std::to_string(proxy_rule_priority_)});
  run({"ip", "-4", "route", "flush", "table", std::to_string(proxy_table_)});
  run({"iptables", "-w", "5", "-t", "mangle", "-D", "PREROUTING", "-j", proxy_chain_});
  run({"iptables", "-w", "5", "-t", "mangle", "-F", proxy_chain_});
  run({"iptables", "-w", "5", "-t", "mangle", "-X", proxy_chain_});
  run({"rm", "-rf", bpf_root_, proxy_socket_});
}

RunResult AgentFixture::cli(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{bin("membrane"), "--socket", socket_};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, timeout);
}

RunResult AgentFixture::execIn(const std::string& pod, const std::vector<std::string>& cmd,
                               std::chrono::milliseconds timeout) {
  std::vector<std::string> args{"exec", "-n", ns_, pod, "--"};
  args.insert(args.end(), cmd.begin(), cmd.end());
  return cli(args, timeout);
}

AgentFixture::Pod AgentFixture::createPod(const std::string& name, const std::string& labels) {
  Pod p;
  auto r = cli({"endpoint", "create", name, "-n", ns_, "--labels", labels});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  auto g = cli({"endpoint", "get", name, "-n", ns_, "-o", "json"});
  EXPECT_EQ(g.exit_code, 0) << g.out << g.err;
  auto j = nlohmann::json::parse(g.out, nullptr, false);
  if (j.is_array() && !j.empty()) j = j[0];
  if (!j.is_object()) {
    ADD_FAILURE() << "endpoint get: " << g.out;
    return p;
  }
  p.id = j.value("id", 0u);
  p.identity = j.value("identity", 0u);
  p.ip = j.value("ipv4", "");
  return p;
}

std::string withNs(const char* tmpl, const std::string& ns) {
  return std::regex_replace(std::string(tmpl), std::regex("\\{ns\\}"), ns);
}

std::string AgentFixture::exampleInNamespace(const std::string& rel) const {
  std::string text = readFileOrEmpty(source_dir_ + "/examples/" + rel);
  EXPECT_FALSE(text.empty()) << "examples/" << rel << " missing";
  const std::string meta = "\nmetadata:\n";
  auto at = text.find(meta);
  EXPECT_NE(at, std::string::npos) << "examples/" << rel << ": no top-level metadata";
  if (at != std::string::npos) text.insert(at + meta.size(), "  namespace: \"" + ns_ + "\"\n");
  return text;
}

RunResult AgentFixture::importPolicy(const std::string& yaml) {
  static int n = 0;
  std::string path = fmt::format("{}/policy-{}.yaml", dir_, n++);
  std::ofstream(path) << yaml;
  return cli({"policy", "import", path});
}

std::string AgentFixture::scrape() { return httpGet(metrics_port_, "/metrics"); }

double AgentFixture::metric(const std::string& name, const std::map<std::string, std::string>& labels) {
  std::string text = scrape();
  std::string want = name;
  if (!labels.empty()) {
    want += "{";
    bool first = true;
    for (const auto& [k, v] : labels) {
      want += fmt::format("{}{}=\"{}\"", first ? "" : ",", k, v);
      first = false;
    }
    want += "}";
  }
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(want + " ", 0) == 0) return std::stod(line.substr(want.size() + 1));
  }
  return 0;
}

}  // namespace membrane::testing
