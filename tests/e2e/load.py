"""A bounded load for the e2e tests: N GETs over threads, and every request that failed, with when and why.

Half the threads keep one `requests.Session` each (keep-alive: connections the proxy may close under them);
the other half open a fresh connection per request. https is verified against a CA file. Run it in the
foreground (`run()`), or around an operation (`with Load(...) as load: ...`, then `load.failures`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
