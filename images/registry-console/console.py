"""dockyard's registry console: one static page, and the registry's /v2/ API proxied from the same origin.

Same-origin proxying means the browser needs no CORS and the registry needs no published port: the
console reaches it on the Docker network as REGISTRY_URL. Only reads and deletes pass through.
"""

import html
import http.server
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

REGISTRY_URL = os.environ.get("REGISTRY_URL", "http://dockyard-registry:5000").rstrip("/")
TITLE = os.environ.get("TITLE", "dockyard registry")
PORT = int(os.environ.get("PORT", "8080"))
STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
         "/app.css": ("app.css", "text/css")}
# Asked of the registry on the browser's behalf, and handed back to it.
REQUEST_HEADERS = ("Accept", "Authorization")
RESPONSE_HEADERS = ("Content-Type", "Content-Length", "Docker-Content-Digest", "Docker-Distribution-Api-Version",
                    "Link", "WWW-Authenticate")
CHUNK = 64 * 1024
# The page and the proxy are the only things the page may load or call.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def load_pages() -> dict[str, tuple[bytes, str]]:
    pages = {}
    for path, (name, content_type) in PAGES.items():
        text = (STATIC / name).read_text().replace("{{TITLE}}", html.escape(TITLE))
        pages[path] = (text.encode(), content_type)
    return pages


class Console(http.server.BaseHTTPRequestHandler):
    server_version = "dockyard-registry-console"
    protocol_version = "HTTP/1.1"
    pages: dict[str, tuple[bytes, str]] = {}

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.reply(200, b"ok\n", "text/plain")
        elif path.startswith("/v2/"):
            self.proxy()
        elif path in self.pages:
            body, content_type = self.pages[path]
            self.reply(200, body, content_type, {"Cache-Control": "no-cache"})
        else:
            self.reply(404, b"not found\n", "text/plain")

    do_HEAD = do_GET  # reply() and proxy() leave the body out

    def do_DELETE(self):
        if self.path.startswith("/v2/"):
            self.proxy()
        else:
            self.reply(405, b"only /v2/ takes DELETE\n", "text/plain", {"Allow": "GET, HEAD"})

    def do_POST(self):
        # Pushes go to the registry itself (`invoke images.push`), never through the console. The body
        # is left unread, so the connection must close.
        self.close_connection = True
        self.reply(405, b"the console is read and delete only\n", "text/plain",
                   {"Allow": "GET, HEAD, DELETE", "Connection": "close"})

    do_PUT = do_PATCH = do_POST

    def proxy(self):
        headers = {name: self.headers[name] for name in REQUEST_HEADERS if self.headers.get(name)}
        request = urllib.request.Request(REGISTRY_URL + self.path, headers=headers, method=self.command)
        try:
            response = urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as e:
            response = e  # the registry's own error (404 NAME_UNKNOWN, 405 UNSUPPORTED...) goes back as is
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            body = json.dumps({"errors": [{"code": "UNREACHABLE", "message": f"{REGISTRY_URL}: {reason}"}]})
            self.reply(502, body.encode(), "application/json")
            return
        with response:
            self.send_response(response.status)
            for name in RESPONSE_HEADERS:
                if response.headers.get(name) is not None:
                    self.send_header(name, response.headers[name])
            length = response.headers.get("Content-Length")
            if length is None and self.command != "HEAD":
                # No length known: close the connection to end the body.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command == "HEAD":
                return
            while chunk := response.read(CHUNK):
                self.wfile.write(chunk)

    def reply(self, status: int, body: bytes, content_type: str, extra: dict | None = None):
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, "Content-Type": content_type,
                            "Content-Length": str(len(body)), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):
        if not self.path.startswith("/healthz"):  # Docker's health check would drown everything else
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main():
    Console.pages = load_pages()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Console)
    print(f"registry console on :{PORT}, proxying {REGISTRY_URL}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
