#include "src/cni/config.h"

#include <cctype>

#include <fmt/format.h>

#include "membrane/labels.h"
#include "src/cni/json_fields.h"

namespace membrane::cni {

namespace {

// [A-Za-z0-9][A-Za-z0-9_.-]* — the spec's container ID and network name syntax.
bool isCniName(std::string_view s) {
  if (s.empty() || !std::isalnum(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  return true;
}

// nlohmann's message without its "[json.exception.parse_error.101] " prefix.
std::string parseErrorText(const Json::exception& e) {
  std::string_view w = e.what();
  auto close = w.find("] ");
  if (w.starts_with("[json.exception") && close != std::string_view::npos) w.remove_prefix(close + 2);
  return std::string(w);
}

Result<Json> parseJson(std::string_view text) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return cniError(Code::DecodeFailure, "empty: the runtime must pass the network configuration (JSON) on standard "
                                         "input");
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    // Exceptions stay inside this function: nlohmann only says where the
    // syntax broke (line and column) through its exception. Not only
    // parse_error: a number too large for a double is out_of_range.
    return cniError(Code::DecodeFailure, "not valid JSON: " + parseErrorText(e));
  }
}

// The keys of "membrane": a typo must not silently fall back to the defaults.
Status parseMembraneMember(const Json& j, NetConf& c) {
  const std::string where = "membrane";
  MB_TRY(fields::requireObject(j, where));
  for (const auto& [key, value] : j.items()) {
    if (key != "socket" && key != "timeoutSeconds")
      return cniError(Code::UnsupportedField,
                      fmt::format("{}.{}: unknown key (membrane-cni knows \"socket\" and \"timeoutSeconds\")", where, key));
  }
  MB_ASSIGN(auto socket, fields::optString(j, "socket", where));
  if (socket) {
    if (socket->empty() || (*socket)[0] != '/')
      return cniError(Code::InvalidConfig,
                      fmt::format("{}.socket: \"{}\" must be an absolute path (the agent's API socket)", where, *socket));
    c.agent_socket = *socket;
  }
  MB_ASSIGN(auto timeout, fields::optInt(j, "timeoutSeconds", where));
  if (timeout) {
    if (*timeout < 1 || *timeout > 600)
      return cniError(Code::InvalidConfig, fmt::format("{}.timeoutSeconds: {} is not within 1..600", where, *timeout));
    c.agent_timeout = std::chrono::seconds(*timeout);
  }
  return okStatus();
}

// GC's list of attachments still in use: [{"containerID", "ifname"}].
Result<std::vector<Attachment>> parseAttachments(const Json& arr, const std::string& where) {
  if (!arr.is_array())
    return cniError(Code::DecodeFailure, fmt::format("{}: must be an array, got {}", where, fields::typeName(arr)));
  std::vector<Attachment> out;
  for (size_t i = 0; i < arr.size(); ++i) {
    std::string p = fields::indexPath(where, i);
    MB_TRY(fields::requireObject(arr[i], p));
    Attachment a;
    MB_ASSIGN(a.container_id, fields::reqString(arr[i], "containerID", p));
    MB_ASSIGN(a.ifname, fields::reqString(arr[i], "ifname", p));
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace

std::optional<std::string> containerIdProblem(std::string_view id) {
  if (isCniName(id)) return std::nullopt;
  return fmt::format("\"{}\": must start with a letter or digit followed by letters, digits, '_', '.' or '-'", id);
}

std::optional<std::string> networkNameProblem(std::string_view name) { return containerIdProblem(name); }

std::optional<std::string> ifnameProblem(std::string_view ifname) {
  if (ifname.empty()) return std::string("\"\": an interface name cannot be empty");
  if (ifname.size() > 15)
    return fmt::format("\"{}\": {} bytes, an interface name has at most 15", ifname, ifname.size());
  if (ifname == "." || ifname == "..") return fmt::format("\"{}\": not an interface name", ifname);
  for (char ch : ifname)
    if (ch == '/' || ch == ':' || std::isspace(static_cast<unsigned char>(ch)))
      return fmt::format("\"{}\": an interface name cannot contain '/', ':' or whitespace", ifname);
  return std::nullopt;
}

std::string_view commandName(Command c) {
  switch (c) {
    case Command::Add: return "ADD";
    case Command::Del: return "DEL";
    case Command::Check: return "CHECK";
    case Command::Version: return "VERSION";
    case Command::Gc: return "GC";
    case Command::Status: return "STATUS";
  }
  return "?";
}

std::string sniffVersion(std::string_view text) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_object()) {
    auto it = j.find("cniVersion");
    if (it != j.end() && it->is_string()) return it->get<std::string>();
  }
  return "";
}

static Result<NetConf> parseNetConfMembers(std::string_view text) {
  MB_ASSIGN(Json j, parseJson(text));
  const std::string where;  // members are named from the top: "prevResult.ips[0]"
  MB_TRY(fields::requireObject(j, where));
  NetConf c;
  MB_ASSIGN(auto version, fields::optString(j, "cniVersion", where));
  // libcni reads a config without cniVersion as 0.1.0, which we do not speak.
  c.version_text = version.value_or("0.1.0");
  MB_ASSIGN(c.version, fields::context(parseVersion(c.version_text), "cniVersion"));
  if (j.contains("plugins"))
    return cniError(Code::InvalidConfig,
                    "holds a network configuration list (\"plugins\"); the runtime passes one plugin's configuration, "
                    "and the list belongs in /etc/cni/net.d/");
  MB_ASSIGN(c.name, fields::reqString(j, "name", where));
  if (auto p = networkNameProblem(c.name)) return cniError(Code::InvalidConfig, "name: " + *p);
  MB_ASSIGN(c.type, fields::reqString(j, "type", where));
  if (c.type.empty()) return cniError(Code::InvalidConfig, "type: must not be empty");
  if (j.contains("ipam") && !j["ipam"].is_null())
    return cniError(Code::UnsupportedField,
                    "ipam: membrane-cni does not delegate to an IPAM plugin (membraned allocates from its "
                    "--pod-cidr); remove \"ipam\" from the membrane-cni entry");
  MB_ASSIGN(const Json* prev, fields::optObject(j, "prevResult", where));
  if (prev) {
    MB_ASSIGN(c.prev_result, parseResult(*prev, fields::memberPath(where, "prevResult")));
  }
  MB_ASSIGN(const Json* dns, fields::optObject(j, "dns", where));
  if (dns) {
    MB_ASSIGN(c.dns, parseDns(*dns, fields::memberPath(where, "dns")));
  }
  MB_ASSIGN(const Json* rc, fields::optObject(j, "runtimeConfig", where));
  (void)rc;  // portMappings etc. belong to the chained plugins; only its type is checked
  MB_ASSIGN(const Json* mine, fields::optObject(j, "membrane", where));
  if (mine) MB_TRY(parseMembraneMember(*mine, c));
  // GC: the spec-v1.1.0 tag named the key cni.dev/attachments, the released
  // spec cni.dev/valid-attachments; libcni sends both.
  for (const char* key : {"cni.dev/valid-attachments", "cni.dev/attachments"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    MB_ASSIGN(c.valid_attachments, parseAttachments(*it, fields::memberPath(where, key)));
    c.has_valid_attachments = true;
    break;
  }
  return c;
}

Result<NetConf> parseNetConf(std::string_view text) {
  return fields::context(parseNetConfMembers(text), "stdin config");
}

Result<std::map<std::string, std::string>> parseMembraneLabels(std::string_view text) {
  std::map<std::string, std::string> out;
  size_t index = 0;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    ++index;
    auto colon = item.find(':');
    if (colon == std::string_view::npos)
      return cniError(Code::InvalidEnv,
                      fmt::format("label {} \"{}\": expected key:value (MEMBRANE_LABELS is key:value,key:value)", index,
                                  item));
    std::string key(item.substr(0, colon)), value(item.substr(colon + 1));
    auto bad = [&](const Error& e) {
      return cniError(Code::InvalidEnv, fmt::format("label {} \"{}\": {}", index, item, e.message));
    };
    if (auto st = labels::validateKey(key); !st.ok()) return bad(st.error());
    if (auto st = labels::validateValue(value); !st.ok()) return bad(st.error());
    if (!out.emplace(key, value).second)
      return cniError(Code::InvalidEnv, fmt::format("label {} \"{}\": key \"{}\" given twice", index, item, key));
  }
  return out;
}

Result<CniArgs> parseCniArgs(std::string_view text) {
  std::vector<std::pair<std::string, std::string>> pairs;
  size_t index = 0;
  while (!text.empty()) {
    size_t semi = text.find(';');
    std::string_view pair = text.substr(0, semi);
    text = semi == std::string_view::npos ? std::string_view() : text.substr(semi + 1);
    ++index;
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    if (eq == std::string_view::npos || pair.find('=', eq + 1) != std::string_view::npos)
      return cniError(Code::InvalidEnv,
                      fmt::format("CNI_ARGS: pair {} \"{}\": expected exactly one '=' (KEY=VALUE; a value cannot "
                                  "contain '=' or ';', so MEMBRANE_LABELS uses key:value)",
                                  index, pair));
    pairs.emplace_back(pair.substr(0, eq), pair.substr(eq + 1));
  }
  bool ignore_unknown = false;
  for (const auto& [k, v] : pairs) {
    if (k != "IgnoreUnknown") continue;
    // libcni's UnmarshallableBool accepts what Go's strconv.ParseBool does.
    if (v == "1" || v == "t" || v == "T" || v == "true" || v == "True" || v == "TRUE") {
      ignore_unknown = true;
    } else if (v == "0" || v == "f" || v == "F" || v == "false" || v == "False" || v == "FALSE") {
      ignore_unknown = false;
    } else {
      return cniError(Code::InvalidEnv,
                      fmt::format("CNI_ARGS: IgnoreUnknown=\"{}\": expected a boolean (1, true, 0, false)", v));
    }
  }
  CniArgs a;
  for (const auto& [k, v] : pairs) {
    if (k == "IgnoreUnknown") continue;
    if (k == "K8S_POD_NAMESPACE") {
      a.pod_namespace = v;
    } else if (k == "K8S_POD_NAME") {
      a.pod_name = v;
    } else if (k == "K8S_POD_INFRA_CONTAINER_ID") {
      a.infra_container_id = v;
    } else if (k == "K8S_POD_UID") {
      a.pod_uid = v;
    } else if (k == "MEMBRANE_LABELS") {
      MB_ASSIGN(a.labels, fields::context(parseMembraneLabels(v), "CNI_ARGS: MEMBRANE_LABELS"));
    } else if (!ignore_unknown) {
      return cniError(Code::InvalidEnv, fmt::format("CNI_ARGS: unknown key \"{}\" (add IgnoreUnknown=1 to pass keys "
                                                    "meant for other plugins)",
                                                    k));
    }
  }
  return a;
}

Result<Command> parseCommand(const std::map<std::string, std::string>& vars) {
  auto it = vars.find("CNI_COMMAND");
  if (it == vars.end() || it->second.empty())
    return cniError(Code::InvalidEnv, "CNI_COMMAND is not set: membrane-cni is a CNI plugin, run by a container "
                                      "runtime (see membrane-cni --help)");
  for (Command c : {Command::Add, Command::Del, Command::Check, Command::Version, Command::Gc, Command::Status})
    if (it->second == commandName(c)) return c;
  return cniError(Code::InvalidEnv, fmt::format("CNI_COMMAND=\"{}\": unknown command (ADD, DEL, CHECK, VERSION, GC, "
                                                "STATUS)",
                                                it->second));
}

Result<Env> parseEnv(Command command, const std::map<std::string, std::string>& vars) {
  Env env;
  env.command = command;
  auto get = [&](const char* name) -> const std::string* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : &it->second;
  };
  auto missing = [&](const char* name) {
    return cniError(Code::InvalidEnv,
                    fmt::format("{} is not set (required for {})", name, commandName(command)));
  };
  bool add_check = command == Command::Add || command == Command::Check;
  bool with_container = add_check || command == Command::Del;

  if (with_container) {
    const std::string* id = get("CNI_CONTAINERID");
    if (!id || id->empty()) return missing("CNI_CONTAINERID");
    if (auto p = containerIdProblem(*id)) return cniError(Code::InvalidEnv, "CNI_CONTAINERID=" + *p);
    env.container_id = *id;

    const std::string* ifname = get("CNI_IFNAME");
    if (!ifname || ifname->empty()) return missing("CNI_IFNAME");
    if (auto p = ifnameProblem(*ifname)) return cniError(Code::InvalidEnv, "CNI_IFNAME=" + *p);
    env.ifname = *ifname;

    const std::string* netns = get("CNI_NETNS");
    if (add_check && (!netns || netns->empty())) return missing("CNI_NETNS");
    if (netns && !netns->empty()) {
      if ((*netns)[0] != '/')
        return cniError(Code::InvalidEnv,
                        fmt::format("CNI_NETNS=\"{}\": must be an absolute path (e.g. /run/netns/NAME)", *netns));
      env.netns = *netns;
    }
  }
  if (command != Command::Version && command != Command::Status) {
    const std::string* path = get("CNI_PATH");
    if (!path || path->empty()) return missing("CNI_PATH");
    std::string_view rest = *path;
    while (!rest.empty()) {
      auto colon = rest.find(':');
      if (colon != 0) env.path.emplace_back(rest.substr(0, colon));
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
  }
  if (with_container) {
    if (const std::string* args = get("CNI_ARGS")) {
      MB_ASSIGN(env.args, parseCniArgs(*args));
    }
  }
  return env;
}

}  // namespace membrane::cni
