"""A loopback HTTP server that answers with scripted faults and records every request, for the HTTP sinks'
retry tests and as the stand-in for Grafana Live's push endpoint (Grafana itself cannot be installed here)."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    """Answers each POST with the next (status, headers) from a script, then `respond(body)` if given, else
    `default_status`, and 401 to a request whose Authorization is not `expected_auth` (when that is set)."""

    def __init__(self, script: list[tuple[int, dict]], default_status: int = 204, expected_auth: str | None = None,
                 respond: Callable[[str], tuple[int, dict]] | None = None):
        self.script = list(script)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                server.requests.append({"at": time.monotonic(), "path": self.path, "body": body.decode(),
                                        "auth": self.headers.get("Authorization")})
                if expected_auth and self.headers.get("Authorization") != expected_auth:
                    status, headers = 401, {}
                elif server.script:
                    status, headers = server.script.pop(0)
                else:
                    status, headers = respond(body.decode()) if respond else (default_status, {})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                payload = {400: b'{"code":"invalid","message":"bad line"}',
                           413: b'{"code":"request too large","message":"too large"}'}.get(status, b"")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
