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
from dockyard.commands import swarm as swarm_commands
from dockyard.commands import switch
from dockyard.contract import APP_SERVICE, CLUSTER_NETWORK, ROLE_LABEL, upstream_target
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


@dataclass(frozen=True)
class Task:
    """One task of the app's service on a swarm, as `status` shows it."""

    id: str
    name: str  # dockyard_app.2
    node: str
    state: str  # Swarm's, e.g. "Running 5 minutes ago"
    image: str
    health: str  # of its container, read on its node; "" when no host shows that container
    error: str


@dataclass(frozen=True)
class ServiceStatus:
    """The app's service on a swarm."""

    name: str
    image: str  # what its spec runs
    running: int
    declared: int  # its replicas
    update: str  # the state of its last rolling update; "" before any
    tasks: tuple[Task, ...]

    def as_dict(self) -> dict:
        return {**vars(self), "tasks": [vars(t) for t in self.tasks]}


@dataclass(frozen=True)
class NodeRead:
    """What one host's status read says of the swarm: its task containers' health, and on a manager the app's
    service and its tasks."""

    health: dict[str, str]  # task id -> its container's health
    service: ServiceStatus | None  # its tasks' health and running count still unknown


@dataclass(frozen=True)
class Status:
    hosts: list[HostStatus]
    swarm: bool
    service: ServiceStatus | None  # on a swarm, once deployed

    def as_dict(self) -> dict:
        return {"hosts": [h.as_dict() for h in self.hosts], "service": self.service and self.service.as_dict()}


# -- status -----------------------------------------------------------------------------------------------------
def status(env: Env) -> Status:
    swarm = env.inventory.swarm
    hosts, nodes = [], []
    for record in env.hosts():
        with env.connect(record) as conn:
            output = conn.run(commands.status(swarm), what="read the status")
        hosts.append(parse_status(record.name, output))
        if swarm:
            nodes.append(parse_node(record.name, output))
    return Status(hosts, swarm, service_status(nodes) if swarm else None)


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
        health=_health(state),
        uptime_s=int((now - _instant(started)).total_seconds()) if running and started else 0,
        restarts=int(inspect.get("RestartCount", 0)),
    )


def parse_node(host: str, output: str) -> NodeRead:
    sections = facts.split_sections(output, commands.SWARM_STATUS_SECTIONS, host, "the status read")
    try:
        containers = json.loads(sections["task_containers"]) if sections["task_containers"].strip() else []
        health = {c["Config"]["Labels"][commands.TASK_LABEL]: _health(c["State"]) for c in containers}
        services = json.loads(sections["service"]) if sections["service"].strip() else []
        service = None
        if services:
            spec = services[0]["Spec"]
            tasks = (json.loads(line) for line in sections["tasks"].splitlines() if line.strip())
            service = ServiceStatus(
                name=spec["Name"],
                image=spec["TaskTemplate"]["ContainerSpec"]["Image"],
                running=0,  # counted once the tasks are known
                declared=spec["Mode"]["Replicated"]["Replicas"],
                update=(services[0].get("UpdateStatus") or {}).get("State", ""),
                tasks=tuple(Task(t["ID"], t["Name"], t["Node"], t["CurrentState"], t["Image"], "", t["Error"])
                            for t in tasks),
            )
    except (ValueError, KeyError, TypeError) as e:
        raise StepFailed(f"{host}: the status read returned what it cannot parse ({type(e).__name__}: {e}); "
                         f"rerun, and if it persists run with DOCKYARD_DEBUG=1") from e
    return NodeRead(health, service)


def service_status(nodes: list[NodeRead]) -> ServiceStatus | None:
    """The app's service as the first manager that knows it describes it, with the health each node read of its
    task containers; None when no manager knows it (never deployed)."""
    service = next((n.service for n in nodes if n.service), None)
    if service is None:
        return None
    health = {task: said for node in nodes for task, said in node.health.items()}
    tasks = tuple(sorted((replace(t, health=health.get(t.id, "")) for t in service.tasks), key=lambda t: t.name))
    return replace(service, running=sum(t.state.startswith("Running") for t in tasks), tasks=tasks)


def _health(state: dict) -> str:
    return (state.get("Health") or {}).get("Status") or state.get("Status", "")


def _instant(text: str) -> datetime.datetime:
    """Docker's `2026-11-30T14:35:22.123456789Z` (nanoseconds) to the second."""
    return datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)


# -- logs and one-off commands ----------------------------------------------------------------------------------
def logs(env: Env, lines: int, since: str | None, follow: bool) -> None:
    """The app's log from every app host, each line prefixed with the host's name; with `follow`, until
    interrupted. On a swarm, the log of every task of its service, read on the app host, each line prefixed with the
    task and its node."""
    records = env.hosts_with("app")
    app_secrets.resolve(env)  # the app may print one: its values are hidden in what is shown
    if env.inventory.swarm:
        with env.connect(records[0]) as conn:
            _follow(conn, commands.service_logs(lines, since, follow), env.out.say)
        return
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
    """`command` in a new container of the image that serves (on a swarm, that the app's service runs), with the
    app's settings, on the first app host (or `host`); its output as it comes, and its exit status."""
    words = _words(command)
    record = env.hosts_with("app", host)[0]
    app_secrets.resolve(env)  # the command may print one: its values are hidden in what is shown
    spec = app_role.container(env.inventory.services.app)
    if env.inventory.swarm:  # beside the tasks, on the overlay: it reaches what they reach
        script = commands.service_run(replace(spec, network=CLUSTER_NETWORK), words)
    else:
        script = commands.run(spec, words)
    with env.connect(record) as conn:
        return _follow(conn, script, env.out.say, check=False)


def _words(command: str) -> tuple[str, ...]:
    try:
        words = tuple(shlex.split(command))
    except ValueError as e:
        raise DockyardError(f"cannot split {command!r} into words ({e}); check its quotes") from None
    if not words:
        raise DockyardError("give a command to run, e.g. `invoke app.exec \"flask --app app routes\"`")
    return words


def _follow(conn: HostConnection, script: str, say, check: bool = True) -> int:
    missing = []

    def line(text: str) -> None:
        if text in (commands.NO_APP, commands.NO_SERVICE):
            missing.append(text)
        else:
            say(text)

    exited = conn.follow(script, line)
    if commands.NO_APP in missing:
        raise StepFailed(f"{conn.record.name}: no container of the app serves (the proxy's upstream file names none "
                         f"that exists); run `invoke deploy`")
    if missing:
        raise StepFailed(f"{conn.record.name}: the app's service {APP_SERVICE} does not exist; run `invoke deploy`")
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
    changed. On a swarm, the app's service is updated back, from the app host, and Swarm rolls its tasks over."""
    settings = env.inventory.services.app
    swarm = env.inventory.swarm
    read_script = commands.service_rollback_facts() if swarm else commands.rollback_facts()
    with ExitStack() as stack:
        plans = []
        for record in env.hosts_with("app"):
            conn = stack.enter_context(env.connect(record))
            read = stack.enter_context(lock.held(conn, env.out, claim, read_script, "read the app's history"))
            sections = facts.split_sections(read, commands.ROLLBACK_SECTIONS, record.name, "the rollback read")
            serving, current = (_service_image(record.name, sections) if swarm
                                else _serving_container(record.name, sections))
            image = _rollback_image(record.name, _history(record.name, sections), current, to)
            plans.append((conn, serving, current, image))
        images = []
        for conn, serving, current, image in plans:
            if swarm:
                script = swarm_commands.update_image(image, swarm_commands.UPDATE_TIMEOUT, ROLLBACK)
            else:
                # deploy's bookkeeping is carried over, as the webhook does: deploy leaves a rolled back app alone
                # until what it declares changes
                spec = replace(app_role.container(settings), image=image)
                script = switch.switch(spec, "app", serving.digest, Slots(app_role.CONTAINER_PORT), source=ROLLBACK,
                                       declared=serving.declared_image)
            started = time.monotonic()
            conn.run(script, what=f"roll the app back to {image}")
            env.out.step(conn.record.name, "app", "changed", f"rolled back to {image} (from {current})",
                         time.monotonic() - started)
            images.append(image)
        return images


def _history(host: str, sections: dict[str, str]) -> list[dict]:
    try:
        return [json.loads(line) for line in sections["history"].splitlines() if line.strip()]
    except ValueError as e:
        raise StepFailed(f"{host}: the app's history cannot be read ({e}); move {commands.HISTORY_FILE} aside "
                         f"to start a new one") from None


def _serving_container(host: str, sections: dict[str, str]) -> tuple[facts.Seen, str]:
    """The container that serves, and its image."""
    try:
        inspected = json.loads(sections["serving"]) if sections["serving"].strip() else []
    except ValueError as e:
        raise StepFailed(f"{host}: `docker inspect` of the app's container printed no JSON ({e}); rerun") from None
    if not inspected:
        raise StepFailed(f"{host}: no container of the app serves; run `invoke deploy` first")
    return facts.seen(inspected[0]), inspected[0]["Config"]["Image"]


def _service_image(host: str, sections: dict[str, str]) -> tuple[None, str]:
    """On a swarm: the image the app's service runs (a reference the CLI pinned to a digest, without it)."""
    try:
        inspected = json.loads(sections["serving"]) if sections["serving"].strip() else []
        image = inspected[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] if inspected else None
    except (ValueError, KeyError, TypeError) as e:
        raise StepFailed(f"{host}: `docker service inspect` of {APP_SERVICE} printed what it cannot parse ({e}); "
                         f"rerun") from None
    if image is None:
        raise StepFailed(f"{host}: the app's service {APP_SERVICE} does not exist; run `invoke deploy` first")
    return None, image.partition("@")[0]


def _rollback_image(host: str, history: list[dict], current: str, to: str | None) -> str:
    """The image to roll back to."""
    if to is None:
        image = earlier_image(history, current)
        if image is None:
            raise StepFailed(f"{host}: the app's history holds no image earlier than {current}, so there is "
                             f"nothing to roll back to; name one with --to TAG")
    else:
        image = named_image(history, to)
        if image is None:
            raise StepFailed(f"{host}: no image tagged {to} in the app's history; `invoke app.history` lists them")
    return image
