// Unit tests of loadgen's pure parts: the fixed-rate schedule, nearest-rank percentiles, the
// URL parser and the incremental HTTP/1.1 response framer.
#include "loadgen_core.h"

#include <gtest/gtest.h>

#include <string>

namespace membrane::bench {
namespace {

TEST(Schedule, IntendedTimesAreExactMultiplesOfTheInterval) {
  Schedule s(4, 8);  // 4/s: every 250 ms
  EXPECT_EQ(s.intendedNs(0), 0u);
  EXPECT_EQ(s.intendedNs(1), 250000000u);
  EXPECT_EQ(s.intendedNs(7), 1750000000u);
  Schedule odd(3, 3);  // 333333333.33 ns: floor, no drift: i=3e6 -> exactly 1e6 s
  EXPECT_EQ(odd.intendedNs(1), 333333333u);
  EXPECT_EQ(odd.intendedNs(2), 666666666u);
  EXPECT_EQ(odd.intendedNs(3000000), 1000000000000000u);
}

TEST(Schedule, DueByCountsRequestsWhoseTimeHasComeAndIsCapped) {
  Schedule s(4, 8);
  EXPECT_EQ(s.dueBy(0), 1u);  // request 0 is due at the start
  EXPECT_EQ(s.dueBy(249999999), 1u);
  EXPECT_EQ(s.dueBy(250000000), 2u);
  EXPECT_EQ(s.dueBy(1000000000), 5u);
  EXPECT_EQ(s.dueBy(1750000000), 8u);
  EXPECT_EQ(s.dueBy(99000000000ULL), 8u);  // never more than the bounded count
  Schedule odd(3, 100);
  EXPECT_EQ(odd.dueBy(333333332), 1u);
  EXPECT_EQ(odd.dueBy(333333333), 2u);
  EXPECT_EQ(odd.dueBy(666666666), 3u);
  EXPECT_EQ(odd.dueBy(1000000000), 4u);
}

TEST(Schedule, DueByMatchesIntendedNsAtHighRates) {
  Schedule s(27000, 27000 * 10);
  for (uint64_t i = 0; i < 270000; i += 997) {
    EXPECT_EQ(s.dueBy(s.intendedNs(i)), i + 1) << i;
    if (s.intendedNs(i) > 0) {
      EXPECT_EQ(s.dueBy(s.intendedNs(i) - 1), i) << i;
    }
  }
}

TEST(Percentile, NearestRank) {
  std::vector<uint64_t> v;
  for (uint64_t i = 1; i <= 100; ++i) v.push_back(i * 10);  // 10..1000
  EXPECT_EQ(percentile(v, 0.5), 500u);
  EXPECT_EQ(percentile(v, 0.9), 900u);
  EXPECT_EQ(percentile(v, 0.99), 990u);  // 0.99*100 must not round down to rank 98
  EXPECT_EQ(percentile(v, 0.999), 1000u);
  EXPECT_EQ(percentile(v, 1.0), 1000u);
  EXPECT_EQ(percentile(v, 0.0), 10u);
  EXPECT_EQ(percentile({}, 0.5), 0u);
  EXPECT_EQ(percentile({7}, 0.99), 7u);
  std::vector<uint64_t> t{1, 2, 3};
  EXPECT_EQ(percentile(t, 0.5), 2u);   // ceil(1.5) = rank 2
  EXPECT_EQ(percentile(t, 0.34), 2u);  // ceil(1.02) = rank 2
  EXPECT_EQ(percentile(t, 0.33), 1u);  // ceil(0.99) = rank 1
}

TEST(ParseUrl, AcceptsHttpHostPortPath) {
  auto u = parseUrl("http://10.1.2.3:8080/bench?x=1");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "10.1.2.3");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->path, "/bench?x=1");
  u = parseUrl("http://10.1.2.3");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->path, "/");
}

TEST(ParseUrl, RejectsOtherSchemesAndBadPorts) {
  EXPECT_FALSE(parseUrl("https://10.1.2.3/"));
  EXPECT_FALSE(parseUrl("10.1.2.3/"));
  EXPECT_FALSE(parseUrl("http:///x"));
  EXPECT_FALSE(parseUrl("http://h:0/"));
  EXPECT_FALSE(parseUrl("http://h:65536/"));
  EXPECT_FALSE(parseUrl("http://h:8a/"));
  EXPECT_FALSE(parseUrl("http://h:/"));
}

using S = ResponseFramer::State;

TEST(ResponseFramer, ContentLengthResponseFedByteByByte) {
  std::string r = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\n\r\nok";
  ResponseFramer f;
  for (size_t i = 0; i + 1 < r.size(); ++i) {
    size_t used = 0;
    ASSERT_EQ(f.feed(&r[i], 1, &used), S::Incomplete) << i;
    EXPECT_EQ(used, 1u);
  }
  size_t used = 0;
  ASSERT_EQ(f.feed(&r.back(), 1, &used), S::Complete);
  EXPECT_EQ(used, 1u);
  EXPECT_EQ(f.status(), 200);
  EXPECT_TRUE(f.keepAlive());
}

TEST(ResponseFramer, StopsAtTheEndOfOneResponse) {
  std::string r = "HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\n\r\nAccess denied\r\nHTTP/1.1 200";
  ResponseFramer f;
  size_t used = 0;
  ASSERT_EQ(f.feed(r.data(), r.size(), &used), S::Complete);
  EXPECT_EQ(used, r.find("HTTP/1.1 200"));
  EXPECT_EQ(f.status(), 403);
}

TEST(ResponseFramer, ChunkedAndConnectionClose) {
  std::string r =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "2\r\nok\r\na\r\n0123456789\r\n0\r\n\r\n";
  ResponseFramer f;
  size_t used = 0;
  ASSERT_EQ(f.feed(r.data(), r.size() - 1, &used), S::Incomplete);
  EXPECT_EQ(used, r.size() - 1);
  ASSERT_EQ(f.feed(r.data() + r.size() - 1, 1, &used), S::Complete);
  EXPECT_EQ(f.status(), 200);
  EXPECT_FALSE(f.keepAlive());
}

TEST(ResponseFramer, NoBodyStatusesAndReset) {
  std::string r = "HTTP/1.1 204 No Content\r\n\r\n";
  ResponseFramer f;
  size_t used = 0;
  ASSERT_EQ(f.feed(r.data(), r.size(), &used), S::Complete);
  EXPECT_EQ(f.status(), 204);
  f.reset();
  std::string r2 = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
  ASSERT_EQ(f.feed(r2.data(), r2.size(), &used), S::Complete);
  EXPECT_EQ(f.status(), 200);
  EXPECT_FALSE(f.keepAlive());  // HTTP/1.0 without keep-alive
}

TEST(ResponseFramer, ErrorsSayWhy) {
  ResponseFramer f;
  size_t used = 0;
  std::string r = "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n";
  ASSERT_EQ(f.feed(r.data(), r.size(), &used), S::Error);
  EXPECT_NE(f.error().find("Content-Length"), std::string::npos);
  f.reset();
  std::string g = "garbage here\r\n\r\n";
  ASSERT_EQ(f.feed(g.data(), g.size(), &used), S::Error);
  EXPECT_EQ(f.error(), "not an HTTP/1.x status line");
}

}  // namespace
}  // namespace membrane::bench
