#include <gtest/gtest.h>

#include "src/kernel/netlink.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "membrane/ipv4.h"
#include "src/kernel/netlink_test_util.h"
#include "src/kernel/netns.h"
#include "src/kernel/process_runner.h"

namespace membrane::kernel {
namespace {

using testing::ipv4;

TEST(HostIfname, StableFormatAndFitsIfnamsiz) {
  std::string a = hostIfnameFor("default", "xwing", "");
  EXPECT_EQ(a.size(), 14u);
  EXPECT_EQ(a.rfind("lxc", 0), 0u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef", 3), std::string::npos);
  EXPECT_EQ(a, hostIfnameFor("default", "xwing", ""));
  // Pinned value: the name must not change between builds or releases,
  // otherwise a restarted agent would not find its pods' devices.
  EXPECT_EQ(a, "lxc7fc0c10f294");
  EXPECT_NE(a, hostIfnameFor("default", "xwing", "1"));
  EXPECT_NE(hostIfnameFor("ab", "c", ""), hostIfnameFor("a", "bc", ""));
}

TEST(NetnsName, Validation) {
  EXPECT_TRUE(Netns::validateName("membrane_default_xwing-1.2").ok());
  EXPECT_FALSE(Netns::validateName("").ok());
  EXPECT_FALSE(Netns::validateName("..").ok());
  EXPECT_FALSE(Netns::validateName("a/b").ok());
  EXPECT_FALSE(Netns::validateName(std::string(65, 'a')).ok());
  EXPECT_EQ(Netns::pathOf("x"), "/var/run/netns/x");
}

TEST(PodNetworkSpec, Validation) {
  PodNetworkSpec s{.netns_name = "ns", .host_ifname = "lxc0123456789a", .pod_ifname = "eth0",
                   .ipv4_be = ipv4("10.200.0.5"), .gateway_be = ipv4("10.200.0.1")};
  EXPECT_TRUE(validatePodNetworkSpec(s).ok());

  auto bad = s;
  bad.host_ifname = "lxc0123456789a";  // 15 chars: the most IFNAMSIZ (16) allows
  EXPECT_TRUE(validatePodNetworkSpec(bad).ok());
  bad.host_ifname = "lxc0123456789abc";  // 16: one too many
  auto st = validatePodNetworkSpec(bad);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EINVAL);
  EXPECT_NE(st.error().message.find("lxc0123456789abc"), std::string::npos);

  bad = s;
  bad.ipv4_be = bad.gateway_be;
  EXPECT_FALSE(validatePodNetworkSpec(bad).ok());
  bad = s;
  bad.ipv4_be = 0;
  EXPECT_FALSE(validatePodNetworkSpec(bad).ok());
  bad = s;
  bad.mtu = 10;
  EXPECT_FALSE(validatePodNetworkSpec(bad).ok());
  bad = s;
  bad.pod_ifname = "eth 0";
  EXPECT_FALSE(validatePodNetworkSpec(bad).ok());
}

TEST(HostDevice, PeerName) {
  EXPECT_EQ(hostDevicePeerName("cilium_host"), "cilium_net");
  EXPECT_EQ(hostDevicePeerName("membrane_host"), "membrane_net");
  EXPECT_EQ(hostDevicePeerName("mbgw1234"), "mbgw1234_net");
  EXPECT_EQ(hostDevicePeerName("abcdefghijklmno"), "abcdefghijk_net");  // 15 chars max
}

TEST(Ipv4, ToString) { EXPECT_EQ(ipv4HostOrderToString(ntohl(ipv4("10.233.7.42"))), "10.233.7.42"); }

// The pod process seam's exit fd (a pidfd): readable exactly when the
// process has exited, before it is reaped; ESRCH for no process.
TEST(LinuxProcessRunner, ExitFdBecomesReadableWhenTheProcessExits) {
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // waits for the parent to close its end, then exits 7
    ::close(pipefd[1]);
    char c;
    while (::read(pipefd[0], &c, 1) > 0) {
    }
    ::_exit(7);
  }
  ::close(pipefd[0]);
  auto fd = linuxProcessRunner().exitFd(child);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  pollfd pfd{fd->get(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0) << "readable while the child runs";
  ::close(pipefd[1]);
  EXPECT_EQ(::poll(&pfd, 1, 10000), 1) << "not readable within 10 s of the exit";
  auto r = linuxProcessRunner().reap(child, true);
  EXPECT_EQ(r.state, ReapResult::State::Exited);
  EXPECT_EQ(r.exit_code, 7);

  auto gone = linuxProcessRunner().exitFd(child);  // reaped: no such process
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ESRCH);
  EXPECT_EQ(openPidfd(0, "pod process").error().code, ESRCH);
}

}  // namespace
}  // namespace membrane::kernel
