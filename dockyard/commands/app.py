"""The app's day-two commands on its host: its log, a one-off command in a new container, the status read, and
what a rollback reads. Each finds the container that serves through the upstream file, as the switch does; on a
swarm (the `service_` ones), the app's service instead, on the manager that deploys it."""

from __future__ import annotations

import shlex

from dockyard.commands import docker
from dockyard.commands.containers import one_off
from dockyard.commands.switch import read_serving
from dockyard.contract import APP_SERVICE, HOST_UPSTREAM_FILE, ROLE_LABEL
from dockyard.spec import ContainerSpec
from roles.webhook import HISTORY_FILE

NO_APP = "::dockyard no-app"  # printed, and the script exits, when no container of the app serves
NO_SERVICE = "::dockyard no-service"  # ... when the app's service does not exist (on a swarm)
STATUS_SECTIONS = ("now", "containers", "upstream", "release")
# On a swarm, also: the containers of the app's tasks on this node, and on a manager the service and its tasks
SWARM_STATUS_SECTIONS = ("task_containers", "service", "tasks")
SERVICE_IMAGE = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
SERVICE_LABEL = "com.docker.swarm.service.name"  # Swarm's labels on a task's container
TASK_LABEL = "com.docker.swarm.task.id"
ROLLBACK_SECTIONS = ("serving", "history")
IMAGE = '"$image"'  # the image that serves, as a shell word
HISTORY_DEPTH = 200  # audit log entries a rollback looks back through


def _serving() -> str:
    """Set $serving, or stop: nothing to read or run without it."""
    return "\n".join([
        "set -eu",
        read_serving(HOST_UPSTREAM_FILE),
        f'[ -n "$serving" ] && {docker("inspect")} "$serving" >/dev/null 2>&1 || '
        f"{{ echo {shlex.quote(NO_APP)}; exit 1; }}",
    ])


def logs(lines: int, since: str | None = None, follow: bool = False) -> str:
    """The serving container's log, both streams on stdout."""
    args = ["logs", "--tail", str(lines), *(["--since", since] if since else []), *(["--follow"] if follow else [])]
    return f'{_serving()}\n{docker(*args)} "$serving" 2>&1'


def run(spec: ContainerSpec, command: tuple[str, ...]) -> str:
    """`command` in a new container of the image that serves, with the app's settings; its exit status is the
    script's."""
    image = f'image=$({docker("inspect", "--format", "{{.Config.Image}}")} "$serving")'
    return f'{_serving()}\n{image}\n{one_off(spec, f"{spec.name}-exec", command, image=IMAGE)}'


def _service_image() -> str:
    """Set $image to the image the app's service runs, or stop."""
    return "\n".join([
        "set -eu",
        f"image=$({docker('service', 'inspect', '--format', SERVICE_IMAGE, APP_SERVICE)} 2>/dev/null) || "
        f"{{ echo {shlex.quote(NO_SERVICE)}; exit 1; }}",
    ])


def service_logs(lines: int, since: str | None = None, follow: bool = False) -> str:
    """The log of every task of the app's service, each line prefixed with its task and node, both streams on
    stdout."""
    args = ["service", "logs", "--no-task-ids", "--tail", str(lines), *(["--since", since] if since else []),
            *(["--follow"] if follow else []), APP_SERVICE]
    return f"{_service_image()}\n{docker(*args)} 2>&1"


def service_run(spec: ContainerSpec, command: tuple[str, ...]) -> str:
    """`command` in a new container of the image the app's service runs, with the app's settings (`spec`'s network
    is the swarm's overlay, which the tasks are on); its exit status is the script's."""
    return f'{_service_image()}\n{one_off(spec, f"{spec.name}-exec", command, image=IMAGE)}'


def status(swarm: bool = False) -> str:
    """Every container deploy started, with its state; the proxy's upstream; the last release; on a swarm, the app's
    tasks (`swarm_status`). One round trip."""
    return "\n".join([
        "echo ::now; date -u +%s",
        f"echo ::containers; ids=$(docker ps -aq --filter label={ROLE_LABEL}); "
        'if [ -n "$ids" ]; then docker inspect $ids; fi',
        f"echo ::upstream; cat {HOST_UPSTREAM_FILE} 2>/dev/null || true",
        f"echo ::release; tail -n 1 {HISTORY_FILE} 2>/dev/null || true",
        *([swarm_status()] if swarm else []),
        "echo ::end",
    ])


def swarm_status() -> str:
    """The containers of the app's tasks on this node (their health is known only here); on a manager, the app's
    service and its tasks meant to run (elsewhere Docker refuses, and the sections stay empty)."""
    tasks = docker("service", "ps", "--no-trunc", "--filter", "desired-state=running", "--format", "{{json .}}",
                   APP_SERVICE)
    return "\n".join([
        f"echo ::task_containers; ids=$({docker('ps', '-q', '--filter', f'label={SERVICE_LABEL}={APP_SERVICE}')}); "
        'if [ -n "$ids" ]; then docker inspect $ids; fi',
        f"echo ::service; {docker('service', 'inspect', APP_SERVICE)} 2>/dev/null || true",
        f"echo ::tasks; {tasks} 2>/dev/null || true",
    ])


def rollback_facts() -> str:
    """The serving container as `docker inspect` shows it, and the recent audit log."""
    return "\n".join([
        read_serving(HOST_UPSTREAM_FILE),
        'echo ::serving; if [ -n "$serving" ]; then docker inspect "$serving" 2>/dev/null || true; fi',
        _history(),
    ])


def service_rollback_facts() -> str:
    """The app's service as `docker service inspect` shows it, and the recent audit log."""
    return f"echo ::serving; {docker('service', 'inspect', APP_SERVICE)} 2>/dev/null || true\n{_history()}"


def _history() -> str:
    return f"echo ::history; tail -n {HISTORY_DEPTH} {HISTORY_FILE} 2>/dev/null || true\necho ::end"
