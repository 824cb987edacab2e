// loadgen_core.h: the pure parts of bench/l7/loadgen (no sockets, no clocks), unit-tested by
// loadgen_core_test.cc: the open-loop schedule, sorted-sample percentiles, a URL parser and an
// incremental HTTP/1.1 response framer.
//
// Why open loop: a closed-loop generator (wrk) sends the next request only when the previous
// answer arrived, so a stall delays the requests that should have been sent during it and they
// are never measured as slow ("coordinated omission"). Here request i is *intended* at
// start + i / rate whatever happens, and its latency is measured from that intended time.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace membrane::bench {

// Fixed-rate schedule: request i (0-based) is intended at intendedNs(i) ns after the start.
// Exact integer arithmetic (i * 1e9 / rate), so no drift accumulates over millions of requests.
// Contract: rate_per_s >= 1, count = the bounded total number of requests (rate * seconds).
class Schedule {
 public:
  Schedule(uint64_t rate_per_s, uint64_t count) : rate_(rate_per_s), count_(count) {}
  uint64_t count() const { return count_; }
  uint64_t intendedNs(uint64_t i) const {
    // 128-bit intermediate: i * 1e9 overflows 64 bits past ~1.8e10 requests; cheap insurance.
    return static_cast<uint64_t>(static_cast<unsigned __int128>(i) * 1000000000ULL / rate_);
  }
  // How many requests are due at `elapsed_ns` after the start (those with intendedNs(i) <= elapsed),
  // capped at count(). Monotonic in elapsed_ns.
  uint64_t dueBy(uint64_t elapsed_ns) const {
    uint64_t n = static_cast<uint64_t>(static_cast<unsigned __int128>(elapsed_ns) * rate_ / 1000000000ULL) + 1;
    // Integer division can round the boundary either way; correct it against intendedNs.
    while (n > 0 && intendedNs(n - 1) > elapsed_ns) --n;
    while (n < count_ && intendedNs(n) <= elapsed_ns) ++n;
    return std::min(n, count_);
  }

 private:
  uint64_t rate_;
  uint64_t count_;
};

// Nearest-rank percentile of `sorted` (ascending): the smallest sample such that at least q of
// all samples are <= it (q in [0,1]). Empty input -> 0. Exact, no histogram bucketing error.
inline uint64_t percentile(const std::vector<uint64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  if (q <= 0) return sorted.front();
  if (q >= 1) return sorted.back();
  // rank = ceil(q * n), 1-based; computed in integers of 1e-6 to avoid 0.99 * 100 = 98.99999.
  uint64_t n = sorted.size();
  uint64_t qm = static_cast<uint64_t>(q * 1000000.0 + 0.5);
  uint64_t rank = (qm * n + 999999) / 1000000;
  if (rank < 1) rank = 1;
  return sorted[std::min(rank, n) - 1];
}

struct Url {
  std::string host;  // IPv4 literal or name as given
  uint16_t port = 80;
  std::string path = "/";
};

// Parses "http://HOST[:PORT][/PATH]". Returns nullopt for anything else (https, no host, bad port).
inline std::optional<Url> parseUrl(std::string_view s) {
  constexpr std::string_view kScheme = "http://";
  if (s.substr(0, kScheme.size()) != kScheme) return std::nullopt;
  s.remove_prefix(kScheme.size());
  Url u;
  size_t slash = s.find('/');
  std::string_view hostport = s.substr(0, slash);
  if (slash != std::string_view::npos) u.path = std::string(s.substr(slash));
  size_t colon = hostport.rfind(':');
  std::string_view host = hostport.substr(0, colon);
  if (host.empty()) return std::nullopt;
  u.host = std::string(host);
  if (colon != std::string_view::npos) {
    std::string_view p = hostport.substr(colon + 1);
    if (p.empty() || p.size() > 5) return std::nullopt;
    uint32_t v = 0;
    for (char c : p) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    if (v == 0 || v > 65535) return std::nullopt;
    u.port = static_cast<uint16_t>(v);
  }
  return u;
}

// Incremental framer for HTTP/1.1 responses on a keep-alive connection (one request in
// flight at a time). Feed it bytes as they arrive; it reports when one full response (status
// line + headers + Content-Length body, or chunked body) has been received. Bodies are skipped,
// not stored. Responses without a length (read until close) are reported as an error: the
// benchmark needs keep-alive.
class ResponseFramer {
 public:
  enum class State { Incomplete, Complete, Error };

  // Consumes bytes from `data` (all of them unless Complete/Error is returned: then `*used` says
  // how many belong to this response). After Complete, status() and keepAlive() describe it;
  // call reset() before the next response.
  State feed(const char* data, size_t len, size_t* used) {
    size_t i = 0;
    while (i < len) {
      if (phase_ == Phase::Head) {
        head_.push_back(data[i++]);
        if (head_.size() > kMaxHead) return fail("response head over 16 KiB", i, used);
        if (head_.size() >= 4 && head_.compare(head_.size() - 4, 4, "\r\n\r\n") == 0) {
          if (!parseHead()) return fail(error_, i, used);
          if (body_left_ == 0 && !chunked_) return done(i, used);
        }
      } else if (phase_ == Phase::Body) {
        size_t take = std::min<uint64_t>(body_left_, len - i);
        i += take;
        body_left_ -= take;
        if (body_left_ == 0) {
          if (!chunked_) return done(i, used);
          phase_ = Phase::ChunkCrlf;
          line_.clear();
        }
      } else {  // ChunkSize / ChunkCrlf / Trailer: line-oriented
        char c = data[i++];
        line_.push_back(c);
        if (line_.size() > 1024) return fail("chunk line over 1 KiB", i, used);
        if (line_.size() < 2 || line_.compare(line_.size() - 2, 2, "\r\n") != 0) continue;
        std::string l = line_.substr(0, line_.size() - 2);
        line_.clear();
        if (phase_ == Phase::ChunkCrlf) {
          if (!l.empty()) return fail("missing CRLF after chunk", i, used);
          phase_ = Phase::ChunkSize;
        } else if (phase_ == Phase::ChunkSize) {
          char* end = nullptr;
          unsigned long long n = std::strtoull(l.c_str(), &end, 16);
          if (end == l.c_str()) return fail("bad chunk size", i, used);
          if (n == 0) {
            phase_ = Phase::Trailer;
          } else {
            body_left_ = n;
            phase_ = Phase::Body;
          }
        } else if (l.empty()) {  // Trailer section ends with an empty line
          return done(i, used);
        }
      }
    }
    *used = len;
    return State::Incomplete;
  }

  int status() const { return status_; }
  bool keepAlive() const { return keep_alive_; }
  const std::string& error() const { return error_; }
  void reset() { *this = ResponseFramer(); }

 private:
  enum class Phase { Head, Body, ChunkSize, ChunkCrlf, Trailer };
  static constexpr size_t kMaxHead = 16384;

  State done(size_t i, size_t* used) {
    *used = i;
    return State::Complete;
  }
  State fail(std::string why, size_t i, size_t* used) {
    error_ = std::move(why);
    *used = i;
    return State::Error;
  }
  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  bool parseHead() {
    // "HTTP/1.x SSS reason"
    if (head_.compare(0, 7, "HTTP/1.") != 0 || head_.size() < 12 || head_[8] != ' ') {
      error_ = "not an HTTP/1.x status line";
      return false;
    }
    bool http10 = head_[7] == '0';
    status_ = 0;
    for (int k = 9; k < 12; ++k) {
      if (head_[k] < '0' || head_[k] > '9') {
        error_ = "bad status code";
        return false;
      }
      status_ = status_ * 10 + (head_[k] - '0');
    }
    keep_alive_ = !http10;
    bool have_len = false;
    size_t pos = head_.find("\r\n") + 2;
    while (pos < head_.size() - 2) {
      size_t eol = head_.find("\r\n", pos);
      std::string line = head_.substr(pos, eol - pos);
      pos = eol + 2;
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = lower(line.substr(0, colon));
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      std::string lv = lower(value);
      if (name == "content-length") {
        char* end = nullptr;
        body_left_ = std::strtoull(value.c_str(), &end, 10);
        if (end == value.c_str()) {
          error_ = "bad Content-Length";
          return false;
        }
        have_len = true;
      } else if (name == "transfer-encoding" && lv.find("chunked") != std::string::npos) {
        chunked_ = true;
      } else if (name == "connection") {
        if (lv.find("close") != std::string::npos) keep_alive_ = false;
        if (lv.find("keep-alive") != std::string::npos) keep_alive_ = true;
      }
    }
    bool no_body = status_ == 204 || status_ == 304 || (status_ >= 100 && status_ < 200);
    if (no_body) {
      body_left_ = 0;
      chunked_ = false;
    } else if (chunked_) {
      body_left_ = 0;
      phase_ = Phase::ChunkSize;
      return true;
    } else if (!have_len) {
      error_ = "response without Content-Length or chunked encoding (read-until-close is not supported)";
      return false;
    }
    phase_ = Phase::Body;
    return true;
  }

  Phase phase_ = Phase::Head;
  std::string head_;
  std::string line_;
  uint64_t body_left_ = 0;
  bool chunked_ = false;
  bool keep_alive_ = true;
  int status_ = 0;
  std::string error_;
};

}  // namespace membrane::bench
