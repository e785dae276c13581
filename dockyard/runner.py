"""Turn a host's plan into executed steps over its one connection, whose session holds the host lock.

A role's remote steps go out as one `set -eu` script that echoes each step's index, so a failure names
its step. Transfers (ship, push) run between scripts, on the same connection.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import TYPE_CHECKING

from dockyard import transfer
from dockyard.commands.lock import STEP_SHELL
from dockyard.errors import DockyardError, RemoteFailed
from dockyard.plan import Plan, RemoteStep, RolePlan, Step, Transfer
from dockyard.ssh import HostConnection

if TYPE_CHECKING:
    from dockyard.environment import Env
    from dockyard.registry_api import RegistryClient

STEP_MARK = "::step "


def script(steps: list[RemoteStep]) -> str:
    lines = ["set -eu"]
    for i, step in enumerate(steps):
        lines += [f"echo '{STEP_MARK}{i}'", step.command]
    return "\n".join(lines)


def failed_step(steps: list[RemoteStep], stdout: str) -> RemoteStep:
    marks = [line for line in stdout.splitlines() if line.startswith(STEP_MARK)]
    return steps[int(marks[-1][len(STEP_MARK):])] if marks else steps[0]


def batches(steps: tuple[Step, ...]) -> list[Transfer | list[RemoteStep]]:
    """Consecutive remote steps share one script; each transfer stands alone."""
    out: list[Transfer | list[RemoteStep]] = []
    for step in steps:
        if isinstance(step, RemoteStep) and out and isinstance(out[-1], list):
            out[-1].append(step)
        else:
            out.append(step if isinstance(step, Transfer) else [step])
    return out


class Applier:
    def __init__(self, env: Env, conn: HostConnection):
        self.env, self.conn, self.out = env, conn, env.out
        self._stack = ExitStack()
        self._registry: RegistryClient | None = None

    def __enter__(self) -> Applier:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def apply(self, plan: Plan) -> None:
        for role in plan.roles:
            self.apply_role(plan.host, role)

    def apply_role(self, host: str, role: RolePlan) -> None:
        started = time.monotonic()
        if not role.changed:
            self.out.step(host, role.role, "ok")
            return
        try:
            for batch in batches(role.steps):
                match batch:
                    case Transfer(kind="ship"):
                        transfer.ship(self.conn, self.out, self.env.layers.packed(batch.local_image))
                    case Transfer(kind="push"):
                        transfer.push(self.conn, self.out, self.registry(), self.env.layers.packed(batch.local_image),
                                      batch.repository)
                    case _:
                        self._run(batch)
        except DockyardError as e:
            self.out.step(host, role.role, "failed", str(e), time.monotonic() - started)
            raise
        self.out.step(host, role.role, "changed", role.summary, time.monotonic() - started)

    def _run(self, steps: list[RemoteStep]) -> None:
        try:
            self.conn.run(script(steps), what=steps[0].role, shell=STEP_SHELL)
        except RemoteFailed as e:
            step = failed_step(steps, e.stdout)
            e.what = f"{step.role}: {step.action} {step.target}"
            e.stdout = "\n".join(line for line in e.stdout.splitlines() if not line.startswith(STEP_MARK))
            raise

    def registry(self) -> RegistryClient:
        """The host's registry, through a tunnel opened on first use."""
        if self._registry is None:
            port = self._stack.enter_context(self.conn.tunnel(self.env.inventory.services.registry.port))
            self._registry = transfer.registry(self.env, self.conn.record.name, port)
        return self._registry
