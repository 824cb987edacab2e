// `membrane apply|delete|get|logs`: kubectl-like commands for manifests and
// the workloads they create. Same conventions as commands.h (exit 0 success,
// 1 failure, errors on Context::err with the agent's diagnostics).
#pragma once

#include <string>
#include <vector>

#include "src/cli/commands.h"
#include "src/cli/format.h"

namespace membrane::cli {

// files: paths, directories (their *.yaml, *.yml, *.json, sorted) or "-" (stdin).
// ns: namespace of objects that do not name one (kubectl -n).
int cmdApply(Context& ctx, const std::vector<std::string>& files, const std::string& ns);
int cmdDelete(Context& ctx, const std::vector<std::string>& files, const std::string& ns);
// `membrane delete pod NAME`.
int cmdDeletePod(Context& ctx, const std::string& name, const std::string& ns);

struct GetArgs {
  std::string resource;  // pods|deployments|services|policies|namespaces (singular and short forms too)
  std::string ns = "default";
  bool all_namespaces = false;
  std::string output;    // "" | wide | json
  bool kind_prefix = false;  // names as kind/name (several resources: "pods,svc")
};
int cmdGet(Context& ctx, const GetArgs& args);

// Prints the pod's stdout+stderr; follow: keeps printing until the pod is gone.
int cmdLogs(Context& ctx, const std::string& name, const std::string& ns, bool follow);

// Table helpers (pure; tested in workload_commands_test).
std::string formatAge(const std::string& rfc3339_created, long now_epoch_seconds);
std::string formatPods(const Json& pods, bool all_namespaces, bool wide, long now);
std::string formatServices(const Json& services, bool all_namespaces, long now);
std::string formatDeployments(const Json& deployments, bool all_namespaces, long now);

}  // namespace membrane::cli
