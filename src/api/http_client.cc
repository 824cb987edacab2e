#include "src/api/http_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "src/api/http_parser.h"

namespace membrane::api {

namespace {

using Clock = std::chrono::steady_clock;

// Answers can be large (a metrics list, a big conntrack table); the limit only
// guards against a runaway peer.
constexpr MessageParser::Limits kResponseLimits{256u << 10, 1024u << 20};

std::string buildRequest(std::string_view method, std::string_view target, std::string_view body, bool stream) {
  std::string out = fmt::format("{} {} HTTP/1.1\r\nHost: membrane\r\nUser-Agent: membrane-cli\r\n", method, target);
  out += stream ? "Accept: application/x-ndjson\r\n" : "Accept: application/json\r\n";
  if (!body.empty()) out += "Content-Type: application/json\r\n";
  if (!body.empty() || method == "PUT" || method == "POST" || method == "PATCH")
    out += fmt::format("Content-Length: {}\r\n", body.size());
  out += "\r\n";
  out.append(body);
  return out;
}

// -1 = wait forever.
int msLeft(Clock::time_point deadline, bool forever) {
  if (forever) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// 0 ok, else errno (ETIMEDOUT on deadline).
int writeAll(int fd, std::string_view data, Clock::time_point deadline, bool forever) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      int ms = msLeft(deadline, forever);
      if (ms == 0) return ETIMEDOUT;
      if (::poll(&p, 1, ms) < 0 && errno != EINTR) return errno;
      continue;
    }
    return n < 0 ? errno : EIO;
  }
  return 0;
}

// Reads into 'parser' until it completes or fails. 'got_bytes' tells whether
// the peer sent anything at all (an immediately closed kept-alive connection
// may be retried). Returns 0 or an errno.
int readMessage(int fd, MessageParser& parser, Clock::time_point deadline, bool forever, bool* got_bytes,
                const bool* cancelled = nullptr) {
  // On the heap: callers include civetweb's scrape threads (100 KiB stacks,
  // set by the library), where a 64 KiB frame leaves almost nothing.
  constexpr size_t kReadChunk = 65536;
  std::unique_ptr<char[]> buf(new char[kReadChunk]);
  while (parser.state() == MessageParser::State::Incomplete) {
    pollfd p{fd, POLLIN, 0};
    int ms = msLeft(deadline, forever);
    if (ms == 0) return ETIMEDOUT;
    int r = ::poll(&p, 1, ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) continue;
    ssize_t n = ::recv(fd, buf.get(), kReadChunk, 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      if (errno == ECONNRESET && !*got_bytes) return ECONNRESET;
      if (errno != ECONNRESET) return errno;
      n = 0;  // reset after data: treat as close
    }
    if (n == 0) {
      if (!*got_bytes) return ECONNRESET;
      parser.finish();
      break;
    }
    *got_bytes = true;
    parser.feed(std::string_view(buf.get(), static_cast<size_t>(n)));
    if (cancelled && *cancelled) return 0;
  }
  return 0;
}

std::string serverError(const Response& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) return j["error"].get<std::string>();
  return fmt::format("membraned answered {} {}", r.status, reasonPhrase(r.status));
}

}  // namespace

std::string unreachableMessage(const std::string& path, int err) {
  if (err == EACCES || err == EPERM)
    return fmt::format("cannot reach membraned at {}: {} — the API socket is mode 0660: run as root (sudo) or as a "
                       "member of the socket's group",
                       path, membrane::errnoText(err));
  return fmt::format("cannot reach membraned at {}: {} — is the agent running? Start it with 'membraned' (as root) "
                     "or 'systemctl start membraned', or point --socket / MEMBRANE_SOCKET at it",
                     path, membrane::errnoText(err));
}

HttpClient::HttpClient(std::string socket_path, std::chrono::milliseconds timeout)
    : path_(std::move(socket_path)), timeout_(timeout) {}

Result<UniqueFd> HttpClient::connectSocket() const {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.empty() || path_.size() >= sizeof(addr.sun_path))
    return Error(ENAMETOOLONG, fmt::format("socket path '{}' must be 1..{} bytes", path_, sizeof(addr.sun_path) - 1));
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::fromErrno(errno, "socket(AF_UNIX)");
  int r;
  do {
    r = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    int err = errno;
    return Error(err, unreachableMessage(path_, err));
  }
  int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) < 0) return Error::fromErrno(errno, "fcntl O_NONBLOCK");
  return fd;
}

Result<Response> HttpClient::request(std::string_view method, std::string_view target, std::string_view body) {
  bool reused = fd_.valid();
  if (!reused) {
    MB_ASSIGN(fd_, connectSocket());
  }
  bool retryable = false;
  auto r = requestOnce(method, target, body, &retryable);
  if (!r.ok() && reused && retryable) {
    // The server closed the idle kept-alive connection before reading ours.
    MB_ASSIGN(fd_, connectSocket());
    r = requestOnce(method, target, body, &retryable);
  }
  return r;
}

Result<Response> HttpClient::requestOnce(std::string_view method, std::string_view target, std::string_view body,
                                         bool* retryable) {
  *retryable = false;
  auto deadline = Clock::now() + timeout_;
  std::string what = fmt::format("{} {} on {}", method, target, path_);
  int werr = writeAll(fd_.get(), buildRequest(method, target, body, false), deadline, false);
  if (werr == ETIMEDOUT) {
    fd_.reset();
    return Error(ETIMEDOUT, what + ": membraned did not read the request within " +
                                std::to_string(timeout_.count()) + " ms");
  }
  // On EPIPE/ECONNRESET the server may have answered early (413) and closed:
  // read what it sent before reporting the write failure.
  MessageParser parser(MessageParser::Type::Response, kResponseLimits);
  bool got = false;
  int rerr = readMessage(fd_.get(), parser, deadline, false, &got);
  if (parser.state() != MessageParser::State::Complete) {
    fd_.reset();
    if (!got && (werr == EPIPE || werr == ECONNRESET || rerr == ECONNRESET)) {
      *retryable = true;
      return Error(ECONNRESET, what + ": membraned closed the connection without answering");
    }
    if (rerr == ETIMEDOUT)
      return Error(ETIMEDOUT, what + ": no answer from membraned within " + std::to_string(timeout_.count()) + " ms");
    if (rerr) return Error::fromErrno(rerr, what);
    if (werr) return Error::fromErrno(werr, what);
    return Error(EPROTO, what + ": malformed answer from membraned: " + parser.errorMessage());
  }
  Response resp;
  resp.status = parser.status;
  resp.body = std::move(parser.body);
  resp.headers = std::move(parser.headers);
  resp.content_type = resp.header("content-type");
  if (!parser.keepAlive() || werr) fd_.reset();
  return resp;
}

Status HttpClient::stream(std::string_view target, const std::function<bool(std::string_view line)>& on_line) {
  MB_ASSIGN(UniqueFd fd, connectSocket());
  std::string what = fmt::format("GET {} on {}", target, path_);
  auto deadline = Clock::now() + timeout_;
  if (int err = writeAll(fd.get(), buildRequest("GET", target, "", true), deadline, false)) return Error::fromErrno(err, what);

  MessageParser parser(MessageParser::Type::Response, kResponseLimits);
  std::string line;
  std::string error_body;
  bool cancelled = false;
  parser.on_body = [&](std::string_view data) {
    if (parser.status < 200 || parser.status >= 300) {
      if (error_body.size() < (1u << 20)) error_body.append(data);
      return true;
    }
    for (char c : data) {
      if (c != '\n') {
        line.push_back(c);
        continue;
      }
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!on_line(line)) {
        cancelled = true;
        return false;
      }
      line.clear();
    }
    return true;
  };
  bool got = false;
  int err = readMessage(fd.get(), parser, deadline, /*forever=*/true, &got, &cancelled);
  if (cancelled) return okStatus();
  if (err) return Error::fromErrno(err == ECONNRESET ? ECONNRESET : err, what);
  if (parser.status != 0 && (parser.status < 200 || parser.status >= 300)) {
    Response r;
    r.status = parser.status;
    r.body = error_body;
    return Error(EIO, serverError(r));
  }
  if (parser.state() != MessageParser::State::Complete)
    return Error(EPROTO, what + ": stream ended abruptly: " + parser.errorMessage());
  if (!line.empty()) on_line(line);
  return okStatus();
}

}  // namespace membrane::api
