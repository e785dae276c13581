"""The one round trip that reads everything a plan needs: sections marked `::name`, closed by `::end`.

Add a fact by adding a section here (and to `dockyard.facts.parse`), never a second command.
"""

from __future__ import annotations

import shlex

from dockyard.commands.engine import DOCKERD_MARK, GUARD_MARK, GUARD_UNIT, LOOPBACK_GUARD
from dockyard.contract import HOST_UPSTREAM_FILE, ROLE_LABEL

SECTIONS = (
    "docker", "dockerd", "dpkg", "init", "boot", "guard", "guard_boot", "groups", "containers", "images", "files",
    "owners", "upstream",
)


def script(user: str, paths: list[str], names: list[str]) -> str:
    """`paths`: the files whose hashes to read; `names`: containers to inspect even without dockyard's labels."""
    files = " ".join(shlex.quote(p) for p in sorted(paths)) or "/dev/null"
    by_name = " ".join("--filter " + shlex.quote(f"name=^/{n}$") for n in sorted(names))
    ids = f"docker ps -aq --filter label={ROLE_LABEL}" + (f"; docker ps -aq {by_name}" if names else "")
    return f"""echo ::docker; v=$(docker version --format '{{{{.Server.Version}}}}' 2>/dev/null || true); echo "$v"
echo ::dockerd; command -v dockerd || true
echo ::dpkg; [ -n "$v" ] || dpkg --audit 2>/dev/null || true
echo ::init; [ -d /run/systemd/system ] && echo systemd || true
echo ::boot; {_enabled_at_boot("docker", DOCKERD_MARK)}
echo ::guard; iptables -t raw -C {LOOPBACK_GUARD} 2>/dev/null && echo present || true
echo ::guard_boot; {_enabled_at_boot(GUARD_UNIT, GUARD_MARK)}
echo ::groups; id -nG {shlex.quote(user)} 2>/dev/null || true
echo ::containers; ids=$( ({ids}) 2>/dev/null | sort -u); if [ -n "$ids" ]; then docker inspect $ids; fi
echo ::images; docker image ls --no-trunc --format '{{{{.Repository}}}}:{{{{.Tag}}}} {{{{.ID}}}}' 2>/dev/null || true
echo ::files; sha256sum {files} 2>/dev/null || true
echo ::owners; stat -c '%u %n' {files} 2>/dev/null || true
echo ::upstream; cat {HOST_UPSTREAM_FILE} 2>/dev/null || true
echo ::end"""


def _enabled_at_boot(unit: str, rc_local_mark: str) -> str:
    """`enabled` when systemd starts `unit` at boot or, without systemd, /etc/rc.local holds the marked line."""
    return (
        f"if [ -d /run/systemd/system ]; then systemctl is-enabled {unit} 2>/dev/null || true; "
        f"else grep -qs {shlex.quote(rc_local_mark)} /etc/rc.local && echo enabled || true; fi"
    )
