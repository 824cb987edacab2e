// The fuzz smoke test of the normal build (no clang needed): replays the seed
// corpus and 2,000 deterministic mutations of it (byte flips, truncations,
// insertions of YAML punctuation, deletions, duplicated lines) through
// parsePolicies and checks the invariants of check.h: no crash, all or
// nothing. With -DMEMBRANE_FUZZ=ON the ctest of the same name runs libFuzzer
// instead.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "src/policy/fuzz/check.h"

namespace membrane::policy::fuzz {
namespace {

std::vector<std::string> corpus() {
  std::vector<std::filesystem::path> paths;
  for (const auto& e : std::filesystem::directory_iterator(std::string(MEMBRANE_SOURCE_DIR) + "/src/policy/fuzz/corpus"))
    paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());  // deterministic order
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    out.push_back(ss.str());
  }
  return out;
}

TEST(PolicyParserFuzzSmoke, CorpusReplays) {
  auto seeds = corpus();
  ASSERT_GE(seeds.size(), 8u);
  size_t ok = 0;
  for (const auto& s : seeds) {
    EXPECT_STREQ(checkInput(s), "") << s;
    ok += parsePolicies(s, "c.yaml").ok();
  }
  EXPECT_GE(ok, 5u);  // the good seeds parse
}

TEST(PolicyParserFuzzSmoke, DeterministicMutations) {
  const auto seeds = corpus();
  std::mt19937 rng(20240601);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  static const char* kPunct[] = {":", "-", "- ", "[", "]", "{", "}", ",", "\n", " ", "  ", "#", "&a ", "*a", "!!str ",
                                 "|", ">", "'", "\"", "? ", "---\n", "...\n", "\t", "%YAML 1.2\n", "<<: *a\n", "\\u0000",
                                 "0", "-1", "99999999999", "~", "null", "[]", "{}"};
  size_t parsed = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string s = seeds[pick(seeds.size())];
    const size_t n = 1 + pick(4);
    for (size_t m = 0; m < n; ++m) {
      const size_t pos = s.empty() ? 0 : pick(s.size() + 1);
      switch (pick(5)) {
        case 0:  // flip one bit
          if (!s.empty()) s[std::min(pos, s.size() - 1)] ^= static_cast<char>(1u << pick(8));
          break;
        case 1:  // truncate
          s.resize(pos);
          break;
        case 2:  // insert YAML punctuation
          s.insert(pos, kPunct[pick(std::size(kPunct))]);
          break;
        case 3:  // delete a range
          s.erase(pos, pick(16));
          break;
        case 4: {  // duplicate the line at pos
          size_t b = s.rfind('\n', pos == 0 ? 0 : pos - 1);
          b = b == std::string::npos ? 0 : b + 1;
          size_t e = s.find('\n', pos);
          e = e == std::string::npos ? s.size() : e + 1;
          if (b < e) s.insert(b, s.substr(b, e - b));
          break;
        }
      }
    }
    const char* broken = checkInput(s);
    ASSERT_STREQ(broken, "") << "mutation " << i << ":\n" << s;
    parsed += parsePolicies(s, "m.yaml").ok();
  }
  // Mutations must exercise both outcomes.
  EXPECT_GT(parsed, 40u);
  EXPECT_LT(parsed, 1900u);
  RecordProperty("parsed", std::to_string(parsed));
}

TEST(PolicyParserFuzzSmoke, PathologicalInputs) {
  for (const std::string& s : {std::string(100000, '['), std::string(100000, '{'), std::string(50000, '-') + " x",
                               std::string("a: &a [*a]\n"), std::string("\0\0\0", 3), std::string(200000, ' '),
                               std::string("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n"
                                           "spec:\n  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: "
                                           "[{port: 1, endPort: 4096}, {port: 61440, endPort: 65535}]}]\n")})
    EXPECT_STREQ(checkInput(s), "") << s.substr(0, 80);
}

}  // namespace
}  // namespace membrane::policy::fuzz
