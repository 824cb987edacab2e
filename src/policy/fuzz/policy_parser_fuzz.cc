// libFuzzer target for the policy parser (issue 3, "Bad input"). Built only
// with -DMEMBRANE_FUZZ=ON (clang, ASan; libFuzzer), see
// src/policy/CMakeLists.txt. Seed corpus: src/policy/fuzz/corpus/.
//   build/bin/policy_parser_fuzz -max_total_time=60 /tmp/new-corpus src/policy/fuzz/corpus
#include <cstdio>
#include <cstdlib>

#include "src/policy/fuzz/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* broken = membrane::policy::fuzz::checkInput(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (*broken != '\0') {
    std::fprintf(stderr, "policy parser invariant broken: %s\n", broken);
    std::abort();
  }
  return 0;
}
