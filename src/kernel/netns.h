// Named network namespaces, compatible with `ip netns`: a namespace is kept
// alive by a bind mount of its nsfs inode at /var/run/netns/<name>, so
// `ip netns list/exec` see membrane's namespaces and vice versa.
//
// Contract
// - Network namespaces are per THREAD. Nothing here switches the caller's
//   thread: Netns::run() executes work on a fresh dedicated thread that has
//   entered the namespace and exits afterwards, so a switch can never leak
//   into a thread pool or the caller. The only exception is
//   enterNetnsForExec(), which exists for the single-threaded CLI right
//   before execvp().
// - A Netns object owns an fd on the namespace; the namespace stays usable
//   through it even if the name is removed meanwhile.
// - Errors carry the name: "create netns membrane_default_xwing: ... File exists".
// - Thread safety: a Netns may be used from several threads at once (run()
//   only reads the fd). create/remove of the SAME name must not race.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "membrane/result.h"
#include "membrane/unique_fd.h"

namespace membrane::kernel {

class Netns {
 public:
  // Creates a new, empty network namespace named `name` (only lo, down).
  // Fails with EEXIST if /var/run/netns/<name> already exists (whatever it
  // is); on any failure nothing is left behind (no file, no mount).
  static Result<Netns> create(const std::string& name);
  // Opens an existing named namespace. ENOENT if absent; EINVAL if the file
  // exists but is not a network namespace (e.g. a stale file whose mount is gone).
  static Result<Netns> open(const std::string& name);
  // Opens an existing namespace by path, wherever it lives (a container
  // runtime's: /run/netns/netns-<uuid>, /proc/<pid>/ns/net). Same errors as
  // open(); EINVAL for a relative path. name() and path() are the path.
  static Result<Netns> openPath(const std::string& path);
  // Detaches the bind mount and unlinks the file. OK if absent. The kernel
  // frees the namespace (and its devices) once no process/fd holds it any
  // more; that happens asynchronously.
  static Status remove(const std::string& name);
  static bool exists(const std::string& name);
  // "/var/run/netns/<name>".
  static std::string pathOf(const std::string& name);
  // Names must be usable as one path component: [A-Za-z0-9_.-], 1..64 chars,
  // not "." or "..".
  static Status validateName(const std::string& name);

  Netns(Netns&&) noexcept = default;
  Netns& operator=(Netns&&) noexcept = default;

  int fd() const { return fd_.get(); }
  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }

  // Runs fn on a dedicated thread that has entered this namespace and returns
  // fn's result; blocks until it finishes. fn must return Result<T> or
  // Status. If the thread cannot enter the namespace, fn is not called and
  // the error is returned. fn must not throw (it runs on another thread).
  // Sockets (e.g. netlink) and /proc/sys/net files
  // opened inside fn belong to this namespace.
  template <typename F>
  auto run(F&& fn) const -> decltype(fn()) {
    using R = decltype(fn());
    static_assert(std::is_constructible_v<R, Error>, "Netns::run: fn must return Result<T> or Status");
    std::optional<R> out;
    Status st = runOnThread([&] { out.emplace(fn()); });
    if (!st.ok()) return st.error();
    return std::move(*out);
  }

 private:
  Netns(UniqueFd fd, std::string name, std::string path)
      : fd_(std::move(fd)), name_(std::move(name)), path_(std::move(path)) {}
  static Result<Netns> openFile(const std::string& path, const std::string& name, const std::string& ctx);
  Status runOnThread(const std::function<void()>& body) const;

  UniqueFd fd_;
  std::string name_;
  std::string path_;
};

// For `membrane exec` only: moves the CALLING THREAD into the network
// namespace at netns_path (setns CLONE_NEWNET). Call it in a single-threaded
// process right before execvp(); in any other situation use Netns::run().
// Like `ip netns exec` minus the /sys remount: /proc/sys/net follows the new
// namespace, /sys/class/net does not.
Status enterNetnsForExec(const std::string& netns_path);

}  // namespace membrane::kernel
