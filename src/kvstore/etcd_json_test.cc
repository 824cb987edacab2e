#include "src/kvstore/etcd_json.h"

#include <gtest/gtest.h>

#include <random>

#include "src/kvstore/etcd_backend.h"

namespace membrane::kvstore::etcdjson {
namespace {

TEST(Base64, RoundTripsEveryLength) {
  EXPECT_EQ(base64Encode("foo"), "Zm9v");
  EXPECT_EQ(base64Encode("fo"), "Zm8=");
  EXPECT_EQ(base64Encode("f"), "Zg==");
  EXPECT_EQ(base64Encode(""), "");
  std::string all;
  for (int i = 0; i < 256; i++) all.push_back(static_cast<char>(i));
  for (size_t n = 0; n <= all.size(); n += 37) EXPECT_EQ(base64Decode(base64Encode(all.substr(0, n))).value(), all.substr(0, n));
  EXPECT_EQ(base64Decode("Zm8").value(), "fo");  // padding optional
  EXPECT_FALSE(base64Decode("Zm9v!").ok());
  EXPECT_FALSE(base64Decode("Z").ok());
}

// Captured from etcd 3.4.23's gateway (curl against /v3/kv/range).
TEST(EtcdJson, ParsesARangeWithInt64Strings) {
  auto r = parseRange(
      R"({"header":{"cluster_id":"7801232528081817440","member_id":"13458989633860879742","revision":"7","raft_term":"2"},)"
      R"("kvs":[{"key":"Zm9v","create_revision":"6","mod_revision":"6","version":"1","value":"MQ==","lease":"5007618273201851925"}],"count":"1"})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->revision, 7);
  ASSERT_EQ(r->kvs.size(), 1u);
  EXPECT_EQ(r->kvs[0], (KeyValue{"foo", "1", 6, 6, 1, 5007618273201851925}));
  // An empty range has neither kvs nor count.
  auto empty = parseRange(R"({"header":{"revision":"2"}})");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->kvs.empty());
}

TEST(EtcdJson, ParsesTxnBothWays) {
  auto won = parseTxn(R"({"header":{"revision":"6"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"6"}}}]})");
  ASSERT_TRUE(won.ok());
  EXPECT_TRUE(won->succeeded);
  EXPECT_EQ(won->gets.size(), 1u);
  EXPECT_FALSE(won->gets[0].has_value());
  // A failed txn has no "succeeded" field at all.
  auto lost = parseTxn(
      R"({"header":{"revision":"6"},"responses":[{"response_range":{"header":{"revision":"6"},"kvs":[{"key":"Zm9v","create_revision":"6","mod_revision":"6","version":"1","value":"MQ=="}],"count":"1"}}]})");
  ASSERT_TRUE(lost.ok());
  EXPECT_FALSE(lost->succeeded);
  ASSERT_TRUE(lost->gets[0].has_value());
  EXPECT_EQ(lost->gets[0]->value, "1");
}

TEST(EtcdJson, TxnRequestUsesProtoNamesAndBase64) {
  Txn t;
  t.compares.push_back({Compare::Target::CreateRevision, Compare::Op::Equal, "foo", false, 0, {}});
  t.compares.push_back({Compare::Target::Version, Compare::Op::Equal, "v/", true, 0, {}});
  t.success.push_back(TxnOp::put("foo", "1", 42));
  t.failure.push_back(TxnOp::get("foo"));
  EXPECT_EQ(txnRequest(t),
            R"({"compare":[{"create_revision":"0","key":"Zm9v","result":"EQUAL","target":"CREATE"},)"
            R"({"key":"di8=","range_end":"djA=","result":"EQUAL","target":"VERSION","version":"0"}],)"
            R"("failure":[{"request_range":{"key":"Zm9v"}}],)"
            R"("success":[{"request_put":{"key":"Zm9v","lease":"42","value":"MQ=="}}]})");
}

TEST(EtcdJson, LeaseAndLockAnswers) {
  auto g = parseLeaseGrant(R"({"header":{"revision":"2"},"ID":"5007618273201851912","TTL":"5"})");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->id, 5007618273201851912);
  EXPECT_EQ(g->ttl_seconds, 5);
  EXPECT_EQ(parseKeepAlive(R"({"result":{"header":{},"ID":"1","TTL":"2"}})").value(), 2);
  // An expired lease: the keepalive answer has no TTL.
  EXPECT_EQ(parseKeepAlive(R"({"result":{"header":{},"ID":"1"}})").error().code, ENOENT);
  EXPECT_EQ(parseLock(R"({"header":{},"key":"bG9jay80NTdlYTI0OWI4ZjM4ZTBh"})").value(), "lock/457ea249b8f38e0a");
}

TEST(EtcdJson, GatewayErrors) {
  auto e = parseError(
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  EXPECT_EQ(e.message, "etcdserver: requested lease not found");
  EXPECT_EQ(e.grpc_code, 5);
  EXPECT_EQ(e.errno_code, ENOENT);
  // The lock service reports the same as Unknown (2).
  EXPECT_EQ(parseError(R"({"message":"etcdserver: requested lease not found","code":2})").errno_code, ENOENT);
  EXPECT_EQ(parseError(R"({"message":"etcdserver: mvcc: required revision has been compacted","code":11})").errno_code,
            ERANGE);
  EXPECT_EQ(parseError("<html>bad gateway</html>").message, "<html>bad gateway</html>");
}

TEST(EtcdJson, MalformedAnswersAreErrorsNotCrashes) {
  for (const char* body : {"", "[]", "{", R"({"header":{"revision":"x"}})", R"({"header":{"revision":true}})",
                           R"({"header":{"revision":"1"},"kvs":{}})", R"({"header":{"revision":"1"},"kvs":[{"key":"%%"}]})",
                           R"({"header":{"revision":"1"},"kvs":[7]})"}) {
    EXPECT_FALSE(parseRange(body).ok()) << body;
  }
  EXPECT_FALSE(parseWatchMessage(R"({"result":{"events":[{"type":"BOGUS","kv":{}}]}})").ok());
  EXPECT_FALSE(parseWatchMessage(R"({"neither":1})").ok());
}

TEST(EtcdJson, WatchMessages) {
  auto created = parseWatchMessage(R"({"result":{"header":{"revision":"3"},"created":true}})").value();
  EXPECT_EQ(created.kind, WatchMessage::Kind::Created);
  auto ev = parseWatchMessage(
                R"({"result":{"header":{"revision":"5"},"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"4","version":"2","value":"YmF6"}},)"
                R"({"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"5"}}]}})")
                .value();
  ASSERT_EQ(ev.kind, WatchMessage::Kind::Events);
  EXPECT_EQ(ev.revision, 5);
  ASSERT_EQ(ev.events.size(), 2u);
  EXPECT_EQ(ev.events[0].type, Event::Type::Put);
  EXPECT_EQ(ev.events[0].kv.value, "baz");
  EXPECT_EQ(ev.events[1].type, Event::Type::Delete);
  EXPECT_EQ(ev.events[1].kv.mod_revision, 5);
  auto compacted =
      parseWatchMessage(R"({"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"4"}})").value();
  EXPECT_EQ(compacted.kind, WatchMessage::Kind::Compacted);
  EXPECT_EQ(compacted.compact_revision, 4);
  auto err = parseWatchMessage(R"({"error":{"grpc_code":14,"http_code":503,"message":"no leader"}})").value();
  EXPECT_EQ(err.kind, WatchMessage::Kind::Error);
  EXPECT_EQ(err.reason, "no leader");
}

// Whatever bytes arrive (truncated, mutated or random answers), the parsers
// and the framer return values or errors: no exception, no crash.
TEST(EtcdJson, ArbitraryBytesNeverThrow) {
  const std::vector<std::string> seeds = {
      R"({"result":{"header":{"revision":"5"},"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"5"}}]}})",
      R"({"header":{"revision":"7"},"kvs":[{"key":"Zm9v","create_revision":"6","value":"MQ=="}],"more":true})",
      R"({"header":{"revision":"6"},"responses":[{"response_range":{"kvs":[{"key":"Zm9v"}]}}]})",
      R"({"result":{"ID":"1","TTL":"2"}})", R"({"error":"x","message":"y","code":5})"};
  std::mt19937 rng(13);
  for (int i = 0; i < 2000; i++) {
    std::string s = seeds[i % seeds.size()];
    int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); e++) {
      size_t at = rng() % s.size();
      switch (rng() % 4) {
        case 0: s[at] = static_cast<char>(rng() % 256); break;
        case 1: s.erase(at, 1 + rng() % 8); break;
        case 2: s.insert(at, 1, "{}[]\\\"0:,"[rng() % 10]); break;
        case 3: s.resize(at); break;
      }
    }
    EXPECT_NO_THROW({
      (void)parseRange(s);
      (void)parseTxn(s);
      (void)parseWatchMessage(s);
      (void)parseKeepAlive(s);
      (void)parseLock(s);
      (void)parseLeaseGrant(s);
      (void)parseError(s);
      JsonObjectFramer f;
      std::vector<std::string> out;
      (void)f.feed(s, out);
    });
  }
}

// The stream as etcd sends it, fed one byte at a time, then in uneven
// chunks: the same objects come out, whole, in order.
TEST(JsonObjectFramer, FramesObjectsSplitAnywhere) {
  const std::string a = R"({"result":{"header":{"revision":"3"},"created":true}})";
  const std::string b = R"({"result":{"events":[{"kv":{"key":"e30=","value":"In0ie1wi"}}]}})";  // braces in strings
  const std::string c = R"({"s":"quote \" and backslash \\ then } brace"})";
  const std::string stream = a + "\n" + b + "\r\n  " + c + "\n";
  {
    JsonObjectFramer f;
    std::vector<std::string> out;
    for (char ch : stream) ASSERT_TRUE(f.feed(std::string_view(&ch, 1), out).ok());
    EXPECT_EQ(out, (std::vector<std::string>{a, b, c}));
    EXPECT_EQ(f.pending(), 0u);
  }
  for (size_t chunk : {2u, 7u, 64u, 1000u}) {
    JsonObjectFramer f;
    std::vector<std::string> out;
    for (size_t i = 0; i < stream.size(); i += chunk) ASSERT_TRUE(f.feed(std::string_view(stream).substr(i, chunk), out).ok());
    EXPECT_EQ(out, (std::vector<std::string>{a, b, c})) << "chunk " << chunk;
  }
}

TEST(JsonObjectFramer, GarbageAndOversizeBreakTheStream) {
  JsonObjectFramer f;
  std::vector<std::string> out;
  EXPECT_FALSE(f.feed("{}x", out).ok());
  EXPECT_EQ(out.size(), 1u);
  EXPECT_FALSE(f.feed("{}", out).ok());  // stays failed
  JsonObjectFramer small(8);
  EXPECT_FALSE(small.feed(R"({"a":"123456789"})", out).ok());
}

TEST(EtcdEndpoints, ValidatesAndNamesTheFlag) {
  EXPECT_EQ(parseEtcdEndpoints("http://127.0.0.1:2379").value(), std::vector<std::string>{"http://127.0.0.1:2379"});
  EXPECT_EQ(parseEtcdEndpoints("http://a:1/, http://[::1]:2").value(),
            (std::vector<std::string>{"http://a:1", "http://[::1]:2"}));
  struct Case {
    const char* value;
    const char* message;
  } cases[] = {
      {"", "--kvstore-opt etcd.endpoints: no endpoint given; want http://HOST:PORT[,http://HOST:PORT...]"},
      {"ftp://a:1", "--kvstore-opt etcd.endpoints: 'ftp://a:1': scheme 'ftp' is not supported; want "
                    "http://HOST:PORT[,http://HOST:PORT...]"},
      {"https://a:1", "--kvstore-opt etcd.endpoints: 'https://a:1': scheme 'https' is not supported yet (no TLS "
                      "options); want http://HOST:PORT[,http://HOST:PORT...]"},
      {"127.0.0.1:2379", "--kvstore-opt etcd.endpoints: '127.0.0.1:2379': no scheme; want "
                         "http://HOST:PORT[,http://HOST:PORT...]"},
      {"http://a", "--kvstore-opt etcd.endpoints: 'http://a': no port; want http://HOST:PORT[,http://HOST:PORT...]"},
      {"http://a:99999", "--kvstore-opt etcd.endpoints: 'http://a:99999': port '99999' is not a number in 1..65535; "
                         "want http://HOST:PORT[,http://HOST:PORT...]"},
      {"http://a:1/v3", "--kvstore-opt etcd.endpoints: 'http://a:1/v3': only HOST:PORT may follow the scheme; want "
                        "http://HOST:PORT[,http://HOST:PORT...]"},
      {"http://a:1,,http://b:2", "--kvstore-opt etcd.endpoints: 'http://a:1,,http://b:2': empty endpoint in the "
                                 "list; want http://HOST:PORT[,http://HOST:PORT...]"},
  };
  for (const auto& c : cases) {
    auto r = parseEtcdEndpoints(c.value);
    ASSERT_FALSE(r.ok()) << c.value;
    EXPECT_EQ(r.error().message, c.message);
    EXPECT_EQ(r.error().code, EINVAL);
  }
  EXPECT_EQ(EtcdBackend::create("ftp://x:1").error().code, EINVAL);
}

}  // namespace
}  // namespace membrane::kvstore::etcdjson
