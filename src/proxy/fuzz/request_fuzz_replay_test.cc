// Replays the fuzz corpus and 2,000 deterministic mutations of it through the
// request path (the same driver the libFuzzer target uses). Any crash,
// sanitizer report or MB_CHECK failure fails the test.
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "src/proxy/fuzz/request_driver.h"

namespace membrane::proxy {
namespace {

std::vector<std::string> loadCorpus() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(MEMBRANE_PROXY_CORPUS_DIR)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    out.push_back(ss.str());
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t drive(const std::string& s) {
  return driveRequestStream(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

TEST(RequestFuzzReplay, CorpusReachesVerdicts) {
  auto corpus = loadCorpus();
  ASSERT_GE(corpus.size(), 8u);
  size_t legacy = 0, sectioned = 0;
  for (const auto& c : corpus) (c.find("\n%%\n") == std::string::npos ? legacy : sectioned) += drive(c);
  // First format (one stream, Star Wars rules): every request but the
  // smuggling, response and garbage files.
  EXPECT_EQ(legacy, 7u);
  // Config + client + upstream files: every request the client sends before
  // the connection ends (v2_denied_expect closes after its 403, v2_bad_response
  // after the broken answer to its first request; v2_connect is refused
  // before a verdict: CONNECT is not supported; v2_header_match_edits reaches
  // 3). The v2_regress_* files are fuzzer finds kept as regressions; together
  // they reach 6 verdicts.
  EXPECT_EQ(sectioned, 52u);
  EXPECT_EQ(drive(""), 0u);
}

TEST(RequestFuzzReplay, TwoThousandDeterministicMutations) {
  auto corpus = loadCorpus();
  std::mt19937 rng(20240604);  // fixed seed: the same inputs on every run
  const std::string tokens[] = {"\r\n", "\r\n\r\n", ":", " ", "Content-Length: ", "Transfer-Encoding: chunked\r\n",
                                "0\r\n\r\n", "ffffffffffffffff\r\n", "Upgrade: x\r\nConnection: upgrade\r\n",
                                "Expect: 100-continue\r\n", std::string(3000, 'A'), std::string(1, '\0'),
                                // the sections and the rule language (request_driver.h)
                                "\n%%\n", "\nR x\nm GET|POST\n", "\np /v1/(\n", "\nA 256\n", "\nM X-T t LOG\n",
                                "\nO 80\n", "@ out 10.200.0.2 10.200.0.3 80 9\n", "HTTP/1.1 200 OK\r\n\r\n",
                                "HTTP/1.1 100 Continue\r\n\r\n"};
  for (int i = 0; i < 2000; ++i) {
    std::string s = corpus[rng() % corpus.size()];
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < edits; ++k) {
      size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
      switch (rng() % 5) {
        case 0:
          if (!s.empty() && pos < s.size()) s[pos] = static_cast<char>(rng() & 0xFF);
          break;
        case 1:
          s.insert(pos, tokens[rng() % std::size(tokens)]);
          break;
        case 2:
          if (pos < s.size()) s.erase(pos, 1 + rng() % 16);
          break;
        case 3:
          s.insert(pos, s.substr(0, std::min<size_t>(s.size(), rng() % 200)));  // duplicate a prefix
          break;
        default:
          s.resize(pos);  // truncate
      }
    }
    drive(s);
  }
  SUCCEED();
}

}  // namespace
}  // namespace membrane::proxy
