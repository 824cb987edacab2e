#include "src/cni/agent_api.h"

#include <fmt/format.h>

#include "membrane/labels.h"
#include "src/cni/json_fields.h"

namespace membrane::cni {

namespace {

Json refJson(const AttachmentRef& r) {
  return Json{{"container_id", r.container_id}, {"ifname", r.ifname}, {"netns", r.netns}, {"network", r.network}};
}

// Members are named from the top ("labels.app"): the public decoders add
// which message it is ("cni add request: labels.app: ...").

Result<Json> parseBody(std::string_view body) {
  Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded()) return cniError(Code::DecodeFailure, "body is not valid JSON");
  MB_TRY(fields::requireObject(j, ""));
  return j;
}

// Decodes 'body' (a JSON object) with members(); every error is prefixed
// with 'what' ("cni add request: labels.app: ...").
template <typename T>
Result<T> decode(std::string_view body, const char* what, Result<T> (*members)(const Json&)) {
  auto j = parseBody(body);
  if (!j.ok()) return j.error().wrap(what);
  return fields::context(members(*j), what);
}

Error invalid(std::string_view key, const std::string& problem) {
  return cniError(Code::InvalidConfig, fmt::format("{}: {}", key, problem));
}

// netns_required: ADD and CHECK need it; DEL may come after the netns is gone.
Result<AttachmentRef> parseRef(const Json& j, bool netns_required) {
  AttachmentRef r;
  MB_ASSIGN(r.container_id, fields::reqString(j, "container_id", ""));
  if (auto p = containerIdProblem(r.container_id)) return invalid("container_id", *p);
  MB_ASSIGN(r.ifname, fields::reqString(j, "ifname", ""));
  if (auto p = ifnameProblem(r.ifname)) return invalid("ifname", *p);
  MB_ASSIGN(auto netns, fields::optString(j, "netns", ""));
  r.netns = netns.value_or("");
  if (netns_required && r.netns.empty()) return invalid("netns", "required, missing");
  if (!r.netns.empty() && r.netns[0] != '/')
    return invalid("netns", fmt::format("\"{}\" must be an absolute path", r.netns));
  MB_ASSIGN(r.network, fields::reqString(j, "network", ""));
  if (auto p = networkNameProblem(r.network)) return invalid("network", *p);
  return r;
}

}  // namespace

Json toJson(const AddRequest& r) {
  Json j = refJson(r.ref);
  j["namespace"] = r.pod_namespace;
  j["name"] = r.pod_name;
  j["labels"] = Json::object();
  for (const auto& [k, v] : r.labels) j["labels"][k] = v;
  if (!r.infra_container_id.empty()) j["infra_container_id"] = r.infra_container_id;
  if (!r.pod_uid.empty()) j["pod_uid"] = r.pod_uid;
  return j;
}

Json toJson(const DelRequest& r) { return refJson(r.ref); }

Json toJson(const CheckRequest& r) {
  Json j = refJson(r.ref);
  // Version-neutral: the agent compares values, and 1.1.0 carries every field.
  Json expected = resultToJson(r.expected, kV110);
  expected.erase("cniVersion");
  j["expected"] = std::move(expected);
  return j;
}

Json toJson(const GcRequest& r) {
  Json valid = Json::array();
  for (const auto& a : r.valid) valid.push_back({{"container_id", a.container_id}, {"ifname", a.ifname}});
  return Json{{"network", r.network}, {"valid", std::move(valid)}};
}

Result<AddRequest> parseAddRequest(std::string_view body) {
  return decode<AddRequest>(body, "cni add request", [](const Json& j) -> Result<AddRequest> {
    AddRequest r;
    MB_ASSIGN(r.ref, parseRef(j, true));
    MB_ASSIGN(auto ns, fields::optString(j, "namespace", ""));
    MB_ASSIGN(auto name, fields::optString(j, "name", ""));
    MB_ASSIGN(auto infra, fields::optString(j, "infra_container_id", ""));
    MB_ASSIGN(auto uid, fields::optString(j, "pod_uid", ""));
    r.pod_namespace = ns.value_or("");
    r.pod_name = name.value_or("");
    r.infra_container_id = infra.value_or("");
    r.pod_uid = uid.value_or("");
    MB_ASSIGN(const Json* labels, fields::optObject(j, "labels", ""));
    if (labels) {
      for (const auto& [k, v] : labels->items()) {
        std::string path = fields::memberPath("labels", k);
        if (!v.is_string())
          return cniError(Code::DecodeFailure, fmt::format("{}: must be a string, got {}", path, fields::typeName(v)));
        if (auto st = labels::validateKey(k); !st.ok()) return cniError(Code::InvalidConfig, path + ": " + st.error().message);
        std::string value = v.get<std::string>();
        if (auto st = labels::validateValue(value); !st.ok())
          return cniError(Code::InvalidConfig, path + ": " + st.error().message);
        r.labels[k] = std::move(value);
      }
    }
    return r;
  });
}

Result<DelRequest> parseDelRequest(std::string_view body) {
  return decode<DelRequest>(body, "cni del request", [](const Json& j) -> Result<DelRequest> {
    DelRequest r;
    MB_ASSIGN(r.ref, parseRef(j, false));
    return r;
  });
}

Result<CheckRequest> parseCheckRequest(std::string_view body) {
  return decode<CheckRequest>(body, "cni check request", [](const Json& j) -> Result<CheckRequest> {
    CheckRequest r;
    MB_ASSIGN(r.ref, parseRef(j, true));
    MB_ASSIGN(const Json* expected, fields::optObject(j, "expected", ""));
    if (!expected) return invalid("expected", "required, missing");
    MB_ASSIGN(r.expected, parseResult(*expected, "expected"));
    return r;
  });
}

Result<GcRequest> parseGcRequest(std::string_view body) {
  return decode<GcRequest>(body, "cni gc request", [](const Json& j) -> Result<GcRequest> {
    GcRequest r;
    MB_ASSIGN(r.network, fields::reqString(j, "network", ""));
    if (auto p = networkNameProblem(r.network)) return invalid("network", *p);
    MB_ASSIGN(const Json* valid, fields::optArray(j, "valid", ""));
    if (!valid) return invalid("valid", "required, missing");
    std::string vpath = "valid";
    for (size_t i = 0; i < valid->size(); ++i) {
      std::string p = fields::indexPath(vpath, i);
      MB_TRY(fields::requireObject((*valid)[i], p));
      Attachment a;
      MB_ASSIGN(a.container_id, fields::reqString((*valid)[i], "container_id", p));
      MB_ASSIGN(a.ifname, fields::reqString((*valid)[i], "ifname", p));
      r.valid.push_back(std::move(a));
    }
    return r;
  });
}

Json toJson(const AddAnswer& a) {
  Json result = resultToJson(a.result, kV110);
  result.erase("cniVersion");
  return Json{{"endpoint_id", a.endpoint_id}, {"result", std::move(result)}};
}

Result<AddAnswer> parseAddAnswer(std::string_view body) {
  return decode<AddAnswer>(body, "membraned's ADD answer", [](const Json& j) -> Result<AddAnswer> {
    AddAnswer a;
    auto id = j.find("endpoint_id");
    if (id == j.end() || !id->is_number_unsigned())
      return cniError(Code::DecodeFailure, "endpoint_id: must be a non-negative integer");
    a.endpoint_id = id->get<uint64_t>();
    MB_ASSIGN(const Json* result, fields::optObject(j, "result", ""));
    if (!result) return invalid("result", "required, missing");
    MB_ASSIGN(a.result, parseResult(*result, "result"));
    return a;
  });
}

api::Response errorAnswer(int http_status, Code code, const std::string& message) {
  return api::Response::json(http_status,
                             Json{{"error", message}, {"code", http_status}, {"cni_code", static_cast<int>(code)}});
}

Error errorFromAnswer(const api::Response& r, std::string_view what) {
  Json j = Json::parse(r.body, nullptr, false);
  std::string message;
  if (j.is_object()) {
    auto e = j.find("error");
    if (e != j.end() && e->is_string()) message = e->get<std::string>();
    auto c = j.find("cni_code");
    if (c != j.end() && c->is_number_integer() && c->get<int64_t>() > 0 && c->get<int64_t>() < 1000)
      return Error(c->get<int>(), message.empty() ? fmt::format("{}: membraned answered {}", what, r.status) : message);
  }
  Code code = Code::AgentFailed;
  switch (r.status) {
    case 503: code = Code::TryAgainLater; break;
    case 400: code = Code::InvalidConfig; break;
    case 409: code = Code::AlreadyExists; break;
    default: break;
  }
  // Every answer of the CNI handlers carries cni_code: a bare 404 is the
  // router's, from an agent that predates the CNI API.
  if (r.status == 404 || r.status == 405)
    return cniError(Code::AgentFailed, fmt::format("{}: membraned answered {} ({}): this agent has no CNI API; "
                                                   "upgrade membraned to the version of membrane-cni",
                                                   what, r.status, message.empty() ? "no message" : message));
  if (message.empty()) message = fmt::format("{}: membraned answered {} {}", what, r.status, api::reasonPhrase(r.status));
  return cniError(code, message);
}

}  // namespace membrane::cni
