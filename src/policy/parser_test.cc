#include <gtest/gtest.h>

#include <regex>

#include "membrane/policy.h"
#include "membrane/policy_json.h"
#include "src/policy/test_util.h"

namespace membrane::policy {
namespace {

using testing::allDiagnostics;
using testing::readSourceFile;

// Parses `text`, expects exactly one diagnostic and returns it formatted.
std::string oneError(const std::string& text) {
  auto r = parsePolicies(text, "p.yaml");
  EXPECT_TRUE(r.policies.empty());
  EXPECT_EQ(r.diagnostics.size(), 1u) << allDiagnostics(r);
  return r.diagnostics.empty() ? "" : formatDiagnostic(r.diagnostics[0]);
}

const char* kHeader = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: p
spec:
  endpointSelector: {}
)";

TEST(PolicyParser, StarWarsL3L4) {
  auto r = parsePolicies(readSourceFile("examples/starwars/sw_l3_l4_policy.yaml"), "sw_l3_l4_policy.yaml");
  ASSERT_TRUE(r.ok()) << allDiagnostics(r);
  ASSERT_EQ(r.policies.size(), 1u);
  const Policy& p = r.policies[0];
  EXPECT_EQ(p.kind, Kind::CiliumNetworkPolicy);
  EXPECT_EQ(p.name, "rule1");
  EXPECT_EQ(p.namespace_name, "default");
  ASSERT_EQ(p.rules.size(), 1u);
  const Rule& rule = p.rules[0];
  EXPECT_EQ(rule.description, "L3-L4 policy to restrict deathstar access to empire ships only");
  EXPECT_TRUE(rule.has_ingress);
  EXPECT_FALSE(rule.has_egress);
  ASSERT_EQ(rule.ingress.size(), 1u);
  ASSERT_EQ(rule.ingress[0].to_ports.size(), 1u);
  EXPECT_EQ(rule.ingress[0].to_ports[0].ports, (std::vector<PortProtocol>{{80, 0, Protocol::TCP, ""}}));

  auto j = toJson(p);
  EXPECT_EQ(j["rules"][0]["endpointSelector"].dump(),
            R"({"matchLabels":{"any:class":"deathstar","any:org":"empire","k8s:io.kubernetes.pod.namespace":"default"}})");
  EXPECT_EQ(j["rules"][0]["ingress"].dump(),
            R"([{"fromEndpoints":[{"matchLabels":{"any:org":"empire","k8s:io.kubernetes.pod.namespace":"default"}}],)"
            R"("toPorts":[{"ports":[{"port":"80","protocol":"TCP"}]}]}])");
  EXPECT_EQ(j["rules"][0]["labels"].dump(),
            R"([{"key":"io.cilium.k8s.policy.derived-from","source":"k8s","value":"CiliumNetworkPolicy"},)"
            R"({"key":"io.cilium.k8s.policy.name","source":"k8s","value":"rule1"},)"
            R"({"key":"io.cilium.k8s.policy.namespace","source":"k8s","value":"default"}])");
}

TEST(PolicyParser, StarWarsL7AndDeny) {
  auto l7 = parsePolicies(readSourceFile("examples/starwars/sw_l3_l4_l7_policy.yaml"), "l7.yaml");
  ASSERT_TRUE(l7.ok()) << allDiagnostics(l7);
  EXPECT_EQ(l7.policies[0].rules[0].ingress[0].to_ports[0].http,
            (std::vector<HttpRule>{{"POST", "/v1/request-landing", "", {}, {}}}));
  auto deny = parsePolicies(readSourceFile("examples/starwars/sw_deny_policy.yaml"), "deny.yaml");
  ASSERT_TRUE(deny.ok()) << allDiagnostics(deny);
  const Rule& r = deny.policies[0].rules[0];
  EXPECT_EQ(deny.policies[0].name, "empire-default-deny");
  EXPECT_TRUE(r.has_ingress);
  ASSERT_EQ(r.ingress.size(), 1u);
  EXPECT_EQ(r.ingress[0], PeerRule{});
}

TEST(PolicyParser, HeaderMatches) {
  std::string http = std::string(kHeader) +
                     "  ingress:\n  - toPorts:\n    - ports: [{port: 80}]\n      rules:\n        http:\n        - headerMatches:\n";
  auto r = parsePolicies(http + "          - {name: X-Token, value: t0k}\n"
                                "          - {name: X-Via, value: membrane, mismatch: ADD}\n"
                                "          - {name: X-Debug, value: \"off\", mismatch: DELETE}\n"
                                "          - {name: X-Env, value: prod, mismatch: REPLACE}\n"
                                "          - {name: X-Trace, mismatch: LOG}\n",
                         "p.yaml");
  ASSERT_TRUE(r.ok()) << allDiagnostics(r);
  EXPECT_EQ(r.policies[0].rules[0].ingress[0].to_ports[0].http[0].header_matches,
            (std::vector<HeaderMatchRule>{{"X-Token", "t0k", ""},
                                          {"X-Via", "membrane", "ADD"},
                                          {"X-Debug", "off", "DELETE"},
                                          {"X-Env", "prod", "REPLACE"},
                                          {"X-Trace", "", "LOG"}}));
  const std::string at = "p.yaml:13:13: spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0]";
  EXPECT_EQ(oneError(http + "          - {name: Host, value: evil, mismatch: REPLACE}\n"),
            "p.yaml:13:49: spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].mismatch: 'Host' frames or "
            "routes the request: it can be matched, not changed by REPLACE");
  EXPECT_EQ(oneError(http + "          - {name: X-A, value: a, mismatch: FAIL}\n"),
            "p.yaml:13:45: spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].mismatch: unknown mismatch "
            "action 'FAIL' (LOG, ADD, DELETE or REPLACE; leave it out to deny)");
  EXPECT_EQ(oneError(http + "          - {value: a}\n"),
            at + ".name: required: the name of the header field to match");
  EXPECT_EQ(oneError(http + "          - {name: \"X A\"}\n"),
            "p.yaml:13:20: spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].name: 'X A' is not an HTTP "
            "field name");
  EXPECT_EQ(oneError(http + "          - {name: X-A, value: \"a\\r\\nX-B: 1\", mismatch: ADD}\n"),
            "p.yaml:13:32: spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].value: control characters or "
            "leading/trailing whitespace are not allowed in a header value");
  EXPECT_EQ(oneError(http + "          - {name: X-A, secret: {namespace: default, name: tok}}\n"),
            "p.yaml:13:25: spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].secret: secret is not "
            "supported: membrane reads no Kubernetes secrets; put the value in 'value'");
}

TEST(PolicyParser, MultiDocumentJsonAndList) {
  std::string yaml = std::string(kHeader) + "---\n" +
                     "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: cw\n"
                     "specs:\n- endpointSelector: {matchLabels: {'k8s:org': empire}}\n  egress:\n  - toEntities: [world]\n"
                     "---\n";
  auto r = parsePolicies(yaml, "multi.yaml");
  ASSERT_TRUE(r.ok()) << allDiagnostics(r);
  ASSERT_EQ(r.policies.size(), 2u);
  EXPECT_EQ(r.policies[1].kind, Kind::CiliumClusterwideNetworkPolicy);
  EXPECT_EQ(r.policies[1].namespace_name, "");
  EXPECT_EQ(toJson(r.policies[1].rules[0].endpoint_selector).dump(), R"({"matchLabels":{"k8s:org":"empire"}})");
  EXPECT_EQ(r.policies[1].rules[0].egress[0].entities, (std::vector<Entity>{Entity::World}));

  const char* json = "{\n\t\"apiVersion\": \"cilium.io/v2\", \"kind\": \"CiliumNetworkPolicy\",\n"
                     "\t\"metadata\": {\"name\": \"j\", \"namespace\": \"ns1\"},\n"
                     "\t\"spec\": {\"endpointSelector\": {}, \"ingress\": [{\"toPorts\": [{\"ports\": [{\"port\": 53}]}]}]}\n}\n";
  auto j = parsePolicies(json, "p.json");
  ASSERT_TRUE(j.ok()) << allDiagnostics(j);
  EXPECT_EQ(j.policies[0].namespace_name, "ns1");
  EXPECT_EQ(j.policies[0].rules[0].ingress[0].to_ports[0].ports, (std::vector<PortProtocol>{{53, 0, Protocol::Any, ""}}));

  std::string json2 = std::regex_replace(std::string(json), std::regex("\"name\": \"j\""), "\"name\": \"j2\"");
  auto arr = parsePolicies(std::string("[") + json + "," + json2 + "]", "a.json");
  ASSERT_TRUE(arr.ok()) << allDiagnostics(arr);
  EXPECT_EQ(arr.policies.size(), 2u);

  auto list = parsePolicies(std::string(R"({"apiVersion": "v1", "kind": "List", "items": [)") + json + "]}", "l.json");
  ASSERT_TRUE(list.ok()) << allDiagnostics(list);
  EXPECT_EQ(list.policies.size(), 1u);
}

// One policy defined twice in one input (issue 12). kubectl would keep the
// last definition; that drops the first one's rules without a word (a dropped
// deny rule fails open), so it is refused, naming both places.
TEST(PolicyParser, PolicyDefinedTwiceIsRefusedWithBothPlaces) {
  const std::string deny = std::string(kHeader) + "  ingressDeny:\n  - fromEntities: [world]\n";
  EXPECT_EQ(oneError(deny + "---\n" + kHeader),
            "p.yaml:13:9: metadata.name: CiliumNetworkPolicy default/p is defined twice (first at p.yaml:4:9): "
            "kubectl would "
            "keep only the last definition, which silently drops the rules of the other; merge the two or rename one");
  // Same name, other kind or other namespace: different policies.
  auto kinds = parsePolicies(std::string(kHeader) + "---\n" +
                                 "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: p\n"
                                 "spec:\n  endpointSelector: {}\n---\n" +
                                 "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n"
                                 "  namespace: other\nspec:\n  endpointSelector: {}\n",
                             "k.yaml");
  ASSERT_TRUE(kinds.ok()) << allDiagnostics(kinds);
  EXPECT_EQ(kinds.policies.size(), 3u);
}

// `membrane policy import` of a YAML stream of JSON objects (issue 10): every
// document is a policy, with or without `---` between them.
TEST(PolicyParser, JsonDocumentStream) {
  auto cnp = [](const std::string& name) {
    return "{\n\t\"apiVersion\": \"cilium.io/v2\", \"kind\": \"CiliumNetworkPolicy\",\n\t\"metadata\": {\"name\": \"" +
           name + "\"},\n\t\"spec\": {\"endpointSelector\": {}}\n}\n";
  };
  auto r = parsePolicies(cnp("a") + "---\n" + cnp("b") + "---\n" + cnp("c"), "s.json");
  ASSERT_TRUE(r.ok()) << allDiagnostics(r);
  ASSERT_EQ(r.policies.size(), 3u);
  EXPECT_EQ(r.policies[2].name, "c");
  auto cat = parsePolicies(cnp("a") + cnp("b"), "cat.json");
  ASSERT_TRUE(cat.ok()) << allDiagnostics(cat);
  EXPECT_EQ(cat.policies.size(), 2u);
  // YAML first, then a JSON document with tabs.
  auto mixed = parsePolicies(std::string(kHeader) + "---\n" + cnp("b"), "m.yaml");
  ASSERT_TRUE(mixed.ok()) << allDiagnostics(mixed);
  EXPECT_EQ(mixed.policies.size(), 2u);
}

TEST(PolicyParser, SelectorsEntitiesCidrsPorts) {
  std::string text = std::string(kHeader) + R"(  ingress:
  - fromEndpoints:
    - matchExpressions:
      - {key: class, operator: In, values: [xwing, tiefighter]}
      - {key: "k8s:io.kubernetes.pod.namespace", operator: Exists}
    fromEntities: [host, cluster]
    fromCIDR: [10.1.2.3/8]
    fromCIDRSet: [{cidr: 192.168.0.0/16, except: [192.168.1.0/24]}]
    toPorts:
    - ports: [{port: "8080", endPort: 8082, protocol: UDP}, {port: 443}]
  egressDeny:
  - toEndpoints: [{matchLabels: {"reserved:host": ""}}]
  enableDefaultDeny: {egress: false}
)";
  auto r = parsePolicies(text, "p.yaml");
  ASSERT_TRUE(r.ok()) << allDiagnostics(r);
  const Rule& rule = r.policies[0].rules[0];
  const PeerRule& in = rule.ingress[0];
  // The selector names the namespace key itself: no namespace is added.
  EXPECT_EQ(toJson(in.endpoints[0]).dump(),
            R"({"matchExpressions":[{"key":"any:class","operator":"In","values":["tiefighter","xwing"]},)"
            R"({"key":"k8s:io.kubernetes.pod.namespace","operator":"Exists"}]})");
  EXPECT_EQ(in.entities, (std::vector<Entity>{Entity::Host, Entity::Cluster}));
  EXPECT_EQ(in.cidrs, (std::vector<CidrRule>{{"10.0.0.0/8", {}}, {"192.168.0.0/16", {"192.168.1.0/24"}}}));
  EXPECT_EQ(in.to_ports[0].ports,
            (std::vector<PortProtocol>{{8080, 8082, Protocol::UDP, ""}, {443, 0, Protocol::Any, ""}}));
  // Reserved selectors are not namespaced.
  EXPECT_EQ(toJson(rule.egress_deny[0].endpoints[0]).dump(), R"({"matchLabels":{"reserved:host":""}})");
  EXPECT_TRUE(rule.has_egress);
  EXPECT_EQ(rule.default_deny_egress, false);
  EXPECT_EQ(rule.default_deny_ingress, std::nullopt);
}

TEST(PolicyParser, NetworkPolicy) {
  const char* text = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: np
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: db}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - {port: 5432}
)";
  auto r = parsePolicies(text, "np.yaml");
  ASSERT_TRUE(r.ok()) << allDiagnostics(r);
  const Rule& rule = r.policies[0].rules[0];
  EXPECT_EQ(toJson(rule.endpoint_selector).dump(),
            R"({"matchLabels":{"k8s:app":"db","k8s:io.kubernetes.pod.namespace":"shop"}})");
  EXPECT_TRUE(rule.has_ingress);
  EXPECT_TRUE(rule.has_egress);  // policyTypes Egress without rules: deny all egress
  EXPECT_TRUE(rule.egress.empty());
  const PeerRule& in = rule.ingress[0];
  ASSERT_EQ(in.endpoints.size(), 2u);
  EXPECT_EQ(toJson(in.endpoints[0]).dump(),
            R"({"matchLabels":{"k8s:app":"api","k8s:io.kubernetes.pod.namespace":"shop"}})");
  // Cilium's form: namespace labels of the peer pod (labels::endpointLabels adds them).
  EXPECT_EQ(toJson(in.endpoints[1]).dump(),
            R"({"matchExpressions":[{"key":"k8s:io.kubernetes.pod.namespace","operator":"Exists"}],)"
            R"("matchLabels":{"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name":"ops"}})");
  EXPECT_TRUE(in.endpoints[1].matches(labels::endpointLabels("ops", labels::LabelSet())));
  EXPECT_FALSE(in.endpoints[1].matches(labels::endpointLabels("shop", labels::LabelSet())));
  EXPECT_EQ(in.cidrs, (std::vector<CidrRule>{{"10.0.0.0/8", {"10.1.0.0/16"}}}));
  EXPECT_EQ(in.to_ports[0].ports, (std::vector<PortProtocol>{{5432, 0, Protocol::TCP, ""}}));
}

// ---- diagnostics: exact path, line and column -------------------------------

TEST(PolicyParserDiagnostics, UnknownField) {
  EXPECT_EQ(oneError(std::string(kHeader) + "  ingress:\n  - fromEndpoint: [{}]\n"),
            "p.yaml:8:5: spec.ingress[0].fromEndpoint: unknown field 'fromEndpoint' (did you mean 'fromEndpoints'?)");
  EXPECT_EQ(oneError(std::string(kHeader) + "  bogus: 1\n"), "p.yaml:7:3: spec.bogus: unknown field 'bogus' (known fields: endpointSelector, ingress, ingressDeny, "
            "egress, egressDeny, labels, enableDefaultDeny, description)");
}

TEST(PolicyParserDiagnostics, WrongType) {
  EXPECT_EQ(oneError(std::string(kHeader) + "  ingress:\n    fromEndpoints: []\n"),
            "p.yaml:8:5: spec.ingress: expected a list, got a mapping");
  EXPECT_EQ(oneError(std::string(kHeader) + "  enableDefaultDeny: {ingress: maybe}\n"),
            "p.yaml:7:32: spec.enableDefaultDeny.ingress: expected true or false, got 'maybe'");
}

TEST(PolicyParserDiagnostics, Ports) {
  const std::string ports = std::string(kHeader) + "  ingress:\n  - toPorts:\n    - ports:\n";
  EXPECT_EQ(oneError(ports + "      - port: 70000\n"),
            "p.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: port 70000 is out of range (0-65535)");
  EXPECT_EQ(oneError(ports + "      - {port: \"80\", endPort: 79}\n"),
            "p.yaml:10:31: spec.ingress[0].toPorts[0].ports[0].endPort: endPort 79 is lower than port 80");
  EXPECT_EQ(oneError(ports + "      - {port: 1, endPort: 5000}\n"),
            "p.yaml:10:28: spec.ingress[0].toPorts[0].ports[0].endPort: port range 1-5000 spans 5000 ports; "
            "at most 4096 are supported (one map entry per port)");
  EXPECT_EQ(oneError(ports + "      - {port: Http}\n"),
            "p.yaml:10:16: spec.ingress[0].toPorts[0].ports[0].port: port name 'Http' is invalid: only a-z, 0-9 and '-' "
            "are allowed (IANA_SVC_NAME: 1-15 characters a-z, 0-9, '-', at least one letter, no '-' at either end, "
            "no '--')");
  EXPECT_EQ(oneError(ports + "      - {port: http, endPort: 90}\n"),
            "p.yaml:10:31: spec.ingress[0].toPorts[0].ports[0].endPort: endPort cannot be used with the named port "
            "'http'");
  EXPECT_EQ(oneError(ports + "      - {port: 80, protocol: tcp}\n"),
            "p.yaml:10:30: spec.ingress[0].toPorts[0].ports[0].protocol: protocol 'tcp' must be one of TCP, UDP, SCTP, "
            "ICMP, ANY (upper case)");
  EXPECT_EQ(oneError(ports + "      - {protocol: ICMPV6}\n"),
            "p.yaml:10:20: spec.ingress[0].toPorts[0].ports[0].protocol: protocol ICMPV6 is not supported yet (IPv6)");
  EXPECT_EQ(oneError(ports + "      - {port: \"0\", protocol: TCP}\n      rules: {http: [{}]}\n"),
            "p.yaml:11:7: spec.ingress[0].toPorts[0].rules: L7 rules can not be used when a port is 0 (all ports); "
            "give the port");
}

TEST(PolicyParser, ProtocolOnlyPortsAndIcmps) {
  std::string text = std::string(kHeader) + R"(  ingress:
  - toPorts: [{ports: [{protocol: UDP}, {port: "0", protocol: SCTP}]}]
    icmps:
    - fields: [{type: 8, family: IPv4}, {type: EchoRequest}, {type: DestinationUnreachable}, {type: "0"}]
)";
  auto r = parsePolicies(text, "p.yaml");
  ASSERT_TRUE(r.ok()) << allDiagnostics(r);
  const PeerRule& in = r.policies[0].rules[0].ingress[0];
  EXPECT_EQ(in.to_ports[0].ports, (std::vector<PortProtocol>{{0, 0, Protocol::UDP, ""}, {0, 0, Protocol::SCTP, ""}}));
  EXPECT_EQ(in.icmp_types, (std::vector<uint8_t>{8, 3, 0}));
  EXPECT_EQ(toJson(r.policies[0].rules[0])["ingress"][0]["icmps"].dump(),
            R"([{"fields":[{"family":"IPv4","type":8},{"family":"IPv4","type":3},{"family":"IPv4","type":0}]}])");
}

TEST(PolicyParserDiagnostics, Icmps) {
  const std::string icmps = std::string(kHeader) + "  egress:\n  - icmps:\n    - fields:\n";
  EXPECT_EQ(oneError(icmps + "      - {type: 8, family: IPv6}\n"),
            "p.yaml:10:27: spec.egress[0].icmps[0].fields[0].family: ICMPv6 is not supported yet (IPv6)");
  EXPECT_EQ(oneError(icmps + "      - {type: 256}\n"),
            "p.yaml:10:16: spec.egress[0].icmps[0].fields[0].type: ICMP type 256 is out of range (0-255)");
  EXPECT_EQ(oneError(icmps + "      - {type: EchoRequst}\n"),
            "p.yaml:10:16: spec.egress[0].icmps[0].fields[0].type: unknown ICMP type 'EchoRequst' (did you mean "
            "'EchoRequest'?)");
  EXPECT_EQ(oneError(icmps + "      - {family: IPv4}\n"),
            "p.yaml:10:9: spec.egress[0].icmps[0].fields[0].type: missing required field 'type'");
  EXPECT_EQ(oneError(std::string(kHeader) + "  egress:\n  - icmps: [{field: []}]\n"),
            "p.yaml:8:14: spec.egress[0].icmps[0].field: unknown field 'field' (did you mean 'fields'?)");
}

TEST(PolicyParserDiagnostics, BadCidr) {
  EXPECT_EQ(oneError(std::string(kHeader) + "  egress:\n  - toCIDR: [\"10.0.0.300/8\"]\n"),
            "p.yaml:8:14: spec.egress[0].toCIDR[0]: invalid CIDR '10.0.0.300/8': '10.0.0.300' is not an IPv4 address");
  EXPECT_EQ(oneError(std::string(kHeader) + "  egress:\n  - toCIDR: [10.0.0.0/33]\n"),
            "p.yaml:8:14: spec.egress[0].toCIDR[0]: invalid CIDR '10.0.0.0/33': prefix length must be 0-32");
  EXPECT_EQ(oneError(std::string(kHeader) + "  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}]\n"),
            "p.yaml:8:45: spec.egress[0].toCIDRSet[0].except[0]: except '11.0.0.0/16' is not contained in '10.0.0.0/8'");
  EXPECT_EQ(oneError(std::string(kHeader) + "  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/33}]\n"),
            "p.yaml:8:24: spec.egress[0].toCIDRSet[0].cidr: invalid CIDR '10.0.0.0/33': prefix length must be 0-32");
  EXPECT_EQ(oneError(std::string(kHeader) + "  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/x]}]\n"),
            "p.yaml:8:45: spec.egress[0].toCIDRSet[0].except[0]: invalid CIDR '10.1.0.0/x': prefix length must be 0-32");
  EXPECT_EQ(oneError(std::string(kHeader) + "  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [0.0.0.0/0]}]\n"),
            "p.yaml:8:45: spec.egress[0].toCIDRSet[0].except[0]: except '0.0.0.0/0' is not contained in '10.0.0.0/8'");
}

// A /0 set contains every except (its mask is 0, not a shift by 32).
TEST(PolicyParser, CidrSetOfEverything) {
  auto r = parsePolicies(std::string(kHeader) + "  egress:\n  - toCIDRSet: [{cidr: 1.2.3.4/0, except: [10.0.0.0/8]}]\n",
                         "p.yaml");
  ASSERT_TRUE(r.ok()) << allDiagnostics(r);
  EXPECT_EQ(r.policies[0].rules[0].egress[0].cidrs, (std::vector<CidrRule>{{"0.0.0.0/0", {"10.0.0.0/8"}}}));
}

TEST(PolicyParserDiagnostics, Unsupported) {
  EXPECT_EQ(oneError(std::string(kHeader) + "  egress:\n  - toFQDNs: [{matchName: cilium.io}]\n"),
            "p.yaml:8:5: spec.egress[0].toFQDNs: toFQDNs is not supported yet");
  EXPECT_EQ(oneError(std::string(kHeader) +
                     "  ingress:\n  - toPorts:\n    - ports: [{port: 9092}]\n      rules: {kafka: [{topic: t}]}\n"),
            "p.yaml:10:15: spec.ingress[0].toPorts[0].rules.kafka: kafka is not supported yet");
  EXPECT_EQ(oneError(std::string(kHeader) + "  ingressDeny:\n  - toPorts:\n    - ports: [{port: 80}]\n"
                                            "      rules: {http: [{}]}\n"),
            "p.yaml:10:7: spec.ingressDeny[0].toPorts[0].rules: L7 rules are not allowed in deny rules");
  EXPECT_EQ(oneError(std::string(kHeader) + "  ingress:\n  - fromEntities: [wrold]\n"),
            "p.yaml:8:20: spec.ingress[0].fromEntities[0]: unknown entity 'wrold' (did you mean 'world'?)");
}

TEST(PolicyParserDiagnostics, Metadata) {
  EXPECT_EQ(oneError("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  namespace: x\n"
                     "spec: {endpointSelector: {}}\n"),
            "p.yaml:4:3: metadata.name: missing required field 'name'");
  EXPECT_EQ(oneError("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: a\n  namespace: Bad_NS\n"
                     "spec: {endpointSelector: {}}\n"),
            "p.yaml:5:14: metadata.namespace: namespace 'Bad_NS' must be a DNS label: at most 63 lowercase "
            "alphanumerics or '-', starting and ending with an alphanumeric");
  EXPECT_EQ(oneError("apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\n"
                     "spec: {endpointSelector: {}}\n"),
            "p.yaml:1:13: apiVersion: apiVersion 'cilium.io/v1' is not supported for CiliumNetworkPolicy "
            "(expected 'cilium.io/v2')");
  EXPECT_EQ(oneError("apiVersion: cilium.io/v2\nkind: Pod\nmetadata: {name: a}\n"),
            "p.yaml:2:7: kind: kind 'Pod' is not supported (expected CiliumNetworkPolicy, "
            "CiliumClusterwideNetworkPolicy or NetworkPolicy)");
}

TEST(PolicyParserDiagnostics, YamlSyntaxError) {
  auto r = parsePolicies(std::string(kHeader) + "  ingress: [\n", "p.yaml");
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_TRUE(r.policies.empty());
  EXPECT_EQ(r.diagnostics[0].path, "");
  EXPECT_EQ(r.diagnostics[0].line, 8);
  EXPECT_EQ(formatDiagnostic(r.diagnostics[0]), "p.yaml:8:1: end of sequence flow not found");
  auto j = parsePolicies("{\"kind\": \"CiliumNetworkPolicy\",, }", "p.json");
  ASSERT_EQ(j.diagnostics.size(), 1u);
  EXPECT_EQ(formatDiagnostic(j.diagnostics[0]), "p.json:1:32: field names must be strings, got null");
}

TEST(PolicyParserDiagnostics, InputsThatHangYamlCpp) {
  // yaml-cpp 0.7 would allocate documents forever on these (found by fuzzing).
  EXPECT_EQ(oneError("{\"kind\": \"CiliumNetworkPolicy\"},\n \"spec\": {"),
            "p.yaml:1:32: unexpected ',' after the end of the document's top-level value");
  EXPECT_EQ(oneError("[a], "), "p.yaml:1:4: unexpected ',' after the end of the document's top-level value");
  EXPECT_EQ(oneError("'s',"), "p.yaml:1:4: unexpected ',' after the end of the document's top-level value");
}

TEST(PolicyParserDiagnostics, InvalidUtf8) {
  EXPECT_EQ(oneError(std::string(kHeader) + "  description: \"bad \xff byte\"\n"),
            "p.yaml:7:21: invalid UTF-8 (byte 0xff): policy files must be UTF-8 text");
  EXPECT_EQ(oneError("a: \xc0\xaf\n"), "p.yaml:1:4: invalid UTF-8 (byte 0xc0): policy files must be UTF-8 text");
  EXPECT_TRUE(parsePolicies(std::string(kHeader) + "  description: \"caf\xc3\xa9 \xe2\x98\x83\"\n", "p.yaml").ok());
}

TEST(PolicyParserDiagnostics, AllOrNothingAndEveryError) {
  // A good policy followed by a bad one: nothing is returned, and both errors
  // of the bad document are reported.
  const std::string q = std::regex_replace(std::string(kHeader), std::regex("name: p"), "name: q");
  std::string text = std::string(kHeader) + "---\n" + q + "  ingress:\n  - fromEndpoint: []\n" +
                     "  egress:\n  - toPorts: [{ports: [{port: -1}]}]\n";
  auto r = parsePolicies(text, "p.yaml");
  EXPECT_TRUE(r.policies.empty());
  ASSERT_EQ(r.diagnostics.size(), 2u) << allDiagnostics(r);
  EXPECT_EQ(formatDiagnostic(r.diagnostics[0]),
            "p.yaml:15:5: spec.ingress[0].fromEndpoint: unknown field 'fromEndpoint' (did you mean 'fromEndpoints'?)");
  EXPECT_EQ(formatDiagnostic(r.diagnostics[1]),
            "p.yaml:17:31: spec.egress[0].toPorts[0].ports[0].port: port -1 is out of range (0-65535)");
}

TEST(PolicyParserDiagnostics, NeverThrowsOnOddInput) {
  for (const char* text : {"", "---", "42", "[1, 2]", "{a: [}", "\t\tx: y", "kind: List\nitems: 5\n",
                           "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: []\n", "*alias",
                           "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspecs: {}\n"}) {
    auto r = parsePolicies(text, "odd.yaml");
    EXPECT_FALSE(r.ok()) << text;
    EXPECT_TRUE(r.policies.empty());
  }
}

}  // namespace
}  // namespace membrane::policy
