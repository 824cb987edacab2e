// Helpers shared by the policy tests.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "membrane/policy.h"

namespace membrane::policy::testing {

inline std::string readSourceFile(const std::string& rel) {
  std::ifstream in(std::string(MEMBRANE_SOURCE_DIR) + "/" + rel);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string allDiagnostics(const ParseResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += formatDiagnostic(d) + "\n";
  return out;
}

}  // namespace membrane::policy::testing
