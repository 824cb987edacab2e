// Validation of HTTP rule regexes (method, path, host). Cilium documents them
// as extended POSIX regexes; RE2 accepts that syntax (minus backreferences,
// which Envoy's RE2 matcher rejects as well).
#pragma once

#include <string>

namespace membrane::policy {

// Empty string if `pattern` compiles, else RE2's error text.
std::string checkHttpRegex(const std::string& pattern);

}  // namespace membrane::policy
