#include "src/cni/plugin.h"

#include <sys/stat.h>

#include <fmt/format.h>

#include "src/api/http_client.h"
#include "src/cni/agent_api.h"
#include "src/cni/config.h"

namespace membrane::cni {

namespace {

using api::HttpClient;

// The transport failure of a request to the agent, as the CNI error the
// runtime sees: the agent may be restarting, so the runtime may retry (11),
// except when it answered something that is not HTTP.
Error transportError(const Error& e, const std::string& socket, Code code) {
  if (e.code == EPROTO) return cniError(Code::AgentFailed, e.message);
  if (e.code == ENOENT || e.code == ECONNREFUSED || e.code == EACCES || e.code == EPERM)
    return cniError(code, fmt::format("cannot reach membraned at {}: {}: is the agent running (systemctl start "
                                      "membraned)? The socket is set in the network configuration as "
                                      "\"membrane\": {{\"socket\": PATH}}",
                                      socket, errnoText(e.code)));
  return cniError(code, "membraned did not answer: " + e.message);
}

// PUT 'path' with 'body'; the 2xx answer, or the CNI error for the failure.
Result<api::Response> call(HttpClient& client, std::string_view method, std::string_view path, const Json& body,
                           std::string_view what) {
  // Replace, not throw: CNI_ARGS values and paths need not be UTF-8.
  auto r = client.request(method, path,
                          body.is_null() ? std::string() : body.dump(-1, ' ', false, Json::error_handler_t::replace));
  if (!r.ok()) return transportError(r.error(), client.socketPath(), Code::TryAgainLater);
  if (r->status < 200 || r->status >= 300) return errorFromAnswer(*r, what);
  return std::move(r).value();
}

Status netnsExists(const std::string& netns) {
  struct stat st {};
  if (::stat(netns.c_str(), &st) != 0)
    return cniError(Code::InvalidEnv, fmt::format("CNI_NETNS={}: {} (the container's network namespace must exist "
                                                  "for ADD and CHECK)",
                                                  netns, errnoText(errno)));
  return okStatus();
}

AttachmentRef refOf(const Env& env, const NetConf& conf) {
  return AttachmentRef{env.container_id, env.ifname, env.netns, conf.name};
}

// The container interface membrane created (CNI_IFNAME in CNI_NETNS), or -1.
int64_t containerInterface(const CniResult& r, const Env& env) {
  for (size_t i = 0; i < r.interfaces.size(); ++i)
    if (r.interfaces[i].name == env.ifname && r.interfaces[i].sandbox == env.netns) return static_cast<int64_t>(i);
  return -1;
}

// 'prev' (what earlier plugins of the chain returned) followed by 'ours',
// whose ips[].interface indexes move past prev's interfaces.
CniResult chain(const CniResult& prev, const CniResult& ours) {
  CniResult out = prev;
  auto offset = static_cast<int64_t>(prev.interfaces.size());
  out.interfaces.insert(out.interfaces.end(), ours.interfaces.begin(), ours.interfaces.end());
  for (IpConfig ip : ours.ips) {
    if (ip.interface) *ip.interface += offset;
    out.ips.push_back(std::move(ip));
  }
  out.routes.insert(out.routes.end(), ours.routes.begin(), ours.routes.end());
  return out;
}

Result<Json> cmdAdd(HttpClient& client, const Env& env, const NetConf& conf) {
  AddRequest req;
  req.ref = refOf(env, conf);
  req.pod_namespace = env.args.pod_namespace;
  req.pod_name = env.args.pod_name;
  req.infra_container_id = env.args.infra_container_id;
  req.pod_uid = env.args.pod_uid;
  req.labels = env.args.labels;
  MB_ASSIGN(auto resp, call(client, "PUT", kAddPath, toJson(req), "ADD"));
  auto answer = parseAddAnswer(resp.body);
  if (!answer.ok()) return cniError(Code::AgentFailed, answer.error().message);
  const CniResult& ours = answer->result;
  int64_t idx = containerInterface(ours, env);
  if (idx < 0 || ours.interfaces[static_cast<size_t>(idx)].mac.empty())
    return cniError(Code::AgentFailed,
                    fmt::format("membraned's ADD answer has no interface {} with sandbox {} and a mac", env.ifname,
                                env.netns));
  CniResult out = conf.prev_result ? chain(*conf.prev_result, ours) : ours;
  if (!conf.dns.empty()) out.dns = conf.dns;
  return resultToJson(out, conf.version);
}

Status cmdDel(HttpClient& client, const Env& env, const NetConf& conf) {
  MB_TRY(call(client, "PUT", kDelPath, toJson(DelRequest{refOf(env, conf)}), "DEL"));
  return okStatus();
}

Status cmdCheck(HttpClient& client, const Env& env, const NetConf& conf) {
  if (!conf.prev_result)
    return cniError(Code::InvalidConfig, "stdin config: prevResult: required for CHECK (the runtime passes ADD's "
                                         "result)");
  if (containerInterface(*conf.prev_result, env) < 0)
    return cniError(Code::InvalidConfig,
                    fmt::format("stdin config: prevResult: no interface {} with sandbox {}: not the result of "
                                "membrane-cni's ADD for this container",
                                env.ifname, env.netns));
  CheckRequest req{refOf(env, conf), *conf.prev_result};
  MB_TRY(call(client, "PUT", kCheckPath, toJson(req), "CHECK"));
  return okStatus();
}

Status cmdGc(HttpClient& client, const NetConf& conf) {
  if (!conf.has_valid_attachments)
    return cniError(Code::InvalidConfig, "stdin config: cni.dev/valid-attachments: required for GC (without it "
                                         "every attachment would be garbage)");
  MB_TRY(call(client, "PUT", kGcPath, toJson(GcRequest{conf.name, conf.valid_attachments}), "GC"));
  return okStatus();
}

Status cmdStatus(HttpClient& client) {
  auto r = client.request("GET", kHealthPath);
  if (!r.ok()) return transportError(r.error(), client.socketPath(), Code::NotAvailable);
  if (r->status != 200)
    return cniError(Code::NotAvailable, fmt::format("membraned answered {} to GET {}", r->status, kHealthPath));
  Json j = Json::parse(r->body, nullptr, false);
  std::string datapath;
  if (j.is_object() && j.contains("datapath") && j["datapath"].is_object() && j["datapath"].contains("status") &&
      j["datapath"]["status"].is_string())
    datapath = j["datapath"]["status"].get<std::string>();
  if (datapath != "ok")
    return cniError(Code::NotAvailable,
                    fmt::format("membraned's datapath is not ready (status \"{}\")", datapath.empty() ? "?" : datapath));
  return okStatus();
}

// Runs the checked command; the JSON to print (null: nothing) or the error.
Result<Json> dispatch(const Invocation& inv, Command command) {
  MB_ASSIGN(NetConf conf, parseNetConf(inv.stdin_text));
  if (command == Command::Check && conf.version < kV040)
    return cniError(Code::IncompatibleVersion,
                    fmt::format("CHECK needs cniVersion 0.4.0 or later; the config has {}", conf.version_text));
  if ((command == Command::Gc || command == Command::Status) && conf.version < kV110)
    return cniError(Code::IncompatibleVersion, fmt::format("{} needs cniVersion 1.1.0; the config has {}",
                                                           commandName(command), conf.version_text));
  MB_ASSIGN(Env env, parseEnv(command, inv.env));
  if (command == Command::Add || command == Command::Check) MB_TRY(netnsExists(env.netns));

  HttpClient client(conf.agent_socket, conf.agent_timeout);
  switch (command) {
    case Command::Add: return cmdAdd(client, env, conf);
    case Command::Del: MB_TRY(cmdDel(client, env, conf)); break;
    case Command::Check: MB_TRY(cmdCheck(client, env, conf)); break;
    case Command::Gc: MB_TRY(cmdGc(client, conf)); break;
    case Command::Status: MB_TRY(cmdStatus(client)); break;
    case Command::Version: break;  // answered before
  }
  return Json();
}

}  // namespace

Outcome runPlugin(const Invocation& inv) {
  std::string asked = sniffVersion(inv.stdin_text);
  bool asked_ok = parseVersion(asked).ok();
  auto print = [](const Json& j, int code) {
    return Outcome{code, j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n"};
  };
  auto command = parseCommand(inv.env);
  if (!command.ok()) return print(errorToJson(command.error(), asked_ok ? asked : ""), 1);
  if (*command == Command::Version) return print(versionInfoJson(asked_ok ? asked : kLatestVersion), 0);
  auto r = dispatch(inv, *command);
  if (!r.ok()) return print(errorToJson(r.error(), asked_ok ? asked : ""), 1);
  if (r->is_null()) return Outcome{0, ""};
  return print(*r, 0);
}

}  // namespace membrane::cni
