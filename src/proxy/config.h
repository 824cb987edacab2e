// ProxyConfig: the L7 policy the agent pushes to membrane-proxy (JSON, see
// docs/l7.md), compiled once (RE2 regexes) and then matched per request.
//
// Matching contract (Cilium's HTTP rules):
// - method, path, host: RE2 regexes matched against the WHOLE value (FullMatch);
//   empty = any. path is matched against the normalised request target
//   ("/v1/x?y=1", http_path.h), host against the Host header ("" when absent).
// - headers: "Name" (present) or "Name: value" (the fields with that name,
//   their values joined with ",", equal value exactly: "X: a" + "X: b" is
//   "a,b"); names are case-insensitive. The same for header_matches.
// - header_matches: {name, value, mismatch}; value "" = presence. On a
//   mismatch (Cilium's headerMatches[].mismatch): "DENY" (the default) makes
//   the rule not match; "LOG" lets the rule match and flags the request in the
//   access log; "ADD" appends the field "name: value"; "DELETE" removes every
//   field of that name (nothing when value is "": a missing field has nothing
//   to delete); "REPLACE" removes them and appends "name: value". The three
//   editing actions also flag the access log. Edits come from every rule that
//   accepts the request, in rule order, each decided on the request as it
//   arrived (Envoy applies them while it walks the rules, so a later rule
//   there sees an earlier rule's edit; a rule that did not accept edits
//   nothing here). The first accepting rule names the policy.
//   Editing actions refuse framing and hop-by-hop fields (Host,
//   Content-Length, Transfer-Encoding, Connection, ...): an edit there would
//   let the server frame the stream differently from the policy.
// - a rule applies only when the peer identity (ingress: the client's,
//   egress: the destination's) is in allowed_identities (empty = any).
// - the rules of a port are a union; a port with no entry, or with an empty
//   rule list, denies every request (fail closed).
//
// A ProxyConfig is immutable once parsed; share it as shared_ptr<const>.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bpf/shared/datapath.h"
#include "membrane/result.h"

namespace re2 {
class RE2;
}

namespace membrane::proxy {

enum class Direction : uint8_t { Ingress, Egress };
std::string_view directionName(Direction d);  // "ingress" / "egress"

// Identity of an address not in the identities map (Cilium's reserved "world").
inline constexpr uint32_t kWorldIdentity = MB_ID_WORLD;

struct HeaderField {
  std::string name, value;
};

// What a rule sees of a request. Views stay valid only during the call.
struct RequestView {
  std::string_view method, url, host;
  const HeaderField* headers = nullptr;
  size_t header_count = 0;
};

struct Listener {
  uint16_t port = 0;  // 0 = any free port (tests)
  Direction direction = Direction::Ingress;
};

// What a header_match does when the request does not carry name[: value].
enum class Mismatch : uint8_t { Deny, Log, Add, Delete, Replace };

struct HeaderMatch {
  std::string name, value;
  Mismatch mismatch = Mismatch::Deny;
};

struct CompiledRule {
  CompiledRule();
  ~CompiledRule();
  CompiledRule(CompiledRule&&) noexcept;
  CompiledRule& operator=(CompiledRule&&) noexcept;

  std::unique_ptr<re2::RE2> method, path, host;  // null = any
  std::vector<HeaderField> headers;               // value "" and !has_value = presence
  std::vector<bool> header_has_value;
  std::vector<HeaderMatch> header_matches;
  std::string policy;
  std::vector<uint32_t> allowed_identities;  // sorted; empty = any
};

struct PortPolicy {
  uint16_t port = 0;
  std::vector<CompiledRule> rules;
  bool has_edits = false;  // some rule has an ADD/DELETE/REPLACE header_match
};

struct EndpointPolicy {
  std::vector<PortPolicy> ingress, egress;
};

struct Verdict {
  bool allowed = false;
  bool header_mismatch_logged = false;  // a LOG/ADD/DELETE/REPLACE header_match did not match
  std::string_view policy;              // the matching rule's policy ("" when denied)
  // The ADD/DELETE/REPLACE header_matches that did not match, in the order to
  // apply them (MessageParser::serializeHead). They point into the config the
  // verdict came from. Empty (no allocation) unless a rule has such actions.
  std::vector<const HeaderMatch*> edits;
};

class ProxyConfig {
 public:
  // Parses and compiles 'json'. Errors name the field: "endpoints[0].ingress[1]
  // .rules[0].path: invalid regex '(': missing )".
  static Result<std::shared_ptr<const ProxyConfig>> parse(std::string_view json);
  // The empty configuration (revision 0, no listeners, everything denied).
  static std::shared_ptr<const ProxyConfig> empty();

  uint64_t revision() const { return revision_; }
  const std::vector<Listener>& listeners() const { return listeners_; }
  const std::string& source() const { return source_; }  // the JSON as given
  // Number of (endpoint, direction, port) redirects: cilium_proxy_redirects.
  size_t redirectCount() const { return redirects_; }

  // Identity of an IPv4 address (network order): the exact `identities` entry
  // (endpoints, node) first, else the longest `prefixes` entry containing it
  // (CIDR identities, as the datapath's ipcache LPM), else kWorldIdentity.
  uint32_t identityOf(in_addr_t ip) const;
  // Rules for 'pod_ip' (network order) in 'dir' on 'port'; null when none.
  const PortPolicy* find(in_addr_t pod_ip, Direction dir, uint16_t port) const;
  // Decides one request. 'pp' may be null (denied).
  static Verdict evaluate(const PortPolicy* pp, uint32_t peer_identity, const RequestView& req);

 private:
  uint64_t revision_ = 0;
  std::vector<Listener> listeners_;
  std::unordered_map<in_addr_t, EndpointPolicy> endpoints_;
  std::unordered_map<in_addr_t, uint32_t> identities_;
  // CIDR identities, longest prefix first (a linear scan: policies name few
  // prefixes, and the lookup is once per connection, not per request).
  struct Prefix {
    uint32_t network = 0;  // host order, host bits clear
    uint8_t len = 0;
    uint32_t identity = 0;
  };
  std::vector<Prefix> prefixes_;
  std::string source_;
  size_t redirects_ = 0;
};

// Case-insensitive ASCII equality of header names.
bool headerNameEquals(std::string_view a, std::string_view b);

}  // namespace membrane::proxy
