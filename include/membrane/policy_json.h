// JSON rendering of parsed policies, normalized as `cilium policy get` shows
// them: selector keys with their source (`any:org`), the pod namespace label
// added to namespaced selectors, derived-from labels on every rule.
#pragma once

#include <nlohmann/json.hpp>

#include "membrane/policy.h"

namespace membrane::policy {

nlohmann::json toJson(const Selector& s);
nlohmann::json toJson(const Rule& r);
// {"kind", "name", "namespace", "cookie", "labels", "rules": [...]}
nlohmann::json toJson(const Policy& p);

}  // namespace membrane::policy
