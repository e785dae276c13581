"""Release the app: build it, push it through the tunnel, and wait for the webhook's redeploy.

The push alone triggers the redeploy: the private registry notifies the webhook listener on the host.
This side only watches the listener's audit log for the outcome.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dockyard import images, transfer
from dockyard.contract import PUSHED_TAG_PREFIX
from dockyard.environment import Env
from dockyard.errors import DockyardError, StepFailed
from dockyard.ssh import HostConnection
from dockyard.state import HostRecord
from roles import webhook

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
POLL_SECONDS = 0.2  # on the host: polling there costs no round trip


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


def release(env: Env, version: str | None, timeout: float) -> list[Outcome]:
    tag = release_tag(version, env.root)
    hosts = env.hosts_with("app")
    for record in hosts:
        missing = {"registry", "webhook"} - set(record.roles)
        if missing:
            raise DockyardError(f"{record.name} does not run {', '.join(sorted(missing))}; releases need both")
    base = images.base_image(images.resolve_source(env.inventory.images), env.out.say)
    settings = env.inventory.services.app
    built = images.build("app", env.root / settings.source, base, env.out.say)
    return [_release_to(env, record, built.ref, f"{settings.repository}:{tag}", timeout) for record in hosts]


def _release_to(env: Env, record: HostRecord, local_ref: str, repository: str, timeout: float) -> Outcome:
    tag = repository.rsplit(":", 1)[1]
    with env.connect(record) as conn:
        seen = int(conn.run(f"cat {webhook.HISTORY_FILE} 2>/dev/null | wc -l").strip() or 0)
        started = time.monotonic()
        with conn.tunnel(env.inventory.services.registry.port) as port:
            transfer.push(conn, env.out, port, local_ref, repository)
        pushed = time.monotonic()
        entry = _wait_for_entry(conn, seen, tag, timeout)
        done = time.monotonic()
    if entry is None:
        raise StepFailed(
            f"{record.name}: pushed {repository} but no redeploy was recorded within {timeout:.0f}s; "
            f"check the webhook with `invoke webhook.logs`"
        )
    ok = entry.get("result") == "success"
    outcome = Outcome(record.name, tag, ok, entry.get("reason") or entry.get("result", ""), pushed - started,
                      done - pushed)
    timing = f"push {outcome.push_seconds:.1f}s, redeploy {outcome.redeploy_seconds:.1f}s"
    if not ok:
        raise StepFailed(
            f"{record.name}: release {repository} failed: {outcome.detail} ({timing}); the previous version "
            f"still serves; see `invoke app.history`"
        )
    env.out.step(record.name, "app", "changed", f"{repository} serving ({timing})", done - started)
    return outcome


def _wait_for_entry(conn: HostConnection, seen: int, tag: str, timeout: float) -> dict | None:
    """Wait on the host, in one remote command, until the audit log records this tag."""
    entries = history(conn, since=seen, until_tag=tag, timeout=timeout)
    return next((e for e in entries if e.get("trigger", {}).get("tag") == tag), None)


def history(conn: HostConnection, since: int = 0, last: int | None = None, until_tag: str | None = None,
            timeout: float = 0) -> list[dict]:
    """Audit log entries written by the webhook listener on the host; with `until_tag`, first wait on the
    host until an entry names that tag (tags hold no quotes, so a plain grep finds the JSON)."""
    lines = f"+{since + 1}" if last is None else str(last)
    read = f"tail -n {lines} {webhook.HISTORY_FILE} 2>/dev/null"
    if until_tag:
        needle = shlex.quote(json.dumps({"tag": until_tag})[1:-1])  # '"tag": "v2"', as the listener writes it
        polls = int(timeout / POLL_SECONDS)
        read = (
            f"i=0; until {read} | grep -qF {needle} || [ $i -ge {polls} ]; do "
            f"i=$((i+1)); sleep {POLL_SECONDS}; done; {read}"
        )
    return [json.loads(line) for line in conn.run(f"{read} || true").splitlines() if line.strip()]
