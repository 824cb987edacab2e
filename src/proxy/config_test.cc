#include "src/proxy/config.h"

#include <arpa/inet.h>

#include <gtest/gtest.h>

namespace membrane::proxy {
namespace {

std::shared_ptr<const ProxyConfig> parseOk(const std::string& j) {
  auto r = ProxyConfig::parse(j);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? std::move(r).value() : ProxyConfig::empty();
}

const char* kCfg = R"({"revision":3,"listeners":[{"port":15001,"direction":"ingress"},{"port":15002,"direction":"egress"}],
  "endpoints":[{"ip":"10.200.0.2","ingress":[{"port":80,"proto":"TCP","rules":[
     {"method":"POST","path":"/v1/request-landing","policy":"default/rule1","allowed_identities":[258,256]},
     {"method":"GET","path":"/public/.*","host":"deathstar(\\.default)?","headers":["X-Has-Force","X-Team: empire"],
      "header_matches":[{"name":"X-Token","value":"secret","mismatch":"DENY"},{"name":"X-Trace","value":"1","mismatch":"LOG"}],
      "policy":"default/rule2"}]}]}],
  "identities":{"10.200.0.3":256,"10.200.0.4":257}})";

struct Req {
  std::string method, url, host;
  std::vector<HeaderField> headers;
  RequestView view() const { return {method, url, host, headers.data(), headers.size()}; }
};

TEST(ProxyConfig, ParsesShapeAndLooksUp) {
  auto cfg = parseOk(kCfg);
  EXPECT_EQ(cfg->revision(), 3u);
  ASSERT_EQ(cfg->listeners().size(), 2u);
  EXPECT_EQ(cfg->listeners()[1].direction, Direction::Egress);
  EXPECT_EQ(cfg->redirectCount(), 1u);
  EXPECT_EQ(cfg->identityOf(inet_addr("10.200.0.3")), 256u);
  EXPECT_EQ(cfg->identityOf(inet_addr("10.9.9.9")), kWorldIdentity);
  EXPECT_NE(cfg->find(inet_addr("10.200.0.2"), Direction::Ingress, 80), nullptr);
  EXPECT_EQ(cfg->find(inet_addr("10.200.0.2"), Direction::Egress, 80), nullptr);
  EXPECT_EQ(cfg->find(inet_addr("10.200.0.2"), Direction::Ingress, 81), nullptr);
}

TEST(ProxyConfig, StarWarsVerdictsAreFullMatchesAndIdentityScoped) {
  auto cfg = parseOk(kCfg);
  const PortPolicy* pp = cfg->find(inet_addr("10.200.0.2"), Direction::Ingress, 80);
  Req landing{"POST", "/v1/request-landing", "deathstar", {}};
  Verdict v = ProxyConfig::evaluate(pp, 256, landing.view());
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.policy, "default/rule1");
  EXPECT_FALSE(ProxyConfig::evaluate(pp, 257, landing.view()).allowed);  // xwing-like identity
  EXPECT_FALSE(ProxyConfig::evaluate(nullptr, 256, landing.view()).allowed);
  for (auto [m, u] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1"}, {"PUT", "/v1/exhaust-port"}, {"POST", "/v1/request-landing2"},
           {"POST", "/v1/request-landing?x=1"}, {"POSTX", "/v1/request-landing"}, {"post", "/v1/request-landing"}}) {
    Req r{m, u, "", {}};
    EXPECT_FALSE(ProxyConfig::evaluate(pp, 256, r.view()).allowed) << m << " " << u;
  }
}

TEST(ProxyConfig, HostHeadersAndHeaderMatches) {
  auto cfg = parseOk(kCfg);
  const PortPolicy* pp = cfg->find(inet_addr("10.200.0.2"), Direction::Ingress, 80);
  Req r{"GET", "/public/a", "deathstar.default",
        {{"x-has-force", "yes"}, {"X-TEAM", "empire"}, {"X-Token", "secret"}, {"X-Trace", "1"}}};
  Verdict v = ProxyConfig::evaluate(pp, 999, r.view());  // no allowed_identities: any peer
  EXPECT_TRUE(v.allowed);
  EXPECT_FALSE(v.header_mismatch_logged);
  r.headers[3].value = "2";  // LOG mismatch: still allowed, flagged
  v = ProxyConfig::evaluate(pp, 999, r.view());
  EXPECT_TRUE(v.allowed);
  EXPECT_TRUE(v.header_mismatch_logged);
  Req bad = r;
  bad.headers[2].value = "other";  // DENY mismatch
  EXPECT_FALSE(ProxyConfig::evaluate(pp, 999, bad.view()).allowed);
  bad = r;
  bad.headers.erase(bad.headers.begin());  // required header missing
  EXPECT_FALSE(ProxyConfig::evaluate(pp, 999, bad.view()).allowed);
  bad = r;
  bad.headers[1].value = "rebels";
  EXPECT_FALSE(ProxyConfig::evaluate(pp, 999, bad.view()).allowed);
  bad = r;
  bad.host = "deathstar.default.evil";
  EXPECT_FALSE(ProxyConfig::evaluate(pp, 999, bad.view()).allowed);
}

// headerMatches mismatch actions as Cilium defines them (config.h).
TEST(ProxyConfig, HeaderMatchMismatchActionsEditTheRequest) {
  auto cfg = parseOk(R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[
      {"path":"/a","policy":"p1","header_matches":[
        {"name":"X-Add","value":"1","mismatch":"ADD"},
        {"name":"X-Del","value":"ok","mismatch":"DELETE"},
        {"name":"X-Gone","mismatch":"DELETE"},
        {"name":"X-Rep","value":"r","mismatch":"REPLACE"}]},
      {"path":"/a","policy":"p2","header_matches":[{"name":"X-Second","value":"2","mismatch":"REPLACE"}]},
      {"path":"/a","policy":"p3","header_matches":[{"name":"X-Need","value":"y"},
                                                  {"name":"X-Third","value":"3","mismatch":"ADD"}]}]}]}]})");
  const PortPolicy* pp = cfg->find(inet_addr("10.0.0.1"), Direction::Ingress, 80);
  ASSERT_NE(pp, nullptr);
  EXPECT_TRUE(pp->has_edits);
  auto names = [](const Verdict& v) {
    std::string out;
    for (const HeaderMatch* e : v.edits) out += e->name + " ";
    return out;
  };
  // Everything matches: no edits, not flagged, the first rule names the policy.
  Req all{"GET", "/a", "", {{"X-Add", "1"}, {"X-Del", "ok"}, {"X-Rep", "r"}, {"X-Second", "2"}, {"X-Need", "y"},
                            {"X-Third", "3"}}};
  Verdict v = ProxyConfig::evaluate(pp, 2, all.view());
  EXPECT_TRUE(v.allowed);
  EXPECT_FALSE(v.header_mismatch_logged);
  EXPECT_EQ(v.policy, "p1");
  EXPECT_EQ(names(v), "");
  // Nothing present: ADD and REPLACE of rules 1 and 2; DELETE of a missing
  // field does nothing; rule 3 fails on X-Need (DENY), so its ADD is dropped.
  Req none{"GET", "/a", "", {}};
  v = ProxyConfig::evaluate(pp, 2, none.view());
  EXPECT_TRUE(v.allowed);
  EXPECT_TRUE(v.header_mismatch_logged);
  EXPECT_EQ(v.policy, "p1");
  EXPECT_EQ(names(v), "X-Add X-Rep X-Second ");
  // Wrong values: DELETE of the present X-Del, rule 3 now accepts and adds.
  Req wrong{"GET", "/a", "", {{"X-Add", "0"}, {"x-del", "bad"}, {"X-Rep", "0"}, {"X-Second", "2"}, {"X-Need", "y"}}};
  v = ProxyConfig::evaluate(pp, 2, wrong.view());
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(names(v), "X-Add X-Del X-Rep X-Third ");
  // A port without editing actions stops at the first accepting rule.
  auto plain = parseOk(R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[
      {"policy":"first","header_matches":[{"name":"X","value":"1","mismatch":"LOG"}]},{"policy":"second"}]}]}]})");
  const PortPolicy* pl = plain->find(inet_addr("10.0.0.1"), Direction::Ingress, 80);
  EXPECT_FALSE(pl->has_edits);
  v = ProxyConfig::evaluate(pl, 2, none.view());
  EXPECT_EQ(v.policy, "first");
  EXPECT_TRUE(v.header_mismatch_logged);
  EXPECT_TRUE(v.edits.empty());
}

TEST(ProxyConfig, HeaderMatchEditsOfFramingFieldsAndBadBytesAreRefused) {
  for (const char* m : {R"({"name":"Host","value":"evil","mismatch":"REPLACE"})",
                        R"({"name":"content-length","value":"0","mismatch":"ADD"})",
                        R"({"name":"Transfer-Encoding","value":"chunked","mismatch":"DELETE"})",
                        R"({"name":"Connection","value":"close","mismatch":"ADD"})",
                        R"({"name":"X-A","value":"a\r\nX-Injected: 1","mismatch":"ADD"})",
                        R"({"name":"X A","value":"1"})", R"({"name":"X-A","value":" 1"})",
                        R"({"name":"X-A","value":"1","mismatch":"add"})"}) {
    std::string text = std::string(R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[{"header_matches":[)") +
                       m + "]}]}]}]}";
    auto r = ProxyConfig::parse(text);
    ASSERT_FALSE(r.ok()) << m;
    EXPECT_NE(r.error().message.find("endpoints[0].ingress[0].rules[0].header_matches[0]"), std::string::npos)
        << r.error().message;
  }
  // Matching a framing field (DENY, LOG) is fine.
  parseOk(R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[{"header_matches":[
      {"name":"Host","value":"d"},{"name":"Content-Length","value":"0","mismatch":"LOG"}]}]}]}]})");
}

TEST(ProxyConfig, EmptyRuleAllowsAllAndEmptyListDeniesAll) {
  auto cfg = parseOk(R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[{}]},{"port":81,"rules":[]}]}]})");
  Req r{"DELETE", "/anything", "", {}};
  EXPECT_TRUE(ProxyConfig::evaluate(cfg->find(inet_addr("10.0.0.1"), Direction::Ingress, 80), 2, r.view()).allowed);
  EXPECT_FALSE(ProxyConfig::evaluate(cfg->find(inet_addr("10.0.0.1"), Direction::Ingress, 81), 2, r.view()).allowed);
}

// Destinations outside the endpoint map resolve like the datapath's ipcache:
// exact endpoint/node IPs first, then the longest prefix, then world.
TEST(ProxyConfig, PrefixesAreLongestMatchAfterExactIps) {
  auto cfg = parseOk(R"({"identities":{"192.0.2.7":256},
    "prefixes":[{"cidr":"0.0.0.0/0","identity":16777219},{"cidr":"192.0.2.0/24","identity":16777217},
                {"cidr":"192.0.2.8/32","identity":16777218},{"cidr":"192.0.0.0/16","identity":16777220}]})");
  EXPECT_EQ(cfg->identityOf(inet_addr("192.0.2.7")), 256u);       // exact IP beats every prefix
  EXPECT_EQ(cfg->identityOf(inet_addr("192.0.2.8")), 16777218u);  // /32
  EXPECT_EQ(cfg->identityOf(inet_addr("192.0.2.9")), 16777217u);  // /24 beats /16 and /0
  EXPECT_EQ(cfg->identityOf(inet_addr("192.0.3.1")), 16777220u);  // /16
  EXPECT_EQ(cfg->identityOf(inet_addr("8.8.8.8")), 16777219u);    // /0
  auto no_default = parseOk(R"({"prefixes":[{"cidr":"192.0.2.0/24","identity":16777217}]})");
  EXPECT_EQ(no_default->identityOf(inet_addr("192.0.2.200")), 16777217u);
  EXPECT_EQ(no_default->identityOf(inet_addr("192.0.3.1")), kWorldIdentity);  // nothing matches
  // An egress rule limited to the /24's identity now matches a request to it.
  auto rules = parseOk(R"({"endpoints":[{"ip":"10.0.0.1","egress":[{"port":80,"rules":[
    {"method":"GET","path":"/allowed","allowed_identities":[16777217]}]}]}],
    "prefixes":[{"cidr":"192.0.2.0/24","identity":16777217}]})");
  const PortPolicy* pp = rules->find(inet_addr("10.0.0.1"), Direction::Egress, 80);
  Req ok{"GET", "/allowed", "", {}}, other{"GET", "/other", "", {}};
  EXPECT_TRUE(ProxyConfig::evaluate(pp, rules->identityOf(inet_addr("192.0.2.5")), ok.view()).allowed);
  EXPECT_FALSE(ProxyConfig::evaluate(pp, rules->identityOf(inet_addr("192.0.2.5")), other.view()).allowed);
  EXPECT_FALSE(ProxyConfig::evaluate(pp, rules->identityOf(inet_addr("198.51.100.1")), ok.view()).allowed);
}

TEST(ProxyConfig, ErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* want;
  } cases[] = {
      {"nope", "not valid JSON"},
      {"[]", "expected a JSON object"},
      {R"({"revision":-1})", "revision"},
      {R"({"listeners":[{"port":70000,"direction":"ingress"}]})", "listeners[0].port"},
      {R"({"listeners":[{"port":1,"direction":"sideways"}]})", "listeners[0].direction"},
      {R"({"endpoints":[{"ip":"10.0.0.300"}]})", "endpoints[0].ip"},
      {R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[{"path":"(("}]}]}]})",
       "endpoints[0].ingress[0].rules[0].path: invalid regex"},
      {R"({"endpoints":[{"ip":"10.0.0.1","egress":[{"port":80,"proto":"UDP"}]}]})", "endpoints[0].egress[0].proto"},
      {R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[{"header_matches":[{"name":"a","mismatch":"FAIL"}]}]}]}]})",
       "mismatch: 'FAIL' is not one of DENY, LOG, ADD, DELETE, REPLACE"},
      {R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[{"method":7}]}]}]})", "rules[0].method"},
      {R"({"identities":{"x":1}})", "identities"},
      {R"({"prefixes":{}})", "prefixes: expected an array"},
      {R"({"prefixes":[{"cidr":"10.0.0.0/8"}]})", "prefixes[0]: expected an object"},
      {R"({"prefixes":[{"cidr":"10.0.0.0","identity":16777217}]})", "prefixes[0].cidr: '10.0.0.0' has no '/length'"},
      {R"({"prefixes":[{"cidr":"10.0.0.0/33","identity":16777217}]})", "prefixes[0].cidr: '10.0.0.0/33': prefix length"},
      {R"({"prefixes":[{"cidr":"10.0.0.x/8","identity":16777217}]})", "prefixes[0].cidr: '10.0.0.x/8': not an IPv4"},
      {R"({"prefixes":[{"cidr":"10.1.0.0/8","identity":16777217}]})", "prefixes[0].cidr: '10.1.0.0/8': host bits set"},
      {R"({"prefixes":[{"cidr":7,"identity":16777217}]})", "prefixes[0].cidr: not a string"},
      {R"({"prefixes":[{"cidr":"10.0.0.0/8","identity":-1}]})", "prefixes[0].identity"},
      {R"({"prefixes":[{"cidr":"10.0.0.0/8","identity":1},{"cidr":"10.0.0.0/8","identity":2}]})",
       "prefixes[1].cidr: '10.0.0.0/8' listed twice"},
      // 2^32 + 256 must not wrap to 256.
      {R"({"endpoints":[{"ip":"10.0.0.1","ingress":[{"port":80,"rules":[{"allowed_identities":[4294967552]}]}]}]})",
       "endpoints[0].ingress[0].rules[0].allowed_identities: expected"},
      {R"({"identities":{"10.0.0.1":4294967552}})", "identities.10.0.0.1: expected"},
  };
  for (const auto& c : cases) {
    auto r = ProxyConfig::parse(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_NE(r.error().message.find(c.want), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace membrane::proxy
