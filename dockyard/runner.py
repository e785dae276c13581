"""Turn a host's plan into executed steps over its one connection.

A role's remote steps go out as one `set -eu` script that echoes each step's index, so a failure names
its step. Image transfers (ship, push) run between scripts, on the same connection.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from dockyard import transfer
from dockyard.errors import DockyardError, StepFailed
from dockyard.plan import Plan, RolePlan, Step
from dockyard.report import Reporter
from dockyard.ssh import HostConnection, ScriptFailed

STEP_MARK = "::step "


def script(steps: list[Step]) -> str:
    lines = ["set -eu"]
    for i, step in enumerate(steps):
        lines += [f"echo '{STEP_MARK}{i}'", step.command]
    return "\n".join(lines)


def failed_step(steps: list[Step], stdout: str) -> Step:
    marks = [line for line in stdout.splitlines() if line.startswith(STEP_MARK)]
    return steps[int(marks[-1][len(STEP_MARK):])] if marks else steps[0]


def batches(steps: tuple[Step, ...]) -> list[list[Step]]:
    """Consecutive remote steps share one script; each transfer stands alone."""
    out: list[list[Step]] = []
    for step in steps:
        if step.is_transfer or not out or out[-1][0].is_transfer:
            out.append([step])
        else:
            out[-1].append(step)
    return out


class Applier:
    def __init__(self, conn: HostConnection, out: Reporter, registry_port: int):
        self.conn, self.out, self.registry_port = conn, out, registry_port
        self._stack = ExitStack()
        self._tunnel_port: int | None = None

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
                if batch[0].is_transfer:
                    self._transfer(batch[0])
                else:
                    self._run(host, batch)
        except DockyardError as e:
            self.out.step(host, role.role, "failed", str(e), time.monotonic() - started)
            raise
        self.out.step(host, role.role, "changed", role.summary, time.monotonic() - started)

    def _run(self, host: str, steps: list[Step]) -> None:
        try:
            self.conn.run(script(steps))
        except ScriptFailed as e:
            step = failed_step(steps, e.stdout)
            detail = (e.stderr.strip() or e.stdout.strip()).splitlines()[-3:]
            raise StepFailed(
                f"{host}: {step.role}: {step.action} {step.target} failed (exit {e.exited}): {' | '.join(detail)}"
            ) from None

    def _transfer(self, step: Step) -> None:
        if step.action == "ship":
            transfer.ship(self.conn, self.out, step.source)
        else:
            # the host names its registry 127.0.0.1:<port>; the tunnel reaches it under another port
            transfer.push(self.conn, self.out, self.tunnel_port(), step.source, step.target.split("/", 1)[1])

    def tunnel_port(self) -> int:
        if self._tunnel_port is None:
            self._tunnel_port = self._stack.enter_context(self.conn.tunnel(self.registry_port))
        return self._tunnel_port
