// The L7 adversarial suite: raw-byte requests an attacker in a client pod
// would send, through the real path (tiefighter pod -> TPROXY -> membrane-proxy
// -> a deliberately lenient logging backend in the deathstar pod). For every
// vector: the status codes the client gets, in order; the exact deltas of the
// received/forwarded/denied/parse_errors counters; and, from the backend's
// log, that no denied request line ever reached it under any reading of the
// forwarded bytes (the backend frames as leniently as nginx: bare LF, TE
// substring, chunk data ending in LF). docs/l7.md, "Parsing and normalisation".
#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/agent_fixture.h"

namespace membrane::testing {
namespace {

// What the backend may serve, from org=empire, on port 8080. Everything a
// vector means to sneak through names "/admin" or "/secret".
const char* kBackendPolicy = R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "backend-l7"
  namespace: "{ns}"
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
      rules:
        http:
        - method: "GET"
          path: "/public/.*"
        - method: "HEAD"
          path: "/public/.*"
        - method: "POST"
          path: "/v1/request-landing"
        - method: "GET"
          path: "/headers"
          headers:
          - "X-Empire: yes"
        - method: "GET"
          path: "/edited"
          headerMatches:
          - name: X-Token
            value: t0k
            mismatch: REPLACE
)";

// Sends argv[2] (hex) to argv[1]:argv[3] (port, default 8080) on one connection, half-closes, reads to EOF/reset and
// prints the status codes of the responses in order: "[200 403]".
const char* kClient = R"(import re, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else 8080), timeout=5)
s.sendall(bytes.fromhex(sys.argv[2]))
try:
    s.shutdown(socket.SHUT_WR)
except OSError:
    pass
got, end = b'', ''
while True:
    try:
        d = s.recv(65536)
    except ConnectionResetError:
        break
    except socket.timeout:
        end = ' TIMEOUT'
        break
    if not d:
        break
    got += d
print('[' + ' '.join(m.decode() for m in re.findall(rb'(?:^|\n)HTTP/1\.[01] (\d{3}) ', got)) + ']' + end)
)";

struct Vector {
  std::string name, bytes, statuses;
  int received, forwarded, denied, parse_errors;
  std::string backend_sees;  // a request line the backend must log ("" = none asserted)
};

std::string hex(const std::string& s) {
  std::string out;
  for (unsigned char c : s) out += fmt::format("{:02x}", c);
  return out;
}

const std::string H = "Host: d\r\n";
std::string get(const std::string& target, const std::string& extra = "") {
  return "GET " + target + " HTTP/1.1\r\n" + H + extra + "\r\n";
}
std::string landing(const std::string& fields, const std::string& body) {
  return "POST /v1/request-landing HTTP/1.1\r\n" + H + fields + "\r\n" + body;
}
std::string withLength(const std::string& method, const std::string& target, const std::string& body) {
  return method + " " + target + " HTTP/1.1\r\n" + H + fmt::format("Content-Length: {}\r\n\r\n", body.size()) + body;
}
const std::string kTe = "Transfer-Encoding: chunked\r\n";
const std::string kSmuggled = "GET /admin HTTP/1.1\r\nHost: d\r\n\r\n";

int cuts = 0;  // vectors whose allowed head may or may not reach the server before the reset

std::vector<Vector> vectors() {
  std::vector<Vector> v;
  cuts = 0;
  auto bad = [&](std::string name, std::string bytes) { v.push_back({name, bytes, "[400]", 0, 0, 0, 1, ""}); };
  auto cut = [&](std::string name, std::string bytes) {
    // An allowed head was forwarded, its body framing breaks: the upstream is
    // reset (nothing after the error is forwarded), the client gets a 400.
    v.push_back({name, bytes, "[400]", 1, 1, 0, 1, ""});
    ++cuts;
  };
  auto denied = [&](std::string name, std::string bytes) { v.push_back({name, bytes, "[403]", 1, 0, 1, 0, ""}); };

  // --- request smuggling ---------------------------------------------------
  bad("CL.TE", landing("Content-Length: 6\r\n" + kTe, "0\r\n\r\n" + kSmuggled));
  bad("TE.CL", landing(kTe + "Content-Length: 40\r\n", "0\r\n\r\n" + kSmuggled));
  bad("TE.TE second field", landing(kTe + "Transfer-encoding: identity\r\n", "0\r\n\r\n" + kSmuggled));
  bad("TE.TE xchunked", landing("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n" + kSmuggled));
  bad("TE.TE list", landing("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n" + kSmuggled));
  bad("TE.TE gzip first", landing("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n" + kSmuggled));
  bad("TE space before colon", landing("Transfer-Encoding : chunked\r\n", "0\r\n\r\n" + kSmuggled));
  bad("TE vertical tab", landing("Transfer-Encoding:\x0b" "chunked\r\n", "0\r\n\r\n" + kSmuggled));
  bad("TE obs-fold", landing("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n" + kSmuggled));
  bad("TE on HTTP/1.0", "POST /v1/request-landing HTTP/1.0\r\n" + kTe + "\r\n0\r\n\r\n" + kSmuggled);
  v.push_back({"TE tab OWS is chunked", landing("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n" + kSmuggled),
               "[200 403]", 2, 1, 1, 0, "REQ POST /v1/request-landing HTTP/1.1"});
  cut("chunk data then bare LF", landing(kTe, "3\r\nabc\nX0\r\n\r\n" + kSmuggled));
  cut("chunk data then junk", landing(kTe, "3\r\nabcXX0\r\n\r\n" + kSmuggled));
  cut("chunk size then bare CR", landing(kTe, "3\rabc\r\n0\r\n\r\n" + kSmuggled));
  cut("chunk size then bare LF", landing(kTe, "3\nabc\r\n0\r\n\r\n" + kSmuggled));
  cut("chunk size 0x", landing(kTe, "0x3\r\nabc\r\n0\r\n\r\n" + kSmuggled));
  cut("chunk size overflow", landing(kTe, "10000000000000003\r\nabc\r\n0\r\n\r\n" + kSmuggled));
  cut("chunk extension control byte", landing(kTe, "3;a=\"\x01\"\r\nabc\r\n0\r\n\r\n" + kSmuggled));
  cut("trailer bare LF", landing(kTe, "0\r\nX: y\n\r\n" + kSmuggled));
  cut("last chunk then bare LF", landing(kTe, "3\r\nabc\r\n0\r\n\n" + kSmuggled));
  cut("trailer obs-fold", landing(kTe, "0\r\nX: y\r\n z\r\n\r\n" + kSmuggled));
  v.push_back({"denied request, broken chunk", "POST /admin HTTP/1.1\r\n" + H + kTe + "\r\n3\r\nabc\nX0\r\n\r\n",
               "[403]", 1, 0, 1, 1, ""});
  v.push_back({"request inside a chunk", landing(kTe, fmt::format("{:x}\r\n{}\r\n0\r\n\r\n", kSmuggled.size(), kSmuggled)),
               "[200]", 1, 1, 0, 0, "REQ POST /v1/request-landing HTTP/1.1"});
  v.push_back({"request inside a Content-Length body", withLength("POST", "/v1/request-landing", kSmuggled), "[200]",
               1, 1, 0, 0, ""});
  v.push_back({"request inside a denied body", withLength("POST", "/admin", "GET /secret HTTP/1.1\r\nHost: d\r\n\r\n"),
               "[403]", 1, 0, 1, 0, ""});
  bad("two equal Content-Length", landing("Content-Length: 1\r\nContent-Length: 1\r\n", "x"));
  bad("two Content-Length", landing("Content-Length: 1\r\nContent-Length: 40\r\n", "x" + kSmuggled));
  bad("Content-Length list", landing("Content-Length: 1, 1\r\n", "x"));
  bad("Content-Length sign", landing("Content-Length: +1\r\n", "x"));
  bad("Content-Length negative", landing("Content-Length: -1\r\n", ""));
  bad("Content-Length overflow", landing("Content-Length: 99999999999999999999\r\n", ""));
  bad("bare LF line ends", "GET /admin HTTP/1.1\nHost: d\n\n");
  bad("bare LF after the request line", "GET /public/x HTTP/1.1\n" + H + "\r\n" + kSmuggled);
  bad("bare CR ends the head", "GET /public/x HTTP/1.1\r\n" + H + "\r" + kSmuggled);
  bad("obs-fold", get("/headers", "X-Empire: no\r\n yes\r\n"));
  bad("tab obs-fold", get("/public/x", "X-A: b\r\n\tc\r\n"));

  // --- paths -----------------------------------------------------------------
  v.push_back({"allowed path", get("/public/x"), "[200]", 1, 1, 0, 0, "REQ GET /public/x HTTP/1.1"});
  v.push_back({"dot segment inside the allowed prefix", get("/public/./y/../z"), "[200]", 1, 1, 0, 0,
               "REQ GET /public/z HTTP/1.1"});
  v.push_back({"encoded unreserved", get("/public/%41%7e"), "[200]", 1, 1, 0, 0, "REQ GET /public/A~ HTTP/1.1"});
  denied("dot dot", get("/public/../admin"));
  denied("encoded dot dot", get("/public/%2e%2e/admin"));
  denied("upper-case encoded dot dot", get("/public/%2E%2E/admin"));
  denied("half-encoded dot dot", get("/public/.%2e/admin"));
  denied("backslashes", get("/public\\..\\admin"));
  denied("double slash at the root", get("//admin"));
  denied("double slash before dot dot", get("/public//../admin"));
  denied("parameter on a name then dot dot", get("/public/x;/../../admin"));
  denied("dot dot past the root", get("/public/../../../admin"));
  denied("case", get("/PUBLIC/x"));
  denied("absolute-form", "GET http://d/admin HTTP/1.1\r\n" + H + "\r\n");
  bad("encoded slash", get("/public/..%2fadmin"));
  bad("encoded slashes", get("/public%2F..%2Fadmin"));
  bad("encoded backslash", get("/public/..%5cadmin"));
  bad("dot dot with a parameter", get("/public/..;/admin"));
  bad("dot with a parameter", get("/public/.;x/../../admin"));
  bad("fragment", get("/public/x#/../../admin"));
  bad("encoded NUL", get("/public/%00/../admin"));
  bad("broken escape", get("/public/%zz"));
  bad("absolute-form, other host", "GET http://other/public/x HTTP/1.1\r\n" + H + "\r\n");
  bad("absolute-form, https", "GET https://d/public/x HTTP/1.1\r\n" + H + "\r\n");
  bad("asterisk-form", "OPTIONS * HTTP/1.1\r\n" + H + "\r\n");
  bad("CONNECT", "CONNECT d:8080 HTTP/1.1\r\nHost: d:8080\r\n\r\n");
  bad("non-ASCII in the target", get("/public/\xc3\xa9"));

  // --- headers ---------------------------------------------------------------
  v.push_back({"header rule", get("/headers", "X-Empire: yes\r\n"), "[200]", 1, 1, 0, 0, "REQ GET /headers HTTP/1.1"});
  v.push_back({"header rule, lower-case name, trailing OWS", get("/headers", "x-empire: yes \r\n"), "[200]", 1, 1, 0, 0,
               ""});
  denied("header rule, repeated field", get("/headers", "X-Empire: no\r\nX-Empire: yes\r\n"));
  denied("header rule, repeated equal fields", get("/headers", "X-Empire: yes\r\nx-empire: yes\r\n"));
  denied("header rule, list value", get("/headers", "X-Empire: yes,no\r\n"));
  // headerMatches REPLACE: whatever X-Token fields the client sends, the
  // server gets exactly "X-Token: t0k" (no "forged" line anywhere: see below).
  v.push_back({"REPLACE header match", get("/edited", "X-Token: forged\r\nx-token: t0k\r\n"), "[200]", 1, 1, 0, 0,
               "HDR X-Token: t0k"});
  bad("REPLACE cannot be dodged with obs-fold", get("/edited", "X-Token: t0k\r\n forged\r\n"));
  bad("two Host", get("/public/x", "Host: e\r\n"));
  bad("no Host", "GET /public/x HTTP/1.1\r\n\r\n");
  bad("Host with a path", "GET /public/x HTTP/1.1\r\nHost: d/admin\r\n\r\n");
  bad("space before colon", "GET /public/x HTTP/1.1\r\nHost : d\r\n\r\n");
  bad("NUL in a value", get("/public/x", std::string("X-A: a\0b\r\n", 10)));
  bad("control byte in a value", get("/public/x", "X-A: a\x01" "b\r\n"));
  bad("invalid field name", get("/public/x", "X(: a\r\n"));
  v.push_back({"oversized header", get("/public/x", "X-Big: " + std::string(17000, 'a') + "\r\n"), "[431]", 0, 0, 0, 1,
               ""});
  std::string many;
  for (int i = 0; i < 101; ++i) many += fmt::format("X-{}: v\r\n", i);
  v.push_back({"too many headers", get("/public/x", many), "[431]", 0, 0, 0, 1, ""});

  // --- methods and versions --------------------------------------------------
  bad("lower-case method", "get /public/x HTTP/1.1\r\n" + H + "\r\n");
  bad("unknown method", "FOO /public/x HTTP/1.1\r\n" + H + "\r\n");
  bad("overlong method", "GETGETGETGETGETGET /public/x HTTP/1.1\r\n" + H + "\r\n");
  bad("two spaces", "GET  /public/x HTTP/1.1\r\n" + H + "\r\n");
  bad("HTTP/2.0 request line", "GET /public/x HTTP/2.0\r\n" + H + "\r\n");
  bad("HTTP/0.9 version", "GET /public/x HTTP/0.9\r\n" + H + "\r\n");
  denied("method not allowed", withLength("POST", "/public/x", ""));

  // --- HTTP/1.0, Expect, Upgrade, pipelining ---------------------------------
  v.push_back({"HTTP/1.0 keep-alive then denied", "GET /public/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /admin HTTP/1.0\r\n\r\n",
               "[200 403]", 2, 1, 1, 0, "REQ GET /public/a HTTP/1.0"});
  v.push_back({"denied HTTP/1.0 closes", "GET /admin HTTP/1.0\r\n\r\n" + get("/public/b"), "[403]", 1, 0, 1, 0, ""});
  denied("denied Expect: 100-continue", "POST /admin HTTP/1.1\r\n" + H + "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  v.push_back({"allowed Expect: 100-continue", landing("Expect: 100-continue\r\nContent-Length: 5\r\n", "hello"),
               "[100 200]", 1, 1, 0, 0, ""});
  v.push_back({"denied Upgrade stays HTTP", get("/admin", "Connection: Upgrade\r\nUpgrade: websocket\r\n") + get("/secret"),
               "[403 403]", 2, 0, 2, 0, ""});
  v.push_back({"denied Upgrade, then raw frames", get("/admin", "Connection: Upgrade\r\nUpgrade: websocket\r\n") + "\x81\x05hello",
               "[403 400]", 1, 0, 1, 1, ""});
  v.push_back({"declined Upgrade, then denied", get("/public/ws", "Connection: Upgrade\r\nUpgrade: websocket\r\n") + kSmuggled,
               "[200 403]", 2, 1, 1, 0, "REQ GET /public/ws HTTP/1.1"});
  v.push_back({"pipeline with a denied request in the middle", get("/public/1") + kSmuggled + get("/public/2"),
               "[200 403 200]", 3, 2, 1, 0, "REQ GET /public/2 HTTP/1.1"});
  v.push_back({"denied HEAD keeps the pipeline framed", "HEAD /admin HTTP/1.1\r\n" + H + "\r\n" + get("/public/h"),
               "[403 200]", 2, 1, 1, 0, "REQ GET /public/h HTTP/1.1"});
  v.push_back({"good request, then a bad head", get("/public/ok") + get("/admin", "Host: e\r\n"), "[200 400]", 1, 1, 0, 1,
               "REQ GET /public/ok HTTP/1.1"});
  return v;
}

class L7Adversarial : public AgentFixture {
 protected:
  void SetUp() override {
    AgentFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    startAgent();
    if (HasFatalFailure()) return;
    backend_ = createPod("deathstar", "org=empire,class=deathstar");
    client_ = createPod("tiefighter", "org=empire,class=tiefighter");
    ASSERT_FALSE(backend_.ip.empty());
    children_.push_back(Child::spawn({bin("membrane"), "--socket", socket_, "exec", "-n", ns_, "deathstar", "--",
                                      "python3", "-u", source_dir_ + "/tests/integration/l7_backend.py", "8080"},
                                     dir_ + "/backend.log"));
    ASSERT_TRUE(waitFor([&] { return readFileOrEmpty(dir_ + "/backend.log").find("listening") != std::string::npos; },
                        std::chrono::seconds(15)));
    auto imp = importPolicy(withNs(kBackendPolicy, ns_));
    ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  }

  Pod backend_, client_;
};

TEST_F(L7Adversarial, NoDeniedRequestReachesTheServerByAnyVector) {
  auto counters = [&] {
    return std::vector<double>{metric("cilium_policy_l7_received_total"), metric("cilium_policy_l7_forwarded_total"),
                               metric("cilium_policy_l7_denied_total"), metric("cilium_policy_l7_parse_errors_total")};
  };
  const auto all = vectors();
  ASSERT_GE(all.size(), 50u);
  for (const Vector& vec : all) {
    SCOPED_TRACE(vec.name);
    const size_t log_before = readFileOrEmpty(dir_ + "/backend.log").size();
    auto before = counters();
    auto r = execIn("tiefighter", {"python3", "-c", kClient, backend_.ip, hex(vec.bytes)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, vec.statuses + "\n");
    auto after = counters();
    EXPECT_EQ(after[0] - before[0], vec.received) << "received";
    EXPECT_EQ(after[1] - before[1], vec.forwarded) << "forwarded";
    EXPECT_EQ(after[2] - before[2], vec.denied) << "denied";
    EXPECT_EQ(after[3] - before[3], vec.parse_errors) << "parse_errors";
    if (!vec.backend_sees.empty()) {
      std::string log = readFileOrEmpty(dir_ + "/backend.log");
      EXPECT_NE(log.find(vec.backend_sees + "\n", log_before), std::string::npos) << log.substr(log_before);
    }
  }
  // Under no reading of anything forwarded did a denied request reach the server.
  std::istringstream log(readFileOrEmpty(dir_ + "/backend.log"));
  std::string line;
  int requests = 0;
  while (std::getline(log, line)) {
    if (line.rfind("REQ ", 0) != 0) continue;
    ++requests;
    EXPECT_EQ(line.find("admin"), std::string::npos) << line;
    EXPECT_EQ(line.find("secret"), std::string::npos) << line;
  }
  EXPECT_EQ(readFileOrEmpty(dir_ + "/backend.log").find("forged"), std::string::npos);
  // Each forwarded request, and nothing else, is one request line there; a
  // cut request's head reaches the server only if its upstream connection
  // was up before the broken chunk arrived.
  int forwarded = 0;
  for (const Vector& vec : all) forwarded += vec.forwarded;
  EXPECT_GE(requests, forwarded - cuts);
  EXPECT_LE(requests, forwarded);
}

// The same vectors against nginx as a reverse proxy with the equivalent
// location rules, for docs/l7.md ("Against nginx"). A measurement, not a
// gate: it runs only when MEMBRANE_L7_NGINX names the Markdown file to write
// (`make l7-vs-nginx` installs nginx-light and sets it), on loopback, and
// asserts only that nginx answered every vector.
std::string sourceDir() {
  const char* s = std::getenv("MEMBRANE_SOURCE_DIR");
  return s && *s ? s : ".";
}

TEST(L7AdversarialVersusNginx, SameVectorsThroughNginx) {
  const char* out_path = std::getenv("MEMBRANE_L7_NGINX");
  if (!out_path || !*out_path) GTEST_SKIP() << "set MEMBRANE_L7_NGINX=FILE to compare with nginx (make l7-vs-nginx)";
  std::string nginx = "/usr/sbin/nginx";
  ASSERT_EQ(access(nginx.c_str(), X_OK), 0) << "nginx not installed (make l7-vs-nginx installs nginx-light)";
  char tmpl[] = "/tmp/membrane-l7-nginx-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() { run({"rm", "-rf", dir}); }
  } cleanup{dir};
  const int backend_port = freePort(), nginx_port = freePort();
  // Cilium's rules (kBackendPolicy) as nginx locations: regex/exact
  // locations, limit_except for the method (GET allows HEAD there too), an
  // `if` for the header rule, proxy_set_header for the REPLACE header match,
  // and 403 for everything else.
  const std::string up = fmt::format("proxy_pass http://127.0.0.1:{};", backend_port);
  const std::string conf = fmt::format(R"(daemon off;
master_process off;
worker_processes 1;
pid {0}/nginx.pid;
error_log {0}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {0}/access.log;
  # The client half-closes after its bytes (as against membrane); without
  # this nginx takes that FIN for an abort and drops the upstream request.
  proxy_ignore_client_abort on;
  client_body_temp_path {0}/cb; proxy_temp_path {0}/px; fastcgi_temp_path {0}/fc;
  uwsgi_temp_path {0}/uw; scgi_temp_path {0}/sc;
  server {{
    listen 127.0.0.1:{1};
    location ~ ^/public/.*$ {{ limit_except GET {{ deny all; }} {2} }}
    location = /v1/request-landing {{ limit_except POST {{ deny all; }} {2} }}
    location = /headers {{ limit_except GET {{ deny all; }} if ($http_x_empire != "yes") {{ return 403; }} {2} }}
    location = /edited {{ limit_except GET {{ deny all; }} proxy_set_header X-Token t0k; {2} }}
    location / {{ return 403; }}
  }}
}}
)",
                                       dir, nginx_port, up);
  {
    std::ofstream f(dir + "/nginx.conf");
    f << conf;
  }
  Child backend = Child::spawn({"python3", "-u", sourceDir() + "/tests/integration/l7_backend.py",
                                std::to_string(backend_port)},
                               dir + "/backend.log");
  ASSERT_TRUE(waitFor([&] { return readFileOrEmpty(dir + "/backend.log").find("listening") != std::string::npos; },
                      std::chrono::seconds(15)));
  Child ng = Child::spawn({nginx, "-p", dir, "-c", dir + "/nginx.conf"}, dir + "/nginx.log");
  ASSERT_TRUE(waitFor([&] { return httpGet(nginx_port, "/public/probe") != ""; }, std::chrono::seconds(15)))
      << readFileOrEmpty(dir + "/error.log");
  std::string version = run({nginx, "-v"}).err;
  while (!version.empty() && version.back() == '\n') version.pop_back();

  std::string table =
      "| vector | membrane | nginx | request lines the server read through nginx |\n|---|---|---|---|\n";
  int differ = 0, reached = 0;
  std::vector<std::string> reached_names;
  for (const Vector& vec : vectors()) {
    const size_t log_before = readFileOrEmpty(dir + "/backend.log").size();
    auto r = run({"python3", "-c", kClient, "127.0.0.1", hex(vec.bytes), std::to_string(nginx_port)});
    ASSERT_EQ(r.exit_code, 0) << vec.name << ": " << r.err;
    std::string statuses = r.out.substr(0, r.out.find('\n'));
    // The client read to EOF: nginx is done with this connection, and the
    // backend logs each request line before it answers it.
    std::string log = readFileOrEmpty(dir + "/backend.log").substr(log_before);
    std::istringstream lines(log);
    std::string line, got;
    bool denied_line = false;
    while (std::getline(lines, line)) {
      if (line.rfind("REQ ", 0) != 0) continue;
      if (!got.empty()) got += "; ";
      got += "`" + line.substr(4) + "`";
      denied_line = denied_line || line.find("admin") != std::string::npos || line.find("secret") != std::string::npos;
    }
    if (statuses != vec.statuses) ++differ;
    if (denied_line) {
      ++reached;
      reached_names.push_back(vec.name);
    }
    table += fmt::format("| {} | {} | {} | {}{} |\n", vec.name, vec.statuses, statuses, got.empty() ? "-" : got,
                         denied_line ? " **(denied path reached the server)**" : "");
  }
  std::string summary = fmt::format(
      "{} ({}), loopback, {} vectors: the statuses differ from membrane's in {}; a request line naming /admin or "
      "/secret reached the server through nginx in {}",
      version, "reverse proxy with the location rules in tests/integration/l7_adversarial_test.cc", vectors().size(),
      differ, reached);
  for (size_t i = 0; i < reached_names.size(); ++i) summary += (i ? ", " : ": ") + reached_names[i];
  std::ofstream(out_path) << summary << ".\n\n" << table;
  std::cout << summary << "\n";
}

}  // namespace
}  // namespace membrane::testing
