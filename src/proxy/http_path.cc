#include "src/proxy/http_path.h"

#include <strings.h>

#include <cstring>

namespace membrane::proxy {

namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// Authority characters of RFC 3986 (reg-name, IPv4, IP-literal, port).
bool authorityChar(unsigned char c) {
  if (unreserved(c)) return true;
  switch (c) {
    case '!': case '$': case '&': case '\'': case '(': case ')': case '*': case '+': case ',': case ';': case '=':
    case ':': case '[': case ']': case '%':
      return true;
    default:
      return false;
  }
}

// Removes dot segments from 'path' (starts with '/', no "//") in place, so a
// request allocates nothing. The output never overtakes the input: each
// segment is written at or before where it was read. Returns false when a
// dot segment carries a path parameter.
bool removeDotSegments(std::string& path) {
  const size_t n = path.size();
  size_t w = 0, i = 0;
  while (i < n) {
    // path[i] == '/': one segment up to the next '/'.
    size_t j = path.find('/', i + 1);
    if (j == std::string::npos) j = n;
    std::string_view seg(path.data() + i + 1, j - i - 1);
    std::string_view bare = seg.substr(0, seg.find(';'));
    if (bare == "." || bare == "..") {
      if (bare.size() != seg.size()) return false;
      if (bare == "..") {
        size_t k = w > 0 ? path.rfind('/', w - 1) : std::string::npos;
        w = k == std::string::npos ? 0 : k;
      }
      if (j == n) path[w++] = '/';  // "/a/." and "/a/b/.." name the directory
    } else {
      path[w++] = '/';
      std::memmove(path.data() + w, seg.data(), seg.size());
      w += seg.size();
    }
    i = j;
  }
  if (w == 0) path[w++] = '/';
  path.resize(w);
  return true;
}

}  // namespace

bool parseEscapedSlashes(std::string_view s, EscapedSlashes* out) {
  if (s == "reject") *out = EscapedSlashes::Reject;
  else if (s == "keep") *out = EscapedSlashes::Keep;
  else if (s == "unescape-and-forward") *out = EscapedSlashes::UnescapeAndForward;
  else return false;
  return true;
}

std::string_view escapedSlashesName(EscapedSlashes e) {
  switch (e) {
    case EscapedSlashes::Reject: return "reject";
    case EscapedSlashes::Keep: return "keep";
    case EscapedSlashes::UnescapeAndForward: return "unescape-and-forward";
  }
  return "reject";
}

std::string_view normalizeTarget(std::string_view raw, EscapedSlashes slashes, TargetNormal* out) {
  out->target.clear();
  out->authority.clear();
  out->absolute = false;
  for (unsigned char c : raw)
    if (c < 0x21 || c > 0x7E) return "request target has a control, space or non-ASCII byte";
  if (raw.find('#') != std::string_view::npos) return "request target has a fragment ('#')";
  if (raw == "*") return "asterisk-form request target ('*') is not supported";
  std::string_view rest = raw;
  if (raw.empty() || raw[0] != '/') {
    // absolute-form: http://authority[/path][?query]
    constexpr std::string_view kScheme = "http://";
    if (raw.size() < kScheme.size() || strncasecmp(raw.data(), kScheme.data(), kScheme.size()) != 0)
      return raw.find("://") != std::string_view::npos ? "absolute-form request target with a scheme other than http"
                                                       : "request target is neither origin-form ('/path') nor "
                                                         "absolute-form ('http://host/path')";
    std::string_view after = raw.substr(kScheme.size());
    size_t end = after.find_first_of("/?");
    std::string_view auth = after.substr(0, end);
    if (auth.empty()) return "absolute-form request target without a host";
    for (unsigned char c : auth)
      if (!authorityChar(c)) return "absolute-form request target: invalid character in the host";
    out->authority.assign(auth);
    out->absolute = true;
    rest = end == std::string_view::npos ? std::string_view("/") : after.substr(end);
    if (rest[0] == '?') {  // "http://h?q": the path is "/"
      out->target = "/";
      out->target.append(rest);
      return {};
    }
  }
  size_t q = rest.find('?');
  std::string_view path = rest.substr(0, q);
  std::string& t = out->target;
  t.reserve(rest.size());
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c == '%') {
      if (i + 2 >= path.size()) return "broken percent-escape in the path";
      int h = hexValue(path[i + 1]), l = hexValue(path[i + 2]);
      if (h < 0 || l < 0) return "broken percent-escape in the path";
      unsigned char d = static_cast<unsigned char>(h * 16 + l);
      i += 2;
      if (d == 0) return "escaped NUL ('%00') in the path";
      if (d == '/' || d == '\\') {
        switch (slashes) {
          case EscapedSlashes::Reject: return "escaped slash ('%2F' or '%5C') in the path";
          case EscapedSlashes::Keep: t += d == '/' ? "%2F" : "%5C"; continue;
          case EscapedSlashes::UnescapeAndForward: t += '/'; continue;
        }
      }
      if (unreserved(d)) {
        t += static_cast<char>(d);
      } else {
        static constexpr char kHex[] = "0123456789ABCDEF";
        t += '%';
        t += kHex[d >> 4];
        t += kHex[d & 15];
      }
      continue;
    }
    t += c == '\\' ? '/' : c;
  }
  // Merge slashes, then resolve dot segments.
  size_t w = 0;
  for (size_t r = 0; r < t.size(); ++r)
    if (!(t[r] == '/' && w > 0 && t[w - 1] == '/')) t[w++] = t[r];
  t.resize(w);
  if (!removeDotSegments(t)) return "dot segment with a path parameter ('..;' or '.;') in the path";
  if (q != std::string_view::npos) t.append(rest.substr(q));
  return {};
}

}  // namespace membrane::proxy
