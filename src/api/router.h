// Router: maps (method, path pattern) to a handler.
//
// Patterns are absolute paths whose segments are literals or "{name}"
// captures: "/v1/endpoint/{id}". A capture matches one non-empty segment,
// percent-decoded, and lands in Request::params. Literal segments win over
// captures when both match ("/v1/endpoint/names" beats "/v1/endpoint/{id}").
//
// Thread-safety: add routes before serving; match() is const and may then be
// called from any number of threads.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "src/api/http_message.h"

namespace membrane::api {

class StreamWriter;

using Handler = std::function<Response(const Request&)>;
// A streaming handler writes lines until it is done or StreamWriter::write
// returns false (client gone or server stopping), then returns.
using StreamHandler = std::function<void(const Request&, StreamWriter&)>;

class Router {
 public:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;  // "{id}" kept as is
    Handler handler;                    // exactly one of handler / stream is set
    StreamHandler stream;
  };

  struct Match {
    enum class Kind { Found, NotFound, MethodNotAllowed } kind = Kind::NotFound;
    const Route* route = nullptr;              // when Found
    std::map<std::string, std::string> params;  // when Found
    std::string allow;                          // when MethodNotAllowed: "DELETE, GET"
  };

  // Aborts (MB_CHECK) on a pattern that does not start with '/' or a duplicate
  // (method, pattern): both are programming errors, not input.
  void add(std::string method, std::string pattern, Handler handler);
  void addStream(std::string method, std::string pattern, StreamHandler handler);

  // 'path' is the raw path (no query), still percent-encoded.
  Match match(std::string_view method, std::string_view path) const;

 private:
  void addRoute(Route r);
  std::vector<Route> routes_;
};

}  // namespace membrane::api
