// Helpers shared by the privileged netns/netlink tests: run a shell command
// to OBSERVE the kernel's state (never to change production state), and a
// scope guard for cleanup that runs on test failure too.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

// ASSERT/EXPECT that a Result is ok, printing its error message if not.
#define MB_ASSERT_OK(expr)                                                       \
  do {                                                                           \
    auto mb_r_ = (expr);                                                         \
    ASSERT_TRUE(mb_r_.ok()) << #expr << ": " << mb_r_.error().message;           \
  } while (0)
#define MB_EXPECT_OK(expr)                                                       \
  do {                                                                           \
    auto mb_r_ = (expr);                                                         \
    EXPECT_TRUE(mb_r_.ok()) << #expr << ": " << mb_r_.error().message;           \
  } while (0)

namespace membrane::kernel::testing {

struct CmdResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

inline CmdResult sh(const std::string& cmd) {
  CmdResult r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline uint32_t ipv4(const std::string& dotted) {
  uint32_t a = 0;
  ::inet_pton(AF_INET, dotted.c_str(), &a);
  return a;
}

inline uint16_t icmpChecksum(const void* data, size_t len) {
  uint32_t sum = 0;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// One ICMP echo to dst_be from the calling thread's network namespace (so
// call it inside Netns::run to ping from a pod). Returns true iff the
// matching echo reply from dst arrives before the deadline. ping(8) is not
// installed everywhere, a raw socket is (we are root).
inline bool pingOnce(uint32_t dst_be, int timeout_ms = 1000) {
  int fd = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
  if (fd < 0) return false;
  static uint16_t seq = 0;
  const uint16_t id = static_cast<uint16_t>(::getpid());
  const uint16_t my_seq = ++seq;
  struct {
    icmphdr h;
    char payload[16] = "membrane-test";
  } req{};
  req.h.type = ICMP_ECHO;
  req.h.un.echo.id = htons(id);
  req.h.un.echo.sequence = htons(my_seq);
  req.h.checksum = icmpChecksum(&req, sizeof(req));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = dst_be;
  bool ok = false;
  if (::sendto(fd, &req, sizeof(req), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) ==
      static_cast<ssize_t>(sizeof(req))) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!ok) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
      uint8_t buf[1500];
      sockaddr_in from{};
      socklen_t fl = sizeof(from);
      ssize_t n = ::recvfrom(fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &fl);
      if (n < static_cast<ssize_t>(sizeof(iphdr))) continue;
      size_t ihl = static_cast<size_t>(buf[0] & 0x0f) * 4;
      if (static_cast<size_t>(n) < ihl + sizeof(icmphdr)) continue;
      icmphdr rep;
      std::memcpy(&rep, buf + ihl, sizeof(rep));
      ok = from.sin_addr.s_addr == dst_be && rep.type == ICMP_ECHOREPLY && ntohs(rep.un.echo.id) == id &&
           ntohs(rep.un.echo.sequence) == my_seq;
    }
  }
  ::close(fd);
  return ok;
}

// Runs fn when the scope ends (including when an ASSERT returns early).
class Cleanup {
 public:
  explicit Cleanup(std::function<void()> fn) : fn_(std::move(fn)) {}
  ~Cleanup() {
    if (fn_) fn_();
  }
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;

 private:
  std::function<void()> fn_;
};

}  // namespace membrane::kernel::testing
