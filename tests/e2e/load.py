"""A bounded load for the e2e tests: N GETs over threads, and every request that failed, with when and why.

Half the threads keep one `requests.Session` each (keep-alive: connections the proxy may close under them);
the other half open a fresh connection per request. https is verified against a CA file.

A kept-alive connection the server closes just as a request goes out on it ends with no answer at all
(`RemoteDisconnected`): Caddy closes its idle connections on every config change, and a request racing that close
is lost. HTTP lets a client send such a request again (RFC 9112, 9.3.1), and browsers, curl and Go do; `requests`
does not. So a keep-alive thread sends it once more, and counts it in `retried`; a second loss, an error status,
and any failure on a fresh connection count as failures. Run it in the
foreground (`run()`), around an operation (`with Load(...) as load: ...`, then `load.failures`), or through an
operation of unknown length (`start()` with a large `total`, then `finish(at_least=...)`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import RemoteDisconnected
from pathlib import Path

import requests

KEEP_ALIVE, FRESH = "keep-alive", "fresh"


@dataclass(frozen=True)
class Failure:
    at: float  # seconds since the load started
    connection: str  # keep-alive | fresh
    error: str


def answered_200(response: requests.Response) -> bool:
    return response.status_code == 200


@dataclass
class Load:
    url: str
    total: int = 1000  # requests to send
    threads: int = 8
    ca_file: Path | None = None  # None: the system's CAs
    ok: Callable[[requests.Response], bool] = answered_200
    pause: float = 0.0  # seconds each thread waits between its requests, to spread the load over time
    timeout: float = 10.0
    failures: list[Failure] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # body -> how many times it came back
    retried: int = 0  # requests sent again after a kept-alive connection closed under them, unanswered
    seconds: float = 0.0  # how long the whole load took

    def __post_init__(self):
        self._lock = threading.Lock()
        self._sent = 0
        self._workers: list[threading.Thread] = []
        self._started = 0.0

    def run(self) -> list[Failure]:
        self.start()
        return self.wait()

    def start(self) -> Load:
        self._started = time.monotonic()
        self._workers = [
            threading.Thread(target=self._work, args=(KEEP_ALIVE if i % 2 == 0 else FRESH,), daemon=True)
            for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def finish(self, at_least: int) -> list[Failure]:
        """Send no more requests once `at_least` are sent, or at once if they are; wait for those under way."""
        with self._lock:
            self.total = max(self._sent, at_least)
        return self.wait()

    def wait(self) -> list[Failure]:
        for worker in self._workers:
            worker.join()
        self.seconds = time.monotonic() - self._started
        return self.failures

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.wait()

    @property
    def done(self) -> int:
        return sum(self.answers.values()) + len(self.failures)

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= self.total:
                return False
            self._sent += 1
            return True

    def _work(self, connection: str) -> None:
        verify = str(self.ca_file) if self.ca_file else True
        session = requests.Session() if connection == KEEP_ALIVE else None
        try:
            while self._take():
                self._one(session, connection, verify)
                if self.pause:
                    time.sleep(self.pause)
        finally:
            if session is not None:
                session.close()

    def _one(self, session: requests.Session | None, connection: str, verify) -> None:
        try:
            if session is None:
                with requests.Session() as fresh:
                    response = fresh.get(self.url, verify=verify, timeout=self.timeout)
            else:
                try:
                    response = session.get(self.url, verify=verify, timeout=self.timeout)
                except requests.ConnectionError as e:
                    if not closed_unanswered(e):
                        raise
                    with self._lock:
                        self.retried += 1
                    response = session.get(self.url, verify=verify, timeout=self.timeout)
        except requests.RequestException as e:
            self._fail(connection, f"{type(e).__name__}: {e}")
            return
        if not self.ok(response):
            self._fail(connection, f"HTTP {response.status_code}: {response.text[:200]!r}")
            return
        with self._lock:
            self.answers[response.text] += 1

    def _fail(self, connection: str, error: str) -> None:
        with self._lock:
            self.failures.append(Failure(round(time.monotonic() - self._started, 3), connection, error))


def closed_unanswered(error: requests.ConnectionError) -> bool:
    """The server closed the connection after the request went out, before a byte of answer came back."""
    reason = error.args[0] if error.args else None
    return any(isinstance(cause, RemoteDisconnected) for cause in getattr(reason, "args", ()))


def under_load(what: str, url: str, ca_file: Path, operation: Callable, at_least: int, threads: int = 8,
               pause: float = 0.05):
    """Run `operation` while a load of at least `at_least` requests runs on `url`; print the figures, check that
    none failed, and return the load and what the operation returned."""
    load = Load(url, total=10**6, threads=threads, ca_file=ca_file, pause=pause).start()
    started = time.monotonic()
    try:
        result = operation()
    finally:
        took = time.monotonic() - started
        load.finish(at_least)
    answers = ", ".join(f"{n}x {text.strip()!r}" for text, n in sorted(load.answers.items()))
    print(f"\n{what}: {took:.1f}s; {load.done} requests over {load.threads} threads (keep-alive and fresh "
          f"connections) in {load.seconds:.1f}s, {len(load.failures)} failed, {load.retried} sent again on a new "
          f"connection after the proxy closed a kept-alive one under them; answers: {answers}")
    assert load.failures == [], load.failures[:5]
    assert load.done >= at_least
    return load, result
