// The contract between membrane-cni (the plugin) and membraned (the agent):
// JSON over the agent's REST API on its unix socket (docs/cni.md, "The
// plugin-agent API"). Both sides encode and decode through this header, so
// the two cannot drift apart.
//
//   PUT /v1/cni/add    AddRequest    -> 200 {"endpoint_id": N, "result": <CNI result, no cniVersion>}
//   PUT /v1/cni/del    DelRequest    -> 200 {"deleted": true|false}   (false: nothing was there)
//   PUT /v1/cni/check  CheckRequest  -> 200 {"endpoint_id": N}
//   PUT /v1/cni/gc     GcRequest     -> 200 {"removed": [{"container_id", "ifname"}]}
//   GET /v1/healthz                  -> the agent's health (STATUS: "datapath.status" must be "ok")
//
// A refusal or failure is the API's error answer (docs/api.md) with one more
// member, the CNI error code the plugin reports:
//   {"error": "<message>", "code": <HTTP status>, "cni_code": <CNI code>}
// Without "cni_code" (an older agent, or the router's 404/405) the plugin
// derives the code from the status: 503 -> 11, 400 -> 7, 404 -> 100 (the
// agent has no CNI API), 409 -> 101, else 100.
//
// Semantics the agent guarantees:
//  - ADD is all-or-nothing: on any error nothing of the endpoint remains
//    (no veth, route, map entry, state file, address). A second ADD for the
//    same (container_id, ifname) is refused with 101 and changes nothing.
//    An exhausted pod CIDR is 102; a CNI_NETNS that does not exist 4; an
//    ifname already present in the netns 101.
//  - DEL is idempotent: an unknown (container_id, ifname) or a netns that is
//    gone is success; it removes everything ADD created.
//  - CHECK answers 200 only when the endpoint exists and its container
//    interface, address and routes are present and equal to `expected`;
//    otherwise an error naming the first difference (3 when the container is
//    unknown to the agent, 100 for a difference).
//  - GC removes every CNI endpoint of `network` whose (container_id, ifname)
//    is not in `valid`.
//
// Pure value types and JSON; no I/O. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "src/api/http_message.h"
#include "src/cni/config.h"
#include "src/cni/spec.h"

namespace membrane::cni {

inline constexpr std::string_view kAddPath = "/v1/cni/add";
inline constexpr std::string_view kDelPath = "/v1/cni/del";
inline constexpr std::string_view kCheckPath = "/v1/cni/check";
inline constexpr std::string_view kGcPath = "/v1/cni/gc";
inline constexpr std::string_view kHealthPath = "/v1/healthz";

// The attachment a request is about: one interface of one container.
struct AttachmentRef {
  std::string container_id;  // CNI_CONTAINERID
  std::string ifname;        // CNI_IFNAME
  std::string netns;         // CNI_NETNS ("" on DEL when the runtime no longer has it)
  std::string network;       // the config's "name"
};

// {"container_id", "ifname", "netns", "network", "namespace", "name",
//  "labels": {k: v}, "infra_container_id"?, "pod_uid"?}
// namespace: K8S_POD_NAMESPACE ("" = the agent's "default"); name:
// K8S_POD_NAME ("" = the agent names the endpoint after the container ID).
struct AddRequest {
  AttachmentRef ref;
  std::string pod_namespace, pod_name, infra_container_id, pod_uid;
  std::map<std::string, std::string> labels;
};
struct DelRequest {
  AttachmentRef ref;
};
struct CheckRequest {
  AttachmentRef ref;
  CniResult expected;  // the prevResult the runtime passed (ADD's final result)
};
struct GcRequest {
  std::string network;
  std::vector<Attachment> valid;
};

Json toJson(const AddRequest& r);
Json toJson(const DelRequest& r);
Json toJson(const CheckRequest& r);
Json toJson(const GcRequest& r);

// The agent's decoders: code 6 for a wrong JSON type, 7 for a missing or
// invalid member (container_id/ifname syntax as CNI_CONTAINERID/CNI_IFNAME,
// netns absolute, labels in Kubernetes syntax). Messages name the member.
Result<AddRequest> parseAddRequest(std::string_view body);
Result<DelRequest> parseDelRequest(std::string_view body);
Result<CheckRequest> parseCheckRequest(std::string_view body);
Result<GcRequest> parseGcRequest(std::string_view body);

// The agent's ADD answer and the plugin's decoder of it.
struct AddAnswer {
  uint64_t endpoint_id = 0;
  CniResult result;
};
Json toJson(const AddAnswer& a);
Result<AddAnswer> parseAddAnswer(std::string_view body);

// An error answer carrying a CNI code (the agent side).
api::Response errorAnswer(int http_status, Code code, const std::string& message);

// The CNI error for a non-2xx answer (the plugin side): "cni_code" when
// present and valid, else derived from the status as above; the message is
// the answer's "error" (or the status line when there is none).
Error errorFromAnswer(const api::Response& r, std::string_view what);

}  // namespace membrane::cni
