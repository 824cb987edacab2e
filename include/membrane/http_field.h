// HTTP field syntax (RFC 9110 5.1, 5.5), shared by the policy parser (which
// checks headerMatches before a policy is accepted) and membrane-proxy (which
// checks its config again and frames requests with the same rules).
#pragma once

#include <strings.h>

#include <string_view>

namespace membrane::http {

// tchar: the bytes of methods and field names.
inline bool isTchar(unsigned char c) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-': case '.':
    case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

inline bool isFieldName(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!isTchar(c)) return false;
  return true;
}

// A field value as a proxy may write it: visible bytes (and obs-text), with
// SP/HTAB only between them. No CR, LF or NUL, so a value cannot end the
// field line and start another (header injection).
inline bool isFieldValue(std::string_view s) {
  if (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.back() == ' ' || s.back() == '\t')) return false;
  for (unsigned char c : s)
    if (c != '\t' && (c < 0x20 || c == 0x7F)) return false;
  return true;
}

// Fields that frame the message or the connection, or route it: a policy may
// match them but never add, delete or replace them, or the server would frame
// or route the stream differently from what the policy decided on.
inline bool isFramingField(std::string_view name) {
  for (std::string_view f : {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                             "te", "trailer", "expect", "proxy-connection"})
    if (name.size() == f.size() && strncasecmp(name.data(), f.data(), f.size()) == 0) return true;
  return false;
}

}  // namespace membrane::http
