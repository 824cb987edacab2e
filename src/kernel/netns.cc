#include "src/kernel/netns.h"

#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <system_error>
#include <thread>

namespace membrane::kernel {
namespace {

constexpr const char* kNetnsDir = "/var/run/netns";

// Same dance as iproute2's netns_add(): make the directory a shared mount
// point so bind mounts made later propagate to other mount namespaces (e.g.
// one created by `ip netns exec`), and so a namespace unmounted here is gone
// everywhere. Without it a stray copy of the mount in another mount
// namespace would keep the network namespace alive after remove().
Status prepareNetnsDir() {
  // Serialised so that two first-time creators in this process do not both
  // bind-mount the directory onto itself (stacked mounts).
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (::mkdir(kNetnsDir, 0755) != 0 && errno != EEXIST)
    return Error::fromErrno(errno, std::string("mkdir ") + kNetnsDir);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (::mount("", kNetnsDir, "none", MS_SHARED | MS_REC, nullptr) == 0) return okStatus();
    // EINVAL: not a mount point yet. Bind it onto itself once, then retry.
    if (errno != EINVAL || attempt == 1)
      return Error::fromErrno(errno, std::string("make ") + kNetnsDir + " a shared mount");
    if (::mount(kNetnsDir, kNetnsDir, "none", MS_BIND | MS_REC, nullptr) != 0)
      return Error::fromErrno(errno, std::string("bind mount ") + kNetnsDir);
  }
  return okStatus();
}

// Runs body on a new thread and waits for it. Used for everything that must
// change the thread's namespaces, so the caller's thread never does.
// std::thread reports a failed clone() by throwing; turn that into a Status
// so no exception leaves the module.
Status onFreshThread(const std::function<void()>& body) {
  try {
    std::thread t(body);
    t.join();
  } catch (const std::system_error& e) {
    return Error(e.code().value() ? e.code().value() : EAGAIN, std::string("start thread: ") + e.what());
  }
  return okStatus();
}

}  // namespace

std::string Netns::pathOf(const std::string& name) { return std::string(kNetnsDir) + "/" + name; }

Status Netns::validateName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name == "." || name == "..")
    return Error::invalid("invalid netns name \"" + name + "\": must be 1..64 characters, not . or ..");
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.';
    if (!ok) return Error::invalid("invalid netns name \"" + name + "\": only [A-Za-z0-9_.-] allowed");
  }
  return okStatus();
}

bool Netns::exists(const std::string& name) {
  if (!validateName(name).ok()) return false;
  struct stat st {};
  return ::lstat(pathOf(name).c_str(), &st) == 0;
}

Result<Netns> Netns::create(const std::string& name) {
  const std::string ctx = "create netns " + name;
  MB_TRY_CTX(validateName(name), ctx);
  MB_TRY_CTX(prepareNetnsDir(), ctx);
  const std::string path = pathOf(name);

  // O_EXCL makes the name check and the reservation one atomic step: two
  // creators of the same name cannot both succeed.
  int raw = ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (raw < 0) {
    if (errno == EEXIST) return Error(EEXIST, ctx + ": " + path + " already exists: File exists");
    return Error::fromErrno(errno, ctx + ": create " + path);
  }
  ::close(raw);

  // unshare() moves the calling thread into the new namespace, so do it on
  // a throwaway thread; the bind mount keeps the namespace alive after the
  // thread exits.
  int thread_err = 0;
  const char* step = "";
  Status started = onFreshThread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      thread_err = errno;
      step = "unshare(CLONE_NEWNET)";
      return;
    }
    if (::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      thread_err = errno;
      step = "bind mount the namespace";
    }
  });
  if (!started.ok()) {
    ::unlink(path.c_str());
    return started.error().wrap(ctx);
  }
  if (thread_err != 0) {
    ::unlink(path.c_str());
    return Error::fromErrno(thread_err, ctx + ": " + step);
  }

  auto opened = open(name);
  if (!opened.ok()) {
    (void)remove(name);
    return opened.error().wrap(ctx);
  }
  return std::move(opened).value();
}

Result<Netns> Netns::open(const std::string& name) {
  const std::string ctx = "open netns " + name;
  MB_TRY_CTX(validateName(name), ctx);
  return openFile(pathOf(name), name, ctx);
}

Result<Netns> Netns::openPath(const std::string& path) {
  const std::string ctx = "open netns " + path;
  if (path.empty() || path[0] != '/') return Error(EINVAL, ctx + ": not an absolute path");
  return openFile(path, path, ctx);
}

Result<Netns> Netns::openFile(const std::string& path, const std::string& name, const std::string& ctx) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return Error(ENOENT, ctx + ": " + path + " does not exist");
    return Error::fromErrno(errno, ctx + ": open " + path);
  }
  // A leftover plain file (mount lost, e.g. after a reboot without tmpfs)
  // must not be mistaken for a namespace: setns() on it would fail later,
  // far from the cause.
  int type = ::ioctl(fd.get(), NS_GET_NSTYPE);
  if (type != CLONE_NEWNET)
    return Error(EINVAL, ctx + ": " + path + " is not a network namespace (stale file? remove it)");
  return Netns(std::move(fd), name, path);
}

Status Netns::remove(const std::string& name) {
  const std::string ctx = "remove netns " + name;
  MB_TRY_CTX(validateName(name), ctx);
  const std::string path = pathOf(name);
  // MNT_DETACH: succeed even while a process still has the namespace file
  // open (e.g. a running `ip netns exec`); the namespace lives on until
  // that reference goes. EINVAL = not a mount point (half-created or stale).
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    return Error::fromErrno(errno, ctx + ": umount " + path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Error::fromErrno(errno, ctx + ": unlink " + path);
  return okStatus();
}

Status Netns::runOnThread(const std::function<void()>& body) const {
  int err = 0;
  Status started = onFreshThread([&] {
    if (::setns(fd_.get(), CLONE_NEWNET) != 0) {
      err = errno;
      return;
    }
    body();
  });
  if (!started.ok()) return started.error().wrap("enter netns " + name_);
  if (err != 0) return Error::fromErrno(err, "enter netns " + name_);
  return okStatus();
}

Status enterNetnsForExec(const std::string& netns_path) {
  UniqueFd fd(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::fromErrno(errno, "enter netns " + netns_path + ": open");
  if (::setns(fd.get(), CLONE_NEWNET) != 0) return Error::fromErrno(errno, "enter netns " + netns_path + ": setns");
  return okStatus();
}

}  // namespace membrane::kernel
