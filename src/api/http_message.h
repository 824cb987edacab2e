// Request and Response: the plain values exchanged by HttpServer handlers and
// returned by HttpClient. No I/O here; all helpers are pure and thread-compatible
// (const methods may be called concurrently, mutation needs external locking).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace membrane::api {

// Orders header names case-insensitively (HTTP field names are case-insensitive).
struct CaseInsensitiveLess {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const;
  static bool equal(std::string_view a, std::string_view b);
};

// Field name -> value; repeated fields are joined with ", " (RFC 9110 §5.3).
using Headers = std::map<std::string, std::string, CaseInsensitiveLess>;

struct Request {
  std::string method;                              // "GET", "PUT", ...
  std::string target;                              // as sent: "/v1/endpoint?name=x"
  std::string path;                                // target without query, not decoded
  std::map<std::string, std::string> params;       // "{id}" captures, percent-decoded
  std::multimap<std::string, std::string> query;   // repeatable keys, percent-decoded, '+' = ' '
  Headers headers;
  std::string body;

  // Path parameter captured by "{name}"; "" when the route has none by that name.
  std::string param(std::string_view name) const;
  // First value of a query key; "" when absent (use hasQuery() to tell "" from absent).
  std::string queryValue(std::string_view key) const;
  std::vector<std::string> queryValues(std::string_view key) const;
  bool hasQuery(std::string_view key) const;
  // Header value; "" when absent.
  std::string header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  // Extra response headers (e.g. Allow on 405). Content-Type, Content-Length and
  // Connection are written by the server itself. On the client side this holds
  // every header the server sent.
  Headers headers;

  // 'j' serialized compactly; invalid UTF-8 in strings is replaced, never thrown.
  static Response json(int status, const nlohmann::json& j);
  // {"error": msg, "code": status} — the error format of docs/api.md.
  static Response error(int status, std::string_view msg);

  std::string header(std::string_view name) const;
};

// Standard reason phrase ("Not Found"); "Unknown" for codes without one.
std::string_view reasonPhrase(int status);

// Percent-decodes 's'; with plus_as_space, '+' becomes ' ' (query strings).
// Malformed escapes ("%zz", a trailing "%") are kept literally.
std::string percentDecode(std::string_view s, bool plus_as_space);
// Percent-encodes everything but RFC 3986 unreserved characters.
std::string percentEncode(std::string_view s);
// Parses "a=1&b=x%20y&a=2" into a multimap (keys without '=' get "").
std::multimap<std::string, std::string> parseQuery(std::string_view qs);

}  // namespace membrane::api
