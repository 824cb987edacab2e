// decideRequest() (proxy.h): the policy decision for one request, a pure
// function of the config and the request (the proxy's loop and the fuzz
// driver both call it).
#include <arpa/inet.h>

#include <utility>

#include "src/proxy/proxy.h"

namespace membrane::proxy {

RequestDecision decideRequest(const ProxyConfig& cfg, Direction dir, const sockaddr_in& client,
                              const sockaddr_in& odst, const RequestView& view) {
  RequestDecision d;
  d.src_id = cfg.identityOf(client.sin_addr.s_addr);
  d.dst_id = cfg.identityOf(odst.sin_addr.s_addr);
  const bool ingress = dir == Direction::Ingress;
  const in_addr_t pod = ingress ? odst.sin_addr.s_addr : client.sin_addr.s_addr;
  const PortPolicy* pp = cfg.find(pod, dir, ntohs(odst.sin_port));
  Verdict& v = d.verdict;
  v = ProxyConfig::evaluate(pp, ingress ? d.src_id : d.dst_id, view);
  // Egress L7 towards a destination that has ingress L7 rules on this port
  // (a local pod): this proxy applies those too, and marks its upstream
  // PROXY_INGRESS so the datapath does not send it to a second proxy (a
  // hairpin from the destination's veth cannot reach the stack). Both must allow.
  if (!ingress) {
    const PortPolicy* in = cfg.find(odst.sin_addr.s_addr, Direction::Ingress, ntohs(odst.sin_port));
    if (in) {
      d.ingress_checked = true;
      if (v.allowed) {
        Verdict vi = ProxyConfig::evaluate(in, d.src_id, view);
        if (!vi.allowed) {
          v = std::move(vi);
        } else {
          // Both sets of edits apply, egress first. The ingress rules decide on
          // the request as the client sent it (in Cilium the destination's
          // proxy would see the egress edits; here an ingress rule that needs
          // an egress edit denies: fail closed).
          v.header_mismatch_logged = v.header_mismatch_logged || vi.header_mismatch_logged;
          v.edits.insert(v.edits.end(), vi.edits.begin(), vi.edits.end());
        }
      }
    }
  }
  return d;
}

}  // namespace membrane::proxy
