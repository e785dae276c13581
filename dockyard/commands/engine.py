"""The Docker engine on a host, in named pieces: install the package, start it at boot and now, guard the loopback,
let the SSH user in. The plan sends only the pieces the facts show missing; each is safe to run again.

Where there is no systemd (a container, a minimal VM), /etc/rc.local does at boot what systemd units do elsewhere.
"""

from __future__ import annotations

import shlex

from dockyard.inventory import Docker

# Docker before 28 also forwards packets that arrive from the network addressed to 127.0.0.1 to the ports published
# there (moby/moby#45610): a neighbour on the host's network would reach the registry. Drop them before NAT.
LOOPBACK_GUARD = "PREROUTING ! -i lo -d 127.0.0.0/8 -j DROP"
GUARD = f"iptables -t raw -C {LOOPBACK_GUARD} 2>/dev/null || iptables -t raw -I {LOOPBACK_GUARD}"
GUARD_UNIT = "dockyard-loopback-guard"
APT = "apt-get -o DPkg::Lock::Timeout=300 -qq"  # waits for an earlier, interrupted run still holding the lock
# The engine and what it uses on a server: AppArmor loads its default profile, CA certificates reach TLS registries.
# The package's other recommends (git, perl, python3, binutils, criu, needrestart) add half again to the download
# and nearly triple the unpacking, and no host of dockyard's uses them.
DOCKER_PACKAGES = "docker.io apparmor ca-certificates"
START_DOCKERD = "(setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &)"
# The marks of dockyard's lines in /etc/rc.local, which the facts read looks for.
DOCKERD_MARK = "dockyard: dockerd"
GUARD_MARK = "dockyard: loopback guard"


def install_package(settings: Docker) -> str:
    """The distribution's docker.io, or Docker's convenience script; first finishes what an interrupted earlier run
    left half-configured."""
    if settings.install == "script":
        install = (
            f"command -v curl >/dev/null || ({APT} update && {APT} install -y curl >/dev/null)\n"
            f"curl -fsSL {shlex.quote(settings.script_url)} -o /tmp/get-docker.sh && sh /tmp/get-docker.sh >/dev/null"
        )
    else:
        install = f"{APT} update && {APT} install -y --no-install-recommends {DOCKER_PACKAGES} >/dev/null"
    return f"export DEBIAN_FRONTEND=noninteractive\ndpkg --configure -a >/dev/null 2>&1 || true\n{install}"


def enable_at_boot(systemd: bool) -> str:
    if systemd:
        return "systemctl enable docker >/dev/null 2>&1"
    return rc_local(START_DOCKERD, DOCKERD_MARK)


def guard_at_boot(systemd: bool) -> str:
    if systemd:
        return f"""cat > /etc/systemd/system/{GUARD_UNIT}.service <<'UNIT'
[Unit]
Description=dockyard: drop packets from the network addressed to 127.0.0.0/8
Before=docker.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c "{GUARD}"
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload && systemctl enable {GUARD_UNIT} >/dev/null 2>&1"""
    return rc_local(GUARD, GUARD_MARK)


def guard_now() -> str:
    return GUARD


def start_now(systemd: bool) -> str:
    return "systemctl start docker" if systemd else f"docker info >/dev/null 2>&1 || {START_DOCKERD}"


def wait_for_daemon(systemd: bool, seconds: int = 60) -> str:
    """Asked every tenth of a second: a fresh engine answers in about one, and every step after waits for it."""
    log = "`journalctl -u docker`" if systemd else "/var/log/dockerd.log"
    return (
        f"i=0; until docker info >/dev/null 2>&1; do\n"
        f"  i=$((i+1)); [ $i -lt {seconds * 10} ] || {{ echo 'dockerd did not start; see {log}' >&2; exit 1; }}; "
        f"sleep 0.1\n"
        f"done"
    )


def add_to_docker_group(user: str) -> str:
    """`user` runs docker without sudo, proved by a fresh login."""
    u = shlex.quote(user)
    return (
        f"getent group docker >/dev/null || groupadd docker\n"
        f"usermod -aG docker {u}\n"
        f"su -s /bin/sh {u} -c 'docker info >/dev/null'"
    )


def rc_local(line: str, mark: str) -> str:
    """Append `line` to /etc/rc.local once, marked so that the facts read finds it."""
    return (
        f"if ! grep -qs {shlex.quote(mark)} /etc/rc.local; then\n"
        f"  [ -f /etc/rc.local ] || printf '#!/bin/sh\\n' > /etc/rc.local\n"
        f"  sed -i '/^exit 0$/d' /etc/rc.local\n"
        f"  echo {shlex.quote(f'{line}  # {mark}')} >> /etc/rc.local\n"
        f"  chmod +x /etc/rc.local\n"
        f"fi"
    )
