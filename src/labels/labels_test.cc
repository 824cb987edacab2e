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
            "k8s:class=deathstar,k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default,"
            "k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=default,"
            "k8s:io.kubernetes.pod.namespace=default,k8s:org=empire");
  EXPECT_EQ(endpointLabels("default", user, LabelSet()), ep);
}

// Every pod has a service account ("default" unless one is given), so
// Cilium's service-account selectors never miss a pod.
TEST(Labels, EndpointLabelsCarryTheServiceAccount) {
  auto plain = endpointLabels("ns", parseLabels("app=a").value());
  ASSERT_NE(plain.find("k8s", "io.cilium.k8s.policy.serviceaccount"), nullptr);
  EXPECT_EQ(plain.find("k8s", "io.cilium.k8s.policy.serviceaccount")->value, "default");
  auto given = endpointLabels("ns", parseLabels("app=a,io.cilium.k8s.policy.serviceaccount=luke").value());
  EXPECT_EQ(given.find("k8s", "io.cilium.k8s.policy.serviceaccount")->value, "luke");
  EXPECT_EQ(given.size(), plain.size());
}

TEST(Labels, EndpointLabelsWithNamespaceLabels) {
  auto user = parseLabels("app=a").value();
  auto ns = parseLabels("team=blue,kubernetes.io/metadata.name=spoofed").value();
  auto ep = endpointLabels("x", user, ns);
  EXPECT_EQ(ep.toString(),
            "k8s:app=a,k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=x,"
            "k8s:io.cilium.k8s.namespace.labels.team=blue,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=default,"
            "k8s:io.kubernetes.pod.namespace=x");
}

TEST(Labels, CidrIdentityLabels) {
  auto l = cidrIdentityLabels("10.1.0.0/16");
  ASSERT_EQ(l.size(), 18u);  // /0 ... /16 and reserved:world
  EXPECT_NE(l.find("cidr", "10.1.0.0/16"), nullptr);
  EXPECT_NE(l.find("cidr", "10.0.0.0/8"), nullptr);
  EXPECT_NE(l.find("cidr", "10.0.0.0/15"), nullptr);
  EXPECT_NE(l.find("cidr", "8.0.0.0/5"), nullptr);
  EXPECT_NE(l.find("cidr", "0.0.0.0/0"), nullptr);
  EXPECT_NE(l.find("reserved", "world"), nullptr);
  EXPECT_EQ(l.find("cidr", "10.1.0.0/17"), nullptr);
  EXPECT_EQ(cidrIdentityLabels("0.0.0.0/0").toString(), "cidr:0.0.0.0/0,reserved:world");
  EXPECT_EQ(cidrIdentityLabels("192.168.1.7/32").size(), 34u);
  EXPECT_EQ(cidrLabel("10.0.0.0/8").toString(), "cidr:10.0.0.0/8");
  EXPECT_EQ(cidrIdentityLabels("garbage").toString(), "reserved:world");
  EXPECT_EQ(cidrIdentityLabels("10.0.0.0/33").toString(), "reserved:world");
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
