#include "src/kernel/tproxy.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

extern char** environ;

namespace membrane::kernel {

std::string toProxyMarkMask() { return fmt::format("{:#x}/{:#x}", MB_MARK_MAGIC_TO_PROXY, MB_MARK_MAGIC_MASK); }

namespace {

std::string joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

Status must(const std::vector<std::string>& argv) {
  auto r = runCommand(argv);
  if (r.exit_code == 0) return okStatus();
  std::string out = r.output;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return Error(r.exit_code < 0 ? ENOENT : EIO,
               fmt::format("`{}` failed (exit {}): {}", joined(argv), r.exit_code, out));
}

std::vector<std::string> ipRule(const TproxyConfig& c, const char* verb) {
  return {"ip", "-4", "rule", verb, "priority", std::to_string(c.rule_priority), "fwmark", toProxyMarkMask(),
          "lookup", std::to_string(c.table)};
}

std::vector<std::string> ipt(std::initializer_list<std::string> args) {
  std::vector<std::string> v{"iptables", "-w", "5", "-t", "mangle"};
  v.insert(v.end(), args.begin(), args.end());
  return v;
}

}  // namespace

CommandResult runCommand(const std::vector<std::string>& argv) {
  CommandResult res;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return res;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The agent blocks its stop signals; the tool must not inherit that.
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, cargv[0], &fa, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    res.output = fmt::format("cannot run {}: {}", argv[0], membrane::errnoText(rc));
    return res;
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n > 0) {
      if (res.output.size() < 65536) res.output.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(pipefd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  res.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return res;
}

Status validateTproxyConfig(const TproxyConfig& c) {
  if (c.table == 0 || c.table == 253 || c.table == 254 || c.table == 255)
    return Error::invalid(fmt::format("--proxy-route-table {}: 0, 253 (default), 254 (main) and 255 (local) are the "
                                      "kernel's tables; pick another number (Cilium uses 2004)",
                                      c.table));
  if (c.rule_priority == 0 || c.rule_priority >= 32766)
    return Error::invalid(fmt::format("--proxy-rule-priority {}: must be in 1..32765 (before the main table's rule)",
                                      c.rule_priority));
  if (c.chain.empty() || c.chain.size() > 28 || c.chain.find_first_of(" \t\n!") != std::string::npos)
    return Error::invalid(fmt::format("--proxy-iptables-chain '{}': 1 to 28 characters, no spaces", c.chain));
  for (uint16_t p : c.ports)
    if (p == 0) return Error::invalid("proxy port 0: ports must be 1..65535");
  return okStatus();
}

Status installTproxy(const TproxyConfig& c) {
  MB_TRY(validateTproxyConfig(c));
  bool ok = false;
  struct Undo {
    const TproxyConfig& c;
    bool& ok;
    ~Undo() {
      if (!ok) (void)removeTproxy(c);
    }
  } undo{c, ok};
  // Exactly one copy of our rule (a previous run may have left it).
  for (int i = 0; i < 16 && runCommand(ipRule(c, "del")).exit_code == 0; ++i) {
  }
  MB_TRY_CTX(must(ipRule(c, "add")), "L7 proxy routing rule");
  MB_TRY_CTX(must({"ip", "-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", std::to_string(c.table)}),
             "L7 proxy local route");
  // Our chain, flushed and refilled; one jump from PREROUTING.
  if (runCommand(ipt({"-n", "-L", c.chain})).exit_code != 0) MB_TRY_CTX(must(ipt({"-N", c.chain})), "iptables chain");
  MB_TRY_CTX(must(ipt({"-F", c.chain})), "iptables chain");
  for (uint16_t p : c.ports)
    MB_TRY_CTX(must(ipt({"-A", c.chain, "-p", "tcp", "-m", "mark", "--mark", fmt::format("{:#x}", toProxyMark(p)), "-j",
                         "TPROXY", "--on-ip", "0.0.0.0", "--on-port", std::to_string(p), "--tproxy-mark", fmt::format("{:#x}", MB_MARK_MAGIC_TO_PROXY)})),
               fmt::format("TPROXY rule for proxy port {} (needs the xt_TPROXY kernel module)", p));
  // Replies to a transparent upstream connection from a peer outside the
  // pods (toCIDR/world: no datapath program on its way in to mark them) are
  // addressed to the client pod; without this they would be forwarded to the
  // pod instead of reaching the proxy's socket. Marked like the datapath's
  // TO_PROXY replies (0x200/0xf00) so the ip rule delivers them locally. After
  // the TPROXY rules (TPROXY is terminal); a wildcard listener never matches.
  MB_TRY_CTX(must(ipt({"-A", c.chain, "-p", "tcp", "-m", "socket", "--transparent", "-j", "MARK", "--set-xmark",
                       toProxyMarkMask()})),
             "transparent-socket rule for L7 replies (needs the xt_socket kernel module)");
  if (runCommand(ipt({"-C", "PREROUTING", "-j", c.chain})).exit_code != 0)
    MB_TRY_CTX(must(ipt({"-I", "PREROUTING", "1", "-j", c.chain})), "iptables PREROUTING jump");
  ok = true;
  return okStatus();
}

Status removeTproxy(const TproxyConfig& c) {
  MB_TRY(validateTproxyConfig(c));
  Status first = okStatus();
  auto note = [&](Status s) {
    if (!s.ok() && first.ok()) first = s;
  };
  for (int i = 0; i < 16 && runCommand(ipt({"-D", "PREROUTING", "-j", c.chain})).exit_code == 0; ++i) {
  }
  if (runCommand(ipt({"-n", "-L", c.chain})).exit_code == 0) {
    note(must(ipt({"-F", c.chain})));
    note(must(ipt({"-X", c.chain})));
  }
  for (int i = 0; i < 16 && runCommand(ipRule(c, "del")).exit_code == 0; ++i) {
  }
  // Only our table's local default route; the table is ours alone.
  auto r = runCommand({"ip", "-4", "route", "show", "table", std::to_string(c.table)});
  if (r.exit_code == 0 && !r.output.empty())
    note(must({"ip", "-4", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", std::to_string(c.table)}));
  return first;
}

}  // namespace membrane::kernel
