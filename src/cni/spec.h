// The CNI specification as values: protocol versions, error codes, the
// result object, and their JSON in each supported version
// (containernetworking/cni SPEC.md, tags spec-v0.3.x ... spec-v1.1.0).
//
// Pure: no I/O. Not thread-safe (plain values).
//
// Error codes: every fallible function of src/cni returns membrane::Result
// whose Error::code is a CNI error code (enum Code below), NOT an errno:
// the plugin's only way to report a failure is the spec's error object, so
// the code is chosen where the failure is understood. Messages say what was
// wrong and where ("stdin config: prevResult.ips[0].address: ...").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/result.h"

namespace membrane::cni {

using Json = nlohmann::json;

// Error codes of the spec (1.1.0: 1-7, 11, 50, 51 well-known; 1-99
// reserved; 100+ plugin-defined). membrane-cni's own codes start at 100.
enum class Code : int {
  IncompatibleVersion = 1,  // cniVersion not supported (or too old for the command)
  UnsupportedField = 2,     // a configuration key/value the plugin does not support; the message names it
  UnknownContainer = 3,     // the container does not exist: the runtime needs no cleanup
  InvalidEnv = 4,           // a CNI_* variable is missing or malformed; the message names it
  IoFailure = 5,            // reading stdin or writing stdout failed
  DecodeFailure = 6,        // stdin (or the agent's answer) is not the JSON it must be
  InvalidConfig = 7,        // the configuration is well-formed JSON but invalid
  TryAgainLater = 11,       // transient: the agent is unreachable or busy; retry
  NotAvailable = 50,        // STATUS: cannot ADD now
  NotAvailableDamaged = 51, // STATUS: cannot ADD, and existing containers may lose connectivity
  // membrane-cni's own (plugin-defined, >= 100)
  AgentFailed = 100,        // membraned tried and failed (a kernel step); the message says which
  AlreadyExists = 101,      // the container already has this interface (second ADD, name taken in the netns)
  PoolExhausted = 102,      // the node's pod CIDR has no free address
};

// An Error carrying a CNI code (see the header comment).
inline Error cniError(Code code, std::string message) { return Error(static_cast<int>(code), std::move(message)); }

// The versions membrane-cni speaks, oldest first: "0.3.0", "0.3.1", "0.4.0",
// "1.0.0", "1.1.0".
const std::vector<std::string>& supportedVersions();
inline constexpr std::string_view kLatestVersion = "1.1.0";
// "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0" (for messages and --help).
std::string supportedVersionsText();

// A supported version, comparable. Only supported versions are represented.
struct Version {
  int major = 1, minor = 0, patch = 0;
  std::string text() const;
  auto operator<=>(const Version&) const = default;
};
inline constexpr Version kV040{0, 4, 0};
inline constexpr Version kV100{1, 0, 0};
inline constexpr Version kV110{1, 1, 0};

// Parses a cniVersion value. Code 1 (IncompatibleVersion) for any string that
// is not one of supportedVersions(), naming it and listing the supported ones.
Result<Version> parseVersion(std::string_view text);

// ---------------------------------------------------------------------------
// The result of ADD (also prevResult). Optional fields are absent when empty;
// the 1.1.0-only fields are written only for 1.1.0.
struct Interface {
  std::string name;
  std::string mac;      // "" = absent
  std::string sandbox;  // netns path for a container interface; "" = host side (absent)
  std::optional<int64_t> mtu;       // 1.1.0
  std::string socket_path, pci_id;  // 1.1.0 (vhost-user / SR-IOV); "" = absent
  bool operator==(const Interface&) const = default;
};

struct IpConfig {
  std::string address;  // CIDR "10.200.0.7/32" or "fd00::7/128"
  std::string gateway;  // "" = absent
  std::optional<int64_t> interface;  // index into Result::interfaces
  bool isIpv6() const { return address.find(':') != std::string::npos; }
  bool operator==(const IpConfig&) const = default;
};

struct Route {
  std::string dst;  // CIDR
  std::string gw;   // "" = absent (the interface's gateway / on-link)
  std::optional<int64_t> mtu, advmss, priority, table;  // 1.1.0
  std::optional<int64_t> scope;                          // 1.1.0
  bool operator==(const Route&) const = default;
};

struct Dns {
  std::vector<std::string> nameservers, search, options;
  std::string domain;
  bool empty() const { return nameservers.empty() && search.empty() && options.empty() && domain.empty(); }
  bool operator==(const Dns&) const = default;
};

struct CniResult {
  std::vector<Interface> interfaces;
  std::vector<IpConfig> ips;
  std::vector<Route> routes;
  Dns dns;
  bool operator==(const CniResult&) const = default;
};

// Decodes a result object (a prevResult, or an ADD result sent by the
// agent). 'where' prefixes every message ("stdin config: prevResult").
// Checks types, that every address is a CIDR and every gateway/gw an
// address, that ips[].interface indexes interfaces, that ips[].version
// (0.3.x/0.4.0), when present, matches the address; code 6 (DecodeFailure)
// for a wrong JSON type, 7 (InvalidConfig) for a bad value. Unknown keys are
// ignored (a newer producer may add some).
Result<CniResult> parseResult(const Json& j, const std::string& where);
Result<Dns> parseDns(const Json& j, const std::string& where);

// The result as the spec's JSON in version 'v': 0.3.x/0.4.0 add
// ips[].version ("4"/"6"); 1.1.0 adds the interface/route fields above.
Json resultToJson(const CniResult& r, const Version& v);
Json dnsToJson(const Dns& d);

// {"cniVersion", "code", "msg"[, "details"]}; 'version' is the config's
// cniVersion when known (any string), else kLatestVersion.
Json errorToJson(const Error& e, std::string_view version, std::string_view details = "");

// VERSION's answer: {"cniVersion": version, "supportedVersions": [...]}.
Json versionInfoJson(std::string_view version);

// True when 'text' is an IPv4 or IPv6 address (no prefix).
bool isIpAddress(std::string_view text);
// True when 'text' is "address/len" with len within the family's range.
bool isCidr(std::string_view text);

}  // namespace membrane::cni
