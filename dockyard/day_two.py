"""Day-two tasks on a running app: roll it back, read its log, run a one-off command, and the status of a host.

Each reads what the host says in one round trip and parses it here, with pure functions the tests call directly.
"""

from __future__ import annotations

import datetime
import json
import shlex
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace

from dockyard import app_secrets, facts, lock
from dockyard.commands import app as commands
from dockyard.commands import switch
from dockyard.contract import ROLE_LABEL, upstream_target
from dockyard.environment import Env
from dockyard.errors import DockyardError, RemoteFailed, StepFailed
from dockyard.lock import Claim
from dockyard.spec import Slots
from dockyard.ssh import HostConnection
from roles import app as app_role

ROLLBACK = "rollback"


@dataclass(frozen=True)
class Service:
    """One container deploy started, as `status` shows it."""

    name: str
    role: str
    image: str
    version: str  # the image's tag
    health: str  # healthy | unhealthy | starting, or the state of a container without a health check
    uptime_s: int
    restarts: int


@dataclass(frozen=True)
class HostStatus:
    host: str
    services: tuple[Service, ...]
    upstream: str  # the app container the proxy serves, with its port; "" when the file names none
    last_release: dict | None  # the audit log's last entry

    def as_dict(self) -> dict:
        return {
            "host": self.host, "services": [vars(s) for s in self.services], "upstream": self.upstream,
            "last_release": self.last_release,
        }


# -- status -----------------------------------------------------------------------------------------------------
def status(env: Env) -> list[HostStatus]:
    statuses = []
    for record in env.hosts():
        with env.connect(record) as conn:
            statuses.append(parse_status(record.name, conn.run(commands.status(), what="read the status")))
    return statuses


def parse_status(host: str, output: str) -> HostStatus:
    sections = facts.split_sections(output, commands.STATUS_SECTIONS, host, "the status read")
    try:
        now = datetime.datetime.fromtimestamp(int(sections["now"].strip()), datetime.UTC)
        inspected = json.loads(sections["containers"]) if sections["containers"].strip() else []
        services = tuple(sorted((service(c, now) for c in inspected), key=lambda s: (s.role, s.name)))
        target = upstream_target(sections["upstream"])
        release = sections["release"].strip()
        last = json.loads(release) if release else None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StepFailed(f"{host}: the status read returned what it cannot parse ({type(e).__name__}: {e}); "
                         f"rerun, and if it persists run with DOCKYARD_DEBUG=1") from e
    return HostStatus(host, services, f"{target[0]}:{target[1]}" if target else "", last)


def service(inspect: dict, now: datetime.datetime) -> Service:
    state = inspect["State"]
    image = inspect["Config"]["Image"]
    started = state.get("StartedAt", "")
    running = bool(state.get("Running"))
    return Service(
        name=inspect["Name"].lstrip("/"),
        role=(inspect["Config"].get("Labels") or {}).get(ROLE_LABEL, ""),
        image=image,
        version=image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else "latest",
        health=(state.get("Health") or {}).get("Status") or state.get("Status", ""),
        uptime_s=int((now - _instant(started)).total_seconds()) if running and started else 0,
        restarts=int(inspect.get("RestartCount", 0)),
    )


def _instant(text: str) -> datetime.datetime:
    """Docker's `2026-11-30T14:35:22.123456789Z` (nanoseconds) to the second."""
    return datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)


# -- logs and one-off commands ----------------------------------------------------------------------------------
def logs(env: Env, lines: int, since: str | None, follow: bool) -> None:
    """The app's log from every app host, each line prefixed with the host's name; with `follow`, until
    interrupted."""
    records = env.hosts_with("app")
    app_secrets.resolve(env)  # the app may print one: its values are hidden in what is shown
    width = max(len(r.name) for r in records)
    script = commands.logs(lines, since, follow)
    failures: list[DockyardError] = []

    def one(record) -> None:
        try:
            with env.connect(record) as conn:
                _follow(conn, script, lambda line: env.out.say(f"{record.name:<{width}} | {line}"))
        except DockyardError as e:
            failures.append(e)

    threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a join with a timeout lets Ctrl-C through
            thread.join(0.5)
    if failures:
        raise failures[0]


def run(env: Env, command: str, host: str | None = None) -> int:
    """`command` in a new container of the image that serves, with the app's settings, on the first app host (or
    `host`); its output as it comes, and its exit status."""
    words = _words(command)
    record = env.hosts_with("app", host)[0]
    app_secrets.resolve(env)  # the command may print one: its values are hidden in what is shown
    spec = app_role.container(env.inventory.services.app)
    with env.connect(record) as conn:
        return _follow(conn, commands.run(spec, words), env.out.say, check=False)


def _words(command: str) -> tuple[str, ...]:
    try:
        words = tuple(shlex.split(command))
    except ValueError as e:
        raise DockyardError(f"cannot split {command!r} into words ({e}); check its quotes") from None
    if not words:
        raise DockyardError("give a command to run, e.g. `invoke app.exec \"flask --app app routes\"`")
    return words


def _follow(conn: HostConnection, script: str, say, check: bool = True) -> int:
    no_app = []

    def line(text: str) -> None:
        if text == commands.NO_APP:
            no_app.append(text)
        else:
            say(text)

    exited = conn.follow(script, line)
    if no_app:
        raise StepFailed(f"{conn.record.name}: no container of the app serves (the proxy's upstream file names none "
                         f"that exists); run `invoke deploy`")
    if check and exited != 0:
        raise RemoteFailed(conn.where, "read the app's log", exited, "", "")
    return exited


# -- rollback ---------------------------------------------------------------------------------------------------
def earlier_image(history: list[dict], current: str) -> str | None:
    """The image that served before `current` took over: the newest successful switch to `current` from another
    image names it."""
    for entry in reversed(history):
        before = (entry.get("before") or {}).get("image") or ""
        after = (entry.get("after") or {}).get("image") or ""
        if entry.get("result") == "success" and after == current and before and before != current:
            return before
    return None


def named_image(history: list[dict], tag: str) -> str | None:
    """The newest image of the audit log tagged `tag`."""
    for entry in reversed(history):
        for image in ((entry.get("after") or {}).get("image"), (entry.get("before") or {}).get("image")):
            if image and image.rpartition(":")[2] == tag and ":" in image.rpartition("/")[2]:
                return image
    return None


def rollback(env: Env, to: str | None, claim: Claim) -> list[str]:
    """Switch the app on every app host back to the image that served before (or to the one tagged `to`), without
    downtime, recorded in the audit log as a rollback. Every host is locked, read and checked before any is
    changed."""
    settings = env.inventory.services.app
    with ExitStack() as stack:
        plans = []
        for record in env.hosts_with("app"):
            conn = stack.enter_context(env.connect(record))
            read = stack.enter_context(lock.held(conn, env.out, claim, commands.rollback_facts(),
                                                 "read the app's history"))
            sections = facts.split_sections(read, commands.ROLLBACK_SECTIONS, record.name, "the rollback read")
            plans.append((conn, *_rollback_target(record.name, sections, to)))
        images = []
        for conn, serving, current, image in plans:
            # deploy's bookkeeping is carried over, as the webhook does: deploy leaves a rolled back app alone until
            # what it declares changes
            spec = replace(app_role.container(settings), image=image)
            script = switch.switch(spec, "app", serving.digest, Slots(app_role.CONTAINER_PORT), source=ROLLBACK,
                                   declared=serving.declared_image)
            started = time.monotonic()
            conn.run(script, what=f"roll the app back to {image}")
            env.out.step(conn.record.name, "app", "changed", f"rolled back to {image} (from {current})",
                         time.monotonic() - started)
            images.append(image)
        return images


def _rollback_target(host: str, sections: dict[str, str], to: str | None) -> tuple[facts.Seen, str, str]:
    """The container that serves, its image, and the image to roll back to."""
    try:
        inspected = json.loads(sections["serving"]) if sections["serving"].strip() else []
        history = [json.loads(line) for line in sections["history"].splitlines() if line.strip()]
    except ValueError as e:
        raise StepFailed(f"{host}: the app's history cannot be read ({e}); move {commands.HISTORY_FILE} aside "
                         f"to start a new one") from None
    if not inspected:
        raise StepFailed(f"{host}: no container of the app serves; run `invoke deploy` first")
    serving = facts.seen(inspected[0])
    current = inspected[0]["Config"]["Image"]
    if to is None:
        image = earlier_image(history, current)
        if image is None:
            raise StepFailed(f"{host}: the app's history holds no image earlier than {current}, so there is "
                             f"nothing to roll back to; name one with --to TAG")
    else:
        image = named_image(history, to)
        if image is None:
            raise StepFailed(f"{host}: no image tagged {to} in the app's history; `invoke app.history` lists them")
    return serving, current, image
