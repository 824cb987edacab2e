// The proxy's per-connection work without sockets, for the libFuzzer target
// and its replay test. One input is one connection:
//
//   <config> "\n%%\n" <client bytes> "\n%%\n" <upstream bytes>
//
// <config> (optional first line "@ <in|out> <client-ip> <dst-ip> <dst-port>":
// the connection; default ingress 10.200.0.3 -> 10.200.0.2:80) is either the
// JSON ProxyConfig::parse takes (when it starts with '{') or lines of a small
// rule language the driver turns into that JSON (see request_driver.cc), so
// the parser and validator are fuzzed as well as the rules. A config that does
// not parse falls back to the Star Wars rules and the default connection.
// Without the second separator there are no upstream bytes; without any
// separator (the first corpus format) the input is both the client's and the
// upstream's byte stream under the Star Wars rules.
//
// The client bytes go through MessageParser in pieces whose sizes come from
// the input, and every request is decided with decideRequest() exactly as the
// proxy's connection does; the upstream bytes are parsed as the proxy parses
// responses (request hints, interim 1xx, keep-alive, upgrade, cut short). Each
// request and response is formatted as an access-log record
// (formatAccessRecord) and the stats are updated as the proxy does. MB_CHECK
// aborts on a broken invariant (see request_driver.cc). Returns the number of
// requests that reached a verdict. MEMBRANE_FUZZ_TRACE=1 in the environment
// prints the config and the access-log lines to stderr.
#pragma once

#include <cstddef>
#include <cstdint>

namespace membrane::proxy {

size_t driveRequestStream(const uint8_t* data, size_t size);

}  // namespace membrane::proxy
