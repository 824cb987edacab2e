// Test helpers for the proxy tests: a small threaded HTTP/1.1 upstream server
// and blocking client utilities. Loopback only; everything bounded by timeouts.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "membrane/unique_fd.h"

namespace membrane::proxy::test {

inline void setTimeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

inline bool sendAll(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

inline UniqueFd connectTo(uint16_t port, int timeout_ms = 5000) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return UniqueFd();
  setTimeouts(fd.get(), timeout_ms);
  return fd;
}

// Buffered reader over a blocking socket.
class Reader {
 public:
  explicit Reader(int fd) : fd_(fd) {}
  bool fill() {
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  bool line(std::string* out) {
    for (;;) {
      auto p = buf_.find("\r\n");
      if (p != std::string::npos) {
        *out = buf_.substr(0, p);
        buf_.erase(0, p + 2);
        return true;
      }
      if (!fill()) return false;
    }
  }
  bool exact(size_t n, std::string* out) {
    while (buf_.size() < n)
      if (!fill()) return false;
    if (out) out->append(buf_, 0, n);
    buf_.erase(0, n);
    return true;
  }
  // Reads exactly n bytes, keeping only a count (large bodies).
  bool skip(size_t n) {
    while (n > 0) {
      if (buf_.empty() && !fill()) return false;
      size_t k = std::min(n, buf_.size());
      buf_.erase(0, k);
      n -= k;
    }
    return true;
  }
  std::string rest() {
    while (fill()) {
    }
    std::string r;
    r.swap(buf_);
    return r;
  }
  bool eof() {
    if (!buf_.empty()) return false;
    return !fill();
  }
  std::string& buffered() { return buf_; }

 private:
  int fd_;
  std::string buf_;
  bool eof_ = false;
};

struct Message {
  bool ok = false;
  std::string start;  // request line or status line
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::vector<std::string> field_lines;        // the head's field lines as received (TestServer)
  std::string body;
  size_t body_bytes = 0;
  std::string header(const std::string& n) const {
    auto it = headers.find(n);
    return it == headers.end() ? "" : it->second;
  }
};

inline std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Reads one message head + body (Content-Length, chunked, or until close when
// 'until_close_ok'). keep_body=false counts body bytes only.
inline Message readMessage(Reader& r, bool is_response, bool keep_body = true, bool head_request = false) {
  Message m;
  if (!r.line(&m.start)) return m;
  if (is_response && m.start.size() >= 12) m.status = std::atoi(m.start.c_str() + 9);
  std::string l;
  for (;;) {
    if (!r.line(&l)) return m;
    if (l.empty()) break;
    auto c = l.find(':');
    if (c == std::string::npos) continue;
    std::string v = l.substr(c + 1);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    m.headers[lower(l.substr(0, c))] = v;
  }
  bool no_body = head_request || (is_response && (m.status / 100 == 1 || m.status == 204 || m.status == 304));
  if (no_body) {
    m.ok = true;
    return m;
  }
  if (lower(m.header("transfer-encoding")) == "chunked") {
    for (;;) {
      if (!r.line(&l)) return m;
      size_t n = std::stoul(l, nullptr, 16);
      if (n == 0) {
        while (r.line(&l) && !l.empty()) {
        }
        break;
      }
      if (keep_body ? !r.exact(n, &m.body) : !r.skip(n)) return m;
      m.body_bytes += n;
      if (!r.line(&l)) return m;
    }
  } else if (!m.header("content-length").empty()) {
    size_t n = std::stoul(m.header("content-length"));
    if (keep_body ? !r.exact(n, &m.body) : !r.skip(n)) return m;
    m.body_bytes = n;
  } else if (is_response) {
    m.body = r.rest();
    m.body_bytes = m.body.size();
  }
  m.ok = true;
  return m;
}

// Upstream server: thread per connection. Routes by path:
//   /v1/request-landing  -> 200 "Ship landed"
//   /upload              -> 200 body = number of request body bytes received
//   /big                 -> 200 chunked, 10 MiB
//   /ws (Upgrade)        -> 101, then echoes raw bytes
//   /ip                  -> 200 body = the client's IP as the server sees it
//   anything else        -> 200 "ok <target>"
// "Expect: 100-continue" is answered with an interim 100 first.
class TestServer {
 public:
  TestServer() {
    listen_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(listen_.get(), 1024);
    socklen_t len = sizeof(a);
    getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    addr_ = a;
    thread_ = std::thread([this] { acceptLoop(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    std::lock_guard lk(mu_);
    for (auto& t : conns_) t.join();
  }
  uint16_t port() const { return ntohs(addr_.sin_port); }
  sockaddr_in addr() const { return addr_; }
  int requests() const { return requests_.load(); }
  // Request lines as the server read them, in arrival order.
  std::vector<std::string> startLines() const {
    std::lock_guard lk(lines_mu_);
    return start_lines_;
  }
  int connections() const { return connections_.load(); }

 private:
  void acceptLoop() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      connections_++;
      std::lock_guard lk(mu_);
      conns_.emplace_back([this, fd] { serve(UniqueFd(fd)); });
    }
  }

  void serve(UniqueFd fd) {
    setTimeouts(fd.get(), 200);
    sockaddr_in peer{};
    socklen_t plen = sizeof(peer);
    getpeername(fd.get(), reinterpret_cast<sockaddr*>(&peer), &plen);
    Reader r(fd.get());
    while (!stop_) {
      // Wait for the next request, waking up to notice stop_.
      while (r.buffered().empty() && !stop_) {
        pollfd p{fd.get(), POLLIN, 0};
        int pr = ::poll(&p, 1, 50);
        if (pr > 0) {
          if (!r.fill()) return;
        }
      }
      if (stop_) return;
      setTimeouts(fd.get(), 5000);
      Message rq = readHead(r);
      if (!rq.ok) return;
      {
        std::lock_guard lk(lines_mu_);  // not mu_: the destructor holds it while joining
        start_lines_.push_back(rq.start);
      }
      requests_++;
      std::string target = rq.start.substr(rq.start.find(' ') + 1);
      target = target.substr(0, target.find(' '));
      bool http10 = rq.start.find("HTTP/1.0") != std::string::npos;
      if (lower(rq.header("expect")) == "100-continue") sendAll(fd.get(), "HTTP/1.1 100 Continue\r\n\r\n");
      size_t got = 0;
      if (!readBody(r, rq, &got)) return;
      std::string body;
      if (target == "/v1/request-landing") {
        body = "Ship landed";
      } else if (target == "/upload") {
        body = std::to_string(got);
      } else if (target == "/fields") {
        for (const auto& f : rq.field_lines) body += f + "\n";
      } else if (target == "/ip") {
        char b[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &peer.sin_addr, b, sizeof(b));
        body = b;
      } else if (target == "/big") {
        sendAll(fd.get(), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        std::string chunk(65536, 'x');
        std::string framed = "10000\r\n" + chunk + "\r\n";
        for (int i = 0; i < 160; ++i)
          if (!sendAll(fd.get(), framed)) return;
        sendAll(fd.get(), "0\r\n\r\n");
        continue;
      } else if (target == "/ws" && !rq.header("upgrade").empty()) {
        sendAll(fd.get(), "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        std::string& rest = r.buffered();
        if (!rest.empty() && !sendAll(fd.get(), rest)) return;
        rest.clear();
        char b[4096];
        for (;;) {
          ssize_t n = ::recv(fd.get(), b, sizeof(b), 0);
          if (n <= 0 || !sendAll(fd.get(), std::string_view(b, static_cast<size_t>(n)))) return;
        }
      } else {
        body = "ok " + target;
      }
      std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
                         (http10 ? "Connection: close\r\n" : "") + "\r\n" + body;
      if (!sendAll(fd.get(), resp)) return;
      if (http10) return;
    }
  }

  static Message readHead(Reader& r) {
    Message m;
    if (!r.line(&m.start)) return m;
    std::string l;
    for (;;) {
      if (!r.line(&l)) return m;
      if (l.empty()) break;
      m.field_lines.push_back(l);
      auto c = l.find(':');
      if (c == std::string::npos) continue;
      std::string v = l.substr(c + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      m.headers[lower(l.substr(0, c))] = v;
    }
    m.ok = true;
    return m;
  }

  static bool readBody(Reader& r, const Message& rq, size_t* got) {
    std::string l;
    if (lower(rq.header("transfer-encoding")) == "chunked") {
      for (;;) {
        if (!r.line(&l)) return false;
        size_t n = std::stoul(l, nullptr, 16);
        if (n == 0) {
          while (r.line(&l) && !l.empty()) {
          }
          return true;
        }
        if (!r.skip(n) || !r.line(&l)) return false;
        *got += n;
      }
    }
    if (!rq.header("content-length").empty()) {
      size_t n = std::stoul(rq.header("content-length"));
      if (!r.skip(n)) return false;
      *got = n;
    }
    return true;
  }

  UniqueFd listen_;
  sockaddr_in addr_{};
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0}, connections_{0};
  std::thread thread_;
  std::mutex mu_;
  std::list<std::thread> conns_;
  mutable std::mutex lines_mu_;
  std::vector<std::string> start_lines_;
};

}  // namespace membrane::proxy::test
