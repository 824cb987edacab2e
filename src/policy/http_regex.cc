#include "src/policy/http_regex.h"

#include <re2/re2.h>

namespace membrane::policy {

std::string checkHttpRegex(const std::string& pattern) {
  RE2::Options opts;
  opts.set_log_errors(false);
  RE2 re(pattern, opts);
  return re.ok() ? std::string() : re.error();
}

}  // namespace membrane::policy
