// The request path without sockets, for the libFuzzer target and its replay
// test: feeds 'data' as a client byte stream (split into pieces whose sizes
// come from the input itself) through MessageParser exactly as the proxy's
// connection does, evaluates the Star Wars L7 rules at every request's end of
// headers, and checks the invariants the proxy relies on (MB_CHECK aborts).
// Returns the number of requests that reached a verdict.
#pragma once

#include <cstddef>
#include <cstdint>

namespace membrane::proxy {

size_t driveRequestStream(const uint8_t* data, size_t size);

}  // namespace membrane::proxy
