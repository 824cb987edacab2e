// The conformance suite's expectation DSL and truth tables, without pods.
#include "tests/conformance/matrix.h"

#include <gtest/gtest.h>

namespace membrane::testing::conformance {
namespace {

std::vector<PodName> pods() { return {{"x", "a"}, {"x", "b"}, {"y", "a"}}; }

TEST(ConformanceMatrix, PatternsMatchNamespacePodAndPort) {
  PodName xa{"x", "a"};
  EXPECT_TRUE(xa.is("x/a"));
  EXPECT_TRUE(xa.is("x/*"));
  EXPECT_TRUE(xa.is("*/a"));
  EXPECT_TRUE(xa.is("*"));
  EXPECT_FALSE(xa.is("y/*"));
  EXPECT_FALSE(xa.is("*/b"));
  Flow f{xa, xa, "tcp/80"};
  EXPECT_TRUE(f.on("tcp/80"));
  EXPECT_TRUE(f.on("tcp/*"));
  EXPECT_TRUE(f.on("*/80"));
  EXPECT_FALSE(f.on("udp/80"));
  EXPECT_FALSE(f.on("tcp/81"));
  EXPECT_FALSE(f.on("icmp"));
  EXPECT_TRUE((Flow{xa, xa, "icmp"}.on("icmp")));
  EXPECT_FALSE((Flow{xa, xa, "icmp"}.on("tcp/*")));
}

TEST(ConformanceMatrix, SelfIsAlwaysAllowed) {
  auto m = Matrix::expected(pods(), {"tcp/80"}, [](const Flow&) { return false; });
  EXPECT_TRUE(m.get({"x", "a"}, {"x", "a"}, "tcp/80"));
  EXPECT_FALSE(m.get({"x", "a"}, {"x", "b"}, "tcp/80"));
  EXPECT_EQ(m.countDenied(), 6u);
}

TEST(ConformanceMatrix, ExplainPrintsExpectedObservedAndComparison) {
  auto want = Matrix::expected(pods(), {"tcp/80", "udp/81"}, [](const Flow& f) { return !f.toIs("x/a"); });
  auto got = Matrix::expected(pods(), {"tcp/80", "udp/81"}, [](const Flow& f) { return !f.toIs("x/a"); });
  EXPECT_TRUE(want.diff(got).empty());
  EXPECT_EQ(Matrix::explain(want, got), "");
  got.set({"y", "a"}, {"x", "a"}, "udp/81", true);
  auto d = want.diff(got);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].from.str(), "y/a");
  EXPECT_EQ(d[0].to.str(), "x/a");
  EXPECT_EQ(d[0].port, "udp/81");
  EXPECT_EQ(Matrix::explain(want, got),
            "Expected udp/81 (rows = from, cols = to; . allowed, X denied)\n"
            "      x/a x/b y/a \n"
            "x/a   .   .   .   \n"
            "x/b   X   .   .   \n"
            "y/a   X   .   .   \n"
            "Observed udp/81 (rows = from, cols = to; . allowed, X denied)\n"
            "      x/a x/b y/a \n"
            "x/a   .   .   .   \n"
            "x/b   X   .   .   \n"
            "y/a   .   .   .   \n"
            "Comparison udp/81 (. same, X differs)\n"
            "      x/a x/b y/a \n"
            "x/a   .   .   .   \n"
            "x/b   .   .   .   \n"
            "y/a   X   .   .   \n"
            "\n");
}

TEST(ConformanceMatrix, MissingObservationIsADifference) {
  auto want = Matrix::expected(pods(), {"tcp/80"}, [](const Flow&) { return true; });
  Matrix got(pods(), {"tcp/80"});
  EXPECT_EQ(want.diff(got).size(), 9u);
  EXPECT_NE(Matrix::explain(want, got).find("?"), std::string::npos);
}

}  // namespace
}  // namespace membrane::testing::conformance
