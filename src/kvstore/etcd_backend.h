// EtcdBackend: kvstore::Backend on etcd 3.4's v3 JSON gateway (HTTP/1.1 POST
// /v3/..., libcurl). Why the gateway and not gRPC: docs/cluster.md.
//
// Endpoints: "http://HOST:PORT[,http://HOST:PORT...]" (the value of
// `--kvstore-opt etcd.endpoints`), validated by create(). A call goes to the
// endpoint that answered last; on a connection failure (refused, reset,
// unresolvable, nothing answered) it moves on to the next one within the
// same call; a timeout ends the call (ETIMEDOUT) and the next call starts at
// the next endpoint. Note that a write whose connection broke after it was
// sent may have been applied: put/delete are idempotent, and callers of
// txn() must re-read rather than assume (the allocator does).
//
// Unary calls reuse a pool of curl handles (keep-alive connections) and are
// bounded by `op_timeout`; lock() by its own timeout. Each watch owns one
// HTTP connection and one thread that reads the chunked stream of JSON
// messages and feeds the Watch queue; cancel()/destruction wakes it at once
// (curl_multi_wakeup). A watch does not fail over: a lost stream is Broken
// and the caller (kvstore::Reflector) re-lists, which does fail over.
// Known gap: a member that stops answering without closing the connection
// (SIGSTOP, partition) leaves a watch silent until TCP keepalive gives up.
//
// Thread-safety: all calls from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "membrane/kvstore.h"

namespace membrane::kvstore {

struct EtcdOptions {
  Millis op_timeout{5000};       // every unary call
  Millis connect_timeout{1000};  // TCP connect, per endpoint
  int64_t list_page_size = 1000; // keys per range request of a list (Cilium: 256)
};

// Parses and validates the endpoints flag value; errors name the flag
// ("--kvstore-opt etcd.endpoints: 'https://a:1': scheme 'https' is not
// supported; want http://HOST:PORT[,http://HOST:PORT...]"). Returns the
// normalised URLs ("http://host:port").
Result<std::vector<std::string>> parseEtcdEndpoints(std::string_view value);

class EtcdBackend final : public Backend {
 public:
  // Validates `endpoints` (see parseEtcdEndpoints); does not connect.
  static Result<std::unique_ptr<EtcdBackend>> create(std::string_view endpoints, EtcdOptions options = {});
  ~EtcdBackend() override;

  std::string describe() const override;
  const std::vector<std::string>& endpoints() const { return endpoints_; }

  struct Impl;  // curl handles; in the .cc so no curl header leaks out

 protected:
  Result<std::optional<KeyValue>> doGet(const std::string& key, Consistency c) override;
  Result<ListResult> doList(const std::string& prefix, Consistency c) override;
  Result<int64_t> doPut(const std::string& key, const std::string& value, LeaseId lease) override;
  Result<int64_t> doDeleteRange(const std::string& key, bool prefix) override;
  Result<TxnResult> doTxn(const Txn& t) override;
  Result<Lease> doGrantLease(int64_t ttl_seconds) override;
  Result<int64_t> doKeepAlive(LeaseId lease) override;
  Status doRevokeLease(LeaseId lease) override;
  Result<std::string> doLock(const std::string& name, LeaseId lease, Millis timeout) override;
  Status doUnlock(const std::string& owner_key) override;
  Result<std::unique_ptr<Watch>> doWatch(const std::string& prefix, int64_t from_revision) override;
  Status doCompact(int64_t revision) override;

 private:
  EtcdBackend(std::vector<std::string> endpoints, EtcdOptions options);
  // POSTs `body` to `path`, failing over between endpoints; returns the body
  // of an HTTP 200 or an error "<what>: etcd <endpoint>: HTTP <status>: <message>".
  Result<std::string> call(const char* path, const std::string& body, Millis timeout, const std::string& what);

  std::vector<std::string> endpoints_;
  EtcdOptions options_;
  std::atomic<size_t> current_{0};  // endpoint index to try first
  std::unique_ptr<Impl> impl_;
};

}  // namespace membrane::kvstore
