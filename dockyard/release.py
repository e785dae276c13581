"""Release the app: build it, push it through the tunnel, and wait for the webhook's redeploy.

The push alone triggers the redeploy: the private registry notifies the webhook listener on the host.
This side only watches the listener's audit log for the outcome. It holds the host lock while it pushes and lets go
before it waits: the listener takes the lock itself for the redeploy.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from dockyard import images, lock, transfer
from dockyard.commands import containers, history
from dockyard.contract import PUSHED_TAG_PREFIX
from dockyard.environment import Env
from dockyard.errors import DockyardError, StepFailed
from dockyard.lock import Claim
from dockyard.ssh import HostConnection

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
WEBHOOK_CONTAINER = "dockyard-webhook"


@dataclass(frozen=True)
class Outcome:
    host: str
    tag: str
    ok: bool
    detail: str
    push_seconds: float
    redeploy_seconds: float


def release_tag(version: str | None, root: Path) -> str:
    if version:
        tag = version
    else:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise DockyardError(f"{root} is not a git checkout with a commit, so no sha to tag with; pass --version")
        tag = result.stdout.strip()
    if not TAG.match(tag) or tag.startswith(PUSHED_TAG_PREFIX):
        raise DockyardError(
            f"{tag!r} is not a usable tag: use letters, digits, _ . - (not starting with {PUSHED_TAG_PREFIX})"
        )
    return tag


def release(env: Env, version: str | None, timeout: float, claim: Claim) -> list[Outcome]:
    tag = release_tag(version, env.root)
    hosts = env.hosts_with("app")
    for record in hosts:
        missing = {"registry", "webhook"} - set(record.roles)
        if missing:
            raise DockyardError(f"{record.name} does not run {', '.join(sorted(missing))}; releases need both")
    settings = env.inventory.services.app
    with ExitStack() as stack:
        conns = [stack.enter_context(env.connect(record)) for record in hosts]
        # where the audit log ends now, read before building: a host that cannot be reached fails the release at once
        seen = [int(conn.run(history.count(), what="count the webhook's audit log").strip() or 0) for conn in conns]
        base = images.base_image(env.images_source(), env.out.say)
        built = images.build("app", env.root / settings.source, base, env.out.say)
        env.layers.prepare([built.ref])  # packed while each host's lock is taken
        return [
            _release_to(env, conn, n, built.ref, f"{settings.repository}:{tag}", timeout, claim)
            for conn, n in zip(conns, seen, strict=True)
        ]


def _release_to(env: Env, conn: HostConnection, seen: int, local_ref: str, repository: str,
                timeout: float, claim: Claim) -> Outcome:
    name, tag = conn.record.name, repository.rsplit(":", 1)[1]
    started = time.monotonic()
    with lock.held(conn, env.out, claim), conn.tunnel(env.inventory.services.registry.port) as port:
        transfer.push(conn, env.out, transfer.registry(env, name, port), env.layers.packed(local_ref), repository)
    pushed = time.monotonic()
    entry = _wait_for_entry(conn, seen, tag, timeout)
    done = time.monotonic()
    if entry is None:
        raise StepFailed(
            f"{name}: pushed {repository} but no redeploy was recorded within {timeout:.0f}s; "
            f"check the webhook with `invoke webhook.logs`"
        )
    ok = entry.get("result") == "success"
    outcome = Outcome(name, tag, ok, entry.get("reason") or entry.get("result", ""), pushed - started, done - pushed)
    timing = f"push {outcome.push_seconds:.1f}s, redeploy {outcome.redeploy_seconds:.1f}s"
    if not ok:
        raise StepFailed(
            f"{name}: release {repository} failed: {outcome.detail} ({timing}); the previous version "
            f"still serves; see `invoke app.history`"
        )
    env.out.step(name, "app", "changed", f"{repository} serving ({timing})", done - started)
    return outcome


def _wait_for_entry(conn: HostConnection, seen: int, tag: str, timeout: float) -> dict | None:
    """Wait on the host, in one remote command, until the audit log records this tag."""
    script = history.read(since=seen, until_tag=tag, timeout=timeout)
    entries = _entries(conn, conn.run(script, what="wait for the webhook's redeploy"))
    return next((e for e in entries if e.get("trigger", {}).get("tag") == tag), None)


def recent(conn: HostConnection, last: int) -> list[dict]:
    """The last entries of the webhook's audit log on the host."""
    return _entries(conn, conn.run(history.read(last=last), what="read the webhook's audit log"))


def webhook_log(conn: HostConnection, tail: int) -> str:
    return conn.run(containers.logs(WEBHOOK_CONTAINER, tail), what="read the webhook's log").rstrip()


def _entries(conn: HostConnection, output: str) -> list[dict]:
    entries = []
    for line in filter(str.strip, output.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise StepFailed(f"{conn.where}: {history.HISTORY_FILE} holds a line that is not a JSON object "
                             f"({line[:80]!r}); move the file aside to start a new log")
        entries.append(entry)
    return entries
