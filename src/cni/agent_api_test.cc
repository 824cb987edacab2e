// The plugin-agent contract: what the plugin encodes the agent decodes to the
// same values, and the agent's decoders name what is wrong.
#include "src/cni/agent_api.h"

#include <gtest/gtest.h>

namespace membrane::cni {
namespace {

AttachmentRef ref() { return AttachmentRef{"c0ffee", "eth0", "/run/netns/c1", "membrane"}; }

TEST(CniContract, AddRequestRoundTrips) {
  AddRequest req{ref(), "empire", "web-1", "infra1", "uid-1", {{"app", "web"}, {"tier", "front"}}};
  EXPECT_EQ(toJson(req).dump(),
            R"({"container_id":"c0ffee","ifname":"eth0","infra_container_id":"infra1","labels":{"app":"web",)"
            R"("tier":"front"},"name":"web-1","namespace":"empire","netns":"/run/netns/c1","network":"membrane",)"
            R"("pod_uid":"uid-1"})");
  auto back = parseAddRequest(toJson(req).dump());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->ref.container_id, "c0ffee");
  EXPECT_EQ(back->ref.netns, "/run/netns/c1");
  EXPECT_EQ(back->pod_namespace, "empire");
  EXPECT_EQ(back->pod_name, "web-1");
  EXPECT_EQ(back->infra_container_id, "infra1");
  EXPECT_EQ(back->pod_uid, "uid-1");
  EXPECT_EQ(back->labels, req.labels);
}

TEST(CniContract, DelCheckGcRoundTrip) {
  DelRequest del{AttachmentRef{"c0ffee", "eth0", "", "membrane"}};
  auto d = parseDelRequest(toJson(del).dump());
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->ref.netns, "");

  CheckRequest check{ref(), {}};
  check.expected.interfaces = {{"eth0", "02:00:00:00:00:02", "/run/netns/c1", {}, "", ""}};
  check.expected.ips = {{"10.200.0.7/32", "10.200.0.1", 0}};
  auto c = parseCheckRequest(toJson(check).dump());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->expected, check.expected);

  GcRequest gc{"membrane", {{"c1", "eth0"}}};
  auto g = parseGcRequest(toJson(gc).dump());
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(g->valid, gc.valid);
}

TEST(CniContract, AddAnswerRoundTrips) {
  AddAnswer a;
  a.endpoint_id = 1204;
  a.result.interfaces = {{"lxc1", "02:00:00:00:00:01", "", {}, "", ""}};
  a.result.ips = {{"10.200.0.7/32", "10.200.0.1", 0}};
  EXPECT_EQ(toJson(a).dump(),
            R"({"endpoint_id":1204,"result":{"dns":{},"interfaces":[{"mac":"02:00:00:00:00:01","name":"lxc1"}],)"
            R"("ips":[{"address":"10.200.0.7/32","gateway":"10.200.0.1","interface":0}]}})");
  auto back = parseAddAnswer(toJson(a).dump());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->endpoint_id, 1204u);
  EXPECT_EQ(back->result, a.result);
}

TEST(CniContract, AgentSideDecodersNameTheMember) {
  struct Case {
    std::string body;
    int code;
    std::string message;
  };
  const std::string good = R"("container_id": "c1", "ifname": "eth0", "netns": "/run/netns/x", "network": "membrane")";
  const Case add_cases[] = {
      {"nope", 6, "cni add request: body is not valid JSON"},
      {"[]", 6, "cni add request: must be a JSON object, got array"},
      {R"({"ifname": "eth0", "netns": "/x", "network": "m"})", 7, "cni add request: container_id: required, missing"},
      {R"({"container_id": "_c", "ifname": "eth0", "netns": "/x", "network": "m"})", 7,
       "cni add request: container_id: \"_c\": must start with a letter or digit followed by letters, digits, '_', "
       "'.' or '-'"},
      {R"({"container_id": "c", "ifname": "a:b", "netns": "/x", "network": "m"})", 7,
       "cni add request: ifname: \"a:b\": an interface name cannot contain '/', ':' or whitespace"},
      {R"({"container_id": "c", "ifname": "eth0", "network": "m"})", 7, "cni add request: netns: required, missing"},
      {R"({"container_id": "c", "ifname": "eth0", "netns": "x", "network": "m"})", 7,
       "cni add request: netns: \"x\" must be an absolute path"},
      {"{" + good + R"(, "labels": {"app": 1}})", 6, "cni add request: labels.app: must be a string, got integer"},
      {"{" + good + R"(, "labels": []})", 6, "cni add request: labels: must be a JSON object, got array"},
      {"{" + good + R"(, "name": 5})", 6, "cni add request: name: must be a string, got integer"},
  };
  for (const auto& c : add_cases) {
    auto r = parseAddRequest(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.error().code, c.code) << c.body;
    EXPECT_EQ(r.error().message, c.message) << c.body;
  }
  auto bad_label = parseAddRequest("{" + good + R"(, "labels": {"app": "w@b"}})");
  ASSERT_FALSE(bad_label.ok());
  EXPECT_EQ(bad_label.error().code, 7);
  EXPECT_TRUE(bad_label.error().message.starts_with("cni add request: labels.app: ")) << bad_label.error().message;

  auto check = parseCheckRequest("{" + good + "}");
  ASSERT_FALSE(check.ok());
  EXPECT_EQ(check.error().message, "cni check request: expected: required, missing");
  auto gc = parseGcRequest(R"({"network": "membrane", "valid": [{"container_id": "c"}]})");
  ASSERT_FALSE(gc.ok());
  EXPECT_EQ(gc.error().message, "cni gc request: valid[0].ifname: required, missing");
  auto answer = parseAddAnswer(R"({"endpoint_id": -1, "result": {}})");
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.error().message, "membraned's ADD answer: endpoint_id: must be a non-negative integer");
}

TEST(CniContract, ErrorAnswersCarryTheCniCode) {
  auto r = errorAnswer(409, Code::AlreadyExists, "taken");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.body, R"({"cni_code":101,"code":409,"error":"taken"})");
  Error e = errorFromAnswer(r, "ADD");
  EXPECT_EQ(e.code, 101);
  EXPECT_EQ(e.message, "taken");
  // Out-of-range cni_code: derived from the status instead.
  Error derived = errorFromAnswer(api::Response{503, R"({"error": "busy", "cni_code": 0})", "", {}}, "ADD");
  EXPECT_EQ(derived.code, 11);
  EXPECT_EQ(derived.message, "busy");
  EXPECT_EQ(errorFromAnswer(api::Response{400, R"({"error": "bad"})", "", {}}, "ADD").code, 7);
  EXPECT_EQ(errorFromAnswer(api::Response{409, R"({"error": "dup"})", "", {}}, "ADD").code, 101);
  EXPECT_EQ(errorFromAnswer(api::Response{405, "", "", {}}, "DEL").message,
            "DEL: membraned answered 405 (no message): this agent has no CNI API; upgrade membraned to the version "
            "of membrane-cni");
}

}  // namespace
}  // namespace membrane::cni
