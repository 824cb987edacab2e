// <state-dir>/policy.json: the policy imports as the user wrote them, replayed
// on start (Agent::loadPolicyState), and the keys of the live policies.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/result.h"

namespace membrane::daemon {

struct PolicyState {
  // Each {"source", "content", "keys"} as stored (what Agent::policy_imports_ holds).
  std::vector<nlohmann::json> imports;
  std::set<std::string> live;  // "Kind/namespace/name" of the policies in force when it was written
  // "Kind/namespace/name" -> the cookie its kernel entries carry (files
  // written before cookies were kept have none).
  std::map<std::string, uint32_t> cookies;
};

// policy.json's text -> its imports and live keys. Every field checked:
// EINVAL naming it ("imports[1].content: expected a string, got a number"),
// never an exception. Pure, thread-safe.
Result<PolicyState> parsePolicyState(std::string_view text);

}  // namespace membrane::daemon
