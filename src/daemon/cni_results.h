// The pure half of membraned's CNI API (src/daemon/cni_handlers.cc): how a
// runtime's container becomes an endpoint name, what ADD answers for an
// endpoint, and how CHECK compares an endpoint with the runtime's
// prevResult. The contract is src/cni/agent_api.h; docs/cni.md.
//
// Pure functions of their arguments; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "src/cni/agent_api.h"
#include "src/endpoint/endpoint.h"

namespace membrane::daemon {

// The endpoint name of a runtime's container: K8S_POD_NAME made a Kubernetes
// name (lowercase; every character other than a-z, 0-9 and '-' becomes '-';
// no '-' at either end; at most 63 characters) — podman's generated names
// ("sharp_tesla") hold '_' — or, when that leaves nothing, "cni-" and the
// first 12 characters of the container ID made the same way.
std::string cniEndpointName(const std::string& pod_name, const std::string& container_id);

// ADD's answer for a created endpoint: the host veth (no sandbox, its MAC),
// the container interface (sandbox = the runtime's netns, its MAC), the /32
// with the gateway and interface index 1, and the default route via the
// gateway (what the pod namespace holds: netlink.h). gateway: host order.
cni::AddAnswer cniAddAnswer(const endpoint::Endpoint& ep, uint32_t gateway);

// CHECK: the first difference between what the endpoint holds and what the
// runtime expects (its prevResult), or nullopt when they agree: the container
// interface (name CNI_IFNAME in sandbox CNI_NETNS) must be listed with the
// endpoint's MAC, the endpoint's address must be listed for it, and the
// default route via the gateway must be there. netns: the request's.
std::optional<std::string> cniCheckDifference(const endpoint::Endpoint& ep, const std::string& netns,
                                              const cni::CniResult& expected, uint32_t gateway);

}  // namespace membrane::daemon
