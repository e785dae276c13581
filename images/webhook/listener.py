"""dockyard's webhook listener: redeploys the app when its image is pushed to the private registry or Docker Hub.

It holds the Docker socket, which is root on the host, so it exposes three routes and trusts no byte it receives:
  POST /hooks/<hub_token>   Docker Hub webhooks (the token is the URL's secret)
  POST /registry/events     the private registry's notifications (Authorization: Bearer <registry_token>)
  GET  /healthz             Docker's health check
Redeploys run one at a time on a single worker, each holding the host lock that deploy takes too; each is appended
to history.jsonl.
"""

from __future__ import annotations

import datetime
import fcntl
import hmac
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import docker.errors
from redeploy import Coalescer, Outcome, Redeployer, first_line
from service_update import ServiceUpdater
from triggers import (
    REGISTRY_MEDIA_TYPES,
    Config,
    ConfigError,
    PayloadError,
    Trigger,
    load_config,
    parse_hub_payload,
    parse_registry_envelope,
    refusal,
)

from dockyard.contract import (
    APP_SPEC_NAME,
    HISTORY_NAME,
    HOLDER_NAME,
    HOST_LOCK_NAME,
    LISTENER_APP_SPEC_DIR,
    LISTENER_CONFIG,
    LISTENER_LOCK_DIR,
    LISTENER_STATE_DIR,
    LISTENER_UPSTREAM_DIR,
    UPSTREAM_NAME,
)

PORT = 9000
CONFIG_PATH = Path(LISTENER_CONFIG)
APP_SPEC_PATH = Path(LISTENER_APP_SPEC_DIR, APP_SPEC_NAME)
HISTORY_PATH = Path(LISTENER_STATE_DIR, HISTORY_NAME)
UPSTREAM_PATH = Path(LISTENER_UPSTREAM_DIR, UPSTREAM_NAME)
HUB_PREFIX = "/hooks/"
REGISTRY_PATH = "/registry/events"
HEALTH_PATH = "/healthz"
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 32  # beyond this, new connections are closed at once
READ_TIMEOUT = 10  # seconds a client may stall while sending a request
LINGER_SECONDS = 2  # after refusing a body unread, how long to swallow it so the client still reads our answer
CALLBACK_TIMEOUT = 10
LOCK_TIMEOUT = 600  # seconds a redeploy waits for the host lock while a deploy holds it
# A release pushes under the lock, and the registry calls the listener before the release lets go: a short poll
# starts the redeploy as soon as it does.
LOCK_POLL = 0.05
HUB_MEDIA_TYPES = frozenset({"application/json"})

log = logging.getLogger("dockyard-webhook")


class RedactingFormatter(logging.Formatter):
    """Formats each record in full, traceback included, then blanks the secrets out of it."""

    def __init__(self, secrets: tuple[str, ...]):
        super().__init__("%(asctime)s %(levelname)s %(message)s")
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Hide the configured tokens and whatever follows /hooks/: a wrong token may be a near miss of the right one."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return re.sub(r"(/hooks/)[^\s'\"?]*", r"\1***", text)


def audit_entry(trigger: Trigger, outcome: Outcome, started: datetime.datetime, duration: float) -> dict:
    """One line of history.jsonl; `dockyard.release` and `invoke app.history` read it."""
    return {
        "started": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "trigger": {
            "source": trigger.source, "repository": trigger.repository, "tag": trigger.tag,
            "request_id": trigger.request_id,
        },
        "image": outcome.image,
        "result": outcome.result,
        "reason": outcome.reason,
        "before": outcome.before,
        "after": outcome.after,
        "duration_s": round(duration, 2),
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a callback answers where it was sent, or fails


# No proxies from the environment, no redirects: the POST goes to the URL Docker Hub gave, nowhere else.
_callback_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def post_callback(url: str, state: str, description: str) -> str | None:
    """Tell Docker Hub how its push ended; return what went wrong, if anything. Never raises."""
    body = json.dumps({"state": state, "description": description[:255], "context": "dockyard"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with _callback_opener.open(request, timeout=CALLBACK_TIMEOUT) as response:
            response.read(MAX_BODY)
    except (OSError, ValueError, HTTPException) as e:
        return str(e) or type(e).__name__
    return None


class LockBusy(Exception):
    """The host lock stayed held for the whole wait; str(e) names the holder."""


class HostLock:
    """The host lock (contract.HOST_LOCK_NAME): deploy's SSH session holds it while deploy changes the host, and each
    redeploy holds it too, writing itself down as the holder as deploy does."""

    def __init__(self, folder: Path, timeout: float = LOCK_TIMEOUT):
        self.folder, self.timeout = folder, timeout

    @contextmanager
    def held(self, task: str) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / HOST_LOCK_NAME).open("a") as lock:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockBusy(self._holder()) from None
                    time.sleep(LOCK_POLL)
            self._write_holder(task)
            yield  # the lock goes with the file's closing

    def _write_holder(self, task: str) -> None:
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        draft = self.folder / f"{HOLDER_NAME}.new"
        draft.write_text(json.dumps({"who": "dockyard-webhook", "from": "this host", "task": task, "since": since,
                                     "pid": os.getpid()}) + "\n")
        draft.replace(self.folder / HOLDER_NAME)

    def _holder(self) -> str:
        try:
            doc = json.loads((self.folder / HOLDER_NAME).read_text())
            return f"{doc['who']} from {doc['from']} ({doc['task']}, since {doc['since']})"
        except (OSError, ValueError, TypeError, KeyError):
            return "a holder that left no record"


class Service:
    """Queues triggers and runs each redeploy, holding the host lock: pull, switch, audit, call back."""

    def __init__(self, config: Config, redeployer: Redeployer | ServiceUpdater, history: Path, host_lock: HostLock):
        self.config = config
        self.redeployer = redeployer
        self.history = history
        self.host_lock = host_lock
        self.queue: Coalescer[Trigger] = Coalescer(self.run)

    def submit(self, trigger: Trigger) -> None:
        replaced = self.queue.submit(trigger)
        if replaced is not None:
            log.info("%s superseded by %s (tag %s) before it ran", replaced.request_id, trigger.request_id, trigger.tag)
            if replaced.callback_url:
                threading.Thread(
                    target=self._call_back, args=(replaced, "success", f"superseded by tag {trigger.tag}"), daemon=True
                ).start()

    def run(self, trigger: Trigger) -> None:
        image = self.config.image_for(trigger)
        started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
        log.info("%s redeploying %s (%s push)", trigger.request_id, image, trigger.source)
        try:
            with self.host_lock.held(f"redeploy {image}"):
                outcome = self.redeployer.redeploy(image)
        except LockBusy as busy:
            outcome = Outcome("failure", f"not redeployed: the host lock stayed held by {busy} for "
                                         f"{self.host_lock.timeout:g}s; push again once it is free", image)
        except Exception as e:  # a bug must still leave a line in the history
            log.exception("%s redeploy crashed", trigger.request_id)
            outcome = Outcome("failure", f"internal error: {e}", image)
        entry = audit_entry(trigger, outcome, started, time.monotonic() - clock)
        log.info("%s %s in %.1fs%s", trigger.request_id, outcome.result, entry["duration_s"],
                 f": {outcome.reason}" if outcome.reason else "")
        try:
            with self.history.open("a") as history:
                history.write(json.dumps(entry) + "\n")
        except OSError as e:
            log.error("%s cannot append to %s: %s", trigger.request_id, self.history, e)
        if trigger.callback_url:
            state = "success" if outcome.result == "success" else "failure"
            detail = f" ({outcome.reason})" if outcome.reason else ""
            self._call_back(trigger, state, f"{outcome.result}: {image}{detail}")

    @staticmethod
    def _call_back(trigger: Trigger, state: str, description: str) -> None:
        problem = post_callback(trigger.callback_url, state, description)
        if problem:
            log.warning("%s callback failed: %s", trigger.request_id, problem)


class Handler(BaseHTTPRequestHandler):
    server: Listener
    server_version = "dockyard-webhook"
    timeout = READ_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.request_id = uuid.uuid4().hex[:12]
        self.body_unread = False

    def do_GET(self) -> None:
        path = self._route()
        if path == HEALTH_PATH:
            self._send(200, {"status": "ok"})  # not logged: Docker asks every few seconds
        elif path == REGISTRY_PATH or path.startswith(HUB_PREFIX):
            self._reply(405, "method not allowed", headers={"Allow": "POST"})
        else:
            self._reply(404, "not found")

    def do_POST(self) -> None:
        path = self._route()
        self.body_unread = True
        if path == REGISTRY_PATH:
            self._registry_events()
        elif path.startswith(HUB_PREFIX):
            self._hub_hook(path.removeprefix(HUB_PREFIX))
        elif path == HEALTH_PATH:
            self._reply(405, "method not allowed", headers={"Allow": "GET"})
        else:
            self._reply(404, "not found")

    def do_other(self) -> None:
        self._reply(405, "method not allowed")

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_other

    def _hub_hook(self, token: str) -> None:
        config = self.server.config
        if not hmac.compare_digest(token.encode("latin-1"), config.hub_token.encode()):
            return self._reply(404, "not found")  # as any unknown URL: no hint that the route exists
        body = self._read_body(HUB_MEDIA_TYPES)
        if body is None:
            return
        try:
            trigger = replace(parse_hub_payload(body), request_id=self.request_id)
        except PayloadError as e:
            return self._reply(400, str(e))
        if reason := refusal(trigger, config):
            return self._reply(403, reason)
        self.server.submit(trigger)
        self._reply(202, f"queued {trigger.repository}:{trigger.tag}", status="queued")

    def _registry_events(self) -> None:
        config = self.server.config
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("latin-1"), config.registry_token.encode()
        ):
            return self._reply(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
        body = self._read_body(REGISTRY_MEDIA_TYPES)
        if body is None:
            return
        try:
            pushes = parse_registry_envelope(body)
        except PayloadError as e:
            return self._reply(400, str(e))
        wanted, ignored = [], []
        for push in pushes:
            reason = refusal(push, config)
            if reason:
                ignored.append(reason)
            else:
                wanted.append(replace(push, request_id=self.request_id))
        if not wanted:
            # Still a success: the registry retries whatever it does not see accepted, forever.
            return self._reply(200, "; ".join(ignored) or "no tagged push", status="ignored")
        for trigger in wanted:
            self.server.submit(trigger)
        self._reply(202, "queued " + ", ".join(f"{t.repository}:{t.tag}" for t in wanted), status="queued")

    def _read_body(self, media_types: frozenset[str]) -> bytes | None:
        """The body, or None once a 4xx is sent; sizes and types are checked before a byte of it is read."""
        length = self.headers.get("Content-Length", "")
        if "Transfer-Encoding" in self.headers or not re.fullmatch(r"[0-9]{1,12}", length):
            self._reply(411, "a Content-Length is required")
            return None
        if int(length) > MAX_BODY:
            self._reply(413, f"body over {MAX_BODY} bytes")
            return None
        if self.headers.get_content_type() not in media_types:
            self._reply(415, f"content type must be one of {sorted(media_types)}")
            return None
        try:
            body = self.rfile.read(int(length))
        except OSError:
            body = b""
        self.body_unread = False
        if len(body) != int(length):
            self._reply(400, "body shorter than its Content-Length")
            return None
        return body

    def _route(self) -> str:
        return self.path.partition("?")[0]

    def _reply(self, code: int, reason: str, status: str | None = None, headers: dict | None = None) -> None:
        log.info("%s %s %s %s -> %d %s", self.request_id, self.client_address[0], self.command,
                 redact(self._route()), code, reason)
        self._send(code, {"status": status or "refused", "reason": reason}, headers)

    def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps({**payload, "request_id": self.request_id}).encode()
        self.send_response(code)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                            "X-Request-Id": self.request_id, **(headers or {})}.items():
            self.send_header(name, value)
        if self.body_unread:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if self.body_unread:
            self._swallow_body()

    def _swallow_body(self) -> None:
        """Closing with a body still arriving makes the kernel reset the connection before the client reads our
        answer; so stop writing and discard what comes, into one small buffer, for a bounded time."""
        self.close_connection = True
        deadline = time.monotonic() + LINGER_SECONDS
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass
        except OSError:
            pass

    def version_string(self) -> str:
        return self.server_version  # no Python version for the curious

    def log_request(self, code="-", size="-") -> None:
        pass  # `_reply` logs each answer with its reason

    def log_message(self, format: str, *args) -> None:  # the stdlib's own errors: bad request lines and the like
        log.info("%s %s %s", self.request_id, self.client_address[0], redact(format % args))


class Listener(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: Config, submit):
        super().__init__(address, Handler)
        self.config = config
        self.submit = submit
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning("- %s refused: %d connections already open", client_address[0], MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        log.warning("- %s connection failed", client_address[0], exc_info=True)


def main() -> int:
    handler = logging.StreamHandler(sys.stdout)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    handler.setFormatter(RedactingFormatter(()))
    try:
        config = load_config(CONFIG_PATH)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    handler.setFormatter(RedactingFormatter(config.secrets))
    try:
        client = docker.from_env(timeout=300)
    except docker.errors.DockerException as e:
        log.error("cannot reach the Docker engine (%s); mount /var/run/docker.sock", first_line(e))
        return 2
    if config.swarm:  # the app is a service: Swarm rolls its tasks over
        redeployer = ServiceUpdater(client, APP_SPEC_PATH, config.swarm.service, config.health_timeout)
    else:  # the app is one container: switch the proxy to the next slot
        redeployer = Redeployer(client, APP_SPEC_PATH, UPSTREAM_PATH, config.proxy, config.health_timeout)
    service = Service(config, redeployer, HISTORY_PATH, HostLock(Path(LISTENER_LOCK_DIR)))
    server = Listener(("0.0.0.0", PORT), config, service.submit)
    # serve_forever() runs in this thread, and shutdown() waits for it: call it from another.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log.info("listening on :%d; registry pushes of %s/%s, tags %s; hub repository %s; %s", PORT, config.registry,
             config.app_repository, list(config.tags), config.hub_repository,
             f"updates the service {config.swarm.service}" if config.swarm else "switches the proxy's slots")
    server.serve_forever()
    log.info("stopping: finishing the redeploy under way, if any")
    service.queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
