// What a CNI runtime gives membrane-cni: the network configuration on stdin
// and the CNI_* environment, parsed and checked (spec 1.0.0/1.1.0 "Parameters"
// and "Network configuration"; CNI_ARGS as the reference plugins' parser
// reads it).
//
// Pure: no I/O (the caller reads stdin and the environment). Every error is a
// membrane::Error whose code is a CNI code (src/cni/spec.h) and whose message
// names the variable or the config member ("stdin config: prevResult.ips[0]
// ..."; "CNI_ARGS: pair 2 \"MEMBRANE_LABELS=a=b\": ..."). Not thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "src/cni/spec.h"

namespace membrane::cni {

enum class Command { Add, Del, Check, Version, Gc, Status };
// "ADD", "DEL", ...
std::string_view commandName(Command c);

inline constexpr std::string_view kDefaultAgentSocket = "/var/run/membrane/membrane.sock";
inline constexpr std::chrono::seconds kDefaultAgentTimeout{30};

// One still-valid attachment in a GC request.
struct Attachment {
  std::string container_id, ifname;
  bool operator==(const Attachment&) const = default;
};

// The plugin's stdin: one plugin configuration (an old single `.conf`, or a
// conflist entry with `cniVersion` and `name` filled in by the runtime).
struct NetConf {
  Version version;               // cniVersion (required, one of supportedVersions())
  std::string version_text;      // as given
  std::string name;              // network name (required, [A-Za-z0-9][A-Za-z0-9_.-]*)
  std::string type;              // plugin type (required; not checked against the binary's name)
  std::optional<CniResult> prev_result;  // prevResult
  Dns dns;                       // "dns": returned in the ADD result
  // membrane's own member: {"socket": path, "timeoutSeconds": 1..600}.
  std::string agent_socket = std::string(kDefaultAgentSocket);
  std::chrono::seconds agent_timeout = kDefaultAgentTimeout;
  // GC (1.1.0): cni.dev/valid-attachments (or the 1.1.0 tag's cni.dev/attachments).
  std::vector<Attachment> valid_attachments;
  bool has_valid_attachments = false;
};

// Parses the stdin text. Codes: 6 not JSON / a member of the wrong type
// (with line and column for a syntax error), 1 a cniVersion membrane-cni
// does not speak (absent cniVersion counts as "0.1.0", as libcni reads it),
// 7 a missing or invalid required member or a whole conflist ("plugins")
// given instead of one plugin's configuration, 2 a member membrane-cni
// cannot honour ("ipam": membrane allocates addresses itself; an unknown key
// inside "membrane"). Other members (runtimeConfig such as portMappings,
// args, capabilities, plugin keys of other plugins) are ignored as the spec
// allows.
Result<NetConf> parseNetConf(std::string_view text);

// The cniVersion of 'text' when it is a JSON object with a string
// cniVersion; "" otherwise. Never fails: used to answer an error in the
// caller's version before the config has been checked.
std::string sniffVersion(std::string_view text);

// CNI_ARGS, "K=V;K=V" as the reference plugins parse it (types.LoadArgs):
// each pair needs exactly one '=' (so a value cannot contain '=' or ';');
// empty pairs are skipped; a later duplicate wins; an unknown key is an error
// unless IgnoreUnknown is true ("1", "true", "True", "TRUE", "t", "T"; false:
// "0", "false", ...; anything else is an error).
// Known keys: IgnoreUnknown, K8S_POD_NAMESPACE, K8S_POD_NAME,
// K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID, MEMBRANE_LABELS.
// MEMBRANE_LABELS is "key:value,key:value" (Kubernetes label syntax; a value
// may be empty, a key may not repeat). Errors are code 4 and name the pair.
struct CniArgs {
  std::string pod_namespace, pod_name, infra_container_id, pod_uid;
  std::map<std::string, std::string> labels;  // from MEMBRANE_LABELS
  bool operator==(const CniArgs&) const = default;
};
Result<CniArgs> parseCniArgs(std::string_view text);
Result<std::map<std::string, std::string>> parseMembraneLabels(std::string_view text);

// The CNI_* environment of one invocation, checked for 'command':
// ADD/CHECK need CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH; DEL needs
// CNI_CONTAINERID, CNI_IFNAME, CNI_PATH (CNI_NETNS optional: may be gone);
// GC needs CNI_PATH; STATUS and VERSION need nothing else.
// CNI_CONTAINERID is [A-Za-z0-9][A-Za-z0-9_.-]*; CNI_IFNAME 1..15 bytes, not
// "." / "..", no '/', ':' or whitespace; CNI_NETNS an absolute path;
// CNI_PATH non-empty. Code 4, naming the variable, for each violation.
struct Env {
  Command command = Command::Version;
  std::string container_id, netns, ifname;
  std::vector<std::string> path;  // CNI_PATH split at ':'
  CniArgs args;
};
// What is wrong with a container ID / interface name / network name, or
// nullopt when it is valid (shared by the environment and the agent's
// request decoders, which prefix their own context).
std::optional<std::string> containerIdProblem(std::string_view id);
std::optional<std::string> ifnameProblem(std::string_view ifname);
std::optional<std::string> networkNameProblem(std::string_view name);

// 'vars' holds the variables that are set (an empty value counts as set).
// CNI_COMMAND: missing or not one of ADD, DEL, CHECK, VERSION, GC, STATUS.
Result<Command> parseCommand(const std::map<std::string, std::string>& vars);
Result<Env> parseEnv(Command command, const std::map<std::string, std::string>& vars);

}  // namespace membrane::cni
