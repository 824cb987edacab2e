// Policy repository and resolution: the set of imported policies, and the
// desired policy map state of one endpoint computed from it.
//
// Resolution is pure: (policies, subject labels, known identities) -> entries
// for the per-endpoint policy map (bpf/shared/datapath.h, mb_policy_key).
//
// Thread-safety: none. The caller (endpoint manager) serializes access.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "membrane/identity.h"
#include "membrane/labels.h"
#include "membrane/policy.h"
#include "membrane/result.h"

namespace membrane::policy {

using identity::IdentityRef;

// Mirrors mb_policy_key minus ep_id, in HOST byte order (the map writer
// converts dport to network order).
struct PolicyKey {
  uint32_t identity = 0;  // 0 = any peer
  uint16_t dport = 0;     // 0 = any port
  uint8_t proto = 0;      // IPPROTO_*; 0 = any
  uint8_t direction = 0;  // 1 ingress, 2 egress
  auto operator<=>(const PolicyKey&) const = default;
};

struct PolicyEntry {
  bool deny = false;
  uint16_t proxy_port_needed = 0;  // 1 if L7 rules apply (the proxy port is chosen later)
  uint32_t cookie = 0;             // Policy::cookie of a policy that produced the entry
  bool operator==(const PolicyEntry&) const = default;
};

// A container port an endpoint declares ("http" -> 80/TCP).
struct NamedPort {
  std::string name;   // IANA_SVC_NAME (validatePortName)
  uint16_t port = 0;  // 1..65535
  uint8_t proto = 6;  // IPPROTO_TCP, _UDP or _SCTP
  auto operator<=>(const NamedPort&) const = default;
};

// The named ports resolution sees: the subject endpoint's own, and per peer
// identity the union of the ports its endpoints declare (two pods of one
// identity may map a name to different numbers: both count).
struct NamedPorts {
  std::vector<NamedPort> subject;
  std::map<uint32_t, std::vector<NamedPort>> by_identity;
};

// Where the L7 proxy enforces HTTP rules for an endpoint: a direction and a
// TCP destination port.
struct L7Port {
  uint8_t direction = 0;  // 1 ingress, 2 egress
  uint16_t port = 0;
  auto operator<=>(const L7Port&) const = default;
};

// One HTTP rule the proxy applies on an L7Port, with where it comes from and
// whom it applies to (the peer: client on ingress, destination on egress).
struct L7Rule {
  HttpRule http;              // default-constructed = every request
  std::string policy;         // "ns/name" of the policy it comes from
  std::set<uint32_t> peers;   // peer identities; containing 0 = every peer
  bool operator==(const L7Rule&) const = default;
};

struct EndpointPolicy {
  bool ingress_enforced = false;  // default-deny ingress (MB_EP_F_INGRESS_ENFORCED)
  bool egress_enforced = false;
  // Some entry has a protocol-only key {id|0, proto, 0} (protocol-only port
  // rules, ICMP type 0): the agent sets MB_EP_F_PROTO_WILDCARD so that the
  // datapath also probes tiers 3-4. Without it those keys are never looked up.
  bool proto_wildcard = false;
  // First-match complete: looking keys up in the datapath order gives the
  // exact semantic verdict (see verdict()). In a direction that is not
  // enforced but has rules (deny rules, enableDefaultDeny: false), an allow-all
  // {0,0,0} entry is included so that a miss never means "drop".
  std::map<PolicyKey, PolicyEntry> entries;
  std::vector<std::string> ingress_rules, egress_rules;  // policies selecting the subject ("ns/name")
  // The HTTP rule sets of the proxy (docs/l7.md "Config"), per (direction,
  // port). A TCP port is here once an allow rule selecting the subject gives
  // it HTTP rules (numeric, or named and resolved as for the entries), with,
  // in policy order and per peer rule covering the port:
  //  - each of its http rules, for the peers that peer rule selects;
  //  - one rule `{}` (every request) when the peer rule also allows the port
  //    at L3/L4 without HTTP rules (Cilium: an L4-only allow on an L7 port
  //    lets those peers' requests through).
  // Deny rules do not change these sets: the entries deny before the
  // datapath redirects, so a denied peer never reaches the proxy.
  std::map<L7Port, std::vector<L7Rule>> l7;
};

// Resolves `policies` for an endpoint with labels `subject`. `identities` is
// every identity the node knows (reserved, allocated, and the local-scope CIDR
// identities); selectors match against them:
//  - endpoint selectors match reserved identities only when they name a
//    `reserved:` key, and CIDR identities (local scope) only when they name a
//    `reserved:` or `cidr:` key, so a wildcard selector never opens an
//    endpoint to world, host or a CIDR;
//  - a CIDR rule `cidr C except E...` selects the CIDR identities labelled
//    `cidr:C` and none of `cidr:E`; C = 0.0.0.0/0 also selects world (2);
//  - entities `world` (and `all`) include every CIDR identity (they carry
//    reserved:world); `cluster` never does.
//  - `selections` (optional) memoizes which identities each peer rule
//    selects across calls: pass the same one to every call of one
//    regeneration pass, and a new one whenever policies or identities change
//    (it is keyed by the PeerRule's address).
//  - named ports (`port: http`) resolve as in Kubernetes/Cilium: in ingress
//    rules to the subject's own port of that name (`named.subject`), in
//    egress rules to each peer identity's port of that name
//    (`named.by_identity`); a peer without it contributes nothing, and a
//    name nobody declares allows (or denies) nothing.
struct SelectionCache {
  std::unordered_map<const PeerRule*, std::set<uint32_t>> peers;
};
EndpointPolicy resolvePolicies(const std::vector<Policy>& policies, const labels::LabelSet& subject,
                               const std::vector<IdentityRef>& identities, const NamedPorts& named = {},
                               SelectionCache* selections = nullptr);

// Every CIDR prefix the policies mention (cidr and except of fromCIDR,
// fromCIDRSet, toCIDR, toCIDRSet, ipBlock), normalized ("10.0.0.0/8"), except
// 0.0.0.0/0: addresses in no policy prefix already get world (2) from the
// ipcache. The agent allocates one local-scope identity per prefix, labelled
// labels::cidrIdentityLabels(prefix), and maps prefix -> identity in the
// ipcache LPM (longest prefix wins).
std::set<std::string> cidrPrefixes(const std::vector<Policy>& policies);

// What the datapath does for one packet, given the map state.
enum class VerdictKind { Allowed, Denied /* deny rule: 181 */, Dropped /* default deny: 133 */ };
struct Verdict {
  VerdictKind kind = VerdictKind::Dropped;
  uint16_t proxy_port_needed = 0;
  uint32_t cookie = 0;
  bool matched = false;  // an entry was hit (else default verdict)
  bool operator==(const Verdict&) const = default;
};

// Simulates the datapath's first-match lookup (bpf/shared/datapath.h):
// {id,proto,port} -> {0,proto,port} -> [{id,proto,0} -> {0,proto,0} only when
// ep.proto_wildcard] -> {id,0,0} -> {0,0,0}; miss => Dropped when the
// direction is enforced, else Allowed. For ICMP, dport is the ICMP type.
Verdict verdict(const EndpointPolicy& ep, uint32_t identity, uint8_t proto, uint16_t dport, uint8_t direction);

struct ImportResult {
  uint64_t revision = 0;
  std::vector<std::string> names;  // "ns/name" of the imported policies, input order
};

// Port ranges expand to one map entry per port; larger ranges are rejected at
// parse time.
inline constexpr uint32_t kMaxPortRange = 4096;

// A policy's key in the repository: "Kind/namespace/name" (namespace "" for
// cluster-wide kinds). Importing a policy with an existing key replaces it.
std::string policyKey(const Policy& p);

class Repository {
 public:
  // Adds the policies, replacing any with the same (kind, namespace, name).
  // All or nothing; the revision goes up by one. Errors: empty input or the
  // same policy twice in one import (EINVAL).
  Result<ImportResult> import(std::vector<Policy> policies);

  // Removes every policy named `name` in `namespace_name` ("" = clusterwide),
  // whatever its kind. Returns their "ns/name"; ENOENT if none. Bumps revision.
  Result<std::vector<std::string>> remove(const std::string& name, const std::string& namespace_name);
  // Removes every policy whose metadata labels (Policy::labels) include all of
  // `wanted` (same key and value; a `wanted` label of source "any" or "k8s"
  // matches any source). Returns their "ns/name"; ENOENT if none matched
  // (nothing changes); EINVAL for an empty `wanted`. Bumps revision.
  Result<std::vector<std::string>> removeByLabels(const labels::LabelSet& wanted);
  // Removes everything; returns the names removed. Bumps revision if any.
  std::vector<std::string> removeAll();

  uint64_t revision() const { return revision_; }
  const std::vector<Policy>& policies() const { return policies_; }

  // "ns/name" of the policy that owns (or owned: cookies are never reused)
  // `cookie`; "" if unknown.
  std::string policyForCookie(uint32_t cookie) const;
  // Every cookie handed out or reserved, by policy key ("Kind/ns/name").
  const std::map<std::string, uint32_t>& cookies() const { return cookie_by_key_; }
  // Binds `key` to `cookie` before any import of it, so that a restarted
  // agent gives each policy the cookie its kernel entries carry (the agent
  // persists cookies()): also a policy it holds without loading it, whose
  // entries stay in the kernel and whose events must still name it. Binding
  // a key to the cookie it has already is a no-op. EINVAL: cookie 0 or a key
  // that is not "Kind/ns/name"; EEXIST: the key or the cookie is bound to
  // another. Changes nothing on error.
  Status reserveCookie(const std::string& key, uint32_t cookie);

  EndpointPolicy resolve(const labels::LabelSet& subject, const std::vector<IdentityRef>& identities,
                         const NamedPorts& named = {}, SelectionCache* selections = nullptr) const {
    return resolvePolicies(policies_, subject, identities, named, selections);
  }
  // "ns/name" of the policies with a rule selecting `subject`.
  std::vector<std::string> selectingPolicies(const labels::LabelSet& subject) const;

 private:
  std::vector<Policy> policies_;
  uint64_t revision_ = 1;  // Cilium starts at 1
  uint32_t next_cookie_ = 1;
  std::map<std::string, uint32_t> cookie_by_key_;  // "kind/ns/name" -> cookie (stable across replace)
  std::map<uint32_t, std::string> name_by_cookie_;
};

}  // namespace membrane::policy
