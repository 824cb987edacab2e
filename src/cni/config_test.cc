#include "src/cni/config.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace membrane::cni {
namespace {

struct Bad {
  std::string input;
  int code;
  std::string message;
};

void expectError(const Status& st, int code, const std::string& message, const std::string& input) {
  ASSERT_FALSE(st.ok()) << input;
  EXPECT_EQ(st.error().code, code) << input;
  EXPECT_EQ(st.error().message, message) << input;
}

template <typename T>
Status statusOf(const Result<T>& r) {
  return r.ok() ? okStatus() : Status(r.error());
}

TEST(CniNetConf, ConflistEntryAsARuntimePassesIt) {
  auto c = parseNetConf(R"({
    "cniVersion": "1.0.0", "name": "membrane", "type": "membrane-cni",
    "membrane": {"socket": "/run/m2/membrane.sock", "timeoutSeconds": 5},
    "dns": {"nameservers": ["10.96.0.10"]},
    "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
    "args": {"cni": {"x": 1}}, "capabilities": {"portMappings": true}, "someOtherPluginKey": [1, 2],
    "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "/run/netns/x"}],
                   "ips": [{"address": "127.0.0.1/8", "interface": 0}]}
  })");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->version, kV100);
  EXPECT_EQ(c->version_text, "1.0.0");
  EXPECT_EQ(c->name, "membrane");
  EXPECT_EQ(c->type, "membrane-cni");
  EXPECT_EQ(c->agent_socket, "/run/m2/membrane.sock");
  EXPECT_EQ(c->agent_timeout, std::chrono::seconds(5));
  EXPECT_EQ(c->dns.nameservers, std::vector<std::string>{"10.96.0.10"});
  ASSERT_TRUE(c->prev_result.has_value());
  EXPECT_EQ(c->prev_result->interfaces.size(), 1u);
  EXPECT_EQ(c->prev_result->ips[0].address, "127.0.0.1/8");
  EXPECT_FALSE(c->has_valid_attachments);
}

TEST(CniNetConf, SingleConfDefaults) {
  auto c = parseNetConf(R"({"cniVersion": "0.3.1", "name": "m", "type": "membrane-cni"})");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->version.text(), "0.3.1");
  EXPECT_EQ(c->agent_socket, "/var/run/membrane/membrane.sock");
  EXPECT_EQ(c->agent_timeout, std::chrono::seconds(30));
  EXPECT_FALSE(c->prev_result.has_value());
  EXPECT_TRUE(c->dns.empty());
}

// What `make install` puts in /etc/cni/net.d, as a runtime hands it over:
// each entry plus the list's cniVersion and name.
TEST(CniNetConf, TheInstalledExampleConflistParses) {
  const char* src = std::getenv("MEMBRANE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  std::ifstream f(std::string(src) + "/deploy/cni/10-membrane.conflist");
  ASSERT_TRUE(f.good());
  std::stringstream text;
  text << f.rdbuf();
  Json list = Json::parse(text.str());
  EXPECT_EQ(list["name"], "membrane");
  EXPECT_EQ(list["cniVersion"], "1.0.0");
  ASSERT_EQ(list["plugins"].size(), 2u);
  EXPECT_EQ(list["plugins"][1]["type"], "portmap");
  Json entry = list["plugins"][0];
  entry["cniVersion"] = list["cniVersion"];
  entry["name"] = list["name"];
  auto c = parseNetConf(entry.dump());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->type, "membrane-cni");
  EXPECT_EQ(c->agent_socket, "/var/run/membrane/membrane.sock");
  EXPECT_EQ(c->agent_timeout, std::chrono::seconds(30));
}

TEST(CniNetConf, GcAttachmentsUnderBothKeys) {
  for (const char* key : {"cni.dev/valid-attachments", "cni.dev/attachments"}) {
    auto c = parseNetConf(std::string(R"({"cniVersion": "1.1.0", "name": "m", "type": "t", ")") + key +
                          R"(": [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]})");
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_TRUE(c->has_valid_attachments);
    EXPECT_EQ(c->valid_attachments, (std::vector<Attachment>{{"c1", "eth0"}, {"c2", "net1"}}));
  }
  auto empty = parseNetConf(R"({"cniVersion": "1.1.0", "name": "m", "type": "t", "cni.dev/valid-attachments": []})");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->has_valid_attachments);
  EXPECT_TRUE(empty->valid_attachments.empty());
}

TEST(CniNetConf, BadConfigsGetTheirCodeAndPlace) {
  const std::string head = R"({"cniVersion": "1.0.0", "name": "m", "type": "membrane-cni", )";
  const Bad cases[] = {
      {"", 6, "stdin config: empty: the runtime must pass the network configuration (JSON) on standard input"},
      {" \n", 6, "stdin config: empty: the runtime must pass the network configuration (JSON) on standard input"},
      {"{\"cniVersion\": \"1.0.0\",\n \"name\": }", 6,
       "stdin config: not valid JSON: parse error at line 2, column 10: syntax error while parsing value - "
       "unexpected '}'; expected '[', '{', or a literal"},
      {"[1]", 6, "stdin config: must be a JSON object, got array"},
      // nlohmann reports this one as out_of_range, not parse_error (found by cni_parse_fuzz).
      {"4e4444444", 6, "stdin config: not valid JSON: number overflow parsing '4e4444444'"},
      {R"({"name": "m", "type": "t"})", 1,
       "stdin config: cniVersion: incompatible CNI version \"0.1.0\": membrane-cni supports 0.3.0, 0.3.1, 0.4.0, "
       "1.0.0, 1.1.0"},
      {R"({"cniVersion": "0.2.0", "name": "m", "type": "t"})", 1,
       "stdin config: cniVersion: incompatible CNI version \"0.2.0\": membrane-cni supports 0.3.0, 0.3.1, 0.4.0, "
       "1.0.0, 1.1.0"},
      {R"({"cniVersion": 1, "name": "m", "type": "t"})", 6, "stdin config: cniVersion: must be a string, got integer"},
      {R"({"cniVersion": "1.0.0", "name": "membrane", "plugins": [{"type": "membrane-cni"}]})", 7,
       "stdin config: holds a network configuration list (\"plugins\"); the runtime passes one plugin's "
       "configuration, and the list belongs in /etc/cni/net.d/"},
      {R"({"cniVersion": "1.0.0", "type": "t"})", 7, "stdin config: name: required, missing"},
      {R"({"cniVersion": "1.0.0", "name": "-x", "type": "t"})", 7,
       "stdin config: name: \"-x\": must start with a letter or digit followed by letters, digits, '_', '.' or '-'"},
      {R"({"cniVersion": "1.0.0", "name": "m"})", 7, "stdin config: type: required, missing"},
      {R"({"cniVersion": "1.0.0", "name": "m", "type": ""})", 7, "stdin config: type: must not be empty"},
      {head + R"("ipam": {"type": "host-local"}})", 2,
       "stdin config: ipam: membrane-cni does not delegate to an IPAM plugin (membraned allocates from its "
       "--pod-cidr); remove \"ipam\" from the membrane-cni entry"},
      {head + R"("membrane": {"sock": "/x"}})", 2,
       "stdin config: membrane.sock: unknown key (membrane-cni knows \"socket\" and \"timeoutSeconds\")"},
      {head + R"("membrane": {"socket": "run/m.sock"}})", 7,
       "stdin config: membrane.socket: \"run/m.sock\" must be an absolute path (the agent's API socket)"},
      {head + R"("membrane": {"timeoutSeconds": 0}})", 7, "stdin config: membrane.timeoutSeconds: 0 is not within 1..600"},
      {head + R"("membrane": {"timeoutSeconds": "5"}})", 6,
       "stdin config: membrane.timeoutSeconds: must be an integer, got string"},
      {head + R"("membrane": "/x"})", 6, "stdin config: membrane: must be a JSON object, got string"},
      {head + R"("runtimeConfig": []})", 6, "stdin config: runtimeConfig: must be a JSON object, got array"},
      {head + R"("prevResult": "x"})", 6, "stdin config: prevResult: must be a JSON object, got string"},
      {head + R"("prevResult": {"ips": [{"address": "10.1.1.1"}]}})", 7,
       "stdin config: prevResult.ips[0].address: \"10.1.1.1\" is not an address/prefix-length"},
      {head + R"("dns": {"domain": 3}})", 6, "stdin config: dns.domain: must be a string, got integer"},
      {head + R"("cni.dev/valid-attachments": {}})", 6,
       "stdin config: cni.dev/valid-attachments: must be an array, got object"},
      {head + R"("cni.dev/valid-attachments": [{"containerID": "c"}]})", 7,
       "stdin config: cni.dev/valid-attachments[0].ifname: required, missing"},
  };
  for (const auto& c : cases) expectError(statusOf(parseNetConf(c.input)), c.code, c.message, c.input);
}

TEST(CniNetConf, SniffVersionNeverFails) {
  EXPECT_EQ(sniffVersion(R"({"cniVersion": "0.4.0"})"), "0.4.0");
  EXPECT_EQ(sniffVersion(R"({"cniVersion": 4})"), "");
  EXPECT_EQ(sniffVersion("{"), "");
  EXPECT_EQ(sniffVersion(""), "");
}

TEST(CniArgs, AsPodmanAndKubernetesPassThem) {
  auto podman = parseCniArgs("IgnoreUnknown=1;K8S_POD_NAME=web-1;MEMBRANE_LABELS=app:web,tier:front;PODMAN_X=y");
  ASSERT_TRUE(podman.ok()) << podman.error().message;
  EXPECT_EQ(podman->pod_name, "web-1");
  EXPECT_EQ(podman->pod_namespace, "");
  EXPECT_EQ(podman->labels, (std::map<std::string, std::string>{{"app", "web"}, {"tier", "front"}}));

  auto k8s = parseCniArgs(
      "IgnoreUnknown=1;K8S_POD_NAMESPACE=empire;K8S_POD_NAME=deathstar-1;K8S_POD_INFRA_CONTAINER_ID=abc;"
      "K8S_POD_UID=0f3e");
  ASSERT_TRUE(k8s.ok()) << k8s.error().message;
  EXPECT_EQ(*k8s, (CniArgs{"empire", "deathstar-1", "abc", "0f3e", {}}));

  // Empty pairs are skipped; a later duplicate wins; IgnoreUnknown anywhere.
  auto odd = parseCniArgs(";K8S_POD_NAME=a;;K8S_POD_NAME=b;X=1;IgnoreUnknown=true;");
  ASSERT_TRUE(odd.ok()) << odd.error().message;
  EXPECT_EQ(odd->pod_name, "b");
  EXPECT_TRUE(parseCniArgs("").ok());
  // An empty label value is valid Kubernetes syntax.
  auto empty_value = parseCniArgs("MEMBRANE_LABELS=canary:");
  ASSERT_TRUE(empty_value.ok()) << empty_value.error().message;
  EXPECT_EQ(empty_value->labels, (std::map<std::string, std::string>{{"canary", ""}}));
  auto no_labels = parseCniArgs("MEMBRANE_LABELS=");
  ASSERT_TRUE(no_labels.ok());
  EXPECT_TRUE(no_labels->labels.empty());
}

TEST(CniArgs, BadArgsAreCode4NamingThePair) {
  const Bad cases[] = {
      {"MEMBRANE_LABELS=a=b", 4,
       "CNI_ARGS: pair 1 \"MEMBRANE_LABELS=a=b\": expected exactly one '=' (KEY=VALUE; a value cannot contain '=' or "
       "';', so MEMBRANE_LABELS uses key:value)"},
      {"IgnoreUnknown=1;K8S_POD_NAME", 4,
       "CNI_ARGS: pair 2 \"K8S_POD_NAME\": expected exactly one '=' (KEY=VALUE; a value cannot contain '=' or ';', "
       "so MEMBRANE_LABELS uses key:value)"},
      {"K8S_POD_NAME=a;FOO=1", 4,
       "CNI_ARGS: unknown key \"FOO\" (add IgnoreUnknown=1 to pass keys meant for other plugins)"},
      {"IgnoreUnknown=0;FOO=1", 4,
       "CNI_ARGS: unknown key \"FOO\" (add IgnoreUnknown=1 to pass keys meant for other plugins)"},
      {"IgnoreUnknown=yes", 4, "CNI_ARGS: IgnoreUnknown=\"yes\": expected a boolean (1, true, 0, false)"},
      {"MEMBRANE_LABELS=app", 4,
       "CNI_ARGS: MEMBRANE_LABELS: label 1 \"app\": expected key:value (MEMBRANE_LABELS is key:value,key:value)"},
      {"MEMBRANE_LABELS=app:web,,x:y", 4,
       "CNI_ARGS: MEMBRANE_LABELS: label 2 \"\": expected key:value (MEMBRANE_LABELS is key:value,key:value)"},
      {"MEMBRANE_LABELS=app:web,app:db", 4,
       "CNI_ARGS: MEMBRANE_LABELS: label 2 \"app:db\": key \"app\" given twice"},
  };
  for (const auto& c : cases) expectError(statusOf(parseCniArgs(c.input)), c.code, c.message, c.input);
  // Kubernetes syntax, message from src/labels.
  auto bad_value = parseCniArgs("MEMBRANE_LABELS=app:w@b");
  ASSERT_FALSE(bad_value.ok());
  EXPECT_EQ(bad_value.error().code, 4);
  EXPECT_TRUE(bad_value.error().message.starts_with("CNI_ARGS: MEMBRANE_LABELS: label 1 \"app:w@b\": "))
      << bad_value.error().message;
  auto bad_key = parseCniArgs("MEMBRANE_LABELS=:web");
  ASSERT_FALSE(bad_key.ok());
  EXPECT_TRUE(bad_key.error().message.starts_with("CNI_ARGS: MEMBRANE_LABELS: label 1 \":web\": "))
      << bad_key.error().message;
}

using Vars = std::map<std::string, std::string>;

Vars addVars() {
  return {{"CNI_COMMAND", "ADD"}, {"CNI_CONTAINERID", "c0ffee"}, {"CNI_NETNS", "/run/netns/c1"},
          {"CNI_IFNAME", "eth0"}, {"CNI_PATH", "/usr/lib/cni::/opt/cni/bin"},
          {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"}};
}

TEST(CniEnv, Commands) {
  for (auto [text, cmd] : std::vector<std::pair<std::string, Command>>{{"ADD", Command::Add},
                                                                       {"DEL", Command::Del},
                                                                       {"CHECK", Command::Check},
                                                                       {"VERSION", Command::Version},
                                                                       {"GC", Command::Gc},
                                                                       {"STATUS", Command::Status}}) {
    auto c = parseCommand({{"CNI_COMMAND", text}});
    ASSERT_TRUE(c.ok()) << text;
    EXPECT_EQ(*c, cmd);
    EXPECT_EQ(commandName(cmd), text);
  }
  expectError(statusOf(parseCommand({})), 4,
              "CNI_COMMAND is not set: membrane-cni is a CNI plugin, run by a container runtime (see membrane-cni "
              "--help)",
              "unset");
  expectError(statusOf(parseCommand({{"CNI_COMMAND", "add"}})), 4,
              "CNI_COMMAND=\"add\": unknown command (ADD, DEL, CHECK, VERSION, GC, STATUS)", "add");
}

TEST(CniEnv, AddHasEverything) {
  auto env = parseEnv(Command::Add, addVars());
  ASSERT_TRUE(env.ok()) << env.error().message;
  EXPECT_EQ(env->container_id, "c0ffee");
  EXPECT_EQ(env->netns, "/run/netns/c1");
  EXPECT_EQ(env->ifname, "eth0");
  EXPECT_EQ(env->path, (std::vector<std::string>{"/usr/lib/cni", "/opt/cni/bin"}));
  EXPECT_EQ(env->args.pod_name, "web");
}

TEST(CniEnv, WhatEachCommandRequires) {
  // Which variables each command needs: removing one is a code-4 error naming it.
  struct Need {
    Command cmd;
    std::vector<std::string> required, optional;
  };
  const Need needs[] = {
      {Command::Add, {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"}, {"CNI_ARGS"}},
      {Command::Check, {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"}, {"CNI_ARGS"}},
      {Command::Del, {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"}, {"CNI_NETNS", "CNI_ARGS"}},
      {Command::Gc, {"CNI_PATH"}, {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"}},
      {Command::Status, {}, {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"}},
  };
  for (const auto& n : needs) {
    for (const auto& var : n.required) {
      Vars v = addVars();
      v.erase(var);
      expectError(statusOf(parseEnv(n.cmd, v)), 4,
                  var + " is not set (required for " + std::string(commandName(n.cmd)) + ")", var);
      v[var] = "";
      expectError(statusOf(parseEnv(n.cmd, v)), 4,
                  var + " is not set (required for " + std::string(commandName(n.cmd)) + ")", var + "=");
    }
    for (const auto& var : n.optional) {
      Vars v = addVars();
      v.erase(var);
      EXPECT_TRUE(parseEnv(n.cmd, v).ok()) << commandName(n.cmd) << " without " << var;
    }
  }
  // GC and STATUS ignore the container variables even when malformed.
  Vars gc = {{"CNI_PATH", "/x"}, {"CNI_CONTAINERID", "-bad"}, {"CNI_ARGS", "junk"}};
  EXPECT_TRUE(parseEnv(Command::Gc, gc).ok());
}

TEST(CniEnv, MalformedValuesAreCode4NamingTheVariable) {
  struct Case {
    std::string var, value, message;
  };
  const Case cases[] = {
      {"CNI_CONTAINERID", "-abc",
       "CNI_CONTAINERID=\"-abc\": must start with a letter or digit followed by letters, digits, '_', '.' or '-'"},
      {"CNI_CONTAINERID", "ab/c",
       "CNI_CONTAINERID=\"ab/c\": must start with a letter or digit followed by letters, digits, '_', '.' or '-'"},
      {"CNI_IFNAME", "eth0123456789012", "CNI_IFNAME=\"eth0123456789012\": 16 bytes, an interface name has at most 15"},
      {"CNI_IFNAME", "..", "CNI_IFNAME=\"..\": not an interface name"},
      {"CNI_IFNAME", "eth/0", "CNI_IFNAME=\"eth/0\": an interface name cannot contain '/', ':' or whitespace"},
      {"CNI_IFNAME", "eth 0", "CNI_IFNAME=\"eth 0\": an interface name cannot contain '/', ':' or whitespace"},
      {"CNI_NETNS", "run/netns/x", "CNI_NETNS=\"run/netns/x\": must be an absolute path (e.g. /run/netns/NAME)"},
      {"CNI_ARGS", "K8S_POD_NAME=a=b",
       "CNI_ARGS: pair 1 \"K8S_POD_NAME=a=b\": expected exactly one '=' (KEY=VALUE; a value cannot contain '=' or "
       "';', so MEMBRANE_LABELS uses key:value)"},
  };
  for (const auto& c : cases) {
    Vars v = addVars();
    v[c.var] = c.value;
    expectError(statusOf(parseEnv(Command::Add, v)), 4, c.message, c.var + "=" + c.value);
  }
  // 15 bytes is fine.
  Vars v = addVars();
  v["CNI_IFNAME"] = "eth012345678901";
  EXPECT_TRUE(parseEnv(Command::Add, v).ok());
}

}  // namespace
}  // namespace membrane::cni
