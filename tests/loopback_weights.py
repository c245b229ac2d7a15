"""A loopback HTTP server serving a stand-in ImageNet weights file (tests of the weights download).

``http.server`` on 127.0.0.1, port 0; the file's name carries the first 8 hex digits of
its sha256, as torchvision's do. Behaviour is switchable per test (errors, truncation,
a wrong body, ignoring Range, acting as a refusing proxy); every request is recorded.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import urllib.parse
from pathlib import Path

PAYLOAD = bytes(range(256)) * 1200  # 300 kB stand-in for the 100 MB file
SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME = f"resnet50-{SHA[:8]}.pth"


class LoopbackServer:
    """A loopback HTTP server with switchable behaviour; records every request."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | wrong | 500 | 404 | ignore_range | proxy_only
        self.truncate_times = 0
        self.requests: list[dict[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_CONNECT(self):  # noqa: N802 - an https request through a proxy: refused here
                server.requests.append({"method": "CONNECT", "path": self.path, "range": None})
                self.send_error(502)

            def do_GET(self):  # noqa: N802
                server.requests.append({"method": "GET", "path": self.path, "range": self.headers.get("Range")})
                if server.mode in ("500", "404", "proxy_only"):
                    code = 502 if server.mode == "proxy_only" else int(server.mode)
                    self.send_error(code)
                    return
                if Path(urllib.parse.urlsplit(self.path).path).name != NAME:
                    self.send_error(404)
                    return
                body = PAYLOAD if server.mode != "wrong" else PAYLOAD[::-1]
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and server.mode != "ignore_range":
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                data = body[start:]
                if server.truncate_times > 0:  # announce everything, send 40 %, hang up
                    server.truncate_times -= 1
                    data = data[: int(len(data) * 0.4)]
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.base}/models/{NAME}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
