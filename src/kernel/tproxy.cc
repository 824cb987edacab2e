#include "src/kernel/tproxy.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string_view>

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

namespace {

// The chain's rules, in order, as iptables arguments after "-A <chain>".
std::vector<std::vector<std::string>> chainRules(const TproxyConfig& c) {
  std::vector<std::vector<std::string>> rules;
  for (uint16_t p : c.ports)
    rules.push_back({"-p", "tcp", "-m", "mark", "--mark", fmt::format("{:#x}", toProxyMark(p)), "-j", "TPROXY",
                     "--on-ip", "0.0.0.0", "--on-port", std::to_string(p), "--tproxy-mark",
                     fmt::format("{:#x}", MB_MARK_MAGIC_TO_PROXY)});
  // Replies to a transparent upstream connection from a peer outside the
  // pods (toCIDR/world: no datapath program on its way in to mark them) are
  // addressed to the client pod; without this they would be forwarded to the
  // pod instead of reaching the proxy's socket. Marked like the datapath's
  // TO_PROXY replies (0x200/0xf00) so the ip rule delivers them locally. After
  // the TPROXY rules (TPROXY is terminal); a wildcard listener never matches.
  rules.push_back({"-p", "tcp", "-m", "socket", "--transparent", "-j", "MARK", "--set-xmark", toProxyMarkMask()});
  return rules;
}

// Lines of `ip -4 rule show priority P` that are exactly our rule.
int countOurRules(const TproxyConfig& c) {
  auto r = runCommand({"ip", "-4", "rule", "show", "priority", std::to_string(c.rule_priority)});
  if (r.exit_code != 0) return -1;
  const std::string want = fmt::format("fwmark {} lookup {}", toProxyMarkMask(), c.table);
  int n = 0;
  size_t pos = 0;
  while (pos < r.output.size()) {
    size_t eol = r.output.find('\n', pos);
    if (eol == std::string::npos) eol = r.output.size();
    std::string_view line(r.output.data() + pos, eol - pos);
    // "9:\tfrom all fwmark 0x200/0xf00 lookup 2004 " (trailing space on some versions)
    while (!line.empty() && line.back() == ' ') line.remove_suffix(1);
    if (line.size() >= want.size() && line.substr(line.size() - want.size()) == want) ++n;
    pos = eol + 1;
  }
  return n;
}

bool chainExists(const TproxyConfig& c) { return runCommand(ipt({"-n", "-L", c.chain})).exit_code == 0; }

// True when the chain holds exactly `rules` (each present, nothing else).
bool chainMatches(const TproxyConfig& c, const std::vector<std::vector<std::string>>& rules) {
  auto listing = runCommand(ipt({"-S", c.chain}));
  if (listing.exit_code != 0) return false;
  size_t appended = 0;
  for (size_t pos = 0; (pos = listing.output.find("-A " + c.chain + " ", pos)) != std::string::npos; ++pos)
    ++appended;
  if (appended != rules.size()) return false;
  for (const auto& rule : rules) {
    std::vector<std::string> check{"-C", c.chain};
    check.insert(check.end(), rule.begin(), rule.end());
    auto argv = ipt({});
    argv.insert(argv.end(), check.begin(), check.end());
    if (runCommand(argv).exit_code != 0) return false;
  }
  return true;
}

// Replaces the chain's content in one iptables-restore transaction (nft
// backend: one batch): with --noflush, only the declared chain is flushed,
// and the flush and the new rules commit together, so a packet sees either
// the old rules or the new ones, never an empty chain.
Status replaceChain(const TproxyConfig& c, const std::vector<std::vector<std::string>>& rules) {
  std::string script = "*mangle\n:" + c.chain + " - [0:0]\n";
  for (const auto& rule : rules) script += "-A " + c.chain + " " + joined(rule) + "\n";
  script += "COMMIT\n";
  char path[] = "/tmp/membrane-tproxy-XXXXXX";
  int fd = ::mkstemp(path);
  if (fd < 0) return Error::fromErrno(errno, "create a temporary file for iptables-restore");
  bool written = ::write(fd, script.data(), script.size()) == static_cast<ssize_t>(script.size());
  ::close(fd);
  Status st = written ? must({"iptables-restore", "--noflush", path})
                      : Error(EIO, fmt::format("write {}: {}", path, membrane::errnoText(errno)));
  ::unlink(path);
  return st;
}

}  // namespace

Status installTproxy(const TproxyConfig& c, std::vector<std::string>* changes) {
  MB_TRY(validateTproxyConfig(c));
  // Check-then-add, never delete-then-add: an agent restarting under a
  // running proxy re-runs this while L7 flows are in flight, and a moment
  // without the rule or the chain's TPROXY rules would send their packets to
  // the pod instead of the proxy. Each object is only touched when it is
  // missing or differs; what this call creates is removed again on failure.
  std::vector<std::string> made;
  bool ok = false;
  bool added_route = false, created_chain = false, added_jump = false, added_rule = false;
  auto undo = [&] {
    if (ok) return;
    if (added_rule) (void)runCommand(ipRule(c, "del"));
    if (added_jump) (void)runCommand(ipt({"-D", "PREROUTING", "-j", c.chain}));
    if (created_chain) {
      (void)runCommand(ipt({"-F", c.chain}));
      (void)runCommand(ipt({"-X", c.chain}));
    }
    if (added_route)
      (void)runCommand({"ip", "-4", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", std::to_string(c.table)});
  };
  struct Guard {
    std::function<void()> fn;
    ~Guard() { fn(); }
  } guard{undo};

  // 1. The table's local default route (before the rule that points to it).
  const std::string table = std::to_string(c.table);
  auto routes = runCommand({"ip", "-4", "route", "show", "table", table});
  if (routes.exit_code != 0 || routes.output.find("local default dev lo") == std::string::npos) {
    MB_TRY_CTX(must({"ip", "-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", table}),
               "L7 proxy local route");
    added_route = routes.exit_code != 0 || routes.output.empty();
    made.push_back("route local 0.0.0.0/0 dev lo table " + table);
  }
  // 2. The chain with exactly our rules.
  const auto rules = chainRules(c);
  if (!chainExists(c)) {
    MB_TRY_CTX(must(ipt({"-N", c.chain})), "iptables chain");
    created_chain = true;
    made.push_back("iptables chain " + c.chain);
  }
  if (!chainMatches(c, rules)) {
    MB_TRY_CTX(replaceChain(c, rules),
               "TPROXY rules (need the xt_TPROXY and xt_socket kernel modules) in iptables chain " + c.chain);
    made.push_back(fmt::format("iptables chain {} rules ({})", c.chain, rules.size()));
  }
  // 3. One jump from PREROUTING.
  if (runCommand(ipt({"-C", "PREROUTING", "-j", c.chain})).exit_code != 0) {
    MB_TRY_CTX(must(ipt({"-I", "PREROUTING", "1", "-j", c.chain})), "iptables PREROUTING jump");
    added_jump = true;
    made.push_back("iptables PREROUTING jump to " + c.chain);
  }
  // 4. Exactly one copy of our ip rule (a previous run may have left two).
  int have = countOurRules(c);
  if (have < 0) return Error(EIO, "L7 proxy routing rule: `ip -4 rule show` failed");
  if (have == 0) {
    MB_TRY_CTX(must(ipRule(c, "add")), "L7 proxy routing rule");
    added_rule = true;
    made.push_back(fmt::format("ip rule priority {} fwmark {} lookup {}", c.rule_priority, toProxyMarkMask(), c.table));
  }
  for (int extra = have - 1; extra > 0; --extra) {
    MB_TRY_CTX(must(ipRule(c, "del")), "duplicate L7 proxy routing rule");
    made.push_back("removed a duplicate ip rule");
  }
  ok = true;
  if (changes) *changes = std::move(made);
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
