// Privileged: creates real named network namespaces (names contain the pid).
#include "src/kernel/netns.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "src/kernel/netlink_test_util.h"

namespace membrane::kernel {
namespace {

using testing::Cleanup;
using testing::sh;

std::string uniqueName(const std::string& tag) { return "mbt-ns-" + std::to_string(::getpid()) + "-" + tag; }

ino_t netnsInode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

TEST(Netns, CreateOpenRunRemove) {
  const std::string name = uniqueName("a");
  Cleanup guard([&] { (void)Netns::remove(name); });

  auto ns = Netns::create(name);
  ASSERT_TRUE(ns.ok()) << ns.error().message;
  EXPECT_TRUE(Netns::exists(name));
  EXPECT_EQ(ns->name(), name);
  EXPECT_EQ(ns->path(), "/var/run/netns/" + name);
  // `ip netns` sees it.
  auto list = sh("ip netns list");
  EXPECT_NE(list.output.find(name), std::string::npos) << list.output;

  // run() executes in the namespace: its inode is the bind-mounted one; the
  // caller's thread stays where it was.
  const ino_t host_ino = netnsInode("/proc/thread-self/ns/net");
  auto inside = ns->run([]() -> Result<ino_t> { return netnsInode("/proc/thread-self/ns/net"); });
  ASSERT_TRUE(inside.ok()) << inside.error().message;
  EXPECT_EQ(*inside, netnsInode(Netns::pathOf(name)));
  EXPECT_NE(*inside, host_ino);
  EXPECT_EQ(netnsInode("/proc/thread-self/ns/net"), host_ino);

  // Errors from fn come back unchanged.
  Status failed = ns->run([]() -> Status { return Error(EBUSY, "boom"); });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, EBUSY);
  EXPECT_EQ(failed.error().message, "boom");

  auto reopened = Netns::open(name);
  ASSERT_TRUE(reopened.ok()) << reopened.error().message;
  EXPECT_EQ(netnsInode("/proc/self/fd/" + std::to_string(reopened->fd())), *inside);

  ASSERT_TRUE(Netns::remove(name).ok());
  EXPECT_FALSE(Netns::exists(name));
  EXPECT_EQ(sh("ip netns list").output.find(name), std::string::npos);
  // Idempotent.
  EXPECT_TRUE(Netns::remove(name).ok());
}

TEST(Netns, CreateExistingFailsWithNameAndKeepsTheOriginal) {
  const std::string name = uniqueName("dup");
  Cleanup guard([&] { (void)Netns::remove(name); });
  auto first = Netns::create(name);
  ASSERT_TRUE(first.ok()) << first.error().message;
  const ino_t ino = netnsInode(Netns::pathOf(name));

  auto second = Netns::create(name);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, EEXIST);
  EXPECT_NE(second.error().message.find(name), std::string::npos) << second.error().message;
  EXPECT_NE(second.error().message.find("File exists"), std::string::npos) << second.error().message;
  // The existing namespace is untouched.
  EXPECT_EQ(netnsInode(Netns::pathOf(name)), ino);
  EXPECT_TRUE(Netns::open(name).ok());
}

TEST(Netns, OpenMissingAndStale) {
  const std::string name = uniqueName("missing");
  auto missing = Netns::open(name);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_FALSE(Netns::exists(name));

  // A plain file where a namespace mount should be (lost mount).
  const std::string stale = uniqueName("stale");
  Cleanup guard([&] { (void)Netns::remove(stale); });
  ASSERT_EQ(sh("mkdir -p /var/run/netns && touch " + Netns::pathOf(stale)).exit_code, 0);
  auto opened = Netns::open(stale);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code, EINVAL);
  EXPECT_NE(opened.error().message.find("not a network namespace"), std::string::npos);
  ASSERT_TRUE(Netns::remove(stale).ok());
  EXPECT_FALSE(Netns::exists(stale));
}

// A namespace by path, as a container runtime passes it (CNI_NETNS): any
// nsfs file, named or not; the path is its name.
TEST(Netns, OpenByPath) {
  auto self = Netns::openPath("/proc/self/ns/net");
  ASSERT_TRUE(self.ok()) << self.error().message;
  EXPECT_EQ(self->path(), "/proc/self/ns/net");
  EXPECT_EQ(self->name(), "/proc/self/ns/net");
  auto ran = self->run([]() -> Status { return okStatus(); });
  EXPECT_TRUE(ran.ok()) << ran.error().message;

  auto relative = Netns::openPath("run/netns/x");
  ASSERT_FALSE(relative.ok());
  EXPECT_EQ(relative.error().code, EINVAL);
  EXPECT_EQ(relative.error().message, "open netns run/netns/x: not an absolute path");
  const std::string gone = Netns::pathOf(uniqueName("gone"));
  auto missing = Netns::openPath(gone);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_EQ(missing.error().message, "open netns " + gone + ": " + gone + " does not exist");
  auto not_netns = Netns::openPath("/proc/self/ns/uts");
  ASSERT_FALSE(not_netns.ok());
  EXPECT_EQ(not_netns.error().code, EINVAL);
}

// The `membrane exec` path: a forked, single-threaded child enters the
// namespace and execs; the parent never switches.
TEST(Netns, EnterForExecSwitchesTheExecedProcess) {
  const std::string name = uniqueName("exec");
  Cleanup guard([&] { (void)Netns::remove(name); });
  auto ns = Netns::create(name);
  ASSERT_TRUE(ns.ok()) << ns.error().message;
  const std::string path = Netns::pathOf(name);

  auto bad = enterNetnsForExec(Netns::pathOf(uniqueName("nope")));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ENOENT);

  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::dup2(pipefd[1], STDOUT_FILENO);
    if (!enterNetnsForExec(path).ok()) ::_exit(3);
    ::execlp("stat", "stat", "-L", "-c", "%i", "/proc/self/ns/net", static_cast<char*>(nullptr));
    ::_exit(4);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[64];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(out, std::to_string(netnsInode(path)) + "\n");
  EXPECT_NE(netnsInode("/proc/self/ns/net"), netnsInode(path));
}

TEST(Netns, InvalidNameRejectedBeforeTouchingTheFilesystem) {
  auto r = Netns::create("../etc");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
}

}  // namespace
}  // namespace membrane::kernel
