// libFuzzer target for everything membrane-cni and the agent's CNI API parse
// (issue 14): the first input byte picks the parser, the rest is its input —
// the stdin network configuration (with prevResult, dns, membrane, GC
// attachments), CNI_ARGS, MEMBRANE_LABELS, CNI_CONTAINERID/IFNAME/NETNS via
// parseEnv, the agent's request bodies (add, del, check, gc) and its ADD
// answer. Whatever parses is also written back as a result in every version
// and parsed again: it must still parse and be equal (the round trip the
// plugin relies on when it hands prevResult on). Any crash, sanitizer report,
// escaping exception or failed round trip is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "src/cni/agent_api.h"
#include "src/cni/config.h"
#include "src/cni/spec.h"

namespace {

using namespace membrane::cni;

// As the plugin prints: invalid UTF-8 replaced, never thrown.
std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

bool validUtf8(const Json& j) {
  try {
    (void)j.dump();
    return true;
  } catch (const Json::type_error&) {
    return false;
  }
}

void roundTrip(const CniResult& r) {
  for (const auto& s : supportedVersions()) {
    auto v = parseVersion(s);
    if (!v.ok()) std::abort();
    Json j = resultToJson(r, *v);
    auto back = parseResult(Json::parse(dump(j)), "rt");
    if (!back.ok()) std::abort();
    // 1.1.0 carries every field; older versions drop the 1.1.0-only ones.
    if (*v == kV110 && validUtf8(j) && !(*back == r)) std::abort();
  }
  (void)errorToJson(membrane::Error(1, "x"), "1.0.0");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 8) {
    case 0: {
      auto c = parseNetConf(in);
      (void)sniffVersion(in);
      if (c.ok() && c->prev_result) roundTrip(*c->prev_result);
      break;
    }
    case 1: (void)parseCniArgs(in); break;
    case 2: (void)parseMembraneLabels(in); break;
    case 3: {
      // The environment: four variables separated by '\n'.
      std::map<std::string, std::string> vars;
      const char* names[] = {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS"};
      size_t i = 0;
      while (i < 4) {
        auto nl = in.find('\n');
        vars[names[i++]] = std::string(in.substr(0, nl));
        if (nl == std::string_view::npos) break;
        in.remove_prefix(nl + 1);
      }
      vars["CNI_PATH"] = "/usr/lib/cni";
      for (Command cmd : {Command::Add, Command::Del, Command::Check, Command::Gc}) (void)parseEnv(cmd, vars);
      break;
    }
    case 4: {
      auto r = parseAddRequest(in);
      if (r.ok() && !parseAddRequest(dump(toJson(*r))).ok()) std::abort();
      break;
    }
    case 5: (void)parseDelRequest(in); (void)parseGcRequest(in); break;
    case 6: {
      auto r = parseCheckRequest(in);
      if (r.ok()) roundTrip(r->expected);
      break;
    }
    case 7: {
      auto a = parseAddAnswer(in);
      if (a.ok()) roundTrip(a->result);
      break;
    }
  }
  return 0;
}
