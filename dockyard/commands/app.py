"""The app's day-two commands on its host: its log, a one-off command in a new container, the status read, and
what a rollback reads. Each finds the container that serves through the upstream file, as the switch does."""

from __future__ import annotations

import shlex

from dockyard.commands import docker
from dockyard.commands.containers import one_off
from dockyard.commands.switch import read_serving
from dockyard.contract import HOST_UPSTREAM_FILE, ROLE_LABEL
from dockyard.spec import ContainerSpec
from roles.webhook import HISTORY_FILE

NO_APP = "::dockyard no-app"  # printed, and the script exits, when no container of the app serves
STATUS_SECTIONS = ("now", "containers", "upstream", "release")
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


def status() -> str:
    """Every container deploy started, with its state; the proxy's upstream; the last release. One round trip."""
    return "\n".join([
        "echo ::now; date -u +%s",
        f"echo ::containers; ids=$(docker ps -aq --filter label={ROLE_LABEL}); "
        'if [ -n "$ids" ]; then docker inspect $ids; fi',
        f"echo ::upstream; cat {HOST_UPSTREAM_FILE} 2>/dev/null || true",
        f"echo ::release; tail -n 1 {HISTORY_FILE} 2>/dev/null || true",
        "echo ::end",
    ])


def rollback_facts() -> str:
    """The serving container as `docker inspect` shows it, and the recent audit log."""
    return "\n".join([
        read_serving(HOST_UPSTREAM_FILE),
        'echo ::serving; if [ -n "$serving" ]; then docker inspect "$serving" 2>/dev/null || true; fi',
        f"echo ::history; tail -n {HISTORY_DEPTH} {HISTORY_FILE} 2>/dev/null || true",
        "echo ::end",
    ])
