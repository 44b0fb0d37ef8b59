"""A scripted HTTP server on 127.0.0.1 standing in for Eurostat, Comtrade and the ECB in tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    """One scripted answer: status, headers, body; `delay_s` before answering; `cut_after` bytes of the
    body are sent although Content-Length announces all of it; `ranges` honours Range requests."""

    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    cut_after: int | None = None
    ranges: bool = True


@dataclass
class Seen:
    path: str
    query: dict
    headers: dict
    time: float


class FakeServer:
    """Routes are matched on the URL path (and, when given, a predicate on the query). Each route holds a
    queue of replies; the last one repeats. `requests` records every request (headers included)."""

    def __init__(self):
        self.routes: list[tuple[str, object, list[Reply]]] = []
        self.requests: list[Seen] = []
        self.handler_fn = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                server.requests.append(Seen(parts.path, query, dict(self.headers), time.monotonic()))
                reply = server._reply_for(parts.path, query, self)
                if reply is None:
                    reply = Reply(404, b"not found")
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                body = reply.body
                status = reply.status
                headers = dict(reply.headers)
                rng = self.headers.get("Range")
                if rng and reply.ranges and status == 200 and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    body = body[start:]
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(reply.body)}"
                etag = headers.get("ETag")
                if etag and self.headers.get("If-None-Match") == etag and status == 200:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                if reply.cut_after is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if reply.cut_after is not None:
                        self.wfile.write(body[: reply.cut_after])
                        self.wfile.flush()
                        self.close_connection = True
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # clients hanging up mid-answer are expected here
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def route(self, path: str, *replies: Reply, when=None) -> None:
        """Answer GET `path` (query matched by `when(query)` if given) with `replies` in turn."""
        self.routes.append((path, when, list(replies)))

    def handle(self, fn) -> None:
        """Answer every request with fn(path, query, headers) -> Reply | None (None: try the routes)."""
        self.handler_fn = fn

    def _reply_for(self, path, query, request) -> Reply | None:
        if self.handler_fn is not None:
            reply = self.handler_fn(path, query, dict(request.headers))
            if reply is not None:
                return reply
        for route_path, when, replies in self.routes:
            if route_path == path and (when is None or when(query)):
                return replies.pop(0) if len(replies) > 1 else replies[0]
        return None

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
