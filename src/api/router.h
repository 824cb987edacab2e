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
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "src/api/http_message.h"

namespace membrane::api {

class StreamWriter;
class PendingResponse;

using Handler = std::function<Response(const Request&)>;
// A thread-held streaming handler (HttpServer runs it on a thread of its own):
// writes lines until it is done or StreamWriter::write returns false (client
// gone or server stopping), then returns. For few, internal streams only.
using StreamHandler = std::function<void(const Request&, StreamWriter&)>;
// An event-driven streaming handler: registers the stream (keeps the
// shared_ptr, e.g. in a subscriber list), pushes lines from any thread and
// returns at once; it holds no thread while the stream is open.
using AsyncStreamHandler = std::function<void(const Request&, std::shared_ptr<StreamWriter>)>;
// A deferred handler: answers through PendingResponse::complete(), now or
// later from any thread; holds no thread while it waits.
using DeferredHandler = std::function<void(const Request&, std::shared_ptr<PendingResponse>)>;

class Router {
 public:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;  // "{id}" kept as is
    Handler handler;                    // exactly one of handler / stream / async_stream / deferred is set
    StreamHandler stream;
    AsyncStreamHandler async_stream;
    DeferredHandler deferred;
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
  void addStream(std::string method, std::string pattern, AsyncStreamHandler handler);
  void addDeferred(std::string method, std::string pattern, DeferredHandler handler);

  // 'path' is the raw path (no query), still percent-encoded.
  Match match(std::string_view method, std::string_view path) const;

 private:
  void addRoute(Route r);
  std::vector<Route> routes_;
};

}  // namespace membrane::api
