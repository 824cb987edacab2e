#include "src/proxy/fuzz/reference_framer.h"

#include <gtest/gtest.h>

namespace membrane::proxy {
namespace {

FrameResult frame(std::string_view s, std::vector<FramedRequest>* out) {
  std::string why;
  return frameRequests(s, out, &why);
}

TEST(ReferenceFramer, FramesPipelinedRequestsWithBothBodyKinds) {
  const std::string a = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string b_head = "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string b_body = "3;x=\"y\"\r\nabc\r\n0\r\nT: 1\r\n\r\n";
  const std::string c_head = "PUT /c HTTP/1.0\r\nContent-Length: 5\r\n\r\n";
  std::vector<FramedRequest> got;
  const std::string stream = a + b_head + b_body + c_head + "hello";  // heads point into it
  ASSERT_EQ(frame(stream, &got), FrameResult::Complete);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].head, a);
  EXPECT_EQ(got[0].body_raw, 0u);
  EXPECT_EQ(got[1].head, b_head);
  EXPECT_EQ(got[1].body_raw, b_body.size());
  EXPECT_EQ(got[2].body_raw, 5u);
  const std::string cut = a + c_head + "hel";
  EXPECT_EQ(frame(cut, &got), FrameResult::Incomplete);
  EXPECT_EQ(got.size(), 1u);
}

TEST(ReferenceFramer, RefusesWhatRfc9112Refuses) {
  std::vector<FramedRequest> got;
  for (const char* bad : {
           "GET / HTTP/1.1\nHost: h\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
           "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
           "GET  / HTTP/1.1\r\n\r\n",
           "GET / HTTP/2.0\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
           "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\nabc\r\n0\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
       }) {
    EXPECT_EQ(frame(bad, &got), FrameResult::Invalid) << bad;
  }
}

}  // namespace
}  // namespace membrane::proxy
