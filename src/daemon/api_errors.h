// How the agent's API handlers turn an Error into an HTTP answer (the errno
// of the failing step picks the status; the message goes to the client as is).
#pragma once

#include <cerrno>

#include "membrane/result.h"
#include "src/api/http_message.h"

namespace membrane::daemon {

inline int httpStatusFor(const Error& e) {
  switch (e.code) {
    case EINVAL: return 400;
    case ENOENT: return 404;
    case EEXIST: return 409;
    case EBUSY: return 409;   // held policy: the change conflicts with what must be fixed first
    case ENOSPC: return 503;
    case EAGAIN: return 503;  // try again once the condition named in the message is gone
    default: return 500;
  }
}

inline api::Response errorResponse(const Error& e) { return api::Response::error(httpStatusFor(e), e.message); }

}  // namespace membrane::daemon
