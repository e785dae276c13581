"""The host lock on the host: take it and keep it for as long as the command's stdin stays open, or look at it.

The lock is an exclusive `flock` on one file, held by the shell of one long-lived command (`take`): the kernel drops
it when that shell ends, whether dockyard closes its stdin or dies and sshd closes the session, so a killed run never
leaves a stale lock. The steps of a run go out on other commands of the same connection, each under a shared `flock`
on a second file (`STEP_SHELL`); the holder lets go of the host lock only once no step holds that one. A step of a
killed run goes on until its current command ends, so the next run starts only after it.
"""

from __future__ import annotations

import json
import shlex

from dockyard.contract import HOLDER_NAME, HOST_LOCK_DIR, HOST_LOCK_NAME

LOCK = f"{HOST_LOCK_DIR}/{HOST_LOCK_NAME}"
HOLDER = f"{HOST_LOCK_DIR}/{HOLDER_NAME}"
RUN_LOCK = f"{HOST_LOCK_DIR}/run.lock"
LOCK_FD = 9  # the holder's descriptor of LOCK; a process started while it is held must not inherit it
# What `take` prints, each on a line of its own: the holder it waits for, the one that made it give up, then that it
# holds the lock (what `then` prints follows), and last that the lock is held until stdin closes.
WAITING = "::waiting "
BUSY = "::busy "
LOCKED = "::locked"
HELD = "::held"
BUSY_EXIT = 75  # EX_TEMPFAIL: another holder kept the lock for the whole timeout
# The shell a step script of a locked run runs in. `--close`: the script, and a daemon it starts, do not hold RUN_LOCK;
# the flock process does, until the script ends.
STEP_SHELL = f"flock --shared --close {RUN_LOCK} sh -s"


def take(who: str, task: str, pid: int, timeout: int) -> str:
    """Wait up to `timeout` seconds for the lock and record this run as its holder; `hold` follows, after what the
    run does first under the lock. `who` and `pid` are the local user@machine and process; the host adds where the
    SSH session comes from and when."""
    fields = " ".join(shlex.quote(json.dumps(value)) for value in (who, task))
    holder = (
        f"printf '{{\"who\": %s, \"task\": %s, \"pid\": {int(pid)}, \"from\": \"%s\", \"since\": \"%s\"}}\\n' "
        f"{fields} \"${{SSH_CLIENT%% *}}\" \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" > {HOLDER}.new\n"
        f"mv {HOLDER}.new {HOLDER}"
    )
    return "\n".join([
        f"mkdir -p {HOST_LOCK_DIR}",
        f"exec {LOCK_FD}>>{LOCK}",
        f"if ! flock -n {LOCK_FD}; then",
        f"  printf '{WAITING}%s\\n' \"$(cat {HOLDER} 2>/dev/null)\"",
        f"  flock -w {int(timeout)} {LOCK_FD} || {{ printf '{BUSY}%s\\n' \"$(cat {HOLDER} 2>/dev/null)\"; "
        f"exit {BUSY_EXIT}; }}",
        "fi",
        holder,
        f"echo {LOCKED}",
    ])


def hold() -> str:
    """Say the lock is held, and hold it until stdin closes and no step of the run holds RUN_LOCK."""
    return "\n".join([f"echo {HELD}", "cat >/dev/null", f"flock {RUN_LOCK} true"])


def status() -> str:
    """`::free`, or `::busy ` and the holder: read-only, it creates nothing."""
    return (
        f"if [ -e {LOCK} ] && ! flock -n {LOCK} true; then printf '{BUSY}%s\\n' \"$(cat {HOLDER} 2>/dev/null)\"; "
        f"else echo ::free; fi"
    )
