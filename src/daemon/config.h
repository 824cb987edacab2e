// membraned's configuration (flags), shared by the daemon's parts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace membrane::daemon {

struct Config {
  std::string api_socket = "/var/run/membrane/membrane.sock";
  std::string state_dir = "/var/lib/membrane";
  std::string bpf_root = "/sys/fs/bpf/membrane";
  std::string pod_cidr = "10.200.0.0/16";
  std::string service_cidr = "10.96.0.0/16";  // ClusterIPs of Services (membrane apply)
  std::string prometheus_serve_addr = ":9962";
  bool metrics_legacy_names = false;  // also export Cilium <= 1.4 names (dashboard 6658)
  std::vector<std::string> metrics;   // --metrics: +NAME / -NAME (AgentMetrics::enableMetrics)
  std::string host_device = "membrane_host";  // dummy device holding the pods' gateway address
  std::string enable_policy = "default";     // default | always | never
  bool policy_audit_mode = false;
  bool trace_events = false;                  // emit trace events for forwarded packets (monitor --type trace)
  uint32_t ct_gc_interval_seconds = 30;
  bool enable_health_checking = true;         // health endpoint + probes (cilium-health)
  uint32_t health_check_interval_seconds = 60;
  // L7 proxy (docs/l7.md). Everything node-global is per agent, so two agents
  // on one host never collide: listener ports, routing table, rule priority,
  // iptables chain, control socket.
  bool enable_l7_proxy = true;
  std::string proxy_binary;                   // "" = membrane-proxy next to membraned
  std::string proxy_control_socket = "/var/run/membrane/proxy.sock";
  std::string proxy_port_range = "15001-15002";  // first: ingress listener, second: egress listener
  uint32_t proxy_route_table = 2004;
  uint32_t proxy_rule_priority = 9;
  std::string proxy_iptables_chain = "MEMBRANE_PRE_mangle";
  // Passed to membrane-proxy as --header-timeout-ms / --idle-timeout-ms (a
  // proxy adopted after an agent restart keeps the values it was started with).
  uint32_t proxy_header_timeout_ms = 10000;
  uint32_t proxy_idle_timeout_ms = 300000;
  // Passed as --escaped-slashes: "%2F"/"%5C" in request paths (http_path.h).
  std::string proxy_escaped_slashes = "reject";
  std::string log_level = "info";
  std::string log_format = "text";            // text | json
};

}  // namespace membrane::daemon
