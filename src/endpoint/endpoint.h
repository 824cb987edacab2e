// Endpoint: a pod managed by this agent, as the agent records and reports it.
#pragma once

#include <array>
#include <optional>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/labels.h"
#include "membrane/policy_repository.h"
#include "membrane/result.h"

namespace membrane::endpoint {

// Cilium's endpoint states (api/v1 models): the API's "state" and the
// `cilium_endpoint_state` label values spell them as toString() does. Not in
// the state file: a restored endpoint starts as Restoring.
enum class EndpointState { Creating, WaitingForIdentity, Regenerating, Ready, Disconnecting, Restoring, NotReady };
std::string_view toString(EndpointState s);
// Cilium's word back to the state; EINVAL naming the known words otherwise.
Result<EndpointState> parseEndpointState(std::string_view s);

// A container that a runtime created and membrane-cni attached
// (docs/cni.md): its network namespace is the runtime's (Endpoint::netns_path,
// netns_name empty: never created or removed by membrane), and the endpoint
// is found by (container_id, ifname).
struct CniAttachment {
  std::string container_id;  // CNI_CONTAINERID
  std::string ifname;        // CNI_IFNAME, the pod side of the veth
  std::string network;       // the CNI network name ("membrane")
  bool operator==(const CniAttachment&) const = default;
};

struct Endpoint {
  uint32_t id = 0;
  std::string name;
  std::string ns;                // Kubernetes namespace ("default")
  labels::LabelSet user_labels;  // as given (source k8s)
  labels::LabelSet labels;       // identity-relevant: user labels + namespace + cluster
  uint32_t identity = 0;
  uint32_t ipv4 = 0;             // host byte order
  EndpointState state = EndpointState::Creating;
  std::string netns_name;
  std::string netns_path;
  std::string host_ifname;
  uint32_t host_ifindex = 0;
  std::array<uint8_t, 6> mac{};       // pod side (eth0)
  std::array<uint8_t, 6> host_mac{};  // host side (the pod's gateway MAC)
  bool ingress_enforced = false;
  bool egress_enforced = false;
  bool ingress_audit = false;
  bool egress_audit = false;
  bool health = false;               // the node's health endpoint (reserved:health, identity 4)
  bool proto_wildcard = false;       // policy has protocol-only entries (datapath tiers 3-4)
  std::optional<bool> audit_mode;     // per-endpoint PolicyAuditMode; unset = the agent's --policy-audit-mode
  uint64_t policy_revision = 0;       // revision realized in the maps
  std::vector<std::string> ingress_policies;  // ns/name of policies selecting it, per direction
  std::vector<std::string> egress_policies;
  std::string created;                // RFC 3339 UTC
  // Container ports the pod declares ("http" -> 80/TCP): what named ports in
  // policies resolve to (ingress: this pod's; egress: each peer's). Fixed at creation.
  std::vector<policy::NamedPort> named_ports;
  std::optional<CniAttachment> cni;   // set for a runtime's container (membrane-cni)
};

std::string macToString(const std::array<uint8_t, 6>& mac);

// The API view (docs/api.md "Endpoint").
nlohmann::json toApiJson(const Endpoint& ep);
// State file (everything needed to restore after a restart) and back.
// fromStateJson checks every field: EINVAL naming the field ("user_labels.org:
// expected a string, got a number"), never an exception.
nlohmann::json toStateJson(const Endpoint& ep);
Result<Endpoint> fromStateJson(const nlohmann::json& j);
// Reads and checks one state file (endpoints/<id>.json); errors start with the path.
Result<Endpoint> readEndpointState(const std::string& path);
// Reads and checks namespaces.json ({"<namespace>": {"<key>": "<value>"}}):
// each namespace's labels; an absent file is no labels. Errors start with the path.
// A stored kubernetes.io/metadata.name (older agents stored what the API
// accepted) is dropped: that label is derived from the name (below).
Result<std::map<std::string, labels::LabelSet>> readNamespaceState(const std::string& path);

// Namespace labels as stored from what a caller gave: Kubernetes' name label
// (labels::kNamespaceNameLabel, any source) is derived from the namespace's
// name, never stored. Given with the namespace's own name it is dropped (the
// CLI and manifests exported from Kubernetes send it back as listed); with any
// other value: EINVAL saying that the label is derived and cannot be set.
Result<labels::LabelSet> namespaceLabelsToStore(const std::string& ns, const labels::LabelSet& given);
// The labels a namespace shows (`GET /v1/namespace`, what namespaceSelectors
// see): the stored ones, then the derived name label, which always wins.
nlohmann::json namespaceLabelsJson(const std::string& ns, const labels::LabelSet& stored);

// Parses the endpoint create API's "named_ports":
// [{"name": "http", "port": 80, "protocol": "TCP"}] (protocol TCP, UDP or
// SCTP, default TCP). Validates like Kubernetes' container ports: name
// IANA_SVC_NAME, port 1..65535, names unique. EINVAL naming the item and rule.
Result<std::vector<policy::NamedPort>> parseNamedPorts(const nlohmann::json& j);
nlohmann::json namedPortsJson(const std::vector<policy::NamedPort>& ports);

// Pod and namespace names: Kubernetes DNS-1123 labels (lowercase alphanumerics
// and '-', start and end alphanumeric, at most 63 characters).
Status validateName(const std::string& what, const std::string& name);

}  // namespace membrane::endpoint
