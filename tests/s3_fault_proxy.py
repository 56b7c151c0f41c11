"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3-protocol server (moto).

A seeded share of requests fails, half with `503 SlowDown` (S3's throttling answer) and half by dropping the
connection without a reply; requests matched by `permanent` always get `500 InternalError`. Everything else is
forwarded unchanged. Counters say what was injected, per kind and per request path.
"""
from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
ERROR_XML = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{msg}</Message>'
             '<Resource>{path}</Resource><RequestId>fault-proxy</RequestId></Error>')


class FaultProxy:
    def __init__(self, upstream: str, fail_rate: float = 0.0, seed: int = 0,
                 permanent: Callable[[str, str], bool] | None = None):
        u = urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.fail_rate = fail_rate
        self.permanent = permanent
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.permanent_hits: Counter = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _decide(self, method: str, path: str) -> str:
        with self.lock:
            self.counts["requests"] += 1
            if self.permanent and self.permanent(method, path):
                self.permanent_hits[(method, path)] += 1
                return "permanent"
            if self.rng.random() < self.fail_rate:
                kind = "503" if self.rng.random() < 0.5 else "drop"
                self.counts[kind] += 1
                return kind
            self.counts["forwarded"] += 1
            return "forward"

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _error(self, status: int, code: str, msg: str) -> None:
                body = ERROR_XML.format(code=code, msg=msg, path=self.path).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                action = proxy._decide(self.command, self.path)
                if action == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if action == "503":
                    self._error(503, "SlowDown", "Please reduce your request rate.")
                    return
                if action == "permanent":
                    self._error(500, "InternalError", "We encountered an internal error. Please try again.")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        return Handler
