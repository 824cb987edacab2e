#include "src/proxy/message_parser.h"

#include <gtest/gtest.h>

namespace membrane::proxy {
namespace {

using Ev = MessageParser::Event;

TEST(MessageParser, RequestStopsAtHeadersThenAtMessageEnd) {
  MessageParser p(MessageParser::Kind::Request, {});
  std::string in = "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\n";
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
  EXPECT_EQ(p.headerCount(), 1u);
  s = p.execute(in.data() + in.size(), 0);  // bodiless: completes with no more bytes
  EXPECT_EQ(s.event, Ev::MessageComplete);
}

TEST(MessageParser, ByteByByteSplitsGiveTheSameFields) {
  MessageParser p(MessageParser::Kind::Request, {});
  std::string in = "GET /long/path HTTP/1.0\r\nX-Long-Name: some value\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
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

// Each of these is framed differently by some server, or RFC 9112 says to
// reject it: the parser refuses it at the end of the head, before a verdict.
TEST(MessageParser, StrictRequestHeadsRefuseWhatServersFrameDifferently) {
  struct Case {
    const char* name;
    std::string in;
  };
  const std::string te = "Transfer-Encoding: chunked\r\n\r\n";
  const Case cases[] = {
      {"bare LF after chunk data", "POST / HTTP/1.1\r\nHost: a\r\n" + te + "3\r\nabc\nX0\r\n\r\n"},
      {"bytes after chunk data", "POST / HTTP/1.1\r\nHost: a\r\n" + te + "3\r\nabcXX0\r\n\r\n"},
      {"bare CR after chunk size", "POST / HTTP/1.1\r\nHost: a\r\n" + te + "3\rabc\r\n0\r\n\r\n"},
      {"bare CR ends the head", "GET / HTTP/1.1\r\nHost: a\r\n\rGET /admin HTTP/1.1\r\n\r\n"},
      {"bare LF ends a field", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n"},
      {"bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n"},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-Empire: no\r\n yes\r\n\r\n"},
      {"tab obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"},
      {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"},
      {"two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
      {"no Host on 1.1", "GET / HTTP/1.1\r\nX: y\r\n\r\n"},
      {"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"},
      {"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"},
      {"two equal Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"},
      {"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx"},
      {"CL plus sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx"},
      {"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n" + te + "0\r\n\r\n"},
      {"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
      {"TE chunked, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"},
      {"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"},
      {"TE twice", "POST / HTTP/1.1\r\nHost: a\r\n" "Transfer-Encoding: chunked\r\n" + te + "0\r\n\r\n"},
      {"TE on HTTP/1.0", "POST / HTTP/1.0\r\n" + te + "0\r\n\r\n"},
      {"TE with vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0b" "chunked\r\n\r\n0\r\n\r\n"},
      {"chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\n" + te + "10000000000000003\r\nabc\r\n0\r\n\r\n"},
      {"bad chunk extension", "POST / HTTP/1.1\r\nHost: a\r\n" + te + "3;\r\nabc\r\n0\r\n\r\n"},
      {"NUL in a value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a") + '\0' + "b\r\n\r\n"},
      {"DEL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f" "b\r\n\r\n"},
      {"lowercase method", "get / HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"unknown method", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"HTTP/0.9 version", "GET / HTTP/0.9\r\nHost: a\r\n\r\n"},
      {"HTTP/1.2 version", "GET / HTTP/1.2\r\nHost: a\r\n\r\n"},
      {"tab in the target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"non-ASCII target", "GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"fragment", "GET /public#/../admin HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"CONNECT", "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n"},
      {"asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"absolute-form other host", "GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"escaped slash", "GET /public%2F..%2Fadmin HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"dot segment parameter", "GET /public/..;/admin HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"bare LF before the request", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
  };
  for (const Case& c : cases) {
    MessageParser p(MessageParser::Kind::Request, {});
    auto s = p.execute(c.in.data(), c.in.size());
    if (s.event == Ev::HeadersComplete) s = p.execute(c.in.data() + s.consumed, c.in.size() - s.consumed);
    EXPECT_EQ(s.event, Ev::Error) << c.name;
    EXPECT_EQ(p.errorStatus(), 400) << c.name;
    EXPECT_FALSE(p.errorReason().empty()) << c.name;
  }
}

// The head is refused before HeadersComplete is reported: a caller never
// sees a verdict-ready request it then has to take back.
TEST(MessageParser, RefusedHeadNeverReachesHeadersComplete) {
  MessageParser p(MessageParser::Kind::Request, {});
  std::string in = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
  for (size_t i = 0; i < in.size(); ++i) {
    auto s = p.execute(in.data() + i, 1);
    ASSERT_NE(s.event, Ev::HeadersComplete);
    if (s.event == Ev::Error) {
      EXPECT_EQ(i, in.size() - 1);
      EXPECT_EQ(p.errorReason(), "more than one Host field");
      return;
    }
  }
  FAIL() << "no error";
}

TEST(MessageParser, SerializedHeadCarriesTheNormalisedTargetAndTrimmedFields) {
  MessageParser p(MessageParser::Kind::Request, {});
  std::string in =
      "\r\nGET /public/%2e%2e//admin/./x?q=/../1 HTTP/1.1\r\nHost:  a.example:80 \r\nX-Empire:\tno\t\r\n"
      "x-empire: yes\r\nEmpty:\r\n\r\n";
  auto s = p.execute(in.data(), in.size());
  ASSERT_EQ(s.event, Ev::HeadersComplete) << p.errorReason();
  EXPECT_EQ(s.consumed, in.size());
  EXPECT_EQ(p.url(), "/public/%2e%2e//admin/./x?q=/../1");
  EXPECT_EQ(p.target(), "/admin/x?q=/../1");
  EXPECT_EQ(p.host(), "a.example:80");
  std::string head;
  p.serializeHead(&head);
  EXPECT_EQ(head,
            "GET /admin/x?q=/../1 HTTP/1.1\r\nHost: a.example:80\r\nX-Empire: no\r\nx-empire: yes\r\nEmpty: \r\n\r\n");

  MessageParser a(MessageParser::Kind::Request, {});
  std::string abs = "GET http://a.example/x/../y HTTP/1.0\r\nHost: A.example\r\n\r\n";
  s = a.execute(abs.data(), abs.size());
  ASSERT_EQ(s.event, Ev::HeadersComplete) << a.errorReason();
  EXPECT_EQ(a.target(), "/y");
  a.serializeHead(&head);
  EXPECT_EQ(head, "GET http://a.example/y HTTP/1.0\r\nHost: A.example\r\n\r\n");

  MessageParser h(MessageParser::Kind::Request, {});
  std::string ten = "GET / HTTP/1.0\r\n\r\n";  // HTTP/1.0 without Host is fine
  EXPECT_EQ(h.execute(ten.data(), ten.size()).event, Ev::HeadersComplete);
}

TEST(MessageParser, PipelinedHeadsAreCheckedEachOnItsOwn) {
  MessageParser p(MessageParser::Kind::Request, {});
  std::string in = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n";
  auto s = p.execute(in.data(), in.size());
  ASSERT_EQ(s.event, Ev::HeadersComplete);
  size_t off = s.consumed;
  s = p.execute(in.data() + off, 0);
  ASSERT_EQ(s.event, Ev::MessageComplete);
  s = p.execute(in.data() + off, in.size() - off);
  EXPECT_EQ(s.event, Ev::Error);
  EXPECT_EQ(p.errorReason(), "more than one Host field");
}

TEST(MessageParser, WhitespaceFloodBetweenRequestsIsBounded) {
  ParserLimits lim;
  lim.max_header_bytes = 64;
  MessageParser p(MessageParser::Kind::Request, lim);
  std::string crlf(100000, '\r');
  for (size_t i = 1; i < crlf.size(); i += 2) crlf[i] = '\n';
  EXPECT_EQ(p.execute(crlf.data(), crlf.size()).event, Ev::NeedMore);  // empty lines: dropped, not held
  std::string ows = "GET / HTTP/1.1\r\nHost: a\r\nX:" + std::string(2000, ' ') + "v\r\n\r\n";
  EXPECT_EQ(p.execute(ows.data(), ows.size()).event, Ev::Error);
  EXPECT_EQ(p.errorStatus(), 431);
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

TEST(MessageParser, SerializeHeadAppliesEditsInOrder) {
  MessageParser p(MessageParser::Kind::Request, {});
  std::string in = "GET /a HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\nx-a: 3\r\n\r\n";
  ASSERT_EQ(p.execute(in.data(), in.size()).event, Ev::HeadersComplete);
  HeaderMatch add_a{"X-A", "new", Mismatch::Add}, del_a{"x-a", "z", Mismatch::Delete},
      rep_b{"X-B", "two", Mismatch::Replace}, add_c{"X-C", "c", Mismatch::Add};
  std::string head;
  std::vector<const HeaderMatch*> edits{&add_a};
  p.serializeHead(&head, edits);
  EXPECT_EQ(head, "GET /a HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\nx-a: 3\r\nX-A: new\r\n\r\n");
  edits = {&add_a, &del_a, &rep_b, &add_c};  // the DELETE also drops the earlier ADD
  p.serializeHead(&head, edits);
  EXPECT_EQ(head, "GET /a HTTP/1.1\r\nHost: a\r\nX-B: two\r\nX-C: c\r\n\r\n");
  edits = {&del_a, &add_a};  // an ADD after the DELETE stays
  p.serializeHead(&head, edits);
  EXPECT_EQ(head, "GET /a HTTP/1.1\r\nHost: a\r\nX-B: 2\r\nX-A: new\r\n\r\n");
}

// llhttp (strict) lets a bare LF end the trailer section right after the last
// chunk; a server that wants CRLF frames the stream differently. Found by the
// differential fuzzer (corpus v2_regress_trailer_bare_lf).
TEST(MessageParser, TrailerSectionLinesNeedCrlf) {
  const std::string head = "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  struct Case {
    std::string body;
    const char* error;  // nullptr: complete
  };
  for (const Case& c : {Case{"4\r\nbody\r\n0\r\n\r\n", nullptr}, Case{"0\r\nX-T: 1\r\nY: 2\r\n\r\n", nullptr},
                        Case{"0;ext=1\r\n\r\n", nullptr}, Case{"4\r\nbody\r\n0\r\n\n", "bare LF in the trailer section"},
                        Case{"0\r\nX-T: 1\r\n\n", "bare LF in the trailer section"},
                        Case{"0\r\nX-T: 1\r\n fold\r\n\r\n", "obsolete line folding in the trailer section"}}) {
    // Whole, and one byte at a time: the verdict does not depend on how the bytes arrive.
    for (bool bytewise : {false, true}) {
      SCOPED_TRACE(c.body + (bytewise ? " (bytewise)" : ""));
      MessageParser p(MessageParser::Kind::Request, {});
      auto s = p.execute(head.data(), head.size());
      ASSERT_EQ(s.event, Ev::HeadersComplete);
      ASSERT_EQ(p.execute(head.data() + s.consumed, head.size() - s.consumed).event, Ev::NeedMore);
      Ev last = Ev::NeedMore;
      size_t off = 0, handed_out = 0;
      while (off < c.body.size() && last == Ev::NeedMore) {
        size_t n = bytewise ? 1 : c.body.size() - off;
        auto st = p.execute(c.body.data() + off, n);
        handed_out += st.consumed;
        if (st.event == Ev::NeedMore) {
          ASSERT_EQ(st.consumed, n);
        }
        off += st.consumed;
        last = st.event;
      }
      if (!c.error) {
        EXPECT_EQ(last, Ev::MessageComplete) << p.errorReason();
        EXPECT_EQ(handed_out, c.body.size());
      } else {
        EXPECT_EQ(last, Ev::Error);
        EXPECT_EQ(p.errorReason(), c.error);
        EXPECT_EQ(p.errorStatus(), 400);
        // The bad line is not handed out: what was is a prefix no server frames as complete.
        EXPECT_LT(handed_out, c.body.size());
        EXPECT_NE(c.body.find('\n', handed_out), std::string::npos);
      }
    }
  }
}

}  // namespace
}  // namespace membrane::proxy
