#include "src/proxy/message_parser.h"

#include <gtest/gtest.h>

namespace membrane::proxy {
namespace {

using Ev = MessageParser::Event;

TEST(MessageParser, RequestStopsAtHeadersThenAtMessageEnd) {
  MessageParser p(MessageParser::Kind::Request, {});
  std::string in = "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
  auto s = p.execute(in.data(), in.size());
  EXPECT_EQ(s.event, Ev::HeadersComplete);
  EXPECT_EQ(s.consumed, in.find("abc"));
  EXPECT_EQ(p.method(), "POST");
  EXPECT_EQ(p.url(), "/a?b=1");
  EXPECT_EQ(p.host(), "x");
  EXPECT_EQ(p.headerCount(), 2u);
  EXPECT_TRUE(p.hasBody());
  size_t off = s.consumed;
  s = p.execute(in.data() + off, in.size() - off);
  EXPECT_EQ(s.event, Ev::MessageComplete);
  EXPECT_EQ(s.consumed, 3u);
  off += s.consumed;
  s = p.execute(in.data() + off, in.size() - off);
  EXPECT_EQ(s.event, Ev::HeadersComplete);
  EXPECT_EQ(p.method(), "GET");
  EXPECT_EQ(p.headerCount(), 0u);
  s = p.execute(in.data() + in.size(), 0);  // bodiless: completes with no more bytes
  EXPECT_EQ(s.event, Ev::MessageComplete);
}

TEST(MessageParser, ByteByByteSplitsGiveTheSameFields) {
  MessageParser p(MessageParser::Kind::Request, {});
  std::string in = "GET /long/path HTTP/1.1\r\nX-Long-Name: some value\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
  size_t i = 0;
  MessageParser::Step s{Ev::NeedMore, 0};
  for (; i < in.size(); ++i) {
    s = p.execute(in.data() + i, 1);
    if (s.event != Ev::NeedMore) break;
  }
  ASSERT_EQ(s.event, Ev::HeadersComplete);
  EXPECT_EQ(i, in.size() - 1);
  EXPECT_EQ(p.url(), "/long/path");
  ASSERT_EQ(p.headerCount(), 3u);
  EXPECT_EQ(p.headers()[0].name, "X-Long-Name");
  EXPECT_EQ(p.headers()[0].value, "some value");
  EXPECT_TRUE(p.expectContinue());
}

TEST(MessageParser, LimitsGive431AndGarbage400) {
  ParserLimits lim;
  lim.max_headers = 2;
  MessageParser p(MessageParser::Kind::Request, lim);
  std::string in = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
  EXPECT_EQ(p.execute(in.data(), in.size()).event, Ev::Error);
  EXPECT_EQ(p.errorStatus(), 431);
  MessageParser q(MessageParser::Kind::Request, {});
  std::string bad = "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
  EXPECT_EQ(q.execute(bad.data(), bad.size()).event, Ev::Error);
  EXPECT_EQ(q.errorStatus(), 400);
  MessageParser r(MessageParser::Kind::Request, {});
  std::string smuggle = "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
  EXPECT_EQ(r.execute(smuggle.data(), smuggle.size()).event, Ev::Error);
}

TEST(MessageParser, ResponsesInterimHeadUpgradeAndReadUntilClose) {
  MessageParser p(MessageParser::Kind::Response, {});
  std::string in = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
  auto s = p.execute(in.data(), in.size());
  EXPECT_EQ(s.event, Ev::MessageComplete);
  EXPECT_EQ(p.status(), 100);
  size_t off = s.consumed;
  p.setRequestHint(/*head=*/true, false);
  s = p.execute(in.data() + off, in.size() - off);
  EXPECT_EQ(s.event, Ev::MessageComplete);  // HEAD: Content-Length without a body
  EXPECT_EQ(p.status(), 200);
  p.setRequestHint(false, false);

  MessageParser u(MessageParser::Kind::Response, {});
  std::string up = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
  up += std::string("\x81\x00", 2);  // first frame bytes: not HTTP
  s = u.execute(up.data(), up.size());
  EXPECT_EQ(s.event, Ev::Upgrade);
  EXPECT_EQ(s.consumed, up.size() - 2);

  MessageParser c(MessageParser::Kind::Response, {});
  std::string close = "HTTP/1.0 200 OK\r\n\r\nbody until close";
  s = c.execute(close.data(), close.size());
  EXPECT_EQ(s.event, Ev::NeedMore);
  EXPECT_EQ(c.finish().event, Ev::MessageComplete);
  EXPECT_FALSE(c.keepAlive());

  MessageParser t(MessageParser::Kind::Response, {});
  std::string cut = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
  t.execute(cut.data(), cut.size());
  EXPECT_EQ(t.finish().event, Ev::Error);
}

}  // namespace
}  // namespace membrane::proxy
