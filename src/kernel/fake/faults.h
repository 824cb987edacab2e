// Fault injection for the kernel seams: wrappers around DatapathMaps,
// PodNetworks, ProcessRunner and the state files (endpoint::StateFiles) that
// fail one chosen call.
//
// One FaultInjector is shared by the wrappers of a test, so "the Nth kernel
// call of an operation" counts across all four (a state-file write is a step
// like a map write). Arm it with failNth(n, err,
// method): the nth fallible call from then on (of `method`, e.g.
// "createPodNetwork", or of any method when empty) returns
// Error(err, "injected fault: <method> call <n>: <strerror(err)>") without
// reaching the wrapped object; every other call goes through. It fires once.
// Calls that cannot fail in the interface (policyEndpoints, startTime,
// listensOnTcp, signalGroup, reap) are forwarded and not counted.
// Not thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "src/endpoint/state_store.h"
#include "src/kernel/datapath_maps.h"
#include "src/kernel/pod_networks.h"
#include "src/kernel/process_runner.h"

namespace membrane::kernel {

class FaultInjector {
 public:
  // Arms: fail the nth (1-based) matching call from now with errno err.
  void failNth(size_t n, int err = EIO, std::string method = "");
  // Disarms and forgets the calls seen.
  void clear();
  // Fallible calls seen since the last failNth/clear, in order (every method).
  const std::vector<std::string>& calls() const { return calls_; }
  // The method whose call was failed, if the fault fired.
  const std::optional<std::string>& fired() const { return fired_; }

  // For the wrappers: records the call, returns the injected error if it is the one.
  Status check(const char* method);

 private:
  size_t n_ = 0;  // 0 = disarmed
  int err_ = EIO;
  std::string method_;
  size_t matched_ = 0;
  std::vector<std::string> calls_;
  std::optional<std::string> fired_;
};

class FaultyDatapathMaps final : public DatapathMaps {
 public:
  FaultyDatapathMaps(DatapathMaps& inner, FaultInjector& faults) : inner_(inner), f_(faults) {}
  Status attach(uint32_t ifindex) override;
  Status setConfig(const mb_datapath_config& config) override;
  Result<mb_datapath_config> config() override;
  Status upsertEndpoint(const mb_endpoint_info& endpoint) override;
  Status deleteEndpoint(uint32_t ifindex, uint32_t ipv4_be) override;
  Result<std::vector<mb_endpoint_info>> listEndpoints() override;
  Status upsertIpcache(uint32_t ipv4_be, uint8_t prefix_len, uint32_t identity) override;
  Status deleteIpcache(uint32_t ipv4_be, uint8_t prefix_len) override;
  Result<std::vector<IpcacheEntry>> listIpcache() override;
  Result<PolicySyncStats> syncPolicy(uint32_t ep_id, const std::map<PolicyMapKey, PolicyMapValue>& desired) override;
  Status deletePolicy(uint32_t ep_id) override;
  std::vector<uint32_t> policyEndpoints() const override { return inner_.policyEndpoints(); }
  Status flushCtFor(uint32_t ipv4_be) override;
  Status upsertService(uint32_t vip_be, uint16_t port, uint8_t proto, const std::vector<Backend>& backends) override;
  Status deleteService(uint32_t vip_be, uint16_t port, uint8_t proto) override;

 private:
  DatapathMaps& inner_;
  FaultInjector& f_;
};

class FaultyPodNetworks final : public PodNetworks {
 public:
  FaultyPodNetworks(PodNetworks& inner, FaultInjector& faults) : inner_(inner), f_(faults) {}
  Status ensureHostDevice(const std::string& name, uint32_t gateway_be) override;
  Status removeHostDevice(const std::string& name) override;
  Status ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) override;
  Status removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) override;
  Result<PodNetwork> createPodNetwork(const PodNetworkSpec& spec) override;
  Result<PodNetwork> inspectPodNetwork(const PodNetworkSpec& spec) override;
  Status deletePodNetwork(const std::string& netns_name, const std::string& host_ifname, uint32_t ipv4_be) override;
  Result<std::vector<uint32_t>> hostAddresses() override;

 private:
  PodNetworks& inner_;
  FaultInjector& f_;
};

class FaultyProcessRunner final : public ProcessRunner {
 public:
  FaultyProcessRunner(ProcessRunner& inner, FaultInjector& faults) : inner_(inner), f_(faults) {}
  Result<pid_t> spawn(const PodProcessSpec& spec) override;
  uint64_t startTime(pid_t pid) override { return inner_.startTime(pid); }
  bool listensOnTcp(pid_t pid, uint16_t port) override { return inner_.listensOnTcp(pid, port); }
  void signalGroup(pid_t pid, int sig) override { inner_.signalGroup(pid, sig); }
  ReapResult reap(pid_t pid, bool block) override { return inner_.reap(pid, block); }
  Result<UniqueFd> exitFd(pid_t pid) override;  // method "exitFd"

 private:
  ProcessRunner& inner_;
  FaultInjector& f_;
};

// Methods "writeStateFile" and "removeStateFile". A failed call changes no file.
class FaultyStateFiles final : public endpoint::StateFiles {
 public:
  FaultyStateFiles(endpoint::StateFiles& inner, FaultInjector& faults) : inner_(inner), f_(faults) {}
  Status write(const std::string& path, const std::string& content) override;
  Status remove(const std::string& path) override;

 private:
  endpoint::StateFiles& inner_;
  FaultInjector& f_;
};

}  // namespace membrane::kernel
