"""HTTP servers that misbehave in ways tests/_httpserver.py does not: stall mid-body, redirect."""
from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def serve(routes: dict):
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
