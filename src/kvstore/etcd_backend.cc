#include "src/kvstore/etcd_backend.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <charconv>
#include <mutex>
#include <thread>

#include "membrane/mutex.h"
#include "src/kvstore/etcd_json.h"
#include "src/kvstore/watch_queue.h"

namespace membrane::kvstore {

namespace {

constexpr std::string_view kFlag = "--kvstore-opt etcd.endpoints";
constexpr std::string_view kWant = "want http://HOST:PORT[,http://HOST:PORT...]";
// A unary answer larger than this is refused (a list is paged far below it).
constexpr size_t kMaxBody = 256u << 20;

struct CurlEasyDeleter {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;
struct CurlMultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
using CurlMulti = std::unique_ptr<CURLM, CurlMultiDeleter>;
struct CurlSlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;

// curl_global_init is not thread-safe; every backend calls this first.
void curlGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

CurlSlist jsonHeaders() {
  curl_slist* l = curl_slist_append(nullptr, "Content-Type: application/json");
  // No "Expect: 100-continue" round trip for larger bodies.
  l = curl_slist_append(l, "Expect:");
  return CurlSlist(l);
}

// Failures where nothing (or nothing usable) reached the endpoint: the next
// endpoint may do better.
bool isConnectionFailure(CURLcode rc) {
  return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_GOT_NOTHING ||
         rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR;
}

int errnoForCurl(CURLcode rc) {
  if (rc == CURLE_OPERATION_TIMEDOUT) return ETIMEDOUT;
  if (isConnectionFailure(rc)) return ECONNREFUSED;
  return EIO;
}

size_t appendBody(char* data, size_t size, size_t n, void* user) {
  auto* body = static_cast<std::string*>(user);
  if (body->size() + size * n > kMaxBody) return 0;  // aborts with CURLE_WRITE_ERROR
  body->append(data, size * n);
  return size * n;
}

// Options shared by unary calls and watches.
void setCommon(CURL* h, const std::string& url, const std::string& body, curl_slist* headers, Millis connect_timeout) {
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
  curl_easy_setopt(h, CURLOPT_POST, 1L);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for timeouts
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 10L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 5L);
}

std::string httpError(std::string_view endpoint, long status, std::string_view body, int* errno_out) {
  auto e = etcdjson::parseError(body);
  *errno_out = e.errno_code;
  return fmt::format("etcd {}: HTTP {}: {}{}", endpoint, status, e.message,
                     e.grpc_code != 0 ? fmt::format(" (gRPC code {})", e.grpc_code) : std::string());
}

}  // namespace

Result<std::vector<std::string>> parseEtcdEndpoints(std::string_view value) {
  std::vector<std::string> out;
  auto bad = [](std::string_view item, std::string_view why) {
    return Error::invalid(fmt::format("{}: '{}': {}; {}", kFlag, item, why, kWant));
  };
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    std::string_view item = value.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    start = comma == std::string_view::npos ? value.size() + 1 : comma + 1;
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) {
      if (value.empty()) return Error::invalid(fmt::format("{}: no endpoint given; {}", kFlag, kWant));
      return Error::invalid(fmt::format("{}: '{}': empty endpoint in the list; {}", kFlag, value, kWant));
    }
    size_t sep = item.find("://");
    if (sep == std::string_view::npos) return bad(item, "no scheme");
    std::string_view scheme = item.substr(0, sep);
    if (scheme != "http") {
      if (scheme == "https") return bad(item, "scheme 'https' is not supported yet (no TLS options)");
      return bad(item, fmt::format("scheme '{}' is not supported", scheme));
    }
    std::string_view rest = item.substr(sep + 3);
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    if (rest.find_first_of("/?#@") != std::string_view::npos) return bad(item, "only HOST:PORT may follow the scheme");
    std::string_view host, port;
    if (!rest.empty() && rest.front() == '[') {  // [v6]:port
      size_t close = rest.find(']');
      if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
        return bad(item, "IPv6 hosts are written [ADDR]:PORT");
      host = rest.substr(0, close + 1);
      port = rest.substr(close + 2);
    } else {
      size_t colon = rest.rfind(':');
      if (colon == std::string_view::npos) return bad(item, "no port");
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
    }
    if (host.empty() || (host.find(':') != std::string_view::npos && host.front() != '[')) return bad(item, "no host");
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p == 0 || p > 65535)
      return bad(item, fmt::format("port '{}' is not a number in 1..65535", port));
    out.push_back(fmt::format("http://{}:{}", host, p));
  }
  return out;
}

struct EtcdBackend::Impl {
  Mutex mu;
  std::vector<CurlEasy> idle GUARDED_BY(mu);  // handles keep their connection between calls
  CurlSlist headers = jsonHeaders();

  CurlEasy take() {
    {
      MutexLock l(mu);
      if (!idle.empty()) {
        CurlEasy h = std::move(idle.back());
        idle.pop_back();
        return h;
      }
    }
    return CurlEasy(curl_easy_init());
  }
  void give(CurlEasy h) {
    if (!h) return;
    MutexLock l(mu);
    if (idle.size() < 16) idle.push_back(std::move(h));
  }
};

EtcdBackend::EtcdBackend(std::vector<std::string> endpoints, EtcdOptions options)
    : endpoints_(std::move(endpoints)), options_(options), impl_(std::make_unique<Impl>()) {}

EtcdBackend::~EtcdBackend() = default;

Result<std::unique_ptr<EtcdBackend>> EtcdBackend::create(std::string_view endpoints, EtcdOptions options) {
  MB_ASSIGN(auto urls, parseEtcdEndpoints(endpoints));
  curlGlobalInit();
  return std::unique_ptr<EtcdBackend>(new EtcdBackend(std::move(urls), options));
}

std::string EtcdBackend::describe() const { return fmt::format("etcd {}", fmt::join(endpoints_, ",")); }

Result<std::string> EtcdBackend::call(const char* path, const std::string& body, Millis timeout,
                                      const std::string& what) {
  CurlEasy h = impl_->take();
  if (!h) return Error(ENOMEM, what + ": curl_easy_init failed");
  // The handle (and its kept-alive connection) goes back to the pool on every path.
  struct GiveBack {
    Impl& impl;
    CurlEasy& h;
    ~GiveBack() { impl.give(std::move(h)); }
  } give_back{*impl_, h};
  const size_t n = endpoints_.size();
  const size_t first = current_.load() % n;
  std::vector<std::string> failures;
  for (size_t i = 0; i < n; i++) {
    const size_t idx = (first + i) % n;
    const std::string& ep = endpoints_[idx];
    std::string response;
    curl_easy_reset(h.get());
    setCommon(h.get(), ep + path, body, impl_->headers.get(), options_.connect_timeout);
    curl_easy_setopt(h.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, appendBody);
    curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &response);
    CURLcode rc = curl_easy_perform(h.get());
    if (rc != CURLE_OK) {
      std::string msg = fmt::format("etcd {}: {}", ep, curl_easy_strerror(rc));
      if (isConnectionFailure(rc) && i + 1 < n) {
        failures.push_back(msg);
        continue;
      }
      // Next call starts elsewhere: this endpoint failed or hung.
      current_.store(idx + 1);
      failures.push_back(msg);
      return Error(errnoForCurl(rc), fmt::format("{}: {}", what, fmt::join(failures, "; ")));
    }
    long status = 0;
    curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &status);
    current_.store(status == 503 ? idx + 1 : idx);
    if (status != 200) {
      int code = EIO;
      std::string msg = httpError(ep, status, response, &code);
      // 503 = gRPC Unavailable (this member has no leader): another member may.
      if (status == 503 && i + 1 < n) {
        failures.push_back(msg);
        continue;
      }
      failures.push_back(msg);
      return Error(code, fmt::format("{}: {}", what, fmt::join(failures, "; ")));
    }
    return response;
  }
  return Error(ECONNREFUSED, fmt::format("{}: {}", what, fmt::join(failures, "; ")));
}

Result<std::optional<KeyValue>> EtcdBackend::doGet(const std::string& key, Consistency c) {
  std::string what = fmt::format("get '{}'", key);
  MB_ASSIGN(std::string body, call("/v3/kv/range", etcdjson::rangeRequest(key, "", c), options_.op_timeout, what));
  auto r = etcdjson::parseRange(body);
  if (!r.ok()) return r.error().wrap(what);
  if (r->kvs.empty()) return std::optional<KeyValue>();
  return std::optional<KeyValue>(std::move(r->kvs.front()));
}

Result<ListResult> EtcdBackend::doList(const std::string& prefix, Consistency c) {
  // Paged like Cilium's paginatedList: later pages pin the first page's
  // revision, so the result is one snapshot.
  std::string what = fmt::format("list '{}'", prefix);
  const std::string end = prefixEnd(prefix);
  ListResult out;
  std::string start = prefix;
  for (;;) {
    MB_ASSIGN(std::string body,
              call("/v3/kv/range", etcdjson::rangeRequest(start, end, c, options_.list_page_size, out.revision),
                   options_.op_timeout, what));
    bool more = false;
    auto page = etcdjson::parseRange(body, &more);
    if (!page.ok()) return page.error().wrap(what);
    if (out.revision == 0) out.revision = page->revision;
    for (auto& kv : page->kvs) out.kvs.push_back(std::move(kv));
    if (!more || page->kvs.empty()) return out;
    start = out.kvs.back().key + std::string(1, '\0');
  }
}

Result<int64_t> EtcdBackend::doPut(const std::string& key, const std::string& value, LeaseId lease) {
  std::string what = fmt::format("put '{}'", key);
  MB_ASSIGN(std::string body, call("/v3/kv/put", etcdjson::putRequest(key, value, lease), options_.op_timeout, what));
  auto r = etcdjson::parseRevision(body);
  if (!r.ok()) return r.error().wrap(what);
  return r;
}

Result<int64_t> EtcdBackend::doDeleteRange(const std::string& key, bool prefix) {
  std::string what = fmt::format("delete{} '{}'", prefix ? " prefix" : "", key);
  MB_ASSIGN(std::string body, call("/v3/kv/deleterange",
                                   etcdjson::deleteRangeRequest(key, prefix ? prefixEnd(key) : std::string()),
                                   options_.op_timeout, what));
  auto r = etcdjson::parseDeleted(body);
  if (!r.ok()) return r.error().wrap(what);
  return r;
}

Result<TxnResult> EtcdBackend::doTxn(const Txn& t) {
  std::string what = fmt::format("txn on '{}'", t.compares.empty() ? std::string() : t.compares.front().key);
  MB_ASSIGN(std::string body, call("/v3/kv/txn", etcdjson::txnRequest(t), options_.op_timeout, what));
  auto r = etcdjson::parseTxn(body);
  if (!r.ok()) return r.error().wrap(what);
  return r;
}

Result<Lease> EtcdBackend::doGrantLease(int64_t ttl_seconds) {
  std::string what = fmt::format("grant lease (TTL {} s)", ttl_seconds);
  MB_ASSIGN(std::string body, call("/v3/lease/grant", etcdjson::leaseGrantRequest(ttl_seconds), options_.op_timeout, what));
  auto r = etcdjson::parseLeaseGrant(body);
  if (!r.ok()) return r.error().wrap(what);
  return r;
}

Result<int64_t> EtcdBackend::doKeepAlive(LeaseId lease) {
  std::string what = fmt::format("keepalive lease {:x}", lease);
  MB_ASSIGN(std::string body, call("/v3/lease/keepalive", etcdjson::leaseIdRequest(lease), options_.op_timeout, what));
  auto r = etcdjson::parseKeepAlive(body);
  if (!r.ok()) return r.error().wrap(what);
  return r;
}

Status EtcdBackend::doRevokeLease(LeaseId lease) {
  std::string what = fmt::format("revoke lease {:x}", lease);
  MB_ASSIGN(std::string body, call("/v3/lease/revoke", etcdjson::leaseIdRequest(lease), options_.op_timeout, what));
  (void)body;
  return okStatus();
}

Result<std::string> EtcdBackend::doLock(const std::string& name, LeaseId lease, Millis timeout) {
  // /v3/lock/lock blocks until acquired; when our timeout closes the
  // connection, etcd cancels the wait and deletes the owner key it created.
  std::string what = fmt::format("lock '{}'", name);
  MB_ASSIGN(std::string body, call("/v3/lock/lock", etcdjson::lockRequest(name, lease), timeout, what));
  auto r = etcdjson::parseLock(body);
  if (!r.ok()) return r.error().wrap(what);
  return r;
}

Status EtcdBackend::doUnlock(const std::string& owner_key) {
  std::string what = fmt::format("unlock '{}'", owner_key);
  MB_ASSIGN(std::string body, call("/v3/lock/unlock", etcdjson::unlockRequest(owner_key), options_.op_timeout, what));
  (void)body;
  return okStatus();
}

Status EtcdBackend::doCompact(int64_t revision) {
  std::string what = fmt::format("compact at revision {}", revision);
  MB_ASSIGN(std::string body, call("/v3/kv/compaction", etcdjson::compactionRequest(revision), options_.op_timeout, what));
  (void)body;
  return okStatus();
}

// --- watch -------------------------------------------------------------------

namespace {

// One watch: an HTTP stream read by its own thread into a WatchQueue.
class EtcdWatch final : public Watch {
 public:
  EtcdWatch(std::vector<std::string> endpoints, size_t first, EtcdOptions options, std::string prefix,
            int64_t from_revision)
      : endpoints_(std::move(endpoints)),
        first_(first),
        options_(options),
        prefix_(std::move(prefix)),
        body_(etcdjson::watchCreateRequest(prefix_, prefixEnd(prefix_), from_revision)),
        multi_(curl_multi_init()) {
    // Everything run() reads is built before the thread starts.
    thread_ = std::thread([this] { run(); });
  }
  ~EtcdWatch() override {
    cancel();
    thread_.join();
  }
  WatchBatch next(Millis timeout) override { return queue_.next(timeout); }
  void cancel() override {
    queue_.cancel();
    curl_multi_wakeup(multi_.get());
  }

 private:
  struct Stream {
    EtcdWatch* self = nullptr;
    const std::string* endpoint = nullptr;
    CURL* handle = nullptr;
    long status = 0;          // HTTP status, read at the first bytes
    std::string error_body;   // the body of a non-200 answer
    etcdjson::JsonObjectFramer framer;
    bool received = false;    // any byte arrived: no failover after that
  };

  static size_t onBytes(char* data, size_t size, size_t n, void* user) {
    auto* s = static_cast<Stream*>(user);
    const size_t len = size * n;
    s->received = true;
    if (s->status == 0) curl_easy_getinfo(s->handle, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status != 200) {
      if (s->error_body.size() < 4096) s->error_body.append(data, std::min<size_t>(len, 4096));
      return len;
    }
    return s->self->consume(*s, std::string_view(data, len)) ? len : 0;
  }

  // Parses the bytes; false (abort the transfer) once the watch is finished.
  bool consume(Stream& s, std::string_view bytes) {
    std::vector<std::string> objects;
    Status framed = s.framer.feed(bytes, objects);
    for (const auto& o : objects) {
      auto m = etcdjson::parseWatchMessage(o);
      if (!m.ok()) return broken(*s.endpoint, m.error().message);
      switch (m->kind) {
        case etcdjson::WatchMessage::Kind::Created:
        case etcdjson::WatchMessage::Kind::Progress: break;
        case etcdjson::WatchMessage::Kind::Events: {
          WatchBatch b;
          b.kind = WatchBatch::Kind::Events;
          b.revision = m->revision;
          b.events = std::move(m->events);
          if (!queue_.push(std::move(b))) return false;
          break;
        }
        case etcdjson::WatchMessage::Kind::Compacted:
          queue_.push(WatchBatch{WatchBatch::Kind::Compacted, {}, m->revision, m->compact_revision,
                                 Error(ERANGE, fmt::format("watch '{}': etcd {}: revision compacted at {}", prefix_,
                                                           *s.endpoint, m->compact_revision))});
          return false;
        case etcdjson::WatchMessage::Kind::Canceled:
          return broken(*s.endpoint, fmt::format("watch canceled by etcd: {}", m->reason));
        case etcdjson::WatchMessage::Kind::Error: return broken(*s.endpoint, m->reason);
      }
    }
    if (!framed.ok()) return broken(*s.endpoint, framed.error().message);
    return !queue_.closed();
  }

  bool broken(const std::string& endpoint, const std::string& why) {
    queue_.push(WatchBatch{WatchBatch::Kind::Broken, {}, 0, 0,
                           Error(EIO, fmt::format("watch '{}': etcd {}: {}", prefix_, endpoint, why))});
    return false;
  }

  // Runs one stream on `endpoint` until it ends; returns the transfer's code.
  CURLcode stream(Stream& s) {
    CurlEasy h(curl_easy_init());
    if (!h) return CURLE_OUT_OF_MEMORY;
    s.handle = h.get();
    setCommon(h.get(), *s.endpoint + "/v3/watch", body_, headers_.get(), options_.connect_timeout);
    curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, onBytes);
    curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &s);
    curl_multi_add_handle(multi_.get(), h.get());
    CURLcode result = CURLE_OK;
    bool done = false;
    while (!done && !queue_.closed()) {
      int running = 0;
      if (curl_multi_perform(multi_.get(), &running) != CURLM_OK) {
        result = CURLE_RECV_ERROR;
        break;
      }
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi_.get(), &left)) {
        if (msg->msg == CURLMSG_DONE) {
          result = msg->data.result;
          done = true;
        }
      }
      // curl_multi_wakeup (cancel) interrupts the poll at once.
      if (!done) curl_multi_poll(multi_.get(), nullptr, 0, 1000, nullptr);
    }
    curl_multi_remove_handle(multi_.get(), h.get());
    return result;
  }

  void run() {
    std::vector<std::string> failures;
    for (size_t i = 0; i < endpoints_.size() && !queue_.closed(); i++) {
      Stream s;
      s.self = this;
      s.endpoint = &endpoints_[(first_ + i) % endpoints_.size()];
      CURLcode rc = stream(s);
      if (queue_.closed()) return;
      if (s.status != 0 && s.status != 200) {
        int code = EIO;
        broken(*s.endpoint, httpError(*s.endpoint, s.status, s.error_body, &code));
        return;
      }
      if (!s.received && isConnectionFailure(rc)) {
        failures.push_back(fmt::format("{}: {}", *s.endpoint, curl_easy_strerror(rc)));
        continue;
      }
      broken(*s.endpoint, rc == CURLE_OK ? std::string("stream ended") : std::string(curl_easy_strerror(rc)));
      return;
    }
    if (!queue_.closed())
      queue_.push(WatchBatch{WatchBatch::Kind::Broken, {}, 0, 0,
                             Error(ECONNREFUSED, fmt::format("watch '{}': no etcd endpoint reachable: {}", prefix_,
                                                             fmt::join(failures, "; ")))});
  }

  const std::vector<std::string> endpoints_;
  const size_t first_;
  const EtcdOptions options_;
  const std::string prefix_;
  const std::string body_;
  CurlSlist headers_ = jsonHeaders();
  CurlMulti multi_;
  WatchQueue queue_;
  std::thread thread_;  // last: starts after every member above exists
};

}  // namespace

Result<std::unique_ptr<Watch>> EtcdBackend::doWatch(const std::string& prefix, int64_t from_revision) {
  auto w = std::make_unique<EtcdWatch>(endpoints_, current_.load() % endpoints_.size(), options_, prefix,
                                       from_revision);
  return std::unique_ptr<Watch>(std::move(w));
}

}  // namespace membrane::kvstore
