#include "src/proxy/http_path.h"

#include <gtest/gtest.h>

namespace membrane::proxy {
namespace {

std::string norm(std::string_view raw, EscapedSlashes e = EscapedSlashes::Reject) {
  TargetNormal n;
  std::string_view why = normalizeTarget(raw, e, &n);
  if (!why.empty()) return "ERR";
  return n.absolute ? "abs:" + n.authority + n.target : n.target;
}

TEST(NormalizeTarget, DotSegmentsAreResolvedAsServersResolveThem) {
  EXPECT_EQ(norm("/public/../admin/x"), "/admin/x");
  EXPECT_EQ(norm("/public/./a/./b"), "/public/a/b");
  EXPECT_EQ(norm("/a/b/.."), "/a/");
  EXPECT_EQ(norm("/a/b/."), "/a/b/");
  EXPECT_EQ(norm("/.."), "/");
  EXPECT_EQ(norm("/../../etc/passwd"), "/etc/passwd");
  EXPECT_EQ(norm("/a/..b/c"), "/a/..b/c");  // not a dot segment
  EXPECT_EQ(norm("/a/.../c"), "/a/.../c");
  EXPECT_EQ(norm("/"), "/");
}

TEST(NormalizeTarget, EncodedUnreservedCharactersAreDecodedOthersUpperCased) {
  EXPECT_EQ(norm("/public/%2e%2e/admin/x"), "/admin/x");
  EXPECT_EQ(norm("/public/%2E./admin"), "/admin");
  EXPECT_EQ(norm("/%41%62c%7E"), "/Abc~");
  EXPECT_EQ(norm("/a%20b%3f"), "/a%20b%3F");
  EXPECT_EQ(norm("/a%252e%252e/x"), "/a%252e%252e/x");  // one decode only: "%25" is not unreserved
  EXPECT_EQ(norm("/a%zz"), "ERR");
  EXPECT_EQ(norm("/a%4"), "ERR");
  EXPECT_EQ(norm("/a%"), "ERR");
  EXPECT_EQ(norm("/a%00b"), "ERR");
}

TEST(NormalizeTarget, SlashesMergeAndBackslashesAreSlashes) {
  EXPECT_EQ(norm("//admin///x"), "/admin/x");
  EXPECT_EQ(norm("/public\\..\\admin"), "/admin");
  EXPECT_EQ(norm("/a//..//b"), "/b");
}

TEST(NormalizeTarget, EscapedSlashesFollowTheConfiguredAction) {
  EXPECT_EQ(norm("/public%2F..%2Fadmin"), "ERR");
  EXPECT_EQ(norm("/a%5cb"), "ERR");
  EXPECT_EQ(norm("/public%2F..%2Fadmin", EscapedSlashes::Keep), "/public%2F..%2Fadmin");
  EXPECT_EQ(norm("/a%5cb", EscapedSlashes::Keep), "/a%5Cb");
  EXPECT_EQ(norm("/public%2F..%2Fadmin", EscapedSlashes::UnescapeAndForward), "/admin");
  EXPECT_EQ(norm("/a%5Cb", EscapedSlashes::UnescapeAndForward), "/a/b");
}

TEST(NormalizeTarget, QueryIsKeptAsSentAndNotNormalised) {
  EXPECT_EQ(norm("/a/../b?x=/../y&z=%2e"), "/b?x=/../y&z=%2e");
  EXPECT_EQ(norm("/a?"), "/a?");
}

TEST(NormalizeTarget, PathParametersOnDotSegmentsAreRefused) {
  EXPECT_EQ(norm("/public/..;/admin"), "ERR");
  EXPECT_EQ(norm("/public/.;x/admin"), "ERR");
  EXPECT_EQ(norm("/public/%2e%2e;/admin"), "ERR");
  EXPECT_EQ(norm("/a;jsessionid=1/b"), "/a;jsessionid=1/b");
}

TEST(NormalizeTarget, FormsOtherThanOriginAndHttpAbsoluteAreRefused) {
  EXPECT_EQ(norm("*"), "ERR");
  EXPECT_EQ(norm("db.internal:5432"), "ERR");
  EXPECT_EQ(norm("https://a/b"), "ERR");
  EXPECT_EQ(norm("http:///b"), "ERR");
  EXPECT_EQ(norm("/a#frag"), "ERR");
  EXPECT_EQ(norm("/a\x7f"), "ERR");
  EXPECT_EQ(norm("/a\xc3\xa9"), "ERR");
  EXPECT_EQ(norm("http://Api.Example:80/a/../b?q"), "abs:Api.Example:80/b?q");
  EXPECT_EQ(norm("HTTP://h"), "abs:h/");
  EXPECT_EQ(norm("http://h?q=1"), "abs:h/?q=1");
  EXPECT_EQ(norm("http://u@h/"), "ERR");  // userinfo: no authority of a Host looks like that
}

TEST(NormalizeTarget, ResultIsAFixedPoint) {
  for (const char* raw : {"/a/./b/../c//d", "/%2e%2e/x", "/a%20b", "/a\\b/..", "/x?y"}) {
    std::string once = norm(raw);
    EXPECT_EQ(norm(once), once) << raw;
  }
}

TEST(EscapedSlashes, NamesRoundTrip) {
  for (auto e : {EscapedSlashes::Reject, EscapedSlashes::Keep, EscapedSlashes::UnescapeAndForward}) {
    EscapedSlashes back{};
    ASSERT_TRUE(parseEscapedSlashes(escapedSlashesName(e), &back));
    EXPECT_EQ(back, e);
  }
  EscapedSlashes x{};
  EXPECT_FALSE(parseEscapedSlashes("unescape-and-redirect", &x));
}

}  // namespace
}  // namespace membrane::proxy
