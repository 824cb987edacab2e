// The CLI commands against an in-process fake membraned (HttpServer on a temp
// socket with canned answers): exit codes, what goes to stdout vs stderr.
#include "src/cli/commands.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "src/api/http_server.h"

namespace membrane::cli {
namespace {

using api::Request;
using api::Response;
using Json = nlohmann::json;

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/membrane-cli-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    server_ = std::make_unique<api::HttpServer>(dir_ + "/m.sock");
    server_->route("GET", "/v1/healthz", [this](const Request&) {
      return Response::json(200, {{"status", health_}, {"version", "0.1.0"}, {"revision", "abc"}, {"endpoints", 1},
                                  {"policy_revision", 2}, {"datapath", {{"status", "ok"}, {"bpf_root", "/sys/fs/bpf/membrane"}}},
                                  {"pod_cidr", "10.200.0.0/16"}, {"message", health_ == "ok" ? "" : "1 endpoints not ready"}});
    });
    server_->route("GET", "/v1/endpoint", [](const Request& r) {
      Json arr = Json::array();
      if (!r.hasQuery("name") || (r.queryValue("name") == "xwing" && r.queryValue("namespace") == "default"))
        arr.push_back({{"id", 1204}, {"name", "xwing"}, {"namespace", "default"}, {"netns", "/nonexistent/netns/x"}});
      return Response::json(200, arr);
    });
    server_->route("DELETE", "/v1/endpoint/{id}", [](const Request& r) {
      if (r.param("id") != "1204") return Response::error(404, "endpoint " + r.param("id") + " not found");
      return Response::json(200, {{"deleted", 1204}});
    });
    server_->route("PUT", "/v1/endpoint", [this](const Request& r) {
      last_body_ = Json::parse(r.body, nullptr, false);
      return Response::json(201, {{"id", 7}, {"name", "tie"}, {"namespace", "empire"}, {"identity", 258}, {"ipv4", "10.200.0.9"}});
    });
    server_->route("PUT", "/v1/policy", [this](const Request& r) {
      last_body_ = Json::parse(r.body, nullptr, false);
      if (last_body_.value("content", "").find("bad") != std::string::npos)
        return Response::json(400, Json::parse(R"({"error": "policy p.yaml rejected, nothing applied: port out of range", "code": 400,
          "diagnostics": [{"file": "p.yaml", "line": 7, "column": 9, "path": "spec.ingress[0].toPorts[0].ports[0].port", "message": "port out of range"}]})"));
      return Response::json(200, {{"revision", 5}, {"imported", {"default/rule1"}}});
    });
    server_->route("DELETE", "/v1/policy", [this](const Request& r) {
      last_query_ = r.target;
      return Response::json(200, {{"revision", 6}, {"deleted", {"default/rule1"}}});
    });
    server_->route("GET", "/v1/policy/trace", [this](const Request& r) {
      last_query_ = r.target;
      if (r.queryValue("dport") == "bad") return Response::error(400, "port 'bad': not a number");
      return Response::json(200, {{"text", "Final verdict: DENIED"}, {"verdict", "denied"}, {"ingress", Json::object()},
                                  {"egress", Json::object()}});
    });
    server_->routeStream("GET", "/v1/monitor", [](const Request& r, api::StreamWriter& w) {
      // type=drop: as membraned answers; type=l7: an agent that sends no
      // "subscribed" line; anything else: refused.
      const auto types = r.queryValues("type");
      if (types != std::vector<std::string>{"drop"} && types != std::vector<std::string>{"l7"}) {
        w.write(R"({"type":"error","error":"bad types"})");
        return;
      }
      if (types[0] == "drop") w.write(R"({"type":"subscribed"})");
      w.write(R"({"type":"drop","reason":"Policy denied","endpoint":1204,"ifindex":42,"src_identity":257,"dst_identity":256,)"
              R"("src":"10.200.0.7:43122","dst":"10.200.0.5:80","proto":"TCP","tcp_flags":"SYN"})");
    });
    server_->route("GET", "/v1/namespace", [](const Request&) {
      return Response::json(200, Json::parse(R"([{"name": "empire", "endpoints": 1,
        "labels": {"team": "red", "kubernetes.io/metadata.name": "empire"}}])"));
    });
    server_->route("PUT", "/v1/namespace/{name}", [this](const Request& r) {
      ++namespace_puts_;
      last_body_ = Json::parse(r.body, nullptr, false);
      return Response::json(200, {{"name", r.param("name")}, {"labels", last_body_["labels"]}});
    });
    ASSERT_TRUE(server_->start().ok());
  }
  void TearDown() override {
    server_->stop();
    std::filesystem::remove_all(dir_);
  }
  Context ctx(bool json = false) {
    Context c{dir_ + "/m.sock", out_, err_};
    c.json = json;
    return c;
  }

  std::string dir_;
  std::unique_ptr<api::HttpServer> server_;
  std::ostringstream out_, err_;
  std::string health_ = "ok";
  Json last_body_;
  std::string last_query_;
  int namespace_puts_ = 0;
};

TEST_F(CommandsTest, StatusExitCodeFollowsHealth) {
  auto c = ctx();
  EXPECT_EQ(cmdStatus(c, true), 0);
  EXPECT_EQ(out_.str(), "OK\n");
  health_ = "degraded";
  out_.str("");
  EXPECT_EQ(cmdStatus(c, true), 1);
  EXPECT_EQ(out_.str(), "Degraded: 1 endpoints not ready\n");
}

TEST_F(CommandsTest, UnreachableAgent) {
  Context c{dir_ + "/absent.sock", out_, err_};
  EXPECT_EQ(cmdEndpointList(c), 1);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "cannot reach membraned at " + dir_ +
                            "/absent.sock: No such file or directory — is the agent running? Start it with 'membraned' "
                            "(as root) or 'systemctl start membraned', or point --socket / MEMBRANE_SOCKET at it\n");
}

TEST_F(CommandsTest, EndpointCreateAndDeleteByName) {
  auto c = ctx();
  EXPECT_EQ(cmdEndpointCreate(c, "tie", "empire", "org=empire,class=tiefighter"), 0);
  EXPECT_EQ(last_body_, Json::parse(R"({"name":"tie","namespace":"empire","labels":{"org":"empire","class":"tiefighter"}})"));
  EXPECT_EQ(out_.str(), "Endpoint 7 created for empire/tie: identity 258, IPv4 10.200.0.9\n");
  out_.str("");
  EXPECT_EQ(cmdEndpointDelete(c, "xwing", ""), 0);
  EXPECT_EQ(out_.str(), "Endpoint 1204 deleted\n");
  EXPECT_EQ(cmdEndpointDelete(c, "ywing", ""), 1);
  EXPECT_EQ(err_.str(), "no endpoint named 'ywing' in namespace 'default' (see 'membrane endpoint list')\n");
  err_.str("");
  EXPECT_EQ(cmdEndpointDelete(c, "99", ""), 1);
  EXPECT_EQ(err_.str(), "endpoint 99 not found\n");
}

// Issue 10: `namespace label NS kubernetes.io/metadata.name=evil --overwrite`
// was sent to the agent, stored, and listed. The label is derived from the
// name: setting or removing it is refused before anything is sent, and the
// listed copy is not sent back with other changes.
TEST_F(CommandsTest, NamespaceLabelRefusesTheDerivedNameLabel) {
  auto c = ctx();
  const std::string why = "namespace label: kubernetes.io/metadata.name is derived from the namespace's name and is "
                          "always 'empire'; it cannot be set or removed; nothing changed\n";
  EXPECT_EQ(cmdNamespaceLabel(c, "empire", {"kubernetes.io/metadata.name=evil"}, true), 1);
  EXPECT_EQ(err_.str(), why);
  err_.str("");
  EXPECT_EQ(cmdNamespaceLabel(c, "empire", {"team=blue", "kubernetes.io/metadata.name-"}, true), 1);
  EXPECT_EQ(err_.str(), why);
  EXPECT_EQ(namespace_puts_, 0);
  EXPECT_EQ(out_.str(), "");
  // Its own value changes nothing, like any label set to the value it has.
  err_.str("");
  EXPECT_EQ(cmdNamespaceLabel(c, "empire", {"kubernetes.io/metadata.name=empire"}, false), 0);
  EXPECT_EQ(out_.str(), "namespace/empire not labeled\n");
  EXPECT_EQ(namespace_puts_, 0);

  out_.str("");
  EXPECT_EQ(cmdNamespaceLabel(c, "empire", {"env=dev"}, false), 0) << err_.str();
  EXPECT_EQ(out_.str(), "namespace/empire labeled\n");
  EXPECT_EQ(namespace_puts_, 1);
  EXPECT_EQ(last_body_, Json::parse(R"({"labels": {"team": "red", "env": "dev"}})"));
}

TEST_F(CommandsTest, ExecUnknownPodAndMissingNetns) {
  auto c = ctx();
  EXPECT_EQ(cmdExec(c, "ywing", "default", {"true"}), 1);
  EXPECT_EQ(err_.str(), "no endpoint named 'ywing' in namespace 'default' (see 'membrane endpoint list')\n");
  err_.str("");
  EXPECT_EQ(cmdExec(c, "xwing", "default", {"true"}), 1);
  EXPECT_EQ(err_.str(), "enter netns /nonexistent/netns/x: open: No such file or directory (pod default/xwing)\n");
}

TEST_F(CommandsTest, PolicyImportPrintsRevisionOrDiagnostics) {
  std::string good = dir_ + "/good.yaml", bad = dir_ + "/p.yaml";
  std::ofstream(good) << "kind: CiliumNetworkPolicy\n";
  std::ofstream(bad) << "bad\n";
  auto c = ctx();
  EXPECT_EQ(cmdPolicyImport(c, {good}), 0);
  EXPECT_EQ(last_body_, (Json{{"source", good}, {"content", "kind: CiliumNetworkPolicy\n"}}));
  EXPECT_EQ(out_.str(), "Revision: 5\n");
  out_.str("");
  EXPECT_EQ(cmdPolicyImport(c, {bad}), 1);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(),
            "policy p.yaml rejected, nothing applied: port out of range\n"
            "p.yaml:7:9: spec.ingress[0].toPorts[0].ports[0].port: port out of range\n");
  err_.str("");
  EXPECT_EQ(cmdPolicyImport(c, {dir_ + "/missing.yaml"}), 1);
  EXPECT_EQ(err_.str(), "open policy file " + dir_ + "/missing.yaml: No such file or directory\n");
}

TEST_F(CommandsTest, PolicyDelete) {
  auto c = ctx();
  EXPECT_EQ(cmdPolicyDelete(c, "rule1", "", false), 0);
  EXPECT_EQ(last_query_, "/v1/policy?name=rule1&namespace=default");
  EXPECT_EQ(out_.str(), "Deleted default/rule1\nRevision: 6\n");
  EXPECT_EQ(cmdPolicyDelete(c, "", "", true), 0);
  EXPECT_EQ(last_query_, "/v1/policy?all=true");
  EXPECT_EQ(cmdPolicyDelete(c, "rule1", "", true), 1);
  EXPECT_EQ(err_.str(), "policy delete: give exactly one of a policy NAME, --labels k=v[,k=v...] or --all\n");
  EXPECT_EQ(cmdPolicyDelete(c, "", "", false, "team=red,env=dev"), 0);
  EXPECT_EQ(last_query_, "/v1/policy?labels=team%3Dred%2Cenv%3Ddev");
}

TEST(ParseDuration, GoStyleUnits) {
  EXPECT_EQ(parseDurationSeconds("30s"), 30);
  EXPECT_EQ(parseDurationSeconds("45"), 45);
  EXPECT_EQ(parseDurationSeconds("2m"), 120);
  EXPECT_EQ(parseDurationSeconds("1h"), 3600);
  EXPECT_EQ(parseDurationSeconds("1500ms"), 2);
  EXPECT_EQ(parseDurationSeconds("x"), std::nullopt);
  EXPECT_EQ(parseDurationSeconds("5d"), std::nullopt);
  EXPECT_EQ(parseDurationSeconds(""), std::nullopt);
}

TEST_F(CommandsTest, PolicyTrace) {
  auto c = ctx();
  EXPECT_EQ(cmdPolicyTrace(c, {"xwing", "", "", "org=empire,class=deathstar", "80/TCP", ""}), 0);
  EXPECT_EQ(last_query_,
            "/v1/policy/trace?src_endpoint=xwing&dst_labels=org%3Dempire%2Cclass%3Ddeathstar&dport=80%2FTCP"
            "&namespace=default");
  EXPECT_EQ(out_.str(), "Final verdict: DENIED\n");
  out_.str("");
  auto j = ctx(true);
  EXPECT_EQ(cmdPolicyTrace(j, {"", "a=b", "7", "", "", "x"}), 0);
  EXPECT_EQ(last_query_, "/v1/policy/trace?src_labels=a%3Db&dst_endpoint=7&namespace=x");
  EXPECT_EQ(Json::parse(out_.str())["verdict"], "denied");
  EXPECT_EQ(cmdPolicyTrace(c, {"xwing", "a=b", "7", "", "", ""}), 1);
  EXPECT_EQ(err_.str(), "policy trace: give exactly one of --src-endpoint or --src-labels\n");
  err_.str("");
  EXPECT_EQ(cmdPolicyTrace(c, {"xwing", "", "", "", "", ""}), 1);
  EXPECT_EQ(err_.str(), "policy trace: give exactly one of --dst-endpoint or --dst-labels\n");
  err_.str("");
  EXPECT_EQ(cmdPolicyTrace(c, {"xwing", "", "7", "", "bad", ""}), 1);
  EXPECT_EQ(err_.str(), "port 'bad': not a number\n");
}

TEST_F(CommandsTest, MonitorPrintsLinesAndBannerOnStderr) {
  auto c = ctx();
  EXPECT_EQ(cmdMonitor(c, {"drop"}), 1);  // the fake ends the stream after one event
  EXPECT_EQ(out_.str(),
            "xx drop (Policy denied) to endpoint 1204, ifindex 42, identity 257->256: 10.200.0.7:43122 -> "
            "10.200.0.5:80 tcp SYN\n");
  EXPECT_TRUE(err_.str().starts_with("Listening for events on ")) << err_.str();
  EXPECT_NE(err_.str().find("Press Ctrl-C to quit\nmembraned ended the event stream"), std::string::npos);

  // --json: the "subscribed" line is the banner's cue, never an event on stdout.
  out_.str("");
  err_.str("");
  auto j = ctx(true);
  EXPECT_EQ(cmdMonitor(j, {"drop"}), 1);
  EXPECT_EQ(out_.str().find("subscribed"), std::string::npos) << out_.str();
  EXPECT_TRUE(out_.str().starts_with(R"({"type":"drop")")) << out_.str();
  EXPECT_TRUE(err_.str().starts_with("Listening for events on ")) << err_.str();

  // An agent without the "subscribed" line: the banner comes before the first event.
  out_.str("");
  err_.str("");
  EXPECT_EQ(cmdMonitor(c, {"l7"}), 1);
  EXPECT_TRUE(out_.str().starts_with("xx drop (Policy denied)")) << out_.str();
  EXPECT_TRUE(err_.str().starts_with("Listening for events on ")) << err_.str();

  // Refused: the error alone, no banner (nothing listens).
  out_.str("");
  err_.str("");
  EXPECT_EQ(cmdMonitor(j, {"trace"}), 1);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "bad types\n");
}

}  // namespace
}  // namespace membrane::cli
