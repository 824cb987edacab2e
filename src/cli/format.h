// Text formatting of API answers for the `membrane` CLI: pure functions from
// the JSON objects of docs/api.md to the exact text printed, modelled on
// cilium-dbg's output. Missing or mistyped fields never throw: they print as
// empty / 0 so that a newer or older agent still gives readable output.
// Thread-safe (no shared state).
#pragma once

#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace membrane::cli {

using Json = nlohmann::json;

// Aligns rows like Go's text/tabwriter with padding 3 (what cilium-dbg uses):
// every column but the last is as wide as its widest cell plus 'padding'
// spaces; trailing spaces are trimmed. Each row ends with '\n'.
std::string alignColumns(const std::vector<std::vector<std::string>>& rows, size_t padding = 3);

// `membrane status`: "KVStore: Disabled", "membrane: Ok   0.1.0 (abc123)", ...
std::string formatStatus(const Json& health);
// The "Cluster health:" value: "1/1 reachable (2026-11-24T21:00:00Z) (Probe interval: 60s)",
// "Probe pending (…)" before the first probe, "Disabled" without health checking.
std::string formatClusterHealthLine(const Json& cluster_health);
// `membrane health status` (GET /v1/health), laid out like `cilium-health status`;
// succinct prints one line per node.
std::string formatHealthStatus(const Json& health, bool succinct);
// A round-trip time as Go's time.Duration prints it (what cilium-health shows): "315.254µs".
std::string formatRtt(double seconds);
// `membrane status --brief`: "OK" or "Degraded: <message>".
std::string formatStatusBrief(const Json& health);
// Whether a /v1/healthz answer means healthy (status "ok").
bool statusOk(const Json& health);

// "Enabled" / "Disabled" / "Audit" from {"enforcing", "audit"}.
std::string enforcementText(const Json& direction);
// `membrane endpoint list`: Cilium's two-line header, one label per line.
std::string formatEndpointList(const Json& endpoints);
// After `membrane endpoint create`.
std::string formatEndpointCreated(const Json& endpoint);

// `membrane identity list` / `identity get`: "ID   LABELS", one label per line.
std::string formatIdentityList(const Json& identities);

// Identity number as cilium-dbg prints it: reserved ones by name (1 -> "host",
// 2 -> "world", 0 -> "unknown"), others as the number.
std::string identityName(const Json& id);

// One monitor line for an Event (drop, policy-verdict, trace, lost, l7). ""
// for an event type this CLI does not know.
std::string formatEvent(const Json& event);

// `membrane policy get`: the policies as pretty JSON, then "Revision: N".
std::string formatPolicyGet(const Json& answer);
// `membrane policy trace`: the agent's "text" (ends with a newline).
std::string formatPolicyTrace(const Json& answer);
// One "file:line:col: path: message" line per diagnostic of an API error.
std::string formatDiagnostics(const Json& error_body);

// `membrane metrics list`: "Metric   Labels   Value"; 'filter' (may be null)
// keeps metrics whose name it matches (std::regex_search).
std::string formatMetricList(const Json& samples, const std::regex* filter);

// `membrane bpf ct list`: one flow per line.
std::string formatCtList(const Json& flows);

// `membrane bpf policy get`: Cilium's table plus a DERIVED FROM column when any
// entry names its policy.
std::string formatBpfPolicy(const Json& entries);

}  // namespace membrane::cli
