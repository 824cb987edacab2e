#!/usr/bin/env python3
"""A deliberately lenient HTTP/1.1 server for the L7 adversarial suite.

It frames requests the way permissive real servers do (nginx among them): a
bare LF ends a line, "chunked" anywhere in Transfer-Encoding means chunked,
chunk data may end in LF or CRLF, Content-Length takes its first value. Every
request line it reads is logged as "REQ <line>" on stderr before anything
else (each field line then as "HDR <line>"), so a request the proxy should
have denied shows up in the log if any reading of the forwarded bytes
contains it. Answers "200 ok <target>\\n".

Usage: l7_backend.py PORT
"""
import socket
import socketserver
import sys


def log(s):
    sys.stderr.write(s + "\n")
    sys.stderr.flush()


class Handler(socketserver.StreamRequestHandler):
    def line(self):
        b = self.rfile.readline(65536)
        if not b:
            raise EOFError
        return b.rstrip(b"\n").rstrip(b"\r")

    def handle(self):
        try:
            while self.one():
                pass
        except (EOFError, OSError, ValueError) as e:
            log("END %s" % type(e).__name__)

    def one(self):
        start = self.line()
        while start == b"":  # empty lines before a request
            start = self.line()
        log("REQ " + start.decode("latin1"))
        parts = start.split()
        method, target = parts[0], parts[1] if len(parts) > 1 else b""
        version = parts[2] if len(parts) > 2 else b"HTTP/1.0"
        headers = []
        while True:
            h = self.line()
            if h == b"":
                break
            log("HDR " + h.decode("latin1"))
            name, _, value = h.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        get = lambda n: [v for k, v in headers if k == n]
        if any(v.lower() == b"100-continue" for v in get(b"expect")):
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if any(b"chunked" in v.lower() for v in get(b"transfer-encoding")):
            while True:
                size = int(self.line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.line() != b"":
                        pass
                    break
                self.rfile.read(size)
                self.line()
        elif get(b"content-length"):
            n = int(get(b"content-length")[0].split(b",")[0])
            if n:
                self.rfile.read(n)
        body = b"ok " + target + b"\n"
        conn = b",".join(get(b"connection")).lower()
        keep = (version == b"HTTP/1.1" and b"close" not in conn) or b"keep-alive" in conn
        out = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), b"" if keep else b"Connection: close\r\n")
        self.wfile.write(out if method == b"HEAD" else out + body)
        self.wfile.flush()
        return keep


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    srv = Server(("0.0.0.0", int(sys.argv[1])), Handler)
    log("listening")
    srv.serve_forever()
