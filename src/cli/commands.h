// The `membrane` CLI's commands: each talks to membraned through HttpClient,
// prints with src/cli/format.h and returns the process exit code (0 success,
// 1 failure; exec does not return on success). Errors go to Context::err:
// the HttpClient message when the agent is unreachable, else the server's
// "error" (and its diagnostics). Not thread-safe (one command per process).
#pragma once

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace membrane::cli {

inline constexpr const char* kDefaultSocket = "/var/run/membrane/membrane.sock";

struct Context {
  std::string socket = kDefaultSocket;
  std::ostream& out;
  std::ostream& err;
  bool json = false;  // -o json
};

int cmdStatus(Context& ctx, bool brief);
// `membrane health status [--probe] [--succinct]`: GET /v1/health[?probe=true].
int cmdHealthStatus(Context& ctx, bool probe, bool succinct);
int cmdEndpointList(Context& ctx);
int cmdEndpointGet(Context& ctx, const std::string& ref, const std::string& ns);
// labels: "k=v[,k=v...]".
// ports: named container ports "NAME=PORT[/PROTO]" (PROTO TCP (default), UDP, SCTP).
// service_account: "" = the agent's default ("default").
int cmdEndpointCreate(Context& ctx, const std::string& name, const std::string& ns, const std::string& labels,
                      const std::vector<std::string>& ports = {}, const std::string& service_account = "");
int cmdEndpointDelete(Context& ctx, const std::string& ref, const std::string& ns);
// Enters the endpoint's network namespace and execs argv (PATH search).
// Returns only on failure: 1 unknown endpoint/namespace, 126 exec failed,
// 127 command not found.
int cmdExec(Context& ctx, const std::string& name, const std::string& ns, const std::vector<std::string>& argv);
int cmdIdentityList(Context& ctx);
int cmdIdentityGet(Context& ctx, const std::string& id);
// files: paths, "-" = stdin.
int cmdPolicyImport(Context& ctx, const std::vector<std::string>& files);
int cmdPolicyGet(Context& ctx);
// Exactly one of name (with ns), labels ("k=v[,k=v...]": every policy whose
// metadata labels include them all) or all.
int cmdPolicyDelete(Context& ctx, const std::string& name, const std::string& ns, bool all,
                    const std::string& labels = "");
// Waits until every endpoint enforces policy revision `revision` (a number);
// timeout: Go-style duration "30s", "2m", "1h", or plain seconds.
int cmdPolicyWait(Context& ctx, const std::string& revision, const std::string& timeout);
// Without settings prints the endpoint's options; with "Option=Value" items
// (PolicyAuditMode=Enabled|Disabled|Default) changes them.
int cmdEndpointConfig(Context& ctx, const std::string& ref, const std::string& ns,
                      const std::vector<std::string>& settings);
// kubectl-style: "k=v" adds/changes (a change needs overwrite), "k-" removes.
int cmdNamespaceLabel(Context& ctx, const std::string& ns, const std::vector<std::string>& items, bool overwrite);
int cmdNamespaceList(Context& ctx);
// Parses "30s", "1500ms" (rounded up to whole seconds), "2m", "1h", "45" into
// seconds; nullopt if malformed.
std::optional<long> parseDurationSeconds(const std::string& text);

// `membrane policy trace`: exactly one of src_endpoint ("ID" or pod NAME) /
// src_labels ("k=v,..."), and one of dst_endpoint / dst_labels; dport
// "80/TCP" or "" (L3 only); ns is the namespace of pod NAMEs and of the
// labels (default "default"). Calls GET /v1/policy/trace and prints its
// "text" (-o json: the whole answer). Exit 0 whatever the verdict.
struct TraceArgs {
  std::string src_endpoint, src_labels, dst_endpoint, dst_labels, dport, ns;
};
int cmdPolicyTrace(Context& ctx, const TraceArgs& args);
// Streams until the agent ends the stream (exit 1) or the process is killed.
int cmdMonitor(Context& ctx, const std::vector<std::string>& types);
int cmdMetricsList(Context& ctx, const std::string& pattern);
int cmdBpfCtList(Context& ctx);
int cmdBpfPolicyGet(Context& ctx, const std::string& ref, const std::string& ns);

}  // namespace membrane::cli
