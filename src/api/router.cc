#include "src/api/router.h"

#include <algorithm>
#include <set>

#include "membrane/result.h"

namespace membrane::api {

namespace {
std::vector<std::string_view> splitPath(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.push_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

bool isCapture(std::string_view seg) { return seg.size() > 2 && seg.front() == '{' && seg.back() == '}'; }
}  // namespace

void Router::add(std::string method, std::string pattern, Handler handler) {
  MB_CHECK(handler);
  Route r;
  r.method = std::move(method);
  r.pattern = std::move(pattern);
  r.handler = std::move(handler);
  addRoute(std::move(r));
}

void Router::addStream(std::string method, std::string pattern, StreamHandler handler) {
  MB_CHECK(handler);
  Route r;
  r.method = std::move(method);
  r.pattern = std::move(pattern);
  r.stream = std::move(handler);
  addRoute(std::move(r));
}

void Router::addStream(std::string method, std::string pattern, AsyncStreamHandler handler) {
  MB_CHECK(handler);
  Route r;
  r.method = std::move(method);
  r.pattern = std::move(pattern);
  r.async_stream = std::move(handler);
  addRoute(std::move(r));
}

void Router::addDeferred(std::string method, std::string pattern, DeferredHandler handler) {
  MB_CHECK(handler);
  Route r;
  r.method = std::move(method);
  r.pattern = std::move(pattern);
  r.deferred = std::move(handler);
  addRoute(std::move(r));
}

void Router::addRoute(Route r) {
  MB_CHECK(!r.pattern.empty() && r.pattern.front() == '/');
  for (const auto& existing : routes_) MB_CHECK(!(existing.method == r.method && existing.pattern == r.pattern));
  for (auto seg : splitPath(r.pattern)) r.segments.emplace_back(seg);
  routes_.push_back(std::move(r));
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
  auto segs = splitPath(path);
  Match m;
  std::set<std::string> allowed;
  int best_literals = -1;
  for (const auto& r : routes_) {
    if (r.segments.size() != segs.size()) continue;
    std::map<std::string, std::string> params;
    int literals = 0;
    bool ok = true;
    for (size_t i = 0; i < segs.size() && ok; ++i) {
      const std::string& p = r.segments[i];
      if (isCapture(p)) {
        std::string v = percentDecode(segs[i], false);
        if (v.empty()) ok = false;
        else params[p.substr(1, p.size() - 2)] = std::move(v);
      } else {
        ok = p == segs[i];
        ++literals;
      }
    }
    if (!ok) continue;
    allowed.insert(r.method);
    // Most literal segments wins, so a fixed path is never shadowed by a capture.
    if (r.method == method && literals > best_literals) {
      best_literals = literals;
      m.kind = Match::Kind::Found;
      m.route = &r;
      m.params = std::move(params);
    }
  }
  if (m.kind == Match::Kind::Found || allowed.empty()) return m;
  m.kind = Match::Kind::MethodNotAllowed;
  for (const auto& a : allowed) m.allow += (m.allow.empty() ? "" : ", ") + a;
  return m;
}

}  // namespace membrane::api
