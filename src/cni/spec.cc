#include "src/cni/spec.h"

#include <arpa/inet.h>

#include <charconv>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "src/cni/json_fields.h"

namespace membrane::cni {

using fields::indexPath;
using fields::memberPath;

const std::vector<std::string>& supportedVersions() {
  static const std::vector<std::string> v{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
  return v;
}

std::string supportedVersionsText() { return fmt::format("{}", fmt::join(supportedVersions(), ", ")); }

std::string Version::text() const { return fmt::format("{}.{}.{}", major, minor, patch); }

Result<Version> parseVersion(std::string_view text) {
  for (const auto& s : supportedVersions()) {
    if (s != text) continue;
    Version v;
    // The table holds only well-formed "X.Y.Z".
    v.major = s[0] - '0';
    v.minor = s[2] - '0';
    v.patch = s[4] - '0';
    return v;
  }
  return cniError(Code::IncompatibleVersion,
                  fmt::format("incompatible CNI version \"{}\": membrane-cni supports {}", text, supportedVersionsText()));
}

bool isIpAddress(std::string_view text) {
  if (text.empty() || text.size() > 45) return false;
  std::string s(text);
  unsigned char buf[16];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool isCidr(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return false;
  std::string_view addr = text.substr(0, slash), len = text.substr(slash + 1);
  if (!isIpAddress(addr) || len.empty() || len.size() > 3) return false;
  int n = -1;
  auto [p, ec] = std::from_chars(len.data(), len.data() + len.size(), n);
  if (ec != std::errc() || p != len.data() + len.size()) return false;
  int max = addr.find(':') != std::string_view::npos ? 128 : 32;
  return n >= 0 && n <= max;
}

namespace {

Error badValue(const std::string& path, const std::string& what) {
  return cniError(Code::InvalidConfig, fmt::format("{}: {}", path, what));
}

Result<std::string> cidrMember(const Json& obj, std::string_view key, const std::string& where) {
  MB_ASSIGN(std::string v, fields::reqString(obj, key, where));
  if (!isCidr(v)) return badValue(memberPath(where, key), fmt::format("\"{}\" is not an address/prefix-length", v));
  return v;
}

Result<std::string> addressMember(const Json& obj, std::string_view key, const std::string& where) {
  MB_ASSIGN(auto v, fields::optString(obj, key, where));
  if (!v) return std::string();
  if (!isIpAddress(*v)) return badValue(memberPath(where, key), fmt::format("\"{}\" is not an IP address", *v));
  return std::move(*v);
}

Result<Interface> parseInterface(const Json& j, const std::string& where) {
  MB_TRY(fields::requireObject(j, where));
  Interface i;
  MB_ASSIGN(i.name, fields::reqString(j, "name", where));
  if (i.name.empty()) return badValue(memberPath(where, "name"), "must not be empty");
  MB_ASSIGN(auto mac, fields::optString(j, "mac", where));
  MB_ASSIGN(auto sandbox, fields::optString(j, "sandbox", where));
  MB_ASSIGN(i.mtu, fields::optInt(j, "mtu", where));
  MB_ASSIGN(auto socket_path, fields::optString(j, "socketPath", where));
  MB_ASSIGN(auto pci_id, fields::optString(j, "pciID", where));
  i.mac = mac.value_or("");
  i.sandbox = sandbox.value_or("");
  i.socket_path = socket_path.value_or("");
  i.pci_id = pci_id.value_or("");
  return i;
}

Result<IpConfig> parseIp(const Json& j, const std::string& where, size_t n_interfaces) {
  MB_TRY(fields::requireObject(j, where));
  IpConfig ip;
  MB_ASSIGN(ip.address, cidrMember(j, "address", where));
  MB_ASSIGN(ip.gateway, addressMember(j, "gateway", where));
  MB_ASSIGN(ip.interface, fields::optInt(j, "interface", where));
  if (ip.interface && (*ip.interface < 0 || static_cast<uint64_t>(*ip.interface) >= n_interfaces))
    return badValue(memberPath(where, "interface"),
                    fmt::format("{} is not an index into interfaces (it has {} entries)", *ip.interface, n_interfaces));
  // 0.3.x/0.4.0 results carry the family; keep the check, drop the value
  // (it is derived from the address when written).
  MB_ASSIGN(auto family, fields::optString(j, "version", where));
  if (family) {
    std::string want = ip.isIpv6() ? "6" : "4";
    if (*family != want)
      return badValue(memberPath(where, "version"),
                      fmt::format("\"{}\" does not match address {} (want \"{}\")", *family, ip.address, want));
  }
  if (!ip.gateway.empty() && (ip.gateway.find(':') != std::string::npos) != ip.isIpv6())
    return badValue(memberPath(where, "gateway"),
                    fmt::format("{} is not of the same family as address {}", ip.gateway, ip.address));
  return ip;
}

Result<Route> parseRoute(const Json& j, const std::string& where) {
  MB_TRY(fields::requireObject(j, where));
  Route r;
  MB_ASSIGN(r.dst, cidrMember(j, "dst", where));
  MB_ASSIGN(r.gw, addressMember(j, "gw", where));
  MB_ASSIGN(r.mtu, fields::optInt(j, "mtu", where));
  MB_ASSIGN(r.advmss, fields::optInt(j, "advmss", where));
  MB_ASSIGN(r.priority, fields::optInt(j, "priority", where));
  MB_ASSIGN(r.table, fields::optInt(j, "table", where));
  MB_ASSIGN(r.scope, fields::optInt(j, "scope", where));
  return r;
}

// Calls parse(element, path) for every element of the array member 'key'.
template <typename T, typename F>
Result<std::vector<T>> parseList(const Json& obj, std::string_view key, const std::string& where, F&& parse) {
  MB_ASSIGN(const Json* arr, fields::optArray(obj, key, where));
  std::vector<T> out;
  if (!arr) return out;
  std::string path = memberPath(where, key);
  for (size_t i = 0; i < arr->size(); ++i) {
    MB_ASSIGN(T v, parse((*arr)[i], indexPath(path, i)));
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace

Result<Dns> parseDns(const Json& j, const std::string& where) {
  MB_TRY(fields::requireObject(j, where));
  Dns d;
  MB_ASSIGN(d.nameservers, fields::optStrings(j, "nameservers", where));
  MB_ASSIGN(auto domain, fields::optString(j, "domain", where));
  MB_ASSIGN(d.search, fields::optStrings(j, "search", where));
  MB_ASSIGN(d.options, fields::optStrings(j, "options", where));
  d.domain = domain.value_or("");
  return d;
}

Result<CniResult> parseResult(const Json& j, const std::string& where) {
  MB_TRY(fields::requireObject(j, where));
  CniResult r;
  MB_ASSIGN(r.interfaces, parseList<Interface>(j, "interfaces", where, parseInterface));
  size_t n = r.interfaces.size();
  MB_ASSIGN(r.ips, parseList<IpConfig>(j, "ips", where,
                                       [n](const Json& e, const std::string& p) { return parseIp(e, p, n); }));
  MB_ASSIGN(r.routes, parseList<Route>(j, "routes", where, parseRoute));
  MB_ASSIGN(const Json* dns, fields::optObject(j, "dns", where));
  if (dns) {
    MB_ASSIGN(r.dns, parseDns(*dns, memberPath(where, "dns")));
  }
  return r;
}

Json dnsToJson(const Dns& d) {
  Json j = Json::object();
  if (!d.nameservers.empty()) j["nameservers"] = d.nameservers;
  if (!d.domain.empty()) j["domain"] = d.domain;
  if (!d.search.empty()) j["search"] = d.search;
  if (!d.options.empty()) j["options"] = d.options;
  return j;
}

Json resultToJson(const CniResult& r, const Version& v) {
  bool v11 = v >= kV110, pre10 = v < kV100;
  Json j = Json::object();
  j["cniVersion"] = v.text();
  if (!r.interfaces.empty()) {
    Json arr = Json::array();
    for (const auto& i : r.interfaces) {
      Json e = {{"name", i.name}};
      if (!i.mac.empty()) e["mac"] = i.mac;
      if (!i.sandbox.empty()) e["sandbox"] = i.sandbox;
      if (v11) {
        if (i.mtu) e["mtu"] = *i.mtu;
        if (!i.socket_path.empty()) e["socketPath"] = i.socket_path;
        if (!i.pci_id.empty()) e["pciID"] = i.pci_id;
      }
      arr.push_back(std::move(e));
    }
    j["interfaces"] = std::move(arr);
  }
  if (!r.ips.empty()) {
    Json arr = Json::array();
    for (const auto& ip : r.ips) {
      Json e = Json::object();
      if (pre10) e["version"] = ip.isIpv6() ? "6" : "4";
      e["address"] = ip.address;
      if (!ip.gateway.empty()) e["gateway"] = ip.gateway;
      if (ip.interface) e["interface"] = *ip.interface;
      arr.push_back(std::move(e));
    }
    j["ips"] = std::move(arr);
  }
  if (!r.routes.empty()) {
    Json arr = Json::array();
    for (const auto& rt : r.routes) {
      Json e = {{"dst", rt.dst}};
      if (!rt.gw.empty()) e["gw"] = rt.gw;
      if (v11) {
        if (rt.mtu) e["mtu"] = *rt.mtu;
        if (rt.advmss) e["advmss"] = *rt.advmss;
        if (rt.priority) e["priority"] = *rt.priority;
        if (rt.table) e["table"] = *rt.table;
        if (rt.scope) e["scope"] = *rt.scope;
      }
      arr.push_back(std::move(e));
    }
    j["routes"] = std::move(arr);
  }
  // The spec's examples always carry "dns"; an empty object is valid.
  j["dns"] = dnsToJson(r.dns);
  return j;
}

Json errorToJson(const Error& e, std::string_view version, std::string_view details) {
  Json j = Json::object();
  j["cniVersion"] = version.empty() ? std::string(kLatestVersion) : std::string(version);
  j["code"] = e.code;
  j["msg"] = e.message;
  if (!details.empty()) j["details"] = std::string(details);
  return j;
}

Json versionInfoJson(std::string_view version) {
  return Json{{"cniVersion", std::string(version)}, {"supportedVersions", supportedVersions()}};
}

}  // namespace membrane::cni
