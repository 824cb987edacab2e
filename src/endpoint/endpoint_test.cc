#include "src/endpoint/endpoint.h"

#include <gtest/gtest.h>

namespace membrane::endpoint {

TEST(Endpoint, StateRoundTrip) {
  Endpoint ep;
  ep.id = 7;
  ep.name = "xwing";
  ep.ns = "default";
  ep.user_labels.add("k8s", "org", "alliance");
  ep.user_labels.add("k8s", "class", "xwing");
  ep.labels = labels::endpointLabels(ep.ns, ep.user_labels);
  ep.identity = 257;
  ep.ipv4 = (10u << 24) | (200u << 16) | 7;
  ep.netns_name = "membrane_default_xwing";
  ep.host_ifname = "lxc0123456789a";
  ep.created = "2026-11-24T19:00:00Z";
  auto back = fromStateJson(toStateJson(ep));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->id, 7u);
  EXPECT_EQ(back->name, "xwing");
  EXPECT_EQ(back->labels, ep.labels);
  EXPECT_EQ(back->identity, 257u);
  EXPECT_EQ(back->ipv4, ep.ipv4);
  EXPECT_EQ(back->state, kStateRestoring);
  auto api = toApiJson(ep);
  EXPECT_EQ(api["ipv4"], "10.200.0.7");
  EXPECT_EQ(api["labels"][0], "k8s:class=xwing");
}

TEST(Endpoint, BadStateIsAnError) {
  EXPECT_FALSE(fromStateJson(nlohmann::json::object()).ok());
  EXPECT_FALSE(fromStateJson(nlohmann::json{{"id", "x"}}).ok());
}

TEST(Endpoint, ValidateName) {
  EXPECT_TRUE(validateName("pod name", "deathstar-1").ok());
  auto e = validateName("pod name", "Deathstar");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("pod name 'Deathstar' contains 'D'"), std::string::npos);
  EXPECT_FALSE(validateName("pod name", "-x").ok());
  EXPECT_FALSE(validateName("pod name", "").ok());
  EXPECT_FALSE(validateName("pod name", std::string(64, 'a')).ok());
  EXPECT_FALSE(validateName("pod name", "a_b").ok());
}

}  // namespace membrane::endpoint
