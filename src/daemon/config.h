// membraned's configuration (flags), shared by the daemon's parts.
#pragma once

#include <cstdint>
#include <string>

namespace membrane::daemon {

struct Config {
  std::string api_socket = "/var/run/membrane/membrane.sock";
  std::string state_dir = "/var/lib/membrane";
  std::string bpf_root = "/sys/fs/bpf/membrane";
  std::string pod_cidr = "10.200.0.0/16";
  std::string service_cidr = "10.96.0.0/16";  // ClusterIPs of Services (membrane apply)
  std::string prometheus_serve_addr = ":9962";
  std::string host_device = "membrane_host";  // dummy device holding the pods' gateway address
  std::string enable_policy = "default";     // default | always | never
  bool policy_audit_mode = false;
  bool trace_events = false;                  // emit trace events for forwarded packets (monitor --type trace)
  uint32_t ct_gc_interval_seconds = 30;
  bool enable_health_checking = true;         // health endpoint + probes (cilium-health)
  uint32_t health_check_interval_seconds = 60;
  std::string log_level = "info";
  std::string log_format = "text";            // text | json
};

}  // namespace membrane::daemon
