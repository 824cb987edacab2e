// etcd v3 JSON gateway encoding (etcd 3.4, /v3/...): request bodies and
// response parsing, with no I/O, so every rule is unit-tested.
// The gateway's rules (grpc-gateway over etcd's protos):
//   - `bytes` fields (key, value, range_end, lock names) are base64;
//   - int64 fields are JSON strings ("revision":"12"); we also accept numbers;
//   - fields at their default value are omitted (no "kvs" in an empty range,
//     no "succeeded" in a failed txn, no "type" in a PUT event, no "TTL" in a
//     keepalive of an expired lease);
//   - requests use the proto names; responses too (`response_range`,
//     `create_revision`), except the lease messages' `ID`/`TTL`;
//   - streaming calls (watch, keepalive) wrap each message in {"result":…};
//   - errors: a non-200 HTTP status with {"error","message","code"} (gRPC code),
//     or {"error":{…}} inside a stream.
// Parsers never throw: malformed input is an EINVAL Error naming the field.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "membrane/kvstore.h"
#include "membrane/result.h"

namespace membrane::kvstore::etcdjson {

std::string base64Encode(std::string_view bytes);
Result<std::string> base64Decode(std::string_view text);

// Request bodies.
// limit 0 = all; revision 0 = current (later pages of a list pin the first page's revision).
std::string rangeRequest(const std::string& key, const std::string& range_end, Consistency c, int64_t limit = 0,
                         int64_t revision = 0);
std::string putRequest(const std::string& key, const std::string& value, LeaseId lease);
std::string deleteRangeRequest(const std::string& key, const std::string& range_end);
std::string txnRequest(const Txn& t);
std::string leaseGrantRequest(int64_t ttl_seconds);
std::string leaseIdRequest(LeaseId lease);  // keepalive, revoke
std::string lockRequest(const std::string& name, LeaseId lease);
std::string unlockRequest(const std::string& owner_key);
std::string compactionRequest(int64_t revision);
std::string watchCreateRequest(const std::string& key, const std::string& range_end, int64_t start_revision);

// Responses (the body of an HTTP 200).
// `more` (optional): whether the range was cut by its limit.
Result<ListResult> parseRange(std::string_view body, bool* more = nullptr);
Result<int64_t> parseRevision(std::string_view body);       // put, compaction, unlock: header.revision
Result<int64_t> parseDeleted(std::string_view body);        // deleterange: "deleted"
Result<TxnResult> parseTxn(std::string_view body);
Result<Lease> parseLeaseGrant(std::string_view body);
Result<int64_t> parseKeepAlive(std::string_view body);      // TTL; ENOENT when expired
Result<std::string> parseLock(std::string_view body);       // owner key

// The gateway's error body {"error","message","code"}: "<message> (gRPC code N)",
// and the errno that code means for callers (NotFound -> ENOENT, ...).
struct GatewayError {
  std::string message;
  int grpc_code = 0;
  int errno_code = EIO;
};
GatewayError parseError(std::string_view body);
int errnoForGrpcCode(int grpc_code);

// Splits the watch stream into top-level JSON objects. The gateway writes one
// object per message, but HTTP chunking and TCP may split an object anywhere
// or put several in one read: objects are found by brace depth outside of
// strings (escapes honoured); whitespace between objects is skipped; anything
// else between objects, or an object over `max_object_bytes`, is an error
// (the stream is broken from then on).
class JsonObjectFramer {
 public:
  explicit JsonObjectFramer(size_t max_object_bytes = 64u << 20) : max_(max_object_bytes) {}
  // Appends the complete objects found in `bytes` to `out`.
  Status feed(std::string_view bytes, std::vector<std::string>& out);
  // Bytes of an object begun but not finished.
  size_t pending() const { return buf_.size(); }

 private:
  size_t max_;
  std::string buf_;
  int depth_ = 0;
  bool in_string_ = false;
  bool escape_ = false;
  bool failed_ = false;
};

// One message of the watch stream.
struct WatchMessage {
  enum class Kind { Created, Events, Progress, Compacted, Canceled, Error };
  Kind kind = Kind::Progress;
  std::vector<Event> events;
  int64_t revision = 0;          // header.revision
  int64_t compact_revision = 0;  // Compacted
  std::string reason;            // Canceled (cancel_reason), Error (message)
};
Result<WatchMessage> parseWatchMessage(std::string_view object);

}  // namespace membrane::kvstore::etcdjson
