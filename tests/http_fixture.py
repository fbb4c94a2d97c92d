"""A small threaded HTTP file server on 127.0.0.1 for download tests.

Serves in-memory files with ETag and Range support (206 + Content-Range, 416 past the end,
If-Range), and can be told to misbehave: drop the connection after N bytes, ignore Range, slow
down. Every request is logged (path and headers), so tests can assert what the client asked for.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]


class FileServer:
    """Use as a context manager; `url` is the base URL (no trailing slash)."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.requests: list[Request] = []
        self.ignore_range = False
        self.chunk_delay = 0.0  # seconds to sleep after each 64 KiB written
        self._drops: list[int] = []  # one entry per upcoming response: bytes sent before closing
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self.running = False

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def drop_next_after(self, n_bytes: int) -> None:
        """The next response that sends a body closes the connection after `n_bytes` of it."""
        with self._lock:
            self._drops.append(n_bytes)

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> FileServer:
        self._thread.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._httpd.shutdown()
            self._httpd.server_close()
            self.running = False

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # used by the handler
    def _log(self, request: Request) -> int | None:
        with self._lock:
            self.requests.append(request)
            return self._drops.pop(0) if self._drops else None


def etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def _make_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            drop = server._log(Request(self.path, dict(self.headers.items())))
            data = server.files.get(self.path.lstrip("/"))
            if data is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            status = 200
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if wanted and not server.ignore_range and if_range in (None, etag(data)):
                m = re.fullmatch(r"bytes=(\d+)-", wanted)
                if m:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag(data))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if drop is not None:
                body = body[:drop]
                self.close_connection = True
            for i in range(0, len(body), 1 << 16):
                self.wfile.write(body[i : i + (1 << 16)])
                if server.chunk_delay:
                    time.sleep(server.chunk_delay)

    return Handler
