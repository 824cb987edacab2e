// membraned: the membrane node agent. Wiring only: flags, logging, signals.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <set>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "src/daemon/agent.h"
#include "src/daemon/config.h"
#include "src/daemon/instance.h"
#include "src/daemon/log_metrics.h"

namespace {

void setupLogging(const membrane::daemon::Config& cfg) {
  auto logger = spdlog::stderr_logger_mt("membraned");
  // Counts warnings and errors into cilium_errors_warnings_total once the agent attaches its metrics.
  logger->sinks().push_back(membrane::daemon::logMetricsSink());
  spdlog::set_default_logger(logger);
  if (cfg.log_format == "json") {
    spdlog::set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":"%v"})", spdlog::pattern_time_type::utc);
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ level=%l %v", spdlog::pattern_time_type::utc);
  }
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  spdlog::flush_on(spdlog::level::info);
}

// The API serves up to 4096 connections (monitor streams included) and pods,
// the proxy's control socket and BPF maps add more: the usual soft limit of
// 1024 descriptors would run out long before. Raise it to the hard limit.
void raiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) spdlog::warn("cannot raise the open-file limit to {}", rl.rlim_max);
}

}  // namespace

int main(int argc, char** argv) {
  membrane::daemon::Config cfg;
  CLI::App app{
      "membraned — the membrane node agent.\n"
      "Runs pods (endpoints, or the Pods/Deployments of 'membrane apply') in network namespaces, enforces\n"
      "CiliumNetworkPolicy / NetworkPolicy L3/L4 rules on them with eBPF programs on each pod's veth and L7\n"
      "(HTTP) rules through membrane-proxy (started and supervised here), load-balances Service ClusterIPs in\n"
      "eBPF, runs the health endpoint, and exports what it does as Cilium-compatible Prometheus metrics.\n"
      "Runs as root. Stopping it leaves the BPF programs and pinned maps in place: enforcement continues\n"
      "with the last policy, and a restarted agent restores its endpoints from --state-dir."};
  app.footer(
      "Examples:\n"
      "  membraned                                   # defaults: socket /var/run/membrane/membrane.sock, metrics :9962\n"
      "  membraned --instance m2                     # a second agent on one host (membrane --socket \n"
      "                                              #   /var/run/membrane-m2/membrane.sock ... talks to it)\n"
      "  membraned --instance m2 --print-config      # the names --instance m2 derives\n"
      "  membraned cleanup                           # remove every pod, pin, route and state file of this agent\n"
      "  membraned --instance m2 cleanup             # the same for the agent named m2 (refused while it runs)\n"
      "The CLI is 'membrane' (membrane --help).");
  app.set_version_flag("--version", std::string(MEMBRANE_VERSION_STRING));
  std::string instance;
  app.add_option("--instance", instance,
                 "Name of this agent on the host (1-10 of a-z, 0-9, '-'): derives every per-agent name so a second "
                 "agent needs only this flag: --api-socket /var/run/membrane-NAME/membrane.sock, --state-dir "
                 "/var/lib/membrane-NAME, --bpf-root /sys/fs/bpf/membrane-NAME, --host-device mb_NAME, --pod-cidr "
                 "10.201.S-1.0/24, --service-cidr 10.97.S-1.0/24, --prometheus-serve-addr :9970+S, "
                 "--proxy-control-socket /var/run/membrane-NAME/proxy.sock, --proxy-port-range 15001+2S-15002+2S, "
                 "--proxy-route-table 2004+S, --proxy-rule-priority 9+S, --proxy-iptables-chain MEMBRANE_NAME_mangle "
                 "(S: a slot 1..250 hashed from NAME; 'membraned --instance NAME --print-config' shows them). "
                 "Flags given explicitly win. Without it: the defaults below");
  std::string lock_dir = "/run/membrane/locks";
  app.add_option("--lock-dir", lock_dir,
                 "Directory of the ownership locks (one file per per-agent resource, holding the owner's pid); "
                 "agents that should see each other must share it")
      ->capture_default_str();
  bool print_config = false;
  app.add_flag("--print-config", print_config, "Print the effective per-agent names (after --instance) and exit");
  app.add_option("--api-socket", cfg.api_socket, "Unix socket of the REST API (mode 0660)")->capture_default_str();
  app.add_option("--state-dir", cfg.state_dir, "Directory for endpoint and policy state (restored on start)")
      ->capture_default_str();
  app.add_option("--bpf-root", cfg.bpf_root, "bpffs directory where maps are pinned")->capture_default_str();
  app.add_option("--pod-cidr", cfg.pod_cidr,
                 "IPv4 CIDR pods get addresses from; the first address is the pods' gateway; an unreachable "
                 "route covers the whole CIDR so pod traffic never leaves the machine")
      ->capture_default_str();
  app.add_option("--service-cidr", cfg.service_cidr,
                 "IPv4 CIDR ClusterIP addresses of Services (membrane apply) come from; guarded by an unreachable "
                 "route like the pod CIDR")
      ->capture_default_str();
  app.add_option("--prometheus-serve-addr", cfg.prometheus_serve_addr,
                 "Address of the Prometheus /metrics endpoint (\":9962\" all interfaces, \"127.0.0.1:9962\", "
                 "\"\" disables)")
      ->capture_default_str();
  app.add_option("--metrics-legacy-names", cfg.metrics_legacy_names,
                 "Also export the Cilium <= 1.4 names that grafana.com dashboard 6658 and old alert rules query "
                 "(cilium_policy_count, cilium_policy_import_errors, cilium_endpoint_regenerations, "
                 "cilium_datapath_errors_total, "
                 "cilium_identity_count) as copies of the modern series; off by default: duplicate series cost")
      ->capture_default_str();
  app.add_option("--metrics", cfg.metrics,
                 "Metrics to enable or disable, Cilium's syntax: +NAME enables a metric that is off by default "
                 "(cilium_bpf_syscall_duration_seconds: the duration of every BPF map syscall the agent makes), "
                 "-NAME leaves a metric out of /metrics; repeat the flag or separate items by spaces or commas, "
                 "e.g. --metrics '+cilium_bpf_syscall_duration_seconds -cilium_identity_label_sources'. NAME is "
                 "the exposed family name (docs/metrics.md); an unknown name is an error");
  app.add_option("--host-device", cfg.host_device, "Name of the host dummy device holding the gateway address")
      ->capture_default_str();
  app.add_option("--enable-policy", cfg.enable_policy,
                 "Policy enforcement mode: default (enforce once a rule selects the endpoint, per direction), "
                 "always (deny everything not allowed, even without rules), never")
      ->check(CLI::IsMember({"default", "always", "never"}))
      ->capture_default_str();
  app.add_flag("--policy-audit-mode", cfg.policy_audit_mode,
               "Audit mode: would-be policy drops are forwarded and reported with verdict AUDIT");
  app.add_flag("--trace-events", cfg.trace_events,
               "Allow trace events for forwarded packets (membrane monitor -t trace); the datapath produces them "
               "only while a monitor client asks for them, as it does policy verdicts of allowed flows");
  app.add_option("--ct-gc-interval", cfg.ct_gc_interval_seconds, "Seconds between conntrack garbage collections")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--enable-health-checking", cfg.enable_health_checking,
                 "Run the health endpoint (identity 4, HTTP /hello on 4240, ICMP) and probe node connectivity; "
                 "feeds cilium_unreachable_nodes / cilium_unreachable_health_endpoints")
      ->capture_default_str();
  app.add_option("--health-check-interval", cfg.health_check_interval_seconds,
                 "Seconds between connectivity probe rounds")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--enable-l7-proxy", cfg.enable_l7_proxy,
                 "Run membrane-proxy and redirect traffic with L7 (HTTP) rules to it; false rejects policies with "
                 "toPorts[].rules")
      ->capture_default_str();
  app.add_option("--proxy-binary", cfg.proxy_binary, "membrane-proxy executable (default: next to membraned)");
  app.add_option("--proxy-control-socket", cfg.proxy_control_socket,
                 "Control socket of membrane-proxy; a running proxy recorded in <state-dir>/proxy.pid and serving it "
                 "is adopted on start, another one there is an error")
      ->capture_default_str();
  app.add_option("--proxy-port-range", cfg.proxy_port_range,
                 "START-END: TCP ports of the proxy listeners (START: ingress, START+1: egress)")
      ->capture_default_str();
  app.add_option("--proxy-route-table", cfg.proxy_route_table,
                 "Routing table holding 'local 0.0.0.0/0 dev lo' for packets marked for the proxy")
      ->capture_default_str();
  app.add_option("--proxy-rule-priority", cfg.proxy_rule_priority,
                 "Priority of the 'ip rule fwmark 0x200/0xf00 lookup <table>' rule")
      ->capture_default_str();
  app.add_option("--proxy-iptables-chain", cfg.proxy_iptables_chain,
                 "iptables mangle chain (jumped to from PREROUTING) holding the TPROXY rules")
      ->capture_default_str();
  app.add_option("--proxy-header-timeout-ms", cfg.proxy_header_timeout_ms,
                 "membrane-proxy: a request's headers must be complete this long after its first byte, else 408 "
                 "and close (slowloris)")
      ->check(CLI::Range(1u, 3600000u))
      ->capture_default_str();
  app.add_option("--proxy-idle-timeout-ms", cfg.proxy_idle_timeout_ms,
                 "membrane-proxy: close a connection without a byte in either direction for this long")
      ->check(CLI::Range(1u, 86400000u))
      ->capture_default_str();
  app.add_option("--proxy-escaped-slashes", cfg.proxy_escaped_slashes,
                 "membrane-proxy: '%2F'/'%5C' in a request path: reject (400), keep (rules and server see them "
                 "escaped) or unescape-and-forward (decoded to '/' before matching and forwarding); docs/l7.md")
      ->check(CLI::IsMember({"reject", "keep", "unescape-and-forward"}))
      ->capture_default_str();
  app.add_option("--log-level", cfg.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_option("--log-format", cfg.log_format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  auto* cleanup = app.add_subcommand(
      "cleanup",
      "Remove everything this agent created: every endpoint (network namespace, veth, route), the BPF programs "
      "and pins under --bpf-root, the host device, the unreachable route, the L7 proxy process and its TPROXY "
      "plumbing (ip rule, route table, iptables chain) and the state directory. Refused while an agent on the same "
      "names runs: stop it first.");

  cleanup->fallthrough();  // accept the agent flags after "cleanup" too
  CLI11_PARSE(app, argc, argv);
  setupLogging(cfg);
  raiseFdLimit();
  if (!instance.empty()) {
    std::set<std::string> given;
    for (const CLI::Option* o : app.get_options())
      if (o->count() > 0) given.insert(o->get_name());
    if (auto st = membrane::daemon::applyInstance(cfg, instance, given); !st.ok()) {
      spdlog::error("{}", st.error().message);
      return 2;
    }
  }
  if (print_config) {
    for (const auto& [flag, value] : membrane::daemon::OwnershipLocks::resources(cfg))
      std::printf("--%s %s\n", flag.c_str(), value.c_str());
    return 0;
  }

  if (geteuid() != 0) {
    spdlog::error("membraned must run as root (it loads BPF programs and creates network namespaces)");
    return 1;
  }

  // Every per-agent resource is owned by one live agent (instance.h): a second
  // agent, or a cleanup, on resources a running agent holds is refused.
  auto locks = membrane::daemon::OwnershipLocks::acquire(cfg, lock_dir);
  if (!locks.ok()) {
    spdlog::error("{}{}", *cleanup ? "cleanup refused: " : "", locks.error().message);
    return 1;
  }

  if (*cleanup) {
    auto st = membrane::daemon::Agent::cleanup(cfg);
    if (!st.ok()) {
      spdlog::error("cleanup: {}", st.error().message);
      return 1;
    }
    spdlog::info("cleanup done");
    return 0;
  }

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto agent = membrane::daemon::Agent::start(cfg);
  if (!agent.ok()) {
    spdlog::error("{}", agent.error().message);
    return 1;
  }
  spdlog::info("membraned {} ready: api {}, metrics {}, pod CIDR {}", MEMBRANE_VERSION_STRING, cfg.api_socket,
               cfg.prometheus_serve_addr.empty() ? "disabled" : cfg.prometheus_serve_addr, cfg.pod_cidr);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: stopping (BPF programs and maps stay in place; enforcement continues)", sig);
  (*agent)->stop();
  return 0;
}
