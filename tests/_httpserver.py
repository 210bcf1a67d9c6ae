"""A small HTTP file server on 127.0.0.1 for download tests.

It serves one folder, honours ``Range: bytes=N-`` with 206, and can misbehave on
purpose: cut a response halfway (``cuts[path] = number of responses to cut``), answer
404 for a path that exists (``missing``), or ignore ``Range`` (``ignore_range``).
Every request is recorded.  It runs in a daemon thread and is shut down when the
context (or fixture) ends; sockets time out so a stuck client cannot hang a test.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest


@dataclass
class Request:
    path: str
    range: str | None
    status: int = 0


@dataclass
class ServerState:
    root: Path
    cuts: dict = field(default_factory=dict)
    missing: set = field(default_factory=set)
    ignore_range: bool = False
    requests: list = field(default_factory=list)
    url: str = ""

    def requests_for(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.path.rsplit("/", 1)[-1] == name]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a cut is a close
    timeout = 5

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        state: ServerState = self.server.state
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        record = Request(path="/" + rel, range=self.headers.get("Range"))
        state.requests.append(record)
        target = (state.root / rel).resolve()
        if (
            rel in state.missing
            or not target.is_file()
            or state.root.resolve() not in target.parents
        ):
            record.status = 404
            self.send_error(404, "Not Found")
            return
        data = target.read_bytes()
        start = 0
        header = record.range
        if header and not state.ignore_range and header.startswith("bytes="):
            start = int(header[6:].split("-", 1)[0])
            if start >= len(data):
                record.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            record.status = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            record.status = 200
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if state.cuts.get(rel, 0) > 0:
            state.cuts[rel] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serve(root) -> ServerState:
    """Serve ``root`` on 127.0.0.1 (free port) for the duration of the context."""
    state = ServerState(root=Path(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.state = state
    host, port = server.server_address[:2]
    state.url = f"http://{host}:{port}/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http_server(tmp_path):
    """A running server over ``tmp_path / "www"``; put files there before requesting them."""
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as state:
        yield state
