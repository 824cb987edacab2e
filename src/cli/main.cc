// membrane: CLI of the membrane agent. Wiring only: CLI11 options -> commands.cc.
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "src/cli/commands.h"
#include "src/cli/workload_commands.h"

#ifndef MEMBRANE_VERSION_STRING
#define MEMBRANE_VERSION_STRING "0.1.0"
#endif

namespace {

using membrane::cli::Context;

void addOutput(CLI::App* cmd, std::string& output) {
  cmd->add_option("-o,--output", output, "Output format: text (tables as cilium-dbg prints them) or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"membrane — CLI of the membrane agent (eBPF network policy and Cilium-compatible metrics)", "membrane"};
  app.footer(
      "Talks to membraned's REST API on a unix socket (root or the socket's group).\n"
      "Run 'membrane SUBCOMMAND --help' for a subcommand's arguments and examples.\n"
      "Examples:\n"
      "  membrane status\n"
      "  membrane apply -f examples/starwars/http-sw-app.yaml\n"
      "  membrane get pods,svc -o wide\n"
      "  membrane apply -f examples/starwars/sw_l3_l4_l7_policy.yaml\n"
      "  membrane exec tiefighter -- curl -s -XPOST deathstar.default.svc.cluster.local/v1/request-landing\n"
      "  membrane policy trace --src-endpoint xwing --dst-labels org=empire,class=deathstar --dport 80/TCP\n"
      "  membrane monitor --type drop --type l7\n"
      "  membrane --socket /tmp/m2.sock endpoint list -o json");
  app.require_subcommand(1);
  app.fallthrough();  // --socket also after the subcommand
  app.set_version_flag("--version", std::string("membrane ") + MEMBRANE_VERSION_STRING);

  Context ctx{membrane::cli::kDefaultSocket, std::cout, std::cerr};
  app.add_option("--socket", ctx.socket, "Unix socket of membraned's REST API")
      ->envname("MEMBRANE_SOCKET")
      ->capture_default_str();

  std::string output = "text";
  std::function<int()> action;

  // status
  bool brief = false;
  auto* status = app.add_subcommand("status", "Show the agent's health (exit 0 only when it is ok)");
  status->add_flag("--brief", brief, "Print only OK or the reason it is not");
  addOutput(status, output);
  status->footer("Examples:\n  membrane status\n  membrane status --brief && echo healthy");
  status->callback([&] { action = [&] { return membrane::cli::cmdStatus(ctx, brief); }; });

  // health
  bool health_probe = false, health_succinct = false;
  auto* health = app.add_subcommand("health", "Node connectivity health (the cilium-health view)");
  health->require_subcommand(1);
  auto* health_status = health->add_subcommand(
      "status", "Show the last connectivity probe of every node: host and health endpoint, ICMP and HTTP");
  health_status->add_flag("--probe", health_probe, "Probe now instead of showing the last periodic result");
  health_status->add_flag("--succinct", health_succinct, "One line per node");
  addOutput(health_status, output);
  health_status->footer(
      "Each node is probed on two paths, its host address and its health endpoint (identity 4,\n"
      "reserved:health), with ICMP (\"ICMP to stack\") and HTTP GET /hello on port 4240 (\"HTTP to agent\").\n"
      "Needs membraned --enable-health-checking (the default).\n\n"
      "Examples:\n  membrane health status\n  membrane health status --probe -o json");
  health_status->callback(
      [&] { action = [&] { return membrane::cli::cmdHealthStatus(ctx, health_probe, health_succinct); }; });

  // endpoint
  auto* endpoint = app.add_subcommand("endpoint", "Manage endpoints (pods)");
  endpoint->require_subcommand(1);
  endpoint->footer("Examples:\n  membrane endpoint list\n  membrane endpoint create xwing --labels org=alliance,class=xwing");
  std::string ep_ref, ep_ns = "default", ep_labels;

  auto* ep_list = endpoint->add_subcommand("list", "List endpoints with their policy enforcement, identity and labels");
  addOutput(ep_list, output);
  ep_list->footer("Example:\n  membrane endpoint list -o json");
  ep_list->callback([&] { action = [&] { return membrane::cli::cmdEndpointList(ctx); }; });

  auto* ep_get = endpoint->add_subcommand("get", "Show one endpoint (JSON)");
  ep_get->add_option("endpoint", ep_ref, "Endpoint ID or pod NAME")->required();
  ep_get->add_option("-n,--namespace", ep_ns, "Namespace of NAME")->capture_default_str();
  addOutput(ep_get, output);
  ep_get->footer("Examples:\n  membrane endpoint get 1204\n  membrane endpoint get deathstar-1 -n empire");
  ep_get->callback([&] { action = [&] { return membrane::cli::cmdEndpointGet(ctx, ep_ref, ep_ns); }; });

  auto* ep_create = endpoint->add_subcommand("create", "Create an endpoint: network namespace, veth, IP, identity");
  ep_create->add_option("name", ep_ref, "Pod NAME")->required();
  ep_create->add_option("-n,--namespace", ep_ns, "Namespace of the pod")->capture_default_str();
  ep_create->add_option("--labels", ep_labels, "Labels as k=v[,k=v...] (they select policies and form the identity)");
  std::vector<std::string> ep_ports;
  ep_create->add_option("--port", ep_ports,
                        "Named container port NAME=PORT[/TCP|UDP|SCTP] (repeatable); policies' named ports "
                        "(port: http) resolve to it");
  std::string ep_service_account;
  ep_create->add_option("--service-account", ep_service_account,
                        "The pod's service account (default: default), carried as the label "
                        "k8s:io.cilium.k8s.policy.serviceaccount that Cilium's service-account policies select");
  addOutput(ep_create, output);
  ep_create->footer(
      "Examples:\n  membrane endpoint create deathstar --labels org=empire,class=deathstar\n"
      "  membrane endpoint create web --labels app=web --port http=80/TCP --port dns=53/UDP\n"
      "  membrane endpoint create reporter --labels app=reporter --service-account monitoring");
  ep_create->callback([&] {
    action = [&] {
      return membrane::cli::cmdEndpointCreate(ctx, ep_ref, ep_ns, ep_labels, ep_ports, ep_service_account);
    };
  });

  auto* ep_delete = endpoint->add_subcommand("delete", "Delete an endpoint and everything created for it");
  ep_delete->add_option("endpoint", ep_ref, "Endpoint ID or pod NAME")->required();
  ep_delete->add_option("-n,--namespace", ep_ns, "Namespace of NAME")->capture_default_str();
  ep_delete->footer("Examples:\n  membrane endpoint delete 1204\n  membrane endpoint delete xwing");
  ep_delete->callback([&] { action = [&] { return membrane::cli::cmdEndpointDelete(ctx, ep_ref, ep_ns); }; });

  std::vector<std::string> epcfg_settings;
  auto* ep_config = endpoint->add_subcommand("config", "Show or change an endpoint's options (PolicyAuditMode)");
  ep_config->add_option("endpoint", ep_ref, "Endpoint ID or pod NAME")->required();
  ep_config->add_option("settings", epcfg_settings,
                        "Option=Value items: PolicyAuditMode=Enabled|Disabled|Default (Default follows the "
                        "agent's --policy-audit-mode)");
  ep_config->add_option("-n,--namespace", ep_ns, "Namespace of NAME")->capture_default_str();
  addOutput(ep_config, output);
  ep_config->footer(
      "Without settings prints each option and its value. In audit mode, would-be policy drops are forwarded\n"
      "and reported as verdict AUDIT (membrane monitor) instead of dropped.\n"
      "Examples:\n  membrane endpoint config deathstar\n  membrane endpoint config 1204 PolicyAuditMode=Enabled");
  ep_config->callback(
      [&] { action = [&] { return membrane::cli::cmdEndpointConfig(ctx, ep_ref, ep_ns, epcfg_settings); }; });

  // namespace
  auto* nsc = app.add_subcommand("namespace", "Kubernetes namespaces of the endpoints and their labels");
  nsc->require_subcommand(1);
  nsc->footer("Examples:\n  membrane namespace list\n  membrane namespace label empire team=red");
  std::string ns_name;
  std::vector<std::string> ns_items;
  bool ns_overwrite = false;
  auto* ns_label = nsc->add_subcommand("label", "Set or remove labels of a namespace (kubectl label syntax)");
  ns_label->add_option("namespace", ns_name, "Namespace NAME")->required();
  ns_label->add_option("labels", ns_items, "k=v to set, k- to remove")->required();
  ns_label->add_flag("--overwrite", ns_overwrite, "Allow changing the value of a label that is already set");
  addOutput(ns_label, output);
  ns_label->footer(
      "Namespace labels are part of the identity of every pod in the namespace (as Cilium's\n"
      "k8s:io.cilium.k8s.namespace.labels.<k>=<v>), so namespaceSelector rules see them; pods move to\n"
      "their new identity and policy is re-realized at once. kubernetes.io/metadata.name is always the\n"
      "namespace's name (derived, as in Kubernetes): it cannot be set or removed.\n"
      "Examples:\n  membrane namespace label empire team=red\n  membrane namespace label empire team=blue --overwrite\n"
      "  membrane namespace label empire team-");
  ns_label->callback(
      [&] { action = [&] { return membrane::cli::cmdNamespaceLabel(ctx, ns_name, ns_items, ns_overwrite); }; });
  auto* ns_list = nsc->add_subcommand("list", "List namespaces with their number of endpoints and labels");
  addOutput(ns_list, output);
  ns_list->footer("Example:\n  membrane namespace list -o json");
  ns_list->callback([&] { action = [&] { return membrane::cli::cmdNamespaceList(ctx); }; });

  // exec
  std::string exec_name, exec_ns = "default";
  std::vector<std::string> exec_argv;
  auto* exec = app.add_subcommand("exec", "Run a command inside an endpoint's network namespace (as root)");
  exec->add_option("-n,--namespace", exec_ns, "Namespace of the pod")->capture_default_str();
  // kubectl exec -it: the command always gets this terminal's stdin and tty (it replaces membrane).
  bool exec_stdin = false, exec_tty = false;
  exec->add_flag("-i,--stdin", exec_stdin, "Accepted for kubectl compatibility (stdin is always passed)");
  exec->add_flag("-t,--tty", exec_tty, "Accepted for kubectl compatibility (the terminal is always passed)");
  exec->add_option("name", exec_name, "Pod NAME")->required();
  exec->add_option("command", exec_argv, "Command and its arguments, after --")->required();
  exec->footer(
      "The command runs in the pod's network and UTS namespaces with the pod's /etc/hosts and /etc/resolv.conf\n"
      "view (service names resolve) and replaces membrane: its exit status is membrane's.\n"
      "Examples:\n  membrane exec tiefighter -- curl -s -XPOST http://10.200.0.5/v1/request-landing\n"
      "  membrane exec tiefighter -- curl -s -XPOST deathstar.default.svc.cluster.local/v1/request-landing\n"
      "  membrane exec -n team-a -it client -- sh");
  exec->callback([&] { action = [&] { return membrane::cli::cmdExec(ctx, exec_name, exec_ns, exec_argv); }; });

  // identity
  std::string identity_id;
  auto* identity = app.add_subcommand("identity", "Show security identities");
  identity->require_subcommand(1);
  identity->footer("Examples:\n  membrane identity list\n  membrane identity get 257");
  auto* id_list = identity->add_subcommand("list", "List identities (reserved ones included) with their labels");
  addOutput(id_list, output);
  id_list->footer("Example:\n  membrane identity list -o json");
  id_list->callback([&] { action = [&] { return membrane::cli::cmdIdentityList(ctx); }; });
  auto* id_get = identity->add_subcommand("get", "Show one identity");
  id_get->add_option("id", identity_id, "Numeric identity")->required();
  addOutput(id_get, output);
  id_get->footer("Example:\n  membrane identity get 1");
  id_get->callback([&] { action = [&] { return membrane::cli::cmdIdentityGet(ctx, identity_id); }; });

  // policy
  auto* policy = app.add_subcommand("policy", "Manage network policies (CiliumNetworkPolicy, NetworkPolicy)");
  policy->require_subcommand(1);
  policy->footer("Examples:\n  membrane policy import sw_l3_l4_policy.yaml\n  membrane policy get\n  membrane policy delete rule1");
  std::vector<std::string> policy_files;
  auto* pol_import = policy->add_subcommand("import", "Import policies from YAML or JSON files (all or nothing per file)");
  pol_import->add_option("files", policy_files, "Policy files; '-' reads stdin")->required();
  addOutput(pol_import, output);
  pol_import->footer(
      "Prints the new policy revision. A rejected file prints file:line:col: path: message diagnostics.\n"
      "Examples:\n  membrane policy import sw_l3_l4_policy.yaml\n  kubectl get cnp rule1 -o yaml | membrane policy import -");
  pol_import->callback([&] { action = [&] { return membrane::cli::cmdPolicyImport(ctx, policy_files); }; });
  auto* pol_get = policy->add_subcommand("get", "Print the imported policies and the policy revision");
  addOutput(pol_get, output);
  pol_get->footer("Example:\n  membrane policy get");
  pol_get->callback([&] { action = [&] { return membrane::cli::cmdPolicyGet(ctx); }; });
  std::string pol_name, pol_ns = "default", pol_labels;
  bool pol_all = false;
  auto* pol_delete = policy->add_subcommand("delete", "Delete policies: one by name, those with given labels, or all");
  pol_delete->add_option("name", pol_name, "Policy NAME (metadata.name)");
  pol_delete->add_option("-n,--namespace", pol_ns, "Namespace of the policy NAME")->capture_default_str();
  pol_delete->add_option("--labels", pol_labels,
                         "Delete every policy whose metadata.labels include all of k=v[,k=v...]");
  pol_delete->add_flag("--all", pol_all, "Delete every policy");
  addOutput(pol_delete, output);
  pol_delete->footer(
      "Give exactly one of NAME, --labels or --all. Prints each deleted policy and the new revision;\n"
      "exit 1 (nothing deleted) when no policy matches.\n"
      "Examples:\n  membrane policy delete rule1\n  membrane policy delete rule1 -n empire\n"
      "  membrane policy delete --labels team=red,env=dev\n  membrane policy delete --all");
  pol_delete->callback([&] {
    action = [&] { return membrane::cli::cmdPolicyDelete(ctx, pol_name, pol_ns, pol_all, pol_labels); };
  });

  std::string wait_rev, wait_timeout = "30s";
  auto* pol_wait = policy->add_subcommand("wait", "Wait until every endpoint enforces a policy revision");
  pol_wait->add_option("revision", wait_rev, "Policy revision, as printed by policy import/delete/get")->required();
  pol_wait->add_option("--timeout", wait_timeout, "Give up after this long (30s, 2m, 1h; at most 1h)")
      ->capture_default_str();
  addOutput(pol_wait, output);
  pol_wait->footer(
      "Exit 0 once every endpoint's maps realize REVISION or a later one; exit 1 with a message on timeout.\n"
      "Examples:\n  membrane policy wait 12\n  rev=$(membrane policy import p.yaml -o json | jq .revision) && "
      "membrane policy wait $rev --timeout 5s");
  pol_wait->callback([&] { action = [&] { return membrane::cli::cmdPolicyWait(ctx, wait_rev, wait_timeout); }; });

  membrane::cli::TraceArgs trace_args;
  auto* pol_trace = policy->add_subcommand(
      "trace", "Explain whether traffic between two endpoints (or label sets) is allowed, and by which rules");
  pol_trace->add_option("--src-endpoint", trace_args.src_endpoint, "Source endpoint ID or pod NAME");
  pol_trace->add_option("--src-labels", trace_args.src_labels, "Source labels k=v[,k=v...] (a pod that need not exist)");
  pol_trace->add_option("--dst-endpoint", trace_args.dst_endpoint, "Destination endpoint ID or pod NAME");
  pol_trace->add_option("--dst-labels", trace_args.dst_labels, "Destination labels k=v[,k=v...]");
  pol_trace->add_option("--dport", trace_args.dport,
                        "Destination port/protocol, e.g. 80/TCP, 53/UDP, 8/ICMP (ICMP type); without it L3 only");
  trace_args.ns = "default";
  pol_trace->add_option("-n,--namespace", trace_args.ns, "Namespace of pod NAMEs and of --*-labels")->capture_default_str();
  addOutput(pol_trace, output);
  pol_trace->footer(
      "Prints, for the source's egress and the destination's ingress, the rules (policy namespace/name) that\n"
      "select the endpoint, which one allows or denies the flow, or that none matched (default deny).\n"
      "Examples:\n  membrane policy trace --src-endpoint xwing --dst-labels org=empire,class=deathstar --dport 80/TCP\n"
      "  membrane policy trace --src-labels org=empire,class=tiefighter --dst-labels org=empire,class=deathstar "
      "--dport 80/TCP");
  pol_trace->callback([&] { action = [&] { return membrane::cli::cmdPolicyTrace(ctx, trace_args); }; });

  // monitor
  std::vector<std::string> mon_types;
  bool mon_json = false;
  auto* monitor = app.add_subcommand("monitor", "Stream datapath events (drops, policy verdicts, traces) and L7 requests");
  monitor->add_option("-t,--type", mon_types, "Event type to show (repeatable; default all)")
      ->check(CLI::IsMember({"drop", "policy-verdict", "trace", "l7"}));
  monitor->add_flag("-j,--json", mon_json, "One JSON object per event instead of text");
  monitor->footer(
      "Types: drop (packets the eBPF programs dropped, with reason), policy-verdict (first packet of each\n"
      "flow with the verdict and the policy that decided it), trace (forwarded packets; needs membraned\n"
      "--trace-events), l7 (HTTP requests and responses through membrane-proxy: Forwarded/Denied, status).\n"
      "Runs until interrupted.\n"
      "Examples:\n  membrane monitor --type drop\n  membrane monitor -t policy-verdict -t drop\n"
      "  membrane monitor --type l7\n  membrane monitor --json | jq .");
  monitor->callback([&] { action = [&] {
    ctx.json = mon_json;
    return membrane::cli::cmdMonitor(ctx, mon_types);
  }; });

  // metrics
  std::string metrics_pattern;
  auto* metrics = app.add_subcommand("metrics", "Show the agent's metrics");
  metrics->require_subcommand(1);
  metrics->footer("Example:\n  membrane metrics list -p drop");
  auto* met_list = metrics->add_subcommand("list", "List metrics (what /metrics exports) with their labels and values");
  met_list->add_option("-p,--match-pattern", metrics_pattern, "Show only metrics whose name matches this regex");
  addOutput(met_list, output);
  met_list->footer("Examples:\n  membrane metrics list\n  membrane metrics list -p 'cilium_drop_.*'");
  met_list->callback([&] { action = [&] { return membrane::cli::cmdMetricsList(ctx, metrics_pattern); }; });

  // bpf
  auto* bpf = app.add_subcommand("bpf", "Inspect BPF maps");
  bpf->require_subcommand(1);
  bpf->footer("Examples:\n  membrane bpf ct list\n  membrane bpf policy get deathstar");
  auto* ct = bpf->add_subcommand("ct", "Connection tracking table");
  ct->require_subcommand(1);
  ct->footer("Example:\n  membrane bpf ct list");
  auto* ct_list = ct->add_subcommand("list", "List conntrack entries, one flow per line");
  addOutput(ct_list, output);
  ct_list->footer("Example:\n  membrane bpf ct list -o json");
  ct_list->callback([&] { action = [&] { return membrane::cli::cmdBpfCtList(ctx); }; });
  auto* bpol = bpf->add_subcommand("policy", "Per-endpoint policy maps");
  bpol->require_subcommand(1);
  bpol->footer("Example:\n  membrane bpf policy get 1204");
  std::string bpol_ref, bpol_ns = "default";
  auto* bpol_get = bpol->add_subcommand("get", "Show an endpoint's policy map entries with their hit counters");
  bpol_get->add_option("endpoint", bpol_ref, "Endpoint ID or pod NAME")->required();
  bpol_get->add_option("-n,--namespace", bpol_ns, "Namespace of NAME")->capture_default_str();
  addOutput(bpol_get, output);
  bpol_get->footer("Examples:\n  membrane bpf policy get 1204\n  membrane bpf policy get deathstar -n default");
  bpol_get->callback([&] { action = [&] { return membrane::cli::cmdBpfPolicyGet(ctx, bpol_ref, bpol_ns); }; });

  // apply / delete / get / logs (Kubernetes manifests, kubectl-like)
  std::vector<std::string> apply_files;
  std::string apply_ns = "default";
  auto* apply = app.add_subcommand("apply", "Create or update objects from Kubernetes manifests (all or nothing)");
  apply->alias("create");  // the seed's `kubectl create -f`
  apply->add_option("-f,--filename", apply_files, "Manifest file, directory (*.yaml, *.yml, *.json) or - for stdin")
      ->required();
  apply->add_option("-n,--namespace", apply_ns, "Namespace of objects whose metadata names none (policies included)")
      ->capture_default_str();
  addOutput(apply, output);
  apply->footer(
      "Kinds: Namespace, Pod, Deployment, Service (ClusterIP), CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,\n"
      "NetworkPolicy; YAML (several documents) or JSON. Every document is checked before anything changes: an\n"
      "unknown kind or field is reported as file:line:column with its field path, and nothing is applied.\n"
      "Pods run their container's command/args in the pod's network namespace; built-in images:\n"
      "cilium/starwars (the deathstar HTTP API on port 80), tgraf/netperf and cilium/json-mock (idle clients).\n"
      "Examples:\n  membrane apply -f examples/starwars/http-sw-app.yaml\n  membrane apply -f examples/starwars/\n"
      "  cat pod.yaml | membrane apply -f -");
  apply->callback([&] { action = [&] { return membrane::cli::cmdApply(ctx, apply_files, apply_ns); }; });

  std::vector<std::string> delete_files, delete_what;
  std::string delete_ns = "default";
  auto* del = app.add_subcommand("delete", "Delete the objects of manifests (-f), or one pod (delete pod NAME)");
  del->add_option("-f,--filename", delete_files, "Manifest file, directory or - for stdin");
  del->add_option("-n,--namespace", delete_ns, "Namespace of the pod (delete pod NAME) or of objects without one")->capture_default_str();
  del->add_option("what", delete_what, "pod NAME");
  addOutput(del, output);
  del->footer(
      "A pod of a Deployment is replaced by a new one (like kubectl).\n"
      "Examples:\n  membrane delete -f examples/starwars/http-sw-app.yaml\n  membrane delete pod tiefighter");
  del->callback([&] { action = [&] {
    if (!delete_files.empty() && delete_what.empty()) return membrane::cli::cmdDelete(ctx, delete_files, delete_ns);
    if (delete_files.empty() && delete_what.size() == 2 && (delete_what[0] == "pod" || delete_what[0] == "pods"))
      return membrane::cli::cmdDeletePod(ctx, delete_what[1], delete_ns);
    std::cerr << "membrane delete: give -f FILE|DIR|- or 'pod NAME'\n";
    return 2;
  }; });

  membrane::cli::GetArgs get_args;
  auto* get = app.add_subcommand("get", "List pods, deployments, services, policies or namespaces (kubectl columns)");
  get->add_option("resource", get_args.resource, "pods|deployments|services|policies|namespaces, or several: pods,svc")
      ->required();
  get->add_option("-n,--namespace", get_args.ns, "Namespace")->capture_default_str();
  get->add_flag("-A,--all-namespaces", get_args.all_namespaces, "Every namespace");
  get->add_option("-o,--output", get_args.output, "wide (more columns) or json")->check(CLI::IsMember({"wide", "json"}));
  get->footer(
      "Columns: pods NAME READY STATUS RESTARTS AGE (-o wide adds IP NODE ENDPOINT); services NAME TYPE CLUSTER-IP\n"
      "EXTERNAL-IP PORT(S) AGE; deployments NAME READY UP-TO-DATE AVAILABLE.\n"
      "Examples:\n  membrane get pods\n  membrane get pods,svc\n  membrane get pods -A -o wide\n  membrane get services -o json");
  get->callback([&] { action = [&] { return membrane::cli::cmdGet(ctx, get_args); }; });

  std::string logs_pod, logs_ns = "default";
  bool logs_follow = false;
  auto* logs = app.add_subcommand("logs", "Print a pod's output (stdout and stderr of its command, all restarts)");
  logs->add_option("pod", logs_pod, "Pod NAME")->required();
  logs->add_option("-n,--namespace", logs_ns, "Namespace of the pod")->capture_default_str();
  logs->add_flag("-f,--follow", logs_follow, "Keep printing new output until interrupted or the pod is deleted");
  logs->footer("Examples:\n  membrane logs deathstar-b4k2x\n  membrane logs -f tiefighter");
  logs->callback([&] { action = [&] { return membrane::cli::cmdLogs(ctx, logs_pod, logs_ns, logs_follow); }; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help/version exit 0; a usage error exits 2 (1 is kept for "the command failed").
    return app.exit(e) == 0 ? 0 : 2;
  }
  ctx.json = ctx.json || output == "json";
  if (!action) return 1;  // require_subcommand makes this unreachable
  try {
    return action();
  } catch (const std::exception& e) {
    // Only a bug gets here (commands return codes); say so instead of std::terminate.
    std::cerr << "membrane: internal error: " << e.what() << "\n";
    return 1;
  }
}
