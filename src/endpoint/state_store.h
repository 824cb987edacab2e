// Durable agent state files under the state directory (default /var/lib/membrane).
// Writes are atomic: write a temp file, fsync, rename over the target, fsync
// the directory — a crash leaves either the old or the new file, never half.
#pragma once

#include <string>
#include <vector>

#include "membrane/result.h"

namespace membrane::endpoint {

Status writeFileAtomic(const std::string& path, const std::string& content, int mode = 0600);
Result<std::string> readFile(const std::string& path);
Status removeFile(const std::string& path);  // ok if absent; fsyncs the directory
Status makeDirs(const std::string& path, int mode = 0700);
// Regular files in dir whose names end with suffix (sorted). Missing dir => empty.
Result<std::vector<std::string>> listFiles(const std::string& dir, const std::string& suffix);

// The seam for writing and removing state files (endpoints/<id>.json,
// namespaces.json, workloads.json), so that tests can fail a write like any
// kernel call (kernel::FaultyStateFiles in src/kernel/fake). The endpoint
// manager and the workload controller write every state file through one.
class StateFiles {
 public:
  virtual ~StateFiles() = default;
  // writeFileAtomic(path, content) (mode 0600): the old or the new file, never half.
  virtual Status write(const std::string& path, const std::string& content) = 0;
  // removeFile(path): ok if absent.
  virtual Status remove(const std::string& path) = 0;
};

// The real filesystem (writeFileAtomic, removeFile). Stateless, thread-safe.
StateFiles& diskStateFiles();

}  // namespace membrane::endpoint
