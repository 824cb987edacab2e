// The invariants every parsePolicies() answer must satisfy, shared by the
// libFuzzer target and the deterministic mutation test: all or nothing, and
// whatever parses also resolves and traces without trouble.
#pragma once

#include <string_view>

#include "membrane/identity.h"
#include "membrane/policy.h"
#include "membrane/policy_json.h"
#include "membrane/policy_repository.h"
#include "membrane/policy_trace.h"

namespace membrane::policy::fuzz {

// Returns "" when the invariants hold, else what broke.
inline const char* checkInput(std::string_view text) {
  ParseResult r = parsePolicies(text, "fuzz.yaml");
  if (!r.policies.empty() && !r.diagnostics.empty()) return "policies and diagnostics at once";
  if (r.policies.empty() && r.diagnostics.empty()) return "neither policies nor diagnostics";
  for (const auto& d : r.diagnostics)
    if (d.message.empty() || d.file != "fuzz.yaml") return "diagnostic without message or file";
  if (r.policies.empty()) return "";
  // What parses must resolve, print and trace.
  static identity::IdentityAllocator* ids = [] {
    auto* a = new identity::IdentityAllocator();
    for (const char* l : {"app=web", "app=db,team=blue", "org=empire"}) (void)a->allocate(
        labels::endpointLabels("default", labels::parseLabels(l).value()));
    return a;
  }();
  const auto refs = ids->refs();
  const auto subject = labels::endpointLabels("default", labels::parseLabels("app=web").value());
  const EndpointPolicy ep = resolvePolicies(r.policies, subject, refs);
  for (const auto& [k, e] : ep.entries)
    if ((k.proto != 0 && k.dport == 0) && !ep.proto_wildcard) return "protocol-only entry without proto_wildcard";
  (void)cidrPrefixes(r.policies);
  for (const auto& p : r.policies) (void)toJson(p).dump();
  (void)formatTrace(trace(r.policies, subject, subject, refs, PortProto{80, Protocol::TCP}));
  return "";
}

}  // namespace membrane::policy::fuzz
