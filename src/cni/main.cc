// membrane-cni: the CNI plugin of membrane. Wiring only: environment and
// stdin -> runPlugin (src/cni/plugin.h) -> stdout and exit code. Run by a
// container runtime with CNI_COMMAND set; run by a person (no CNI_COMMAND) it
// answers --help and --version.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <string>

#include "src/cni/config.h"
#include "src/cni/plugin.h"
#include "src/cni/spec.h"

#ifndef MEMBRANE_VERSION_STRING
#define MEMBRANE_VERSION_STRING "0.1.0"
#endif

namespace {

std::string versionText() {
  return std::string("membrane-cni ") + MEMBRANE_VERSION_STRING + "\nCNI protocol versions supported: " +
         membrane::cni::supportedVersionsText() + "\n";
}

std::string helpText() {
  return "membrane-cni — the CNI plugin of membrane: containers started by a runtime (podman, containerd,\n"
         "kubelet) become membrane endpoints, with an address from membraned's pod CIDR, an identity from\n"
         "their labels, and membrane's eBPF policy.\n"
         "\n"
         "It is run by the container runtime, not by hand: the runtime sets CNI_COMMAND (ADD, DEL, CHECK,\n"
         "VERSION, GC, STATUS), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH, and passes\n"
         "the network configuration on standard input; the result or error (CNI JSON) goes to standard output.\n"
         "membrane-cni asks the agent, membraned, over its API socket to do the work, so membraned must run.\n"
         "\n"
         "Usage: membrane-cni --help | --version\n"
         "\n"
         "Network configuration (/etc/cni/net.d/10-membrane.conflist, installed by `make install`):\n"
         "  {\"cniVersion\": \"1.0.0\", \"name\": \"membrane\", \"plugins\": [\n"
         "    {\"type\": \"membrane-cni\", \"membrane\": {\"socket\": \"/var/run/membrane/membrane.sock\", "
         "\"timeoutSeconds\": 30}},\n"
         "    {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]}\n"
         "  (\"membrane\" is optional; the values shown are the defaults.)\n"
         "\n"
         "CNI_ARGS read by membrane-cni (K=V pairs separated by ';'):\n"
         "  K8S_POD_NAMESPACE, K8S_POD_NAME  the endpoint's namespace (default: default) and name\n"
         "                                   (default: derived from the container ID)\n"
         "  MEMBRANE_LABELS=key:value,key:value  the endpoint's labels (they form its identity and\n"
         "                                   select policies); a value cannot contain '=' or ';'\n"
         "  IgnoreUnknown=1                  ignore keys meant for other plugins\n"
         "\n"
         "Example (podman, with network_backend = \"cni\" in containers.conf):\n"
         "  CNI_ARGS='MEMBRANE_LABELS=app:web,tier:front' podman run --network membrane ...\n"
         "\n"
         "CNI protocol versions supported: " +
         membrane::cni::supportedVersionsText() +
         "\n"
         "Documentation: docs/cni.md\n";
}

}  // namespace

int main(int argc, char** argv) {
  const char* command = std::getenv("CNI_COMMAND");
  if (!command) {
    // A person, not a runtime.
    std::string arg = argc > 1 ? argv[1] : "--help";
    if (arg == "--version" || arg == "-v") {
      std::cout << versionText();
      return 0;
    }
    if (arg == "--help" || arg == "-h") {
      std::cout << helpText();
      return 0;
    }
    std::cerr << "membrane-cni: unknown argument '" << arg << "'\n\n" << helpText();
    return 2;
  }

  membrane::cni::Invocation inv;
  for (const char* name : membrane::cni::kEnvNames)
    if (const char* v = std::getenv(name)) inv.env[name] = v;
  inv.stdin_text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  if (std::cin.bad()) {
    auto e = membrane::cni::cniError(membrane::cni::Code::IoFailure,
                                     std::string("reading the network configuration from stdin: ") +
                                         membrane::errnoText(errno));
    std::cout << membrane::cni::errorToJson(e, "").dump(2) << "\n";
    return 1;
  }
  auto out = membrane::cni::runPlugin(inv);
  std::fwrite(out.stdout_text.data(), 1, out.stdout_text.size(), stdout);
  if (std::fflush(stdout) != 0) return 1;
  return out.exit_code;
}
