#include "src/daemon/policy_state.h"

#include "src/endpoint/state_json.h"

namespace membrane::daemon {

Result<PolicyState> parsePolicyState(std::string_view text) {
  namespace st = endpoint::state;
  using nlohmann::json;
  PolicyState out;
  MB_ASSIGN(const json j, st::parseObject(text));
  MB_ASSIGN(auto live, st::field<std::vector<std::string>>(j, "", "live", {}));
  out.live.insert(live.begin(), live.end());
  MB_ASSIGN(const json imports, st::field<json>(j, "", "imports", json::array()));
  if (!imports.is_array()) return st::typeError("imports", "a list", imports);
  for (size_t i = 0; i < imports.size(); ++i) {
    const std::string p = st::index("imports", i);
    MB_ASSIGN(auto source, st::field<std::string>(imports[i], p, "source", "policy"));
    MB_ASSIGN(auto content, st::field<std::string>(imports[i], p, "content"));
    MB_ASSIGN(auto keys, st::field<std::vector<std::string>>(imports[i], p, "keys"));
    out.imports.push_back({{"source", source}, {"content", content}, {"keys", keys}});
  }
  MB_ASSIGN(out.cookies, (st::field<std::map<std::string, uint32_t>>(j, "", "cookies", {})));
  return out;
}

}  // namespace membrane::daemon
