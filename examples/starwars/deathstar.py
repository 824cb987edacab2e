#!/usr/bin/env python3
"""The deathstar's HTTP API from Cilium's Star Wars demo (cilium/starwars), for
`membrane exec deathstar -- python3 examples/starwars/deathstar.py`.

GET /v1 lists the API; POST /v1/request-landing -> "Ship landed";
PUT /v1/exhaust-port -> "Panic: deathstar exploded"."""
import http.server
import socketserver
import sys

API = """{
	"name": "Death Star",
	"hostname": "deathstar",
	"model": "DS-1 Orbital Battle Station",
	"manufacturer": "Imperial Department of Military Research, Sienar Fleet Systems",
	"cost_in_credits": "1000000000000",
	"length": "120000",
	"crew": "342953",
	"passengers": "843342",
	"cargo_capacity": "1000000000000",
	"hyperdrive_rating": "4.0",
	"starship_class": "Deep Space Mobile Battlestation",
	"api": [
		"GET   /v1",
		"GET   /v1/healthz",
		"POST  /v1/request-landing",
		"PUT   /v1/cargobay",
		"GET   /v1/hyper-matter-reactor/status",
		"PUT   /v1/exhaust-port"
	]
}
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        if n:
            self.rfile.read(n)

    def do_GET(self):
        if self.path in ("/v1", "/v1/"):
            self._send(200, API)
        elif self.path == "/v1/healthz":
            self._send(200, '{"status": "ok"}\n')
        elif self.path == "/v1/hyper-matter-reactor/status":
            self._send(200, "Reactor is stable\n")
        else:
            self._send(404, "Not found\n")

    def do_POST(self):
        self._drain()
        if self.path == "/v1/request-landing":
            self._send(200, "Ship landed\n")
        else:
            self._send(404, "Not found\n")

    def do_PUT(self):
        self._drain()
        if self.path == "/v1/exhaust-port":
            self._send(503, "Panic: deathstar exploded\n")
        elif self.path == "/v1/cargobay":
            self._send(200, "Cargo bay updated\n")
        else:
            self._send(404, "Not found\n")

    def log_message(self, fmt, *args):
        # The client's address first: with the L7 proxy in the path it is
        # still the ship's pod IP (transparent upstream).
        sys.stderr.write("deathstar: %s %s\n" % (self.client_address[0], fmt % args))
        sys.stderr.flush()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 80
    Server(("0.0.0.0", port), Handler).serve_forever()
