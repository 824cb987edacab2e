// membrane-cni's commands against a fake agent: a real api::HttpServer on a
// temp socket whose CNI routes record the request and answer what the test
// set. Exact stdout, exit code and request bodies.
#include "src/cni/plugin.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "membrane/unique_fd.h"
#include "src/api/http_server.h"
#include "src/cni/agent_api.h"

namespace membrane::cni {
namespace {

// An existing path standing for the container's netns: the plugin only
// checks that CNI_NETNS exists; the agent (faked here) opens it.
constexpr const char* kNetns = "/proc/self/ns/net";

struct Recorded {
  std::string method, path, body;
};

class FakeAgent {
 public:
  explicit FakeAgent(const std::string& socket) : server_(socket) {
    for (const char* path : {"/v1/cni/add", "/v1/cni/del", "/v1/cni/check", "/v1/cni/gc"})
      server_.route("PUT", path, [this](const api::Request& r) { return answer(r); });
    server_.route("GET", "/v1/healthz", [this](const api::Request& r) { return answer(r); });
    MB_CHECK(server_.start().ok());
  }
  void reply(api::Response r) {
    std::lock_guard lock(mu_);
    reply_ = std::move(r);
  }
  std::vector<Recorded> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  api::Response answer(const api::Request& r) {
    std::lock_guard lock(mu_);
    requests_.push_back({r.method, r.path, r.body});
    return reply_;
  }
  api::HttpServer server_;
  std::mutex mu_;
  api::Response reply_ = api::Response::json(200, Json::object());
  std::vector<Recorded> requests_;
};

// The agent's ADD answer for container interface eth0 in kNetns.
api::Response addAnswer() {
  AddAnswer a;
  a.endpoint_id = 1204;
  a.result.interfaces = {{"lxc3f9a0c1d2e4", "02:00:00:00:00:01", "", {}, "", ""},
                         {"eth0", "02:00:00:00:00:02", kNetns, {}, "", ""}};
  a.result.ips = {{"10.200.0.7/32", "10.200.0.1", 1}};
  a.result.routes = {{"0.0.0.0/0", "10.200.0.1", {}, {}, {}, {}, {}}};
  return api::Response::json(200, toJson(a));
}

class CniPlugin : public ::testing::Test {
 protected:
  CniPlugin() : dir_(makeDir()), socket_(dir_ + "/agent.sock"), agent_(socket_) {}
  ~CniPlugin() override { std::filesystem::remove_all(dir_); }

  static std::string makeDir() {
    char tmpl[] = "/tmp/membrane-cni-test-XXXXXX";
    MB_CHECK(::mkdtemp(tmpl) != nullptr);
    return tmpl;
  }

  std::string conf(const std::string& version, const std::string& extra = "") const {
    return fmt::format(R"({{"cniVersion": "{}", "name": "membrane", "type": "membrane-cni",
                           "membrane": {{"socket": "{}", "timeoutSeconds": 5}}{}}})",
                       version, socket_, extra.empty() ? "" : ", " + extra);
  }
  static std::map<std::string, std::string> env(const std::string& command) {
    return {{"CNI_COMMAND", command}, {"CNI_CONTAINERID", "c0ffee"},  {"CNI_NETNS", kNetns},
            {"CNI_IFNAME", "eth0"},   {"CNI_PATH", "/usr/lib/cni"},
            {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=empire;K8S_POD_NAME=web-1;MEMBRANE_LABELS=app:web"}};
  }
  Outcome run(const std::string& command, const std::string& stdin_text,
              const std::map<std::string, std::string>& overrides = {}, const std::vector<std::string>& unset = {}) {
    Invocation inv{env(command), stdin_text};
    for (const auto& [k, v] : overrides) inv.env[k] = v;
    for (const auto& k : unset) inv.env.erase(k);
    return runPlugin(inv);
  }
  // The error object runPlugin printed, checked for shape and exit code.
  static Json errorOf(const Outcome& o) {
    EXPECT_EQ(o.exit_code, 1) << o.stdout_text;
    Json j = Json::parse(o.stdout_text, nullptr, false);
    EXPECT_TRUE(j.is_object()) << o.stdout_text;
    return j;
  }
  static Json err(const std::string& version, int code, const std::string& msg) {
    return Json{{"cniVersion", version}, {"code", code}, {"msg", msg}};
  }

  std::string dir_;
  std::string socket_;
  FakeAgent agent_;
};

const char* kOurResult100 = R"({
  "cniVersion": "1.0.0",
  "dns": {},
  "interfaces": [
    {
      "mac": "02:00:00:00:00:01",
      "name": "lxc3f9a0c1d2e4"
    },
    {
      "mac": "02:00:00:00:00:02",
      "name": "eth0",
      "sandbox": "/proc/self/ns/net"
    }
  ],
  "ips": [
    {
      "address": "10.200.0.7/32",
      "gateway": "10.200.0.1",
      "interface": 1
    }
  ],
  "routes": [
    {
      "dst": "0.0.0.0/0",
      "gw": "10.200.0.1"
    }
  ]
}
)";

TEST_F(CniPlugin, VersionEchoesASupportedRequestElseLatest) {
  auto o = run("VERSION", R"({"cniVersion": "0.4.0"})");
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.stdout_text, R"({
  "cniVersion": "0.4.0",
  "supportedVersions": [
    "0.3.0",
    "0.3.1",
    "0.4.0",
    "1.0.0",
    "1.1.0"
  ]
}
)");
  for (const char* in : {"", R"({"cniVersion": "0.2.0"})", "junk"}) {
    auto other = run("VERSION", in);
    EXPECT_EQ(other.exit_code, 0);
    EXPECT_EQ(Json::parse(other.stdout_text)["cniVersion"], "1.1.0") << in;
  }
  EXPECT_TRUE(agent_.requests().empty());
}

TEST_F(CniPlugin, AddSendsTheContractRequestAndPrintsTheResult) {
  agent_.reply(addAnswer());
  auto o = run("ADD", conf("1.0.0"));
  EXPECT_EQ(o.exit_code, 0) << o.stdout_text;
  EXPECT_EQ(o.stdout_text, kOurResult100);
  auto reqs = agent_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "PUT");
  EXPECT_EQ(reqs[0].path, "/v1/cni/add");
  EXPECT_EQ(Json::parse(reqs[0].body),
            Json::parse(R"({"container_id": "c0ffee", "ifname": "eth0", "netns": "/proc/self/ns/net",
                            "network": "membrane", "namespace": "empire", "name": "web-1",
                            "labels": {"app": "web"}})"));
}

TEST_F(CniPlugin, AddAnswersInTheConfigsVersion) {
  agent_.reply(addAnswer());
  for (const char* v : {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}) {
    auto o = run("ADD", conf(v));
    ASSERT_EQ(o.exit_code, 0) << v << ": " << o.stdout_text;
    Json j = Json::parse(o.stdout_text);
    EXPECT_EQ(j["cniVersion"], v);
    bool pre10 = std::string(v) < "1.0.0";
    Json ip = {{"address", "10.200.0.7/32"}, {"gateway", "10.200.0.1"}, {"interface", 1}};
    if (pre10) ip["version"] = "4";
    EXPECT_EQ(j["ips"], Json::array({ip})) << v;
    EXPECT_EQ(j["interfaces"][1]["sandbox"], kNetns);
  }
}

TEST_F(CniPlugin, AddChainedAfterAnotherPluginKeepsItsResultFirst) {
  agent_.reply(addAnswer());
  auto o = run("ADD", conf("1.0.0", R"("dns": {"nameservers": ["10.96.0.10"]},
      "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "/proc/self/ns/net"}],
                     "ips": [{"address": "127.0.0.1/8", "interface": 0}],
                     "dns": {"domain": "ignored.local"}})"));
  ASSERT_EQ(o.exit_code, 0) << o.stdout_text;
  Json j = Json::parse(o.stdout_text);
  EXPECT_EQ(j["interfaces"].size(), 3u);
  EXPECT_EQ(j["interfaces"][0]["name"], "lo");
  EXPECT_EQ(j["interfaces"][2]["name"], "eth0");
  EXPECT_EQ(j["ips"], Json::parse(R"([{"address": "127.0.0.1/8", "interface": 0},
                                      {"address": "10.200.0.7/32", "gateway": "10.200.0.1", "interface": 2}])"));
  EXPECT_EQ(j["dns"], Json::parse(R"({"nameservers": ["10.96.0.10"]})"));
}

TEST_F(CniPlugin, AddWithoutNamespaceOrLabelsLeavesThemToTheAgent) {
  agent_.reply(addAnswer());
  auto o = run("ADD", conf("1.0.0"), {{"CNI_ARGS", ""}});
  ASSERT_EQ(o.exit_code, 0) << o.stdout_text;
  EXPECT_EQ(Json::parse(agent_.requests().at(0).body),
            Json::parse(R"({"container_id": "c0ffee", "ifname": "eth0", "netns": "/proc/self/ns/net",
                            "network": "membrane", "namespace": "", "name": "", "labels": {}})"));
}

TEST_F(CniPlugin, AddRefusalsCarryTheAgentsCniCode) {
  struct Case {
    api::Response answer;
    Json expected;
  };
  const Case cases[] = {
      {errorAnswer(409, Code::AlreadyExists, "container c0ffee already has eth0 (endpoint 1204)"),
       err("1.0.0", 101, "container c0ffee already has eth0 (endpoint 1204)")},
      {errorAnswer(503, Code::PoolExhausted, "pod CIDR 10.200.0.0/30 is exhausted"),
       err("1.0.0", 102, "pod CIDR 10.200.0.0/30 is exhausted")},
      {errorAnswer(400, Code::InvalidEnv, "CNI_NETNS /run/netns/gone: No such file or directory"),
       err("1.0.0", 4, "CNI_NETNS /run/netns/gone: No such file or directory")},
      // Without cni_code: derived from the status.
      {api::Response::error(503, "too many API connections (limit 4096); retry later"),
       err("1.0.0", 11, "too many API connections (limit 4096); retry later")},
      {api::Response::error(500, "attach tc ingress: Operation not permitted"),
       err("1.0.0", 100, "attach tc ingress: Operation not permitted")},
      {api::Response::error(404, "no such API path: PUT /v1/cni/add"),
       err("1.0.0", 100,
           "ADD: membraned answered 404 (no such API path: PUT /v1/cni/add): this agent has no CNI API; upgrade "
           "membraned to the version of membrane-cni")},
      {api::Response{500, "<html>", "text/html", {}},
       err("1.0.0", 100, "ADD: membraned answered 500 Internal Server Error")},
  };
  for (const auto& c : cases) {
    agent_.reply(c.answer);
    EXPECT_EQ(errorOf(run("ADD", conf("1.0.0"))), c.expected) << c.answer.body;
  }
}

TEST_F(CniPlugin, AddRejectsAnAnswerWithoutTheContainerInterface) {
  AddAnswer a;
  a.endpoint_id = 7;
  a.result.interfaces = {{"eth0", "", kNetns, {}, "", ""}};  // no mac
  agent_.reply(api::Response::json(200, toJson(a)));
  EXPECT_EQ(errorOf(run("ADD", conf("1.0.0"))),
            err("1.0.0", 100, "membraned's ADD answer has no interface eth0 with sandbox /proc/self/ns/net and a mac"));
  agent_.reply(api::Response::json(200, Json{{"endpoint_id", 7}}));
  EXPECT_EQ(errorOf(run("ADD", conf("1.0.0"))), err("1.0.0", 100, "membraned's ADD answer: result: required, missing"));
  agent_.reply(api::Response{200, "not json", "text/plain", {}});
  EXPECT_EQ(errorOf(run("ADD", conf("1.0.0"))), err("1.0.0", 100, "membraned's ADD answer: body is not valid JSON"));
}

TEST_F(CniPlugin, BadInputNeverReachesTheAgent) {
  struct Case {
    std::string command, stdin_text;
    std::map<std::string, std::string> overrides;
    std::vector<std::string> unset;
    Json expected;
  };
  const std::string ok = conf("1.0.0");
  const Case cases[] = {
      {"ADD", "{\"cniVersion\": ", {}, {}, err("1.1.0", 6, "stdin config: not valid JSON: parse error at line 1, "
                                                            "column 16: syntax error while parsing value - unexpected "
                                                            "end of input; expected '[', '{', or a literal")},
      {"ADD", conf("0.2.0"), {}, {}, err("1.1.0", 1, "stdin config: cniVersion: incompatible CNI version \"0.2.0\": "
                                                     "membrane-cni supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")},
      {"ADD", ok, {}, {"CNI_NETNS"}, err("1.0.0", 4, "CNI_NETNS is not set (required for ADD)")},
      {"ADD", ok, {{"CNI_NETNS", "/run/netns/membrane-cni-test-does-not-exist"}}, {},
       err("1.0.0", 4, "CNI_NETNS=/run/netns/membrane-cni-test-does-not-exist: No such file or directory (the "
                       "container's network namespace must exist for ADD and CHECK)")},
      {"ADD", ok, {{"CNI_ARGS", "MEMBRANE_LABELS=a=b"}}, {},
       err("1.0.0", 4, "CNI_ARGS: pair 1 \"MEMBRANE_LABELS=a=b\": expected exactly one '=' (KEY=VALUE; a value "
                       "cannot contain '=' or ';', so MEMBRANE_LABELS uses key:value)")},
      {"ADD", ok, {}, {"CNI_COMMAND"},
       err("1.0.0", 4, "CNI_COMMAND is not set: membrane-cni is a CNI plugin, run by a container runtime (see "
                       "membrane-cni --help)")},
      {"CHECK", conf("0.3.1"), {}, {}, err("0.3.1", 1, "CHECK needs cniVersion 0.4.0 or later; the config has 0.3.1")},
      {"CHECK", ok, {}, {}, err("1.0.0", 7, "stdin config: prevResult: required for CHECK (the runtime passes ADD's "
                                            "result)")},
      {"CHECK", conf("1.0.0", R"("prevResult": {"interfaces": [{"name": "eth0", "sandbox": "/other"}]})"), {}, {},
       err("1.0.0", 7, "stdin config: prevResult: no interface eth0 with sandbox /proc/self/ns/net: not the result of "
                       "membrane-cni's ADD for this container")},
      {"GC", ok, {}, {}, err("1.0.0", 1, "GC needs cniVersion 1.1.0; the config has 1.0.0")},
      {"GC", conf("1.1.0"), {}, {},
       err("1.1.0", 7, "stdin config: cni.dev/valid-attachments: required for GC (without it every attachment would "
                       "be garbage)")},
      {"STATUS", conf("0.4.0"), {}, {}, err("0.4.0", 1, "STATUS needs cniVersion 1.1.0; the config has 0.4.0")},
      {"DEL", ok, {}, {"CNI_IFNAME"}, err("1.0.0", 4, "CNI_IFNAME is not set (required for DEL)")},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(errorOf(run(c.command, c.stdin_text, c.overrides, c.unset)), c.expected) << c.command << " "
                                                                                       << c.stdin_text;
  }
  EXPECT_TRUE(agent_.requests().empty());
}

TEST_F(CniPlugin, DelIsSilentAndWorksWithoutTheNetns) {
  agent_.reply(api::Response::json(200, Json{{"deleted", false}}));
  auto o = run("DEL", conf("0.3.1"), {}, {"CNI_NETNS"});
  EXPECT_EQ(o.exit_code, 0) << o.stdout_text;
  EXPECT_EQ(o.stdout_text, "");
  auto reqs = agent_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].path, "/v1/cni/del");
  EXPECT_EQ(Json::parse(reqs[0].body), Json::parse(R"({"container_id": "c0ffee", "ifname": "eth0", "netns": "",
                                                       "network": "membrane"})"));
  // A netns path that no longer exists is passed on, not refused.
  auto gone = run("DEL", conf("1.0.0"), {{"CNI_NETNS", "/run/netns/gone-already"}});
  EXPECT_EQ(gone.exit_code, 0) << gone.stdout_text;
  EXPECT_EQ(Json::parse(agent_.requests().at(1).body)["netns"], "/run/netns/gone-already");
}

TEST_F(CniPlugin, CheckSendsThePrevResultAsExpected) {
  std::string prev = R"("prevResult": {"cniVersion": "0.4.0",
      "interfaces": [{"name": "lxc3f9a0c1d2e4", "mac": "02:00:00:00:00:01"},
                     {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/proc/self/ns/net"}],
      "ips": [{"version": "4", "address": "10.200.0.7/32", "gateway": "10.200.0.1", "interface": 1}],
      "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"}]})";
  agent_.reply(api::Response::json(200, Json{{"endpoint_id", 1204}}));
  auto o = run("CHECK", conf("0.4.0", prev));
  EXPECT_EQ(o.exit_code, 0) << o.stdout_text;
  EXPECT_EQ(o.stdout_text, "");
  auto reqs = agent_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].path, "/v1/cni/check");
  EXPECT_EQ(Json::parse(reqs[0].body), Json::parse(R"({"container_id": "c0ffee", "ifname": "eth0",
      "netns": "/proc/self/ns/net", "network": "membrane",
      "expected": {"dns": {},
                   "interfaces": [{"name": "lxc3f9a0c1d2e4", "mac": "02:00:00:00:00:01"},
                                  {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/proc/self/ns/net"}],
                   "ips": [{"address": "10.200.0.7/32", "gateway": "10.200.0.1", "interface": 1}],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"}]}})"));

  agent_.reply(errorAnswer(409, Code::AgentFailed, "CHECK c0ffee/eth0: address 10.200.0.7/32 missing in the netns"));
  EXPECT_EQ(errorOf(run("CHECK", conf("0.4.0", prev))),
            err("0.4.0", 100, "CHECK c0ffee/eth0: address 10.200.0.7/32 missing in the netns"));
  agent_.reply(errorAnswer(404, Code::UnknownContainer, "CHECK c0ffee/eth0: no such container"));
  EXPECT_EQ(errorOf(run("CHECK", conf("0.4.0", prev))), err("0.4.0", 3, "CHECK c0ffee/eth0: no such container"));
}

TEST_F(CniPlugin, GcSendsTheValidAttachments) {
  agent_.reply(api::Response::json(200, Json{{"removed", Json::array()}}));
  auto o = run("GC", conf("1.1.0", R"("cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}])"), {},
               {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"});
  EXPECT_EQ(o.exit_code, 0) << o.stdout_text;
  EXPECT_EQ(o.stdout_text, "");
  auto reqs = agent_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].path, "/v1/cni/gc");
  EXPECT_EQ(Json::parse(reqs[0].body),
            Json::parse(R"({"network": "membrane", "valid": [{"container_id": "c1", "ifname": "eth0"}]})"));
}

TEST_F(CniPlugin, StatusFollowsTheDatapath) {
  agent_.reply(api::Response::json(200, Json::parse(R"({"status": "degraded", "datapath": {"status": "ok"}})")));
  auto o = run("STATUS", conf("1.1.0"), {}, {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"});
  EXPECT_EQ(o.exit_code, 0) << o.stdout_text;
  EXPECT_EQ(o.stdout_text, "");
  EXPECT_EQ(agent_.requests().at(0).path, "/v1/healthz");
  agent_.reply(api::Response::json(200, Json::parse(R"({"datapath": {"status": "failed"}})")));
  EXPECT_EQ(errorOf(run("STATUS", conf("1.1.0"))),
            err("1.1.0", 50, "membraned's datapath is not ready (status \"failed\")"));
  agent_.reply(api::Response::error(500, "x"));
  EXPECT_EQ(errorOf(run("STATUS", conf("1.1.0"))), err("1.1.0", 50, "membraned answered 500 to GET /v1/healthz"));
}

// No agent at all: code 11 (ADD, DEL, CHECK), 50 (STATUS), at once.
TEST_F(CniPlugin, UnreachableAgentIsTryAgainLater) {
  std::string gone = dir_ + "/nobody.sock";
  std::string config = fmt::format(R"({{"cniVersion": "1.1.0", "name": "membrane", "type": "membrane-cni",
                                       "membrane": {{"socket": "{}"}}}})",
                                   gone);
  std::string msg = fmt::format(
      "cannot reach membraned at {}: No such file or directory: is the agent running (systemctl start membraned)? "
      "The socket is set in the network configuration as \"membrane\": {{\"socket\": PATH}}",
      gone);
  EXPECT_EQ(errorOf(run("ADD", config)), err("1.1.0", 11, msg));
  EXPECT_EQ(errorOf(run("DEL", config)), err("1.1.0", 11, msg));
  EXPECT_EQ(errorOf(run("STATUS", config)), err("1.1.0", 50, msg));
}

// An agent that accepts nothing and answers nothing: the timeout, not a hang.
TEST_F(CniPlugin, SilentAgentTimesOutWithTryAgainLater) {
  std::string path = dir_ + "/silent.sock";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener.get(), 8), 0);
  std::string config = fmt::format(R"({{"cniVersion": "1.0.0", "name": "membrane", "type": "membrane-cni",
                                       "membrane": {{"socket": "{}", "timeoutSeconds": 1}}}})",
                                   path);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(errorOf(run("ADD", config)),
            err("1.0.0", 11,
                fmt::format("membraned did not answer: PUT /v1/cni/add on {}: no answer from membraned within 1000 ms",
                            path)));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(5));
}

}  // namespace
}  // namespace membrane::cni
