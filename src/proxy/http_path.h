// Request-target normalisation: what L7 rules match and what the server gets.
//
// An L7 rule on `path` is only a boundary if the proxy and the server agree on
// which resource a request names. Servers resolve "/a/../b", "%2e%2e", "//"
// and "\" before they route; a proxy that matches the raw bytes lets
// "GET /public/../admin" through a "/public/.*" rule. So membrane normalises
// the target the way Cilium's Envoy does (normalize_path + merge_slashes, on by
// default since Cilium 1.10), matches the rules against the result, and sends
// the result upstream, so policy and server see the same path.
//
// normalizeTarget(), in order, on the path (the query is kept as sent, only
// its bytes are checked):
//  1. origin-form "/p[?q]" or absolute-form "http://authority/p[?q]"; every
//     other form is refused: authority-form (CONNECT), asterisk-form ("*"),
//     other schemes, a fragment ("#"), bytes outside 0x21..0x7E.
//  2. percent-decoding: "%XX" of an unreserved character (ALPHA DIGIT - . _ ~)
//     becomes the character; other escapes stay, with upper-case hex; a broken
//     escape ("%zz", "%4") and "%00" are refused.
//  3. "%2F" and "%5C" (escaped slashes): EscapedSlashes decides (below).
//  4. "\" becomes "/" (as Envoy and Windows servers read it).
//  5. repeated slashes merge ("//a///b" -> "/a/b").
//  6. dot segments are removed (RFC 3986 5.2.4; ".." at the root stays at the
//     root). A dot segment with a path parameter ("..;x", ".;x") is refused:
//     Tomcat and others strip the parameter and then resolve the dots.
//
// Pure functions, no allocation beyond the output string's growth.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace membrane::proxy {

// What to do with "%2F" / "%5C" in a path (Envoy's
// path_with_escaped_slashes_action). Servers disagree about them (nginx
// decodes %2F before routing, Apache and Envoy keep it), so the default
// refuses: the only choice no server can read differently from the policy.
enum class EscapedSlashes : uint8_t {
  Reject,              // 400 (default)
  Keep,                // forward as "%2F"/"%5C"; rules see them escaped
  UnescapeAndForward,  // decode to "/" before steps 4-6; rules and server see the decoded path
};
// "reject", "keep", "unescape-and-forward"; false when unknown.
bool parseEscapedSlashes(std::string_view s, EscapedSlashes* out);
std::string_view escapedSlashesName(EscapedSlashes e);

struct TargetNormal {
  std::string target;      // normalised origin-form: "/path[?query]"
  std::string authority;   // absolute-form only: the authority as sent ("" for origin-form)
  bool absolute = false;   // the request used absolute-form
};

// Returns "" on success, else why the target is refused (a static string).
std::string_view normalizeTarget(std::string_view raw, EscapedSlashes slashes, TargetNormal* out);

}  // namespace membrane::proxy
