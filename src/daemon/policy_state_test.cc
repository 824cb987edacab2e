// policy.json read back (parsePolicyState): a damaged or hand-edited file gives
// an error naming the field, never an exception (issue 10: it threw out of the
// agent's start).
#include "src/daemon/policy_state.h"

#include <gtest/gtest.h>

namespace membrane::daemon {
namespace {

std::string message(const Result<PolicyState>& r) { return r.ok() ? std::string("ok") : r.error().message; }

nlohmann::json goodState() {
  return nlohmann::json::parse(R"({"version": 1, "revision": 3,
    "imports": [{"source": "p.yaml", "content": "apiVersion: cilium.io/v2\n", "keys": ["CiliumNetworkPolicy/default/p"]}],
    "live": ["CiliumNetworkPolicy/default/p"], "cookies": {"CiliumNetworkPolicy/default/p": 7}})");
}

TEST(PolicyState, GoodStateIsRead) {
  auto r = parsePolicyState(goodState().dump());
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->imports.size(), 1u);
  EXPECT_EQ(r->imports[0]["source"], "p.yaml");
  EXPECT_EQ(r->imports[0]["keys"], nlohmann::json::array({"CiliumNetworkPolicy/default/p"}));
  EXPECT_EQ(r->live, (std::set<std::string>{"CiliumNetworkPolicy/default/p"}));
  EXPECT_EQ(r->cookies, (std::map<std::string, uint32_t>{{"CiliumNetworkPolicy/default/p", 7}}));
  auto empty = parsePolicyState("{}");  // also a file written before cookies were kept
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_TRUE(empty->imports.empty());
  EXPECT_TRUE(empty->cookies.empty());
}

TEST(PolicyState, DamagedStateNamesTheField) {
  auto with = [](const std::string& pointer, nlohmann::json v) {
    nlohmann::json j = goodState();
    j[nlohmann::json::json_pointer(pointer)] = std::move(v);
    return message(parsePolicyState(j.dump()));
  };
  EXPECT_EQ(with("/live/0", 7), "live[0]: expected a string, got a number");
  EXPECT_EQ(with("/live", "x"), "live: expected a list, got a string");
  EXPECT_EQ(with("/imports/0/content", 1), "imports[0].content: expected a string, got a number");
  EXPECT_EQ(with("/imports/0/source", nlohmann::json::array()), "imports[0].source: expected a string, got a list");
  EXPECT_EQ(with("/imports/0/keys/0", nullptr), "imports[0].keys[0]: expected a string, got null");
  EXPECT_EQ(with("/imports/0", "p.yaml"), "imports[0]: expected an object, got a string");
  EXPECT_EQ(with("/imports", 5), "imports: expected a list, got a number");
  EXPECT_EQ(with("/cookies/CiliumNetworkPolicy~1default~1p", "7"),
            "cookies.CiliumNetworkPolicy/default/p: expected a number (0-4294967295), got a string");
  EXPECT_EQ(with("/cookies/CiliumNetworkPolicy~1default~1p", -1),
            "cookies.CiliumNetworkPolicy/default/p: -1 is out of range (0-4294967295)");
  EXPECT_EQ(with("/cookies", nlohmann::json::array()), "cookies: expected an object, got a list");
  nlohmann::json j = goodState();
  j["imports"][0].erase("content");
  EXPECT_EQ(message(parsePolicyState(j.dump())), "imports[0]: missing field 'content'");
  EXPECT_EQ(message(parsePolicyState("[1]")), "top level: expected an object, got a list");
  EXPECT_EQ(message(parsePolicyState(R"({"imports": [{"source": )")),
            "not valid JSON (truncated or damaged?): parse error at byte 25");
}

}  // namespace
}  // namespace membrane::daemon
