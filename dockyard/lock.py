"""The host lock: one run at a time changes a host. Kamal's deploy lock, held by the run's own SSH session.

A run that changes a host opens one long-lived remote command that takes the lock (`dockyard.commands.lock.take`)
and, in the same round trip, does what the run reads first (deploy's facts); the command holds the lock until the
run ends, and with it if the run is killed. Read-only tasks never take it. The webhook listener takes the same lock
around each redeploy (images/webhook/listener.py).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from dockyard.commands import lock as commands
from dockyard.contract import HOLDER_FIELDS, document_problem
from dockyard.errors import DockyardError, RemoteFailed
from dockyard.report import Reporter
from dockyard.ssh import HostConnection


class LockHeld(DockyardError):
    """Another run held the host lock for as long as this one would wait."""


def _who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class Claim:
    """A run's request for the lock: its task, as the operator typed it, and how long it waits for another holder."""

    task: str
    timeout: int
    who: str = field(default_factory=_who)
    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True)
class Holder:
    who: str
    origin: str  # the address its SSH session comes from
    task: str
    since: str  # UTC, ISO 8601
    pid: int

    def __str__(self) -> str:
        origin = self.origin or "an unknown address"
        return f"{self.who} from {origin} ({self.task}, pid {self.pid}, since {self.since})"


def parse_holder(text: str) -> Holder | None:
    """The holder file's JSON; None when it is missing or not what a holder writes."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if document_problem(doc, HOLDER_FIELDS):
        return None
    return Holder(doc["who"], doc["from"], doc["task"], doc["since"], doc["pid"])


def describe(text: str) -> str:
    holder = parse_holder(text)
    return str(holder) if holder else "a holder that left no record"


@contextmanager
def held(conn: HostConnection, out: Reporter, claim: Claim, then: str | Callable[[], str] = "",
         what: str = "take the host lock") -> Iterator[str]:
    """Hold the host's lock while the block runs, waiting up to the claim's timeout for another holder; yields what
    `then` printed, run on the host once the lock is taken. A callable `then` is called after the host has been asked
    for the lock, so the host takes it meanwhile. A run that waits says so in one line."""
    host = conn.record.name
    waiting_since: float | None = None

    def on_line(line: str) -> None:
        nonlocal waiting_since
        if line.startswith(commands.WAITING):
            waiting_since = time.monotonic()
            holder = describe(line.removeprefix(commands.WAITING))
            out.say(f"{host}: waiting up to {claim.timeout}s for the host lock, held by {holder}")
        elif line == commands.LOCKED and waiting_since is not None:
            out.say(f"{host}: took the host lock after waiting {time.monotonic() - waiting_since:.1f}s")

    script = (commands.take(claim.who, claim.task, claim.pid, claim.timeout), then, commands.hold())
    asked = time.monotonic()
    with ExitStack() as stack:
        try:
            parts = (part() if callable(part) else part for part in script)
            printed = stack.enter_context(conn.held(parts, what, commands.HELD, on_line))
        except RemoteFailed as e:
            busy = [line for line in e.stdout.splitlines() if line.startswith(commands.BUSY)]
            if e.exited != commands.BUSY_EXIT or not busy:
                raise
            holder, waited = describe(busy[-1].removeprefix(commands.BUSY)), time.monotonic() - asked
            raise LockHeld(
                f"{host}: the host lock is held by {holder}; gave up after waiting {waited:.0f}s; run again once it "
                f"is done, or wait longer with --lock-timeout"
            ) from None
        lines = printed.splitlines()
        yield "\n".join(lines[lines.index(commands.LOCKED) + 1:])


def holder(conn: HostConnection) -> str | None:
    """Who holds the host's lock, described, or None when it is free. Takes nothing, creates nothing."""
    printed = conn.run(commands.status(), what="look at the host lock").rstrip("\n")
    return describe(printed.removeprefix(commands.BUSY)) if printed.startswith(commands.BUSY) else None
