#include "membrane/labels.h"

#include <gtest/gtest.h>

namespace membrane::labels {
namespace {

TEST(Labels, ParseAndPrint) {
  auto r = parseLabels("org=empire, class=deathstar");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->toString(), "k8s:class=deathstar,k8s:org=empire");
  ASSERT_NE(r->find("k8s", "org"), nullptr);
  EXPECT_EQ(r->find("k8s", "org")->value, "empire");
  EXPECT_EQ(r->find("any", "org"), nullptr);
  EXPECT_EQ(r->findAnySource("org").size(), 1u);
}

TEST(Labels, EmptyValueSourcePrefixAndPrefixedKey) {
  auto r = parseLabels("app.kubernetes.io/name=deathstar,reserved:host,canary");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->toString(), "k8s:app.kubernetes.io/name=deathstar,k8s:canary,reserved:host");
  EXPECT_TRUE(parseLabels("").ok());
  EXPECT_TRUE(parseLabels("")->empty());
}

TEST(Labels, ValidationErrors) {
  auto expect_error = [](std::string_view in, std::string_view msg) {
    auto r = parseLabels(in);
    ASSERT_FALSE(r.ok()) << in;
    EXPECT_EQ(r.error().message, msg);
    EXPECT_EQ(r.error().code, EINVAL);
  };
  expect_error("org=@x", "label 'org=@x': value '@x' must consist of alphanumerics, '-', '_' or '.'");
  expect_error("org=-x", "label 'org=-x': value '-x' must start and end with an alphanumeric character");
  expect_error("=x", "label '=x': key must not be empty");
  expect_error("a=b,,c=d", "label '': empty label");
  expect_error("Foo.COM/x=1", "label 'Foo.COM/x=1': key prefix 'Foo.COM' must be a DNS subdomain "
                              "(lowercase alphanumerics, '-' or '.')");
  expect_error("a/b/c=1", "label 'a/b/c=1': key 'a/b/c' must contain at most one '/'");
  expect_error("org=a,org=b", "label 'org=b': key 'org' given twice");
  std::string long_value(64, 'v');
  expect_error("k=" + long_value,
               "label 'k=" + long_value + "': value '" + long_value + "' must be no more than 63 characters");
  std::string v63(63, 'v');
  EXPECT_TRUE(parseLabels("k=" + v63).ok());
}

TEST(Labels, SetIsSortedAndUniquePerSource) {
  LabelSet s;
  s.add("k8s", "org", "empire");
  s.add("k8s", "org", "alliance");  // replaces
  s.add("unspec", "org", "x");      // another source: kept
  s.add("k8s", "a", "1");
  EXPECT_EQ(s.toString(), "k8s:a=1,k8s:org=alliance,unspec:org=x");
  EXPECT_EQ(s.findAnySource("org").size(), 2u);
  EXPECT_TRUE(s.remove("k8s", "a"));
  EXPECT_FALSE(s.remove("k8s", "a"));
  EXPECT_EQ(s.size(), 2u);
}

TEST(Labels, EndpointLabels) {
  auto user = parseLabels("org=empire,class=deathstar").value();
  auto ep = endpointLabels("default", user);
  EXPECT_EQ(ep.toString(),
            "k8s:class=deathstar,k8s:io.cilium.k8s.policy.cluster=default,"
            "k8s:io.kubernetes.pod.namespace=default,k8s:org=empire");
}

TEST(Labels, Reserved) {
  EXPECT_EQ(reservedLabels(Reserved::Host).toString(), "reserved:host");
  EXPECT_EQ(reservedLabels(Reserved::RemoteNode).toString(), "reserved:remote-node");
  EXPECT_EQ(reservedLabels(Reserved::KubeApiserver).toString(), "reserved:kube-apiserver");
  EXPECT_EQ(reservedFor(reservedLabels(Reserved::World)), Reserved::World);
  EXPECT_EQ(reservedFor(parseLabels("org=x").value()), std::nullopt);
}

}  // namespace
}  // namespace membrane::labels
