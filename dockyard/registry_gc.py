"""`invoke registry.gc`: garbage collection of each registry host, and what it freed.

The script itself (stop, collect, start, wait healthy, measure) is `dockyard.commands.registry_gc`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard import lock
from dockyard.commands.lock import STEP_SHELL
from dockyard.commands.registry_gc import CONTAINER, gc_script
from dockyard.environment import Env
from dockyard.errors import StepFailed
from dockyard.lock import Claim
from dockyard.report import human_bytes

SUMMARY = re.compile(r"^dockyard-gc before=(\d+) after=(\d+) deleted=(\d+) stopped=(\d+)$", re.M)


@dataclass(frozen=True)
class GcResult:
    bytes_before: int
    bytes_after: int
    blobs_deleted: int
    seconds_stopped: int

    @property
    def bytes_freed(self) -> int:
        return self.bytes_before - self.bytes_after


def parse_summary(stdout: str, where: str) -> GcResult:
    match = SUMMARY.search(stdout)
    if not match:
        raise StepFailed(
            f"{where}: registry gc printed no summary (got {stdout.strip()[-200:]!r}); rerun with DOCKYARD_DEBUG=1"
        )
    return GcResult(*(int(n) for n in match.groups()))


def collect(env: Env, claim: Claim, host: str | None = None) -> list[GcResult]:
    """Collect on each registry host (or `host` alone), holding its lock, keeping untagged images where an index
    needs them."""
    results = []
    for record in env.hosts_with("registry", host):
        with env.open_registry(record) as (conn, client), lock.held(conn, env.out, claim):
            index = client.find_index()
            if index:
                env.out.say(
                    f"{record.name}: {index} is a multi-platform index, so untagged images stay: distribution 2.8's "
                    f"--delete-untagged would delete its platform images (distribution/distribution#3004)"
                )
            env.out.say(f"{record.name}: stopping {CONTAINER} for garbage collection")
            script = gc_script(delete_untagged=index is None)
            result = parse_summary(conn.run(script, what="registry gc", shell=STEP_SHELL), conn.where)
        env.out.say(
            f"{record.name}: freed {human_bytes(result.bytes_freed)} ({result.bytes_freed} bytes, "
            f"{result.blobs_deleted} blobs); volume {human_bytes(result.bytes_before)} -> "
            f"{human_bytes(result.bytes_after)}; registry stopped {result.seconds_stopped}s, healthy again"
        )
        results.append(result)
    return results
