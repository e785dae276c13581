"""The zero-downtime switch of a service with slots (the app), as one script run on its host: start the new
container in the slot that does not serve, gate on its readiness probe, point the upstream file at it and reload
Caddy, then stop the old one with its grace period. And `settle`, which clears what a switch cut short left behind.

Both decide on the host, under the lock, which container serves: what the upstream file names then, not what the
facts read saw before. Each phase of a switch first echoes its name: a switch whose dockyard was killed stops at
the next phase, when that echo finds no reader, and the tests cut a switch after any phase with `phases()`.
"""

from __future__ import annotations

import shlex

from dockyard import contract
from dockyard.commands import docker, history
from dockyard.commands.containers import ensure_network, one_off, run_container, run_inside, until_ready
from dockyard.spec import ContainerSpec, Slots

MARK = "::switch "
SLOT = '"$slot"'  # the slot the script picks, as a shell word
RELEASE_LINES = 5  # of a failed release command's output, into the error


def release_container(spec: ContainerSpec) -> str:
    """The one-off container the release command runs in."""
    return f"{spec.name}-release"


def run_release(spec: ContainerSpec, words: tuple[str, ...], source: str, failed: str) -> str:
    """Run the release command in a one-off container of the new image; on a failure, print its last lines and
    `failed`, record it in the audit log as from `source`, and exit."""
    return "\n".join([
        f"rc=0; out=$({one_off(spec, release_container(spec), words)} 2>&1) || rc=$?",
        'if [ "$rc" -ne 0 ]; then',
        f'  printf "%s\\n" "$out" | tail -n {RELEASE_LINES} >&2',
        f"  {history.append(source, spec.image, 'failure', 'release command failed')}",
        f'  echo "{failed}" >&2; exit 1',
        "fi",
    ])


def phases(spec: ContainerSpec, role: str, digest: str, slots: Slots, timeout: int = 90, source: str = "deploy",
           declared: str | None = None) -> list[tuple[str, str]]:
    """The switch's phases in order, (name, command), sharing one shell's variables. Each outcome is appended to
    the audit log as from `source`; `declared`: the image deploy declared, when the switch runs another one."""
    blue, green = contract.slot_names(spec.name)
    upstream = shlex.quote(slots.upstream)
    new = shlex.quote(f"{slots.upstream}.dockyard-new")
    line = contract.upstream_line("${slot}", slots.port).rstrip("\n")
    before = "\n".join([  # what serves, for the audit log: one inspect, none when nothing serves
        f'before=""; [ -z "$serving" ] || before=$({docker("inspect", "--format", "{{.Image}} {{.Config.Image}}")} '
        f'"$serving" 2>/dev/null || true)',
        'before_id=${before%% *}; before_image=${before#* }',
    ])
    failed = "release command failed (exit $rc): nothing switched, ${serving:-nothing} still serves"
    release = [] if not slots.release else [("release", "\n".join([
        read_serving(slots.upstream), before, run_release(spec, slots.release, source, failed),
    ]))]
    return [
        *release,
        ("start", "\n".join([
            read_serving(slots.upstream),
            # green while blue serves, blue otherwise (contract.next_slot)
            f'if [ "$serving" = {blue} ] && {docker("inspect", blue)} >/dev/null 2>&1; '
            f"then slot={green}; else slot={blue}; fi",
            before,
            f"{docker('rm', '--force')} {SLOT} >/dev/null 2>&1 || true",  # left by a switch cut short: never served
            ensure_network(spec.network),
            f"{run_container(spec, role, digest, name=SLOT, declared=declared)} >/dev/null",
        ])),
        ("gate", until_ready(SLOT, spec.health, timeout, (
            f"{docker('logs', '--tail', '20')} {SLOT} >&2 2>&1; {docker('rm', '--force')} {SLOT} >/dev/null; "
            f"{history.append(source, spec.image, 'failure', 'not healthy')}; "
            f'echo "$slot not healthy after {timeout}s, removed; ${{serving:-nothing}} still serves" >&2; exit 1'
        ))),
        ("upstream", f'echo "{line}" > {new} && mv {new} {upstream}'),
        ("reload", run_inside(slots.proxy, slots.reload)),
        ("retire", "\n".join([
            # requests the old config routed finish on the old container; with none, there is nothing to wait for
            f'if [ -n "$serving" ] && [ "$serving" != "$slot" ] && {docker("inspect")} "$serving" >/dev/null 2>&1; '
            f"then sleep {contract.SWITCH_SETTLE_SECONDS}; fi",
            _retire(spec, slots, SLOT),
        ])),
        ("record", "\n".join([
            f'after_id=$({docker("inspect", "--format", "{{.Image}}")} {SLOT})',
            history.append(source, spec.image, "success", ""),
        ])),
    ]


def switch(spec: ContainerSpec, role: str, digest: str, slots: Slots, timeout: int = 90, source: str = "deploy",
           declared: str | None = None) -> str:
    return "\n".join(["set -eu", *(f"echo '{MARK}{name}'\n{command}" for name, command in
                                   phases(spec, role, digest, slots, timeout, source, declared))])


def settle(spec: ContainerSpec, slots: Slots) -> str:
    """Make the proxy serve what the upstream file names (a switch may have died between writing it and the
    reload), then stop and remove every other container of the service."""
    unknown = f"{slots.upstream} names no container of {spec.name}; run deploy again"
    return "\n".join([
        "set -eu",
        read_serving(slots.upstream),
        f'[ -n "$serving" ] && {docker("inspect")} "$serving" >/dev/null 2>&1 || '
        f"{{ echo {shlex.quote(unknown)} >&2; exit 1; }}",
        run_inside(slots.proxy, slots.reload),
        _retire(spec, slots, '"$serving"'),
    ])


def read_serving(upstream: str) -> str:
    """Set $serving to the container the `upstream` file names, empty when it names none."""
    return f"serving=$(sed -n 's/^to \\(.*\\):[0-9]*$/\\1/p' {shlex.quote(upstream)} 2>/dev/null || true)"


def _retire(spec: ContainerSpec, slots: Slots, keep: str) -> str:
    """Stop every container of the service but `keep` (a shell word), each with its grace period, and remove it."""
    return (
        f"for old in {' '.join(slots.names(spec.name))}; do "
        f'if [ "$old" != {keep} ] && {docker("inspect")} "$old" >/dev/null 2>&1; then '
        f'{docker("stop", "--time", str(spec.stop_timeout))} "$old" >/dev/null; '
        f'{docker("rm", "--force")} "$old" >/dev/null; fi; done'
    )
