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

}  // namespace membrane::endpoint
