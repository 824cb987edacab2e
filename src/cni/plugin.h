// membrane-cni's behaviour: one CNI invocation (environment + stdin) in, the
// spec's stdout text and exit code out. A thin client of membraned's API
// (src/cni/agent_api.h), reached with src/api's HttpClient on the socket the
// config names ("membrane": {"socket"}, default /var/run/membrane/membrane.sock)
// with the config's timeout (default 30 s) bounding every request.
//
// Per command:
//  VERSION  {"cniVersion": <the request's, when supported, else 1.1.0>,
//            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
//  ADD      PUT /v1/cni/add; prints the result in the config's cniVersion:
//           the prevResult's interfaces/ips/routes (if chained after another
//           plugin) followed by membrane's (host veth without sandbox, the
//           container interface with sandbox = CNI_NETNS and its mac, the IP
//           with the index of that interface, routes), dns = the config's
//           "dns" (else the prevResult's).
//  DEL      PUT /v1/cni/del; prints nothing. Idempotent on the agent side.
//  CHECK    (cniVersion >= 0.4.0) needs prevResult holding CNI_IFNAME in
//           CNI_NETNS; PUT /v1/cni/check; prints nothing.
//  GC       (cniVersion >= 1.1.0) needs cni.dev/valid-attachments; PUT /v1/cni/gc.
//  STATUS   (cniVersion >= 1.1.0) GET /v1/healthz: success when the agent
//           answers and its datapath is ok, else code 50.
// Errors: the spec's error object on stdout, exit 1; the code as documented
// in spec.h/config.h/agent_api.h. An unreachable or silent agent is code 11
// ("try again later"), never a hang: connect failures return at once and
// every request is bounded by the timeout.
//
// Thread-safety: none needed (one invocation per process).
#pragma once

#include <map>
#include <string>

namespace membrane::cni {

struct Invocation {
  std::map<std::string, std::string> env;  // the CNI_* variables that are set
  std::string stdin_text;
};

struct Outcome {
  int exit_code = 0;
  std::string stdout_text;  // with a trailing newline when not empty
};

Outcome runPlugin(const Invocation& inv);

// The names of the variables runPlugin reads (main copies these from environ).
inline constexpr const char* kEnvNames[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",
                                            "CNI_IFNAME",  "CNI_ARGS",        "CNI_PATH"};

}  // namespace membrane::cni
