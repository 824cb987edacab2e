// Labels: the identity-relevant attributes of an endpoint, in Cilium's form
// `source:key=value` (e.g. `k8s:org=empire`, `reserved:host`).
//
// Value types only; no I/O. Not thread-safe (plain values: copy or lock).
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "membrane/result.h"

namespace membrane::labels {

// Label sources (Cilium's pkg/labels). `any` only appears in selectors: it
// matches a key from every source.
inline constexpr std::string_view kSourceK8s = "k8s";
inline constexpr std::string_view kSourceReserved = "reserved";
inline constexpr std::string_view kSourceAny = "any";
inline constexpr std::string_view kSourceUnspec = "unspec";
inline constexpr std::string_view kSourceCidr = "cidr";

// Labels that membrane (like Cilium) adds to every pod endpoint.
inline constexpr std::string_view kPodNamespaceLabel = "io.kubernetes.pod.namespace";
inline constexpr std::string_view kPolicyClusterLabel = "io.cilium.k8s.policy.cluster";
inline constexpr std::string_view kClusterName = "default";
// The pod's service account (spec.serviceAccountName; Kubernetes defaults it
// to "default"), which Cilium's service-account policies select.
inline constexpr std::string_view kPolicyServiceAccountLabel = "io.cilium.k8s.policy.serviceaccount";
inline constexpr std::string_view kDefaultServiceAccount = "default";
// Namespace labels as Cilium exposes them to selectors (K8s namespaceSelector).
inline constexpr std::string_view kNamespaceLabelsPrefix = "io.cilium.k8s.namespace.labels.";

struct Label {
  std::string source;  // "k8s", "reserved", "unspec", "cidr", ... (never empty)
  std::string key;
  std::string value;   // may be empty (`reserved:host`)

  // Cilium form: "k8s:org=empire"; "reserved:host" when the value is empty.
  std::string toString() const;
  auto operator<=>(const Label&) const = default;
};

// A sorted set of labels, unique by (source, key). Ordering is (source, key),
// so equal sets compare equal and print identically (identity allocation key).
class LabelSet {
 public:
  LabelSet() = default;
  // Later duplicates of (source, key) replace earlier ones.
  explicit LabelSet(std::vector<Label> labels);

  // Inserts or replaces the label with the same (source, key).
  void add(Label label);
  void add(std::string_view source, std::string_view key, std::string_view value) {
    add(Label{std::string(source), std::string(key), std::string(value)});
  }
  // Removes (source, key); returns whether it was present.
  bool remove(std::string_view source, std::string_view key);

  // Exact (source, key) lookup.
  const Label* find(std::string_view source, std::string_view key) const;
  // Every label with `key`, whatever the source (selector source `any`).
  std::vector<const Label*> findAnySource(std::string_view key) const;
  bool hasSource(std::string_view source) const;

  const std::vector<Label>& labels() const { return labels_; }
  std::vector<Label>::const_iterator begin() const { return labels_.begin(); }
  std::vector<Label>::const_iterator end() const { return labels_.end(); }
  bool empty() const { return labels_.empty(); }
  size_t size() const { return labels_.size(); }

  // "k8s:class=deathstar,k8s:org=empire" (sorted; "" when empty).
  std::string toString() const;

  auto operator<=>(const LabelSet&) const = default;

 private:
  std::vector<Label> labels_;  // sorted by (source, key), unique
};

// Kubernetes syntax checks. On failure the error message names the offending
// part, e.g. "value '@x' must consist of alphanumerics, '-', '_' or '.'".
Status validateKey(std::string_view key);
Status validateValue(std::string_view value);

// Parses one label "key=value", "key" (empty value) or "source:key=value".
// Without a source prefix the label gets `default_source`.
Result<Label> parseLabel(std::string_view text, std::string_view default_source = kSourceK8s);

// Parses user input "k=v,k2=v2" (blanks around items ignored; empty input =
// empty set). Errors quote the label: "label 'org=@x': value '@x' must ...".
// A key given twice is an error.
Result<LabelSet> parseLabels(std::string_view text, std::string_view default_source = kSourceK8s);

// The labels of a pod endpoint (what its identity is allocated for):
//  - the user's labels with source `k8s` (labels of other sources are kept as
//    they are),
//  - `k8s:io.kubernetes.pod.namespace=<ns>`,
//  - `k8s:io.cilium.k8s.policy.cluster=default` (what the `cluster` entity
//    and Cilium's cluster scoping select),
//  - `k8s:io.cilium.k8s.policy.serviceaccount=default` unless the user's
//    labels name the service account (the workload controller sets it from
//    spec.serviceAccountName; `endpoint create --service-account`): every
//    pod has one, so a policy selecting service accounts never misses a pod,
//  - Cilium's namespace labels: `k8s:io.cilium.k8s.namespace.labels.<k>=<v>`
//    for every label of the namespace (whatever its source), and always
//    `k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=<ns>`
//    (Kubernetes sets that label on every namespace; NetworkPolicy
//    namespaceSelectors select it).
// The 2-argument form is the 3-argument one with no extra namespace labels.
LabelSet endpointLabels(std::string_view namespace_name, const LabelSet& user_labels, const LabelSet& ns_labels);
LabelSet endpointLabels(std::string_view namespace_name, const LabelSet& user_labels);

// The label Kubernetes puts on every namespace with the namespace's name.
inline constexpr std::string_view kNamespaceNameLabel = "kubernetes.io/metadata.name";

// ---------------------------------------------------------------------------
// CIDR identities (Cilium's model). Every prefix a policy names gets a
// local-scope identity whose labels are `cidr:<p>` for the prefix itself and
// every shorter prefix covering it, down to `cidr:0.0.0.0/0`, plus
// `reserved:world`. A CIDR rule `cidr C except E...` then selects the
// identities that have `cidr:C` and none of `cidr:E`; the ipcache LPM maps an
// address to the identity of its longest matching policy prefix.

// "10.1.0.0/16" -> {cidr:0.0.0.0/0, cidr:8.0.0.0/5, ..., cidr:10.0.0.0/8, ...,
// cidr:10.1.0.0/16, reserved:world} (prefix length + 1 cidr labels). The
// prefix must be normalized IPv4 "a.b.c.d/n" (as the policy parser produces
// it, see cidrPrefixes()); host bits are cleared anyway. An unparsable prefix
// yields {reserved:world} only.
LabelSet cidrIdentityLabels(const std::string& prefix);

// The label `cidr:<prefix>` (source cidr, key = the prefix, empty value).
Label cidrLabel(std::string_view prefix);

// Reserved identities (Cilium's numbers; see bpf/shared/datapath.h).
enum class Reserved : uint32_t {
  Host = 1,
  World = 2,
  Unmanaged = 3,
  Health = 4,
  Init = 5,
  RemoteNode = 6,
  KubeApiserver = 7,
};
inline constexpr Reserved kAllReserved[] = {Reserved::Host,   Reserved::World,      Reserved::Unmanaged,
                                            Reserved::Health, Reserved::Init,       Reserved::RemoteNode,
                                            Reserved::KubeApiserver};

// "host", "world", "unmanaged", "health", "init", "remote-node", "kube-apiserver".
std::string_view reservedName(Reserved r);
// {reserved:<name>} — e.g. {reserved:host}.
LabelSet reservedLabels(Reserved r);
// The reserved identity whose label set is exactly `labels`, if any.
std::optional<Reserved> reservedFor(const LabelSet& labels);

}  // namespace membrane::labels
