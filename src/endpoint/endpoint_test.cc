#include "src/endpoint/endpoint.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "src/endpoint/state_store.h"

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
  EXPECT_EQ(back->state, EndpointState::Restoring);
  auto api = toApiJson(ep);
  EXPECT_EQ(api["ipv4"], "10.200.0.7");
  EXPECT_EQ(api["labels"][0], "k8s:class=xwing");
}

// A runtime's container (membrane-cni): the attachment and the runtime's
// namespace path survive the state file; files without "cni" (agents before
// it) are membrane's own pods.
TEST(Endpoint, CniAttachmentSurvivesTheStateFile) {
  Endpoint ep;
  ep.id = 9;
  ep.name = "web-1";
  ep.ns = "default";
  ep.ipv4 = (10u << 24) | (200u << 16) | 9;
  ep.netns_path = "/run/netns/netns-4f1c";
  ep.host_ifname = "lxc0123456789b";
  ep.cni = CniAttachment{"c0ffee", "eth0", "membrane"};
  nlohmann::json j = toStateJson(ep);
  EXPECT_EQ(j["cni"].dump(), R"({"container_id":"c0ffee","ifname":"eth0","network":"membrane"})");
  auto back = fromStateJson(j);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->cni, ep.cni);
  EXPECT_EQ(back->netns_name, "");
  EXPECT_EQ(back->netns_path, "/run/netns/netns-4f1c");
  EXPECT_EQ(toApiJson(ep)["cni"], j["cni"]);

  j["cni"].erase("ifname");
  auto damaged = fromStateJson(j);
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.error().message, "cni: missing field 'ifname'");

  Endpoint own = ep;
  own.cni.reset();
  nlohmann::json old_file = toStateJson(own);
  old_file.erase("cni");
  old_file.erase("netns_path");
  auto restored = fromStateJson(old_file);
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_FALSE(restored->cni.has_value());
  EXPECT_TRUE(toApiJson(own)["cni"].is_null());
}

// Issue 10: endpoint states are an enum; the API (and the
// cilium_endpoint_state label) spell them exactly as Cilium does.
TEST(Endpoint, StatesRoundTripThroughCiliumsWords) {
  const std::vector<std::pair<EndpointState, std::string>> all = {
      {EndpointState::Creating, "creating"},         {EndpointState::WaitingForIdentity, "waiting-for-identity"},
      {EndpointState::Regenerating, "regenerating"}, {EndpointState::Ready, "ready"},
      {EndpointState::Disconnecting, "disconnecting"}, {EndpointState::Restoring, "restoring"},
      {EndpointState::NotReady, "not-ready"}};
  for (const auto& [state, word] : all) {
    EXPECT_EQ(toString(state), word);
    auto back = parseEndpointState(word);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, state) << word;
    Endpoint ep;
    ep.state = state;
    EXPECT_EQ(toApiJson(ep)["state"], word);
  }
  auto bad = parseEndpointState("Ready");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, EINVAL);
  EXPECT_EQ(bad.error().message,
            "unknown endpoint state 'Ready' (expected creating, waiting-for-identity, regenerating, ready, "
            "disconnecting, restoring or not-ready)");
  EXPECT_FALSE(parseEndpointState("").ok());
}

TEST(Endpoint, BadStateIsAnError) {
  EXPECT_FALSE(fromStateJson(nlohmann::json::object()).ok());
  EXPECT_FALSE(fromStateJson(nlohmann::json{{"id", "x"}}).ok());
}

// A damaged or hand-edited state file (issue 10): the error names the field,
// nothing throws, whatever the shape.
TEST(Endpoint, DamagedStateNamesTheField) {
  Endpoint ep;
  ep.id = 7;
  ep.name = "xwing";
  ep.ns = "default";
  ep.user_labels.add("k8s", "org", "alliance");
  ep.identity = 257;
  ep.ipv4 = (10u << 24) | (200u << 16) | 7;
  ep.netns_name = "membrane_default_xwing";
  ep.host_ifname = "lxc0123456789a";
  const nlohmann::json good = toStateJson(ep);
  auto with = [&](const char* key, nlohmann::json v) {
    nlohmann::json j = good;
    j[key] = std::move(v);
    return fromStateJson(j);
  };
  auto message = [](const Result<Endpoint>& r) { return r.ok() ? std::string("ok") : r.error().message; };
  EXPECT_EQ(message(with("name", 42)), "name: expected a string, got a number");
  EXPECT_EQ(message(with("id", "7")), "id: expected a number (0-4294967295), got a string");
  EXPECT_EQ(message(with("id", -1)), "id: -1 is out of range (0-4294967295)");
  EXPECT_EQ(message(with("user_labels", {{"org", 1}})), "user_labels.org: expected a string, got a number");
  EXPECT_EQ(message(with("user_labels", nlohmann::json::array())), "user_labels: expected an object, got a list");
  EXPECT_EQ(message(with("health", "yes")), "health: expected true or false, got a string");
  EXPECT_EQ(message(with("audit_mode", 1)), "audit_mode: expected true, false or null, got a number");
  EXPECT_EQ(message(with("ipv4", nullptr)), "ipv4: expected a string, got null");
  nlohmann::json missing = good;
  missing.erase("netns_name");
  EXPECT_EQ(message(fromStateJson(missing)), "top level: missing field 'netns_name'");
  EXPECT_EQ(message(fromStateJson(nlohmann::json::array({1}))), "top level: expected an object, got a list");
  EXPECT_EQ(message(fromStateJson(nlohmann::json("x"))), "top level: expected an object, got a string");
  EXPECT_EQ(message(fromStateJson(good)), "ok");
}

// The file readers name the file first; truncated JSON is an error, not an exception.
TEST(Endpoint, DamagedStateFilesNameTheFile) {
  char tmpl[] = "/tmp/membrane-state-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = dir + "/" + name;
    EXPECT_TRUE(writeFileAtomic(path, text).ok());
    return path;
  };
  auto message = [](const auto& r) { return r.ok() ? std::string("ok") : r.error().message; };
  const std::string p1 = write("1.json", R"({"id": 1, "name": "a", "namespace": "default", "user_labels": {}, )"
                                         R"("identity": 300, "ipv4": "10.0.0.1", "netns_name": 5, "host_ifname": "lxc1"})");
  EXPECT_EQ(message(readEndpointState(p1)), p1 + ": netns_name: expected a string, got a number");
  const std::string p2 = write("2.json", R"({"id": 1, "name": )");
  EXPECT_EQ(message(readEndpointState(p2)),
            p2 + ": not valid JSON (truncated or damaged?): parse error at byte 19");
  const std::string p3 = write("3.json", "");
  EXPECT_EQ(message(readEndpointState(p3)), p3 + ": not valid JSON (truncated or damaged?): parse error at byte 1");
  const std::string p4 = write("4.json", "[]");
  EXPECT_EQ(message(readEndpointState(p4)), p4 + ": top level: expected an object, got a list");
  // A number no double holds: nlohmann throws out_of_range, not parse_error
  // (found by the CNI plugin's fuzz target); it escaped and ended the agent.
  const std::string p5 = write("5.json", R"({"id": 4e4444444})");
  EXPECT_EQ(message(readEndpointState(p5)),
            p5 + ": not valid JSON (truncated or damaged?): number overflow parsing '4e4444444'");

  // namespaces.json
  auto none = readNamespaceState(dir + "/absent.json");
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->empty());
  const std::string n1 = write("ns1.json", R"({"team-a": {"team": "red"}, "team-b": {"team": 3}})");
  EXPECT_EQ(message(readNamespaceState(n1)), n1 + ": team-b.team: expected a string, got a number");
  const std::string n2 = write("ns2.json", R"({"team-a": ["team"]})");
  EXPECT_EQ(message(readNamespaceState(n2)), n2 + ": team-a: expected an object, got a list");
  const std::string n3 = write("ns3.json", R"({"team-a": {"team": "re)");
  EXPECT_EQ(message(readNamespaceState(n3)), n3 + ": not valid JSON (truncated or damaged?): parse error at byte 24");
  const std::string n4 = write("ns4.json", R"(["team-a"])");
  EXPECT_EQ(message(readNamespaceState(n4)), n4 + ": top level: expected an object, got a list");
  const std::string ok = write("ns5.json", R"({"team-a": {"team": "red"}})");
  auto good = readNamespaceState(ok);
  ASSERT_TRUE(good.ok()) << good.error().message;
  EXPECT_EQ(good->at("team-a").toString(), "k8s:team=red");
  std::filesystem::remove_all(dir);
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

// Issue 10: `namespace label NS kubernetes.io/metadata.name=evil --overwrite`
// was stored, and the listing showed `evil`. The label is derived from the
// namespace's name: never stored, never shown with another value.
TEST(NamespaceLabels, StoredNameLabelIsDroppedOnLoad) {
  char tmpl[] = "/tmp/membrane-state-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string path = dir + "/namespaces.json";
  ASSERT_TRUE(writeFileAtomic(path, R"({"empire": {"kubernetes.io/metadata.name": "evil", "team": "red"},)"
                                    R"( "rebels": {"kubernetes.io/metadata.name": "rebels"}})")
                  .ok());
  auto ns = readNamespaceState(path);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(ns.ok()) << ns.error().message;
  ASSERT_EQ(ns->size(), 2u);
  EXPECT_EQ(ns->at("empire").toString(), "k8s:team=red");
  EXPECT_TRUE(ns->at("rebels").empty()) << ns->at("rebels").toString();
}

TEST(NamespaceLabels, NameLabelCannotBeSetToAnotherValue) {
  labels::LabelSet given;
  given.add("k8s", "team", "red");
  given.add("k8s", "kubernetes.io/metadata.name", "evil");
  auto refused = namespaceLabelsToStore("empire", given);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, EINVAL);
  EXPECT_EQ(refused.error().message,
            "label 'kubernetes.io/metadata.name=evil': kubernetes.io/metadata.name is derived from the namespace's "
            "name and is always 'empire'; it cannot be set or removed");
  // Whatever the source: it would become the same namespace label.
  labels::LabelSet other_source;
  other_source.add("container", "kubernetes.io/metadata.name", "evil");
  EXPECT_FALSE(namespaceLabelsToStore("empire", other_source).ok());

  // Its own value (what the listing shows and the CLI sends back): not stored.
  given.add("k8s", "kubernetes.io/metadata.name", "empire");
  auto stored = namespaceLabelsToStore("empire", given);
  ASSERT_TRUE(stored.ok()) << stored.error().message;
  EXPECT_EQ(stored->toString(), "k8s:team=red");
}

TEST(NamespaceLabels, ListingShowsTheDerivedNameLast) {
  labels::LabelSet stored;
  stored.add("k8s", "team", "red");
  stored.add("k8s", "kubernetes.io/metadata.name", "evil");  // a copy that slipped through wins nothing
  EXPECT_EQ(namespaceLabelsJson("empire", stored),
            (nlohmann::json{{"team", "red"}, {"kubernetes.io/metadata.name", "empire"}}));
  EXPECT_EQ(namespaceLabelsJson("rebels", {}), (nlohmann::json{{"kubernetes.io/metadata.name", "rebels"}}));
}

}  // namespace
}  // namespace membrane::endpoint
