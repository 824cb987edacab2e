// Kubernetes manifests (`membrane apply -f`): YAML (one or more documents)
// or JSON (an object, an array, or a `kind: List`) -> typed objects.
//
// Contract
// - Pure: no I/O, no kernel. Never throws (yaml-cpp's exceptions are caught).
// - Kinds: Namespace, Pod, Deployment, Service (ClusterIP) — parsed here —
//   and CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, NetworkPolicy,
//   validated by the policy parser (policy::parsePolicies) on `policy_text`:
//   the input with every non-policy document blanked, so its diagnostics keep
//   the file's line and column.
// - Every problem is a Diagnostic (file, line, column, field path, message).
//   Whenever diagnostics is non-empty, the objects must not be used: the
//   caller applies nothing.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/policy.h"
#include "membrane/result.h"

namespace membrane::workload {

using policy::Diagnostic;
using Labels = std::map<std::string, std::string>;

struct Meta {
  std::string name;
  std::string ns;  // "" for cluster-scoped kinds (Namespace); defaults to "default" otherwise
  Labels labels;
  std::string source;  // file name the object came from
  int line = 0, column = 0;  // of metadata.name in source (1-based; 0 = unknown, e.g. from the state file)
};

struct ContainerPort {
  std::string name;  // "" when unnamed
  uint16_t port = 0;
  std::string protocol = "TCP";
};

struct EnvVar {
  std::string name, value;
};

struct Container {
  std::string name;
  std::string image;
  std::vector<std::string> command;  // Kubernetes `command` (entrypoint)
  std::vector<std::string> args;
  std::vector<EnvVar> env;
  std::vector<ContainerPort> ports;
};

struct PodSpec {
  std::vector<Container> containers;  // exactly one is supported
  std::string restart_policy = "Always";  // Always | OnFailure | Never
  // spec.serviceAccountName (or the deprecated spec.serviceAccount); the pod
  // carries it as k8s:io.cilium.k8s.policy.serviceaccount, as on Cilium.
  std::string service_account = "default";
};

struct PodObject {
  Meta meta;
  PodSpec spec;
};

struct DeploymentObject {
  Meta meta;
  int replicas = 1;
  Labels selector;         // spec.selector.matchLabels
  Labels template_labels;  // spec.template.metadata.labels
  PodSpec spec;            // spec.template.spec
};

struct ServicePort {
  std::string name;
  uint16_t port = 0;
  std::string target_port;  // a number or a container port name; "" = port
  std::string protocol = "TCP";
};

struct ServiceObject {
  Meta meta;
  Labels selector;
  std::vector<ServicePort> ports;
};

struct NamespaceObject {
  Meta meta;
};

struct PolicyRef {
  std::string kind, name, ns;  // ns "" for clusterwide
};

struct Manifests {
  std::vector<NamespaceObject> namespaces;
  std::vector<PodObject> pods;
  std::vector<DeploymentObject> deployments;
  std::vector<ServiceObject> services;
  std::vector<PolicyRef> policies;
  // The input with every non-policy document replaced by blank lines ("" when
  // there is no policy document): what `PUT /v1/policy` would import.
  std::string policy_text;
  bool empty() const {
    return namespaces.empty() && pods.empty() && deployments.empty() && services.empty() && policies.empty();
  }
};

struct ManifestResult {
  Manifests manifests;
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return diagnostics.empty(); }
};

// default_ns: namespace of namespaced objects without metadata.namespace
// (`membrane apply -n NS`, kubectl's -n).
ManifestResult parseManifests(std::string_view text, const std::string& filename,
                              const std::string& default_ns = "default");

// State-file / API forms, and back from the state file (workloads.json):
// every field is checked and an error (EINVAL) names it by its path under
// `path` ("pods[0].spec.containers[0].ports[1].containerPort: expected a
// number (0-65535), got a string"); nothing throws.
void to_json(nlohmann::json& j, const ContainerPort& v);
void to_json(nlohmann::json& j, const EnvVar& v);
void to_json(nlohmann::json& j, const Container& v);
void to_json(nlohmann::json& j, const PodSpec& v);
void to_json(nlohmann::json& j, const Meta& v);
void to_json(nlohmann::json& j, const PodObject& v);
void to_json(nlohmann::json& j, const DeploymentObject& v);
void to_json(nlohmann::json& j, const ServicePort& v);
void to_json(nlohmann::json& j, const ServiceObject& v);
Result<PodSpec> podSpecFromJson(const nlohmann::json& j, const std::string& path);
Result<PodObject> podFromJson(const nlohmann::json& j, const std::string& path);
Result<DeploymentObject> deploymentFromJson(const nlohmann::json& j, const std::string& path);
Result<ServiceObject> serviceFromJson(const nlohmann::json& j, const std::string& path);

}  // namespace membrane::workload
