#include "src/health/health.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace membrane::health {
namespace {

using Clock = std::chrono::steady_clock;

std::string ipString(uint32_t be) {
  char buf[INET_ADDRSTRLEN] = {};
  in_addr a{be};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

uint16_t checksum(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// Waits for fd to become ready for `events` until deadline; false on timeout.
bool waitFd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

ProbeResult failed(std::string why) {
  ProbeResult r;
  r.error = std::move(why);
  return r;
}

std::atomic<uint16_t> g_icmp_seq{1};

}  // namespace

ProbeResult probeIcmp(uint32_t ip_be, std::chrono::milliseconds timeout) {
  UniqueFd fd(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
  if (!fd) return failed(fmt::format("ICMP socket: {}", membrane::errnoText(errno)));
  // Identify our echo by id (pid-derived) and a per-probe sequence number.
  const uint16_t id = static_cast<uint16_t>(::getpid() & 0xffff);
  const uint16_t seq = g_icmp_seq.fetch_add(1);
  uint8_t pkt[64] = {};
  auto* icmp = reinterpret_cast<icmphdr*>(pkt);
  icmp->type = ICMP_ECHO;
  icmp->un.echo.id = htons(id);
  icmp->un.echo.sequence = htons(seq);
  std::memcpy(pkt + sizeof(icmphdr), "membrane-health", 15);
  icmp->checksum = checksum(pkt, sizeof pkt);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = ip_be;
  auto t0 = Clock::now();
  auto deadline = t0 + timeout;
  if (::sendto(fd.get(), pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0)
    return failed(fmt::format("send echo to {}: {}", ipString(ip_be), membrane::errnoText(errno)));
  uint8_t buf[1500];
  while (waitFd(fd.get(), POLLIN, deadline)) {
    sockaddr_in from{};
    socklen_t flen = sizeof from;
    ssize_t n = ::recvfrom(fd.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
    if (n < 0) continue;
    if (from.sin_addr.s_addr != ip_be) continue;
    const auto* ip = reinterpret_cast<const iphdr*>(buf);
    size_t off = static_cast<size_t>(ip->ihl) * 4;
    if (static_cast<size_t>(n) < off + sizeof(icmphdr)) continue;
    const auto* reply = reinterpret_cast<const icmphdr*>(buf + off);
    if (reply->type == ICMP_ECHOREPLY && ntohs(reply->un.echo.id) == id && ntohs(reply->un.echo.sequence) == seq) {
      ProbeResult r;
      r.ok = true;
      r.rtt_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      return r;
    }
  }
  return failed(fmt::format("no echo reply from {} within {} ms", ipString(ip_be), timeout.count()));
}

ProbeResult probeHttp(uint32_t ip_be, uint16_t port, std::chrono::milliseconds timeout) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return failed(fmt::format("socket: {}", membrane::errnoText(errno)));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = ip_be;
  auto t0 = Clock::now();
  auto deadline = t0 + timeout;
  const std::string where = fmt::format("{}:{}", ipString(ip_be), port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS)
    return failed(fmt::format("connect {}: {}", where, membrane::errnoText(errno)));
  if (!waitFd(fd.get(), POLLOUT, deadline)) return failed(fmt::format("connect {}: timed out", where));
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) return failed(fmt::format("connect {}: {}", where, membrane::errnoText(err)));
  const std::string req = "GET /hello HTTP/1.1\r\nHost: membrane-health\r\nConnection: close\r\n\r\n";
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
    return failed(fmt::format("send to {}: {}", where, membrane::errnoText(errno)));
  std::string resp;
  char buf[512];
  while (resp.find("\r\n") == std::string::npos && waitFd(fd.get(), POLLIN, deadline)) {
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  if (resp.rfind("HTTP/1.1 200", 0) != 0 && resp.rfind("HTTP/1.0 200", 0) != 0)
    return failed(resp.empty() ? fmt::format("GET /hello on {}: no answer", where)
                               : fmt::format("GET /hello on {}: {}", where, resp.substr(0, resp.find('\r'))));
  ProbeResult r;
  r.ok = true;
  r.rtt_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

Result<UniqueFd> listenTcp(uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return Error::fromErrno(errno, "health: socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return Error::fromErrno(errno, fmt::format("health: bind 0.0.0.0:{}", port));
  if (::listen(fd.get(), 64) != 0) return Error::fromErrno(errno, "health: listen");
  return fd;
}

Result<std::unique_ptr<HelloServer>> HelloServer::start(UniqueFd listen_fd) {
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return Error::fromErrno(errno, "health: eventfd");
  std::unique_ptr<HelloServer> s(new HelloServer(std::move(listen_fd), std::move(stop)));
  s->thread_ = std::thread([p = s.get()] { p->loop(); });
  return s;
}

HelloServer::HelloServer(UniqueFd listen_fd, UniqueFd stop_fd)
    : listen_fd_(std::move(listen_fd)), stop_fd_(std::move(stop_fd)) {}

HelloServer::~HelloServer() {
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

uint64_t HelloServer::served() const { return served_.load(); }

void HelloServer::loop() {
  // One request per connection, answered inline: probes are tiny and rare
  // (one per node per interval), and a bounded read deadline keeps a stuck
  // client from holding the loop for more than 200 ms.
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    UniqueFd c(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!c) continue;
    std::string req;
    char buf[1024];
    auto deadline = Clock::now() + std::chrono::milliseconds(200);
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192 && waitFd(c.get(), POLLIN, deadline)) {
      ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    const bool hello = req.rfind("GET /hello ", 0) == 0 || req.rfind("HEAD /hello ", 0) == 0;
    const std::string resp = hello ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                   : "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    // Count before answering: whoever reads the answer may look at served().
    if (hello) served_.fetch_add(1);
    (void)!::send(c.get(), resp.data(), resp.size(), MSG_NOSIGNAL);
  }
}

int HealthReport::unreachableNodes() const {
  int n = 0;
  for (const auto& node : nodes)
    if (!node.host.reachable()) ++n;
  return n;
}

int HealthReport::unreachableHealthEndpoints() const {
  int n = 0;
  for (const auto& node : nodes)
    if (node.endpoint && !node.endpoint->reachable()) ++n;
  return n;
}

int HealthReport::healthyNodes() const {
  int n = 0;
  for (const auto& node : nodes)
    if (node.host.reachable() && (!node.endpoint || node.endpoint->reachable())) ++n;
  return n;
}

HealthChecker::HealthChecker(Targets targets, OnReport on_report, std::chrono::seconds interval,
                             std::chrono::milliseconds probe_timeout)
    : targets_(std::move(targets)), on_report_(std::move(on_report)), interval_(interval), timeout_(probe_timeout) {}

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::start() { thread_ = std::thread([this] { loop(); }); }

void HealthChecker::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

HealthReport HealthChecker::probeNow() {
  HealthReport report;
  report.probe_time = std::chrono::system_clock::now();
  report.interval = interval_;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& t : targets_()) {
    NodeStatus st;
    st.name = t.name;
    st.local = t.name == "localhost";
    st.host.address = ipString(t.host_ip_be);
    st.host.icmp = probeIcmp(t.host_ip_be, timeout_);
    st.host.http = probeHttp(t.host_ip_be, kHealthPort, timeout_);
    if (t.health_ip_be != 0) {
      PathStatus ep;
      ep.address = ipString(t.health_ip_be);
      ep.icmp = probeIcmp(t.health_ip_be, timeout_);
      ep.http = probeHttp(t.health_ip_be, kHealthPort, timeout_);
      st.endpoint = ep;
    }
    report.nodes.push_back(std::move(st));
  }
  report.round_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  {
    std::lock_guard lk(mu_);
    last_ = report;
  }
  if (on_report_) on_report_(report);
  return report;
}

std::optional<HealthReport> HealthChecker::last() const {
  std::lock_guard lk(mu_);
  return last_;
}

void HealthChecker::loop() {
  for (;;) {
    probeNow();
    std::unique_lock lk(mu_);
    if (cv_.wait_for(lk, interval_, [this] { return stopping_; })) return;
  }
}

}  // namespace membrane::health
