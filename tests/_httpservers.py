"""The HTTP servers the download tests run against, on 127.0.0.1 (a free port), each in a daemon
thread and shut down when its context ends. They differ in what they serve:

``serve_folder(root)``: the files of a folder, as a real mirror would: honours
``Range: bytes=N-`` with 206, and misbehaves only on request, in ways a client can recover from:
cut a response halfway (``cuts[path] = number of responses to cut``), answer 404 for a path that
exists (``missing``), or ignore ``Range`` (``ignore_range``). Every request is recorded; sockets
time out so a stuck client cannot hang a test. conftest.py's ``http_server`` fixture runs one.

``serve_scripted(routes)``: no files, a scripted answer per path, for the hostile cases a folder
cannot produce: stall mid-body, redirect, or send without end.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


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
def serve_folder(root) -> ServerState:
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


@contextlib.contextmanager
def serve_scripted(routes: dict):
    """Serve ``routes`` on 127.0.0.1: path -> ``("stall", bytes)`` (headers for the whole body,
    then the first half, then nothing until the server stops), ``("redirect", url)`` (302) or
    ``("endless", bytes)`` (no Content-Length, the bytes repeated until the client hangs up, or
    64 MiB: a test of the protection that fails ends instead of filling the disk).
    Yields the base URL; paths are relative to it."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            kind, value = routes.get(self.path.lstrip("/"), ("missing", None))
            if kind == "redirect":
                self.send_response(302)
                self.send_header("Location", value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif kind == "stall":
                self.send_response(200)
                self.send_header("Content-Length", str(len(value)))
                self.end_headers()
                self.wfile.write(value[: len(value) // 2])
                self.wfile.flush()
                release.wait(60)
            elif kind == "endless":
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range((64 << 20) // len(value)):
                        if release.is_set():
                            break
                        self.wfile.write(value)
                except OSError:  # the client hung up
                    pass
            else:
                self.send_error(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
