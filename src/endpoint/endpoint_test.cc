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

namespace membrane::endpoint {
namespace {

TEST(NamedPorts, ParseValidateAndRoundTrip) {
  auto j = nlohmann::json::parse(R"([{"name":"http","port":80,"protocol":"TCP"},{"name":"dns","port":53,"protocol":"UDP"},
                                     {"name":"metrics","port":9090}])");
  auto np = parseNamedPorts(j);
  ASSERT_TRUE(np.ok()) << np.error().message;
  EXPECT_EQ(*np, (std::vector<policy::NamedPort>{{"http", 80, 6}, {"dns", 53, 17}, {"metrics", 9090, 6}}));
  EXPECT_EQ(namedPortsJson(*np)[2].dump(), R"({"name":"metrics","port":9090,"protocol":"TCP"})");

  auto err = [](const char* text) {
    auto r = parseNamedPorts(nlohmann::json::parse(text));
    return r.ok() ? std::string("ok") : r.error().message;
  };
  EXPECT_EQ(err(R"([{"name":"http","port":0}])"), "named_ports[0].port: 0 is out of range (1-65535)");
  EXPECT_EQ(err(R"([{"name":"http","port":65536}])"), "named_ports[0].port: 65536 is out of range (1-65535)");
  EXPECT_EQ(err(R"([{"name":"http","port":80},{"name":"http","port":81}])"),
            "named_ports[1].name: 'http' is given twice (port names are unique per pod)");
  EXPECT_EQ(err(R"([{"name":"http","port":80,"protocol":"ICMP"}])"),
            "named_ports[0].protocol: 'ICMP' must be TCP, UDP or SCTP");
  EXPECT_EQ(err(R"([{"name":"http","port":80,"host":1}])"), "named_ports[0]: unknown field 'host' (name, port, protocol)");
  EXPECT_EQ(err(R"([{"name":"Web_Port","port":80}])"),
            "named_ports[0].name: port name 'Web_Port' is invalid: only a-z, 0-9 and '-' are allowed (IANA_SVC_NAME: "
            "1-15 characters a-z, 0-9, '-', at least one letter, no '-' at either end, no '--')");
  EXPECT_EQ(err(R"({"http":80})"),
            R"(named_ports must be a list (expected [{"name": "http", "port": 80, "protocol": "TCP"}, ...]))");
}

TEST(NamedPorts, SurviveTheStateFile) {
  Endpoint ep;
  ep.id = 3;
  ep.name = "web";
  ep.ns = "default";
  ep.ipv4 = 0x0a000005;
  ep.named_ports = {{"http", 8080, 6}};
  auto back = fromStateJson(toStateJson(ep));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->named_ports, ep.named_ports);
}

}  // namespace
}  // namespace membrane::endpoint
