"""A stand-in app for the webhook's container test: tells its version; the `broken` version fails /healthz."""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ["APP_VERSION"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        failing = self.path == "/healthz" and VERSION == "broken"
        body = f"version {VERSION} greeting {os.environ.get('GREETING', '')}\n".encode()
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 gets no default handler: stop at once
ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
