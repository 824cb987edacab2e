#include <gtest/gtest.h>

#include <map>

#include "membrane/policy_repository.h"
#include "src/policy/test_util.h"

namespace membrane::policy {
namespace {

using testing::allDiagnostics;

std::vector<Policy> parse(const std::string& text) {
  auto r = parsePolicies(text, "t.yaml");
  EXPECT_TRUE(r.ok()) << allDiagnostics(r);
  return r.policies;
}

std::string cnp(const std::string& name, const std::string& ns, const std::string& org) {
  return "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: " + name + ", namespace: " + ns +
         "}\nspec:\n  endpointSelector: {matchLabels: {org: " + org + "}}\n  ingress: [{}]\n";
}

// A restarted agent reserves the cookies it persisted before replaying its
// imports: the policies get them back (whatever the import order), a held
// policy's cookie names it without it being loaded, and no new policy takes it.
TEST(Repository, ReservedCookiesAreKeptAndNeverHandedOut) {
  Repository repo;
  ASSERT_TRUE(repo.reserveCookie("CiliumNetworkPolicy/ns2/b", 1).ok());
  ASSERT_TRUE(repo.reserveCookie("CiliumNetworkPolicy/default/held", 2).ok());
  ASSERT_TRUE(repo.reserveCookie("CiliumClusterwideNetworkPolicy//cw", 5).ok());
  EXPECT_TRUE(repo.reserveCookie("CiliumNetworkPolicy/ns2/b", 1).ok());  // again: a no-op
  EXPECT_EQ(repo.policyForCookie(2), "default/held");
  EXPECT_EQ(repo.policyForCookie(5), "cw");

  ASSERT_TRUE(repo.import(parse(cnp("a", "default", "empire") + "---\n" + cnp("b", "ns2", "empire"))).ok());
  EXPECT_EQ(repo.policies()[0].cookie, 3u);  // new: the lowest cookie nobody holds
  EXPECT_EQ(repo.policies()[1].cookie, 1u);  // reserved
  EXPECT_EQ(repo.cookies(), (std::map<std::string, uint32_t>{{"CiliumClusterwideNetworkPolicy//cw", 5},
                                                             {"CiliumNetworkPolicy/default/a", 3},
                                                             {"CiliumNetworkPolicy/default/held", 2},
                                                             {"CiliumNetworkPolicy/ns2/b", 1}}));

  auto code = [&](const std::string& key, uint32_t cookie) {
    auto st = repo.reserveCookie(key, cookie);
    return st.ok() ? 0 : st.error().code;
  };
  EXPECT_EQ(code("CiliumNetworkPolicy/ns2/b", 9), EEXIST);    // the key has another
  EXPECT_EQ(code("CiliumNetworkPolicy/ns3/c", 2), EEXIST);    // the cookie belongs to another
  EXPECT_EQ(code("CiliumNetworkPolicy/ns3/c", 0), EINVAL);
  EXPECT_EQ(code("ns3/c", 9), EINVAL);
  EXPECT_EQ(code("CiliumNetworkPolicy/ns3/", 9), EINVAL);
  EXPECT_EQ(code("CiliumNetworkPolicy/a/b/c", 9), EINVAL);
  EXPECT_EQ(repo.cookies().size(), 4u);  // nothing changed
  EXPECT_EQ(repo.policyForCookie(9), "");
}

TEST(Repository, ImportReplaceRemove) {
  Repository repo;
  EXPECT_EQ(repo.revision(), 1u);
  auto r1 = repo.import(parse(cnp("a", "default", "empire") + "---\n" + cnp("b", "ns2", "empire")));
  ASSERT_TRUE(r1.ok()) << r1.error().message;
  EXPECT_EQ(r1->revision, 2u);
  EXPECT_EQ(r1->names, (std::vector<std::string>{"default/a", "ns2/b"}));
  const uint32_t cookie_a = repo.policies()[0].cookie, cookie_b = repo.policies()[1].cookie;
  EXPECT_NE(cookie_a, 0u);
  EXPECT_NE(cookie_a, cookie_b);

  // Replacing keeps the cookie and the position; one revision per import.
  auto r2 = repo.import(parse(cnp("a", "default", "alliance")));
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->revision, 3u);
  ASSERT_EQ(repo.policies().size(), 2u);
  EXPECT_EQ(repo.policies()[0].cookie, cookie_a);
  EXPECT_TRUE(repo.policies()[0].rules[0].endpoint_selector.constrains("any", "org"));
  auto alliance = labels::endpointLabels("default", labels::parseLabels("org=alliance").value());
  EXPECT_EQ(repo.selectingPolicies(alliance), std::vector<std::string>{"default/a"});

  EXPECT_EQ(repo.policyForCookie(cookie_b), "ns2/b");
  EXPECT_EQ(repo.policyForCookie(12345), "");

  auto gone = repo.remove("b", "ns2");
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(*gone, std::vector<std::string>{"ns2/b"});
  EXPECT_EQ(repo.revision(), 4u);
  EXPECT_EQ(repo.policyForCookie(cookie_b), "ns2/b");  // old events still attribute
  auto missing = repo.remove("b", "ns2");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_EQ(missing.error().message, "policy ns2/b not found");
  EXPECT_EQ(repo.revision(), 4u);

  // A re-imported policy gets a fresh cookie only if it never existed.
  ASSERT_TRUE(repo.import(parse(cnp("c", "default", "x"))).ok());
  EXPECT_NE(repo.policies()[1].cookie, cookie_b);
  EXPECT_EQ(repo.removeAll(), (std::vector<std::string>{"default/a", "default/c"}));
  EXPECT_EQ(repo.revision(), 6u);
  EXPECT_TRUE(repo.removeAll().empty());
  EXPECT_EQ(repo.revision(), 6u);
}

TEST(Repository, ImportIsAllOrNothing) {
  Repository repo;
  // Two definitions from two inputs (one input with both is refused by the parser already).
  auto twice = parse(cnp("a", "default", "x"));
  for (auto& p : parse(cnp("a", "default", "y"))) twice.push_back(std::move(p));
  auto dup = repo.import(std::move(twice));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().message, "import: CiliumNetworkPolicy default/a is given twice");
  EXPECT_TRUE(repo.policies().empty());
  EXPECT_EQ(repo.revision(), 1u);
  EXPECT_FALSE(repo.import({}).ok());
}

}  // namespace
}  // namespace membrane::policy

namespace membrane::policy {
namespace {

TEST(Repository, RemoveByMetadataLabels) {
  auto labelled = [](const std::string& name, const std::string& labels) {
    return "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: " + name +
           ", namespace: default, labels: {" + labels + "}}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n";
  };
  Repository repo;
  auto r = parsePolicies(labelled("a", "team: red, env: prod") + "---\n" + labelled("b", "team: red, env: dev") +
                             "---\n" + labelled("c", "team: blue"),
                         "t.yaml");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(repo.import(r.policies).ok());
  EXPECT_EQ(repo.revision(), 2u);

  // No match: error, nothing changes.
  auto none = repo.removeByLabels(labels::parseLabels("team=green").value());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ENOENT);
  EXPECT_EQ(none.error().message, "no policy has the labels k8s:team=green (see 'membrane policy get')");
  EXPECT_EQ(repo.revision(), 2u);
  EXPECT_FALSE(repo.removeByLabels(labels::LabelSet()).ok());

  // Every given label must match.
  auto gone = repo.removeByLabels(labels::parseLabels("team=red,env=dev").value());
  ASSERT_TRUE(gone.ok()) << gone.error().message;
  EXPECT_EQ(*gone, (std::vector<std::string>{"default/b"}));
  EXPECT_EQ(repo.revision(), 3u);
  gone = repo.removeByLabels(labels::parseLabels("team=red").value());
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(*gone, (std::vector<std::string>{"default/a"}));
  ASSERT_EQ(repo.policies().size(), 1u);
  EXPECT_EQ(repo.policies()[0].name, "c");
}

}  // namespace
}  // namespace membrane::policy
