#include "src/api/router.h"

#include <gtest/gtest.h>

namespace membrane::api {
namespace {

Response ok(const Request&) { return Response::json(200, {{"ok", true}}); }

TEST(RouterTest, LiteralAndCaptureAndMethods) {
  Router r;
  r.add("GET", "/v1/endpoint", ok);
  r.add("PUT", "/v1/endpoint", ok);
  r.add("GET", "/v1/endpoint/{id}", ok);
  r.add("DELETE", "/v1/endpoint/{id}", ok);
  r.add("GET", "/v1/endpoint/names", ok);

  auto m = r.match("GET", "/v1/endpoint/12%2F3");
  ASSERT_EQ(m.kind, Router::Match::Kind::Found);
  EXPECT_EQ(m.route->pattern, "/v1/endpoint/{id}");
  EXPECT_EQ(m.params.at("id"), "12/3");

  m = r.match("GET", "/v1/endpoint/names");
  ASSERT_EQ(m.kind, Router::Match::Kind::Found);
  EXPECT_EQ(m.route->pattern, "/v1/endpoint/names");

  m = r.match("POST", "/v1/endpoint/7");
  ASSERT_EQ(m.kind, Router::Match::Kind::MethodNotAllowed);
  EXPECT_EQ(m.allow, "DELETE, GET");

  m = r.match("GET", "/v1/endpoint/7/x");
  EXPECT_EQ(m.kind, Router::Match::Kind::NotFound);
  m = r.match("GET", "/v2/endpoint");
  EXPECT_EQ(m.kind, Router::Match::Kind::NotFound);
  // Trailing slash is the same path.
  m = r.match("GET", "/v1/endpoint/");
  EXPECT_EQ(m.kind, Router::Match::Kind::Found);
}

TEST(RouterTest, QueryParsing) {
  auto q = parseQuery("type=drop&type=trace&name=x%20wing&ns=a+b&flag&bad=%zz&&=v");
  EXPECT_EQ(q.count("type"), 2u);
  auto [b, e] = q.equal_range("type");
  std::vector<std::string> types;
  for (auto it = b; it != e; ++it) types.push_back(it->second);
  EXPECT_EQ(types, (std::vector<std::string>{"drop", "trace"}));
  EXPECT_EQ(q.find("name")->second, "x wing");
  EXPECT_EQ(q.find("ns")->second, "a b");
  EXPECT_EQ(q.find("flag")->second, "");
  EXPECT_EQ(q.find("bad")->second, "%zz");
  EXPECT_EQ(q.find("")->second, "v");
}

TEST(RouterTest, PercentCoding) {
  EXPECT_EQ(percentDecode("a%2fb%", false), "a/b%");
  EXPECT_EQ(percentDecode("a+b", false), "a+b");
  EXPECT_EQ(percentEncode("k8s:app=web x/y"), "k8s%3Aapp%3Dweb%20x%2Fy");
  EXPECT_EQ(percentDecode(percentEncode("ä&=?"), true), "ä&=?");
}

TEST(RouterTest, ResponseHelpers) {
  auto r = Response::error(404, "endpoint 9 not found");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, R"({"code":404,"error":"endpoint 9 not found"})");
  EXPECT_EQ(r.content_type, "application/json");
  Request req;
  req.headers["Content-Type"] = "text/plain";
  EXPECT_EQ(req.header("content-type"), "text/plain");
  EXPECT_EQ(reasonPhrase(431), "Request Header Fields Too Large");
}

}  // namespace
}  // namespace membrane::api
