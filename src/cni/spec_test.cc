#include "src/cni/spec.h"

#include <gtest/gtest.h>

namespace membrane::cni {
namespace {

CniResult sampleResult() {
  CniResult r;
  r.interfaces = {{"lxc1a2b3c4d5e6", "aa:bb:cc:00:00:01", "", {}, "", ""},
                  {"eth0", "aa:bb:cc:00:00:02", "/run/netns/c1", {}, "", ""}};
  r.ips = {{"10.200.0.7/32", "10.200.0.1", 1}};
  r.routes = {{"0.0.0.0/0", "10.200.0.1", {}, {}, {}, {}, {}}};
  return r;
}

TEST(CniVersion, EverySupportedVersionParsesAndPrintsBack) {
  for (const auto& s : supportedVersions()) {
    auto v = parseVersion(s);
    ASSERT_TRUE(v.ok()) << s;
    EXPECT_EQ(v->text(), s);
  }
  EXPECT_EQ(supportedVersionsText(), "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
  EXPECT_LT(*parseVersion("0.3.1"), kV040);
  EXPECT_LT(*parseVersion("0.4.0"), kV100);
  EXPECT_LT(*parseVersion("1.0.0"), kV110);
}

TEST(CniVersion, UnknownVersionsAreCode1NamingThem) {
  for (const char* bad : {"0.1.0", "0.2.0", "1.2.0", "2.0.0", "1.0", "v1.0.0", "", "1.0.0 "}) {
    auto v = parseVersion(bad);
    ASSERT_FALSE(v.ok()) << bad;
    EXPECT_EQ(v.error().code, 1);
    EXPECT_EQ(v.error().message, std::string("incompatible CNI version \"") + bad +
                                     "\": membrane-cni supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0");
  }
}

TEST(CniResultJson, Version100HasNoIpVersionAndEmptyDns) {
  EXPECT_EQ(resultToJson(sampleResult(), kV100).dump(),
            R"({"cniVersion":"1.0.0","dns":{},"interfaces":[{"mac":"aa:bb:cc:00:00:01","name":"lxc1a2b3c4d5e6"},)"
            R"({"mac":"aa:bb:cc:00:00:02","name":"eth0","sandbox":"/run/netns/c1"}],)"
            R"("ips":[{"address":"10.200.0.7/32","gateway":"10.200.0.1","interface":1}],)"
            R"("routes":[{"dst":"0.0.0.0/0","gw":"10.200.0.1"}]})");
}

TEST(CniResultJson, Versions03xAnd040CarryIpVersion) {
  for (const char* v : {"0.3.0", "0.3.1", "0.4.0"}) {
    EXPECT_EQ(resultToJson(sampleResult(), *parseVersion(v)).dump(),
              std::string(R"({"cniVersion":")") + v +
                  R"(","dns":{},"interfaces":[{"mac":"aa:bb:cc:00:00:01","name":"lxc1a2b3c4d5e6"},)"
                  R"({"mac":"aa:bb:cc:00:00:02","name":"eth0","sandbox":"/run/netns/c1"}],)"
                  R"("ips":[{"address":"10.200.0.7/32","gateway":"10.200.0.1","interface":1,"version":"4"}],)"
                  R"("routes":[{"dst":"0.0.0.0/0","gw":"10.200.0.1"}]})")
        << v;
  }
  CniResult six;
  six.ips = {{"fd00::7/128", "", {}}};
  EXPECT_EQ(resultToJson(six, *parseVersion("0.4.0")).dump(),
            R"({"cniVersion":"0.4.0","dns":{},"ips":[{"address":"fd00::7/128","version":"6"}]})");
}

TEST(CniResultJson, Version110FieldsOnlyIn110) {
  CniResult r = sampleResult();
  r.interfaces[1].mtu = 1500;
  r.interfaces[1].socket_path = "/run/vhost.sock";
  r.interfaces[1].pci_id = "0000:00:1f.6";
  r.routes[0].mtu = 1400;
  r.routes[0].advmss = 1360;
  r.routes[0].priority = 10;
  r.routes[0].table = 100;
  r.routes[0].scope = 0;
  r.dns.nameservers = {"10.96.0.10"};
  r.dns.domain = "cluster.local";
  r.dns.search = {"default.svc.cluster.local"};
  r.dns.options = {"ndots:5"};
  Json j11 = resultToJson(r, kV110);
  EXPECT_EQ(j11["interfaces"][1].dump(),
            R"({"mac":"aa:bb:cc:00:00:02","mtu":1500,"name":"eth0","pciID":"0000:00:1f.6",)"
            R"("sandbox":"/run/netns/c1","socketPath":"/run/vhost.sock"})");
  EXPECT_EQ(j11["routes"][0].dump(),
            R"({"advmss":1360,"dst":"0.0.0.0/0","gw":"10.200.0.1","mtu":1400,"priority":10,"scope":0,"table":100})");
  EXPECT_EQ(j11["dns"].dump(),
            R"({"domain":"cluster.local","nameservers":["10.96.0.10"],"options":["ndots:5"],)"
            R"("search":["default.svc.cluster.local"]})");
  Json j10 = resultToJson(r, kV100);
  EXPECT_EQ(j10["interfaces"][1].dump(), R"({"mac":"aa:bb:cc:00:00:02","name":"eth0","sandbox":"/run/netns/c1"})");
  EXPECT_EQ(j10["routes"][0].dump(), R"({"dst":"0.0.0.0/0","gw":"10.200.0.1"})");
  // And what 1.1.0 writes reads back equal.
  auto back = parseResult(j11, "r");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, r);
}

TEST(CniResultJson, ParsesWhatItWritesInEveryVersion) {
  for (const auto& s : supportedVersions()) {
    auto back = parseResult(resultToJson(sampleResult(), *parseVersion(s)), "prevResult");
    ASSERT_TRUE(back.ok()) << s << ": " << back.error().message;
    EXPECT_EQ(*back, sampleResult()) << s;
  }
}

struct BadResult {
  const char* json;
  int code;
  const char* message;
};

TEST(CniResultJson, MalformedResultsNameTheMember) {
  const BadResult cases[] = {
      {R"([])", 6, "prevResult: must be a JSON object, got array"},
      {R"({"interfaces": {}})", 6, "prevResult.interfaces: must be an array, got object"},
      {R"({"interfaces": [{"mac": "x"}]})", 7, "prevResult.interfaces[0].name: required, missing"},
      {R"({"interfaces": [{"name": ""}]})", 7, "prevResult.interfaces[0].name: must not be empty"},
      {R"({"interfaces": [{"name": 5}]})", 6, "prevResult.interfaces[0].name: must be a string, got integer"},
      {R"({"interfaces": [{"name": "a", "mtu": 1.5}]})", 6,
       "prevResult.interfaces[0].mtu: must be an integer, got number"},
      {R"({"interfaces": [{"name": "a", "mtu": 18446744073709551615}]})", 7,
       "prevResult.interfaces[0].mtu: 18446744073709551615 is out of range"},
      {R"({"ips": [{"address": "10.0.0.1"}]})", 7,
       "prevResult.ips[0].address: \"10.0.0.1\" is not an address/prefix-length"},
      {R"({"ips": [{"address": "10.0.0.1/33"}]})", 7,
       "prevResult.ips[0].address: \"10.0.0.1/33\" is not an address/prefix-length"},
      {R"({"ips": [{"address": "10.0.0.1/32", "gateway": "10.0.0.256"}]})", 7,
       "prevResult.ips[0].gateway: \"10.0.0.256\" is not an IP address"},
      {R"({"ips": [{"address": "10.0.0.1/32", "gateway": "fd00::1"}]})", 7,
       "prevResult.ips[0].gateway: fd00::1 is not of the same family as address 10.0.0.1/32"},
      {R"({"ips": [{"address": "10.0.0.1/32", "interface": 0}]})", 7,
       "prevResult.ips[0].interface: 0 is not an index into interfaces (it has 0 entries)"},
      {R"({"interfaces": [{"name": "a"}], "ips": [{"address": "10.0.0.1/32", "interface": -1}]})", 7,
       "prevResult.ips[0].interface: -1 is not an index into interfaces (it has 1 entries)"},
      {R"({"ips": [{"address": "10.0.0.1/32", "version": "6"}]})", 7,
       "prevResult.ips[0].version: \"6\" does not match address 10.0.0.1/32 (want \"4\")"},
      {R"({"routes": [{"gw": "10.0.0.1"}]})", 7, "prevResult.routes[0].dst: required, missing"},
      {R"({"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]})", 7, "prevResult.routes[0].gw: \"x\" is not an IP address"},
      {R"({"dns": []})", 6, "prevResult.dns: must be a JSON object, got array"},
      {R"({"dns": {"nameservers": [1]}})", 6, "prevResult.dns.nameservers[0]: must be a string, got integer"},
  };
  for (const auto& c : cases) {
    auto r = parseResult(Json::parse(c.json), "prevResult");
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.error().code, c.code) << c.json;
    EXPECT_EQ(r.error().message, c.message) << c.json;
  }
}

TEST(CniResultJson, UnknownKeysAndNullsAreIgnored) {
  auto r = parseResult(Json::parse(R"({"cniVersion": "1.0.0", "future": 1, "interfaces": null,
                                       "ips": [{"address": "10.0.0.1/32", "gateway": null, "x": true}]})"),
                       "p");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->ips.size(), 1u);
  EXPECT_EQ(r->ips[0].gateway, "");
  EXPECT_FALSE(r->ips[0].interface.has_value());
}

TEST(CniErrorJson, SpecShape) {
  EXPECT_EQ(errorToJson(cniError(Code::TryAgainLater, "agent busy"), "0.4.0").dump(),
            R"({"cniVersion":"0.4.0","code":11,"msg":"agent busy"})");
  EXPECT_EQ(errorToJson(cniError(Code::InvalidEnv, "x"), "", "more").dump(),
            R"({"cniVersion":"1.1.0","code":4,"details":"more","msg":"x"})");
}

TEST(CniVersionInfo, ListsEverySupportedVersion) {
  EXPECT_EQ(versionInfoJson("1.0.0").dump(),
            R"({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})");
}

TEST(CniAddresses, CidrAndAddressSyntax) {
  EXPECT_TRUE(isCidr("10.0.0.0/8"));
  EXPECT_TRUE(isCidr("0.0.0.0/0"));
  EXPECT_TRUE(isCidr("fd00::/64"));
  EXPECT_TRUE(isCidr("::/0"));
  EXPECT_FALSE(isCidr("fd00::/129"));
  EXPECT_FALSE(isCidr("10.0.0.0/"));
  EXPECT_FALSE(isCidr("10.0.0.0/+8"));
  EXPECT_FALSE(isCidr("10.0.0/8"));
  EXPECT_FALSE(isCidr("/8"));
  EXPECT_TRUE(isIpAddress("10.200.0.1"));
  EXPECT_FALSE(isIpAddress("10.200.0.1/32"));
  EXPECT_FALSE(isIpAddress(""));
}

}  // namespace
}  // namespace membrane::cni
