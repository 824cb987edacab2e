#include "src/endpoint/state_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "membrane/unique_fd.h"

namespace membrane::endpoint {
namespace {
std::string dirOf(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}
Status fsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Error::fromErrno(errno, "open " + dir);
  if (::fsync(fd.get()) != 0) return Error::fromErrno(errno, "fsync " + dir);
  return okStatus();
}
}  // namespace

Status writeFileAtomic(const std::string& path, const std::string& content, int mode) {
  std::string tmp = path + ".tmp";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd) return Error::fromErrno(errno, "write " + tmp);
    size_t off = 0;
    while (off < content.size()) {
      ssize_t n = ::write(fd.get(), content.data() + off, content.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        ::unlink(tmp.c_str());
        return Error::fromErrno(e, "write " + tmp);
      }
      off += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) {
      int e = errno;
      ::unlink(tmp.c_str());
      return Error::fromErrno(e, "fsync " + tmp);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return Error::fromErrno(e, fmt::format("rename {} to {}", tmp, path));
  }
  return fsyncDir(dirOf(path));
}

Result<std::string> readFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::fromErrno(errno, "read " + path);
  // Reads straight into the string: no large buffer on the caller's stack
  // (callers include threads whose stack a library sizes).
  std::string out;
  size_t used = 0;
  for (;;) {
    if (out.size() - used < 16384) out.resize(used + 65536);
    ssize_t n = ::read(fd.get(), out.data() + used, out.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::fromErrno(errno, "read " + path);
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  out.resize(used);
  return out;
}

Status removeFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return okStatus();
    return Error::fromErrno(errno, "remove " + path);
  }
  return fsyncDir(dirOf(path));
}

Status makeDirs(const std::string& path, int mode) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return Error::fromErrno(errno, "mkdir " + cur);
  }
  return okStatus();
}

Result<std::vector<std::string>> listFiles(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return Error::fromErrno(errno, "list " + dir);
  }
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(dir + "/" + n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {
class DiskStateFiles final : public StateFiles {
 public:
  Status write(const std::string& path, const std::string& content) override { return writeFileAtomic(path, content); }
  Status remove(const std::string& path) override { return removeFile(path); }
};
}  // namespace

StateFiles& diskStateFiles() {
  static DiskStateFiles files;
  return files;
}

}  // namespace membrane::endpoint
