"""Shell commands as data: each function returns text and runs nothing."""

from __future__ import annotations

import base64
import shlex
from pathlib import PurePosixPath

from dockyard.contract import DOCKER_STOP_TIMEOUT, IMAGE_LABEL, ROLE_LABEL, SPEC_LABEL
from dockyard.inventory import Docker
from dockyard.spec import NETWORK, ContainerSpec, Rendered


def docker(*args: str) -> str:
    return shlex.join(("docker", *args))


def container_document(spec: ContainerSpec, role: str) -> dict:
    """Everything `docker run` gets but the image, as data: deploy runs it, and the webhook recreates the app
    from it on each pushed image. Deploy's bookkeeping labels are added by `run_container` alone."""
    return {
        "name": spec.name,
        "ports": list(spec.ports),
        "volumes": list(spec.volumes),
        "env": dict(spec.env),
        "command": list(spec.command),
        "restart": spec.restart,
        "network": spec.network,
        "labels": {**dict(spec.labels), ROLE_LABEL: role},
        "log": {"max-size": "10m", "max-file": "3"},
        "health": spec.health and {
            "command": spec.health.command(), "interval_s": 2, "timeout_s": 3, "retries": 3,
        },
    }


def run_container(spec: ContainerSpec, role: str, digest: str) -> str:
    doc = container_document(spec, role)
    args = ["run", "--detach", "--name", doc["name"], "--restart", doc["restart"], "--network", doc["network"]]
    if spec.stop_timeout != DOCKER_STOP_TIMEOUT:
        # not in the document: the webhook's SDK cannot set it, and the app keeps Docker's default
        args += ["--stop-timeout", str(spec.stop_timeout)]
    for key, value in doc["log"].items():
        args += ["--log-opt", f"{key}={value}"]
    for port in doc["ports"]:
        args += ["--publish", port]
    for volume in doc["volumes"]:
        args += ["--volume", volume]
    for key, value in doc["env"].items():
        args += ["--env", f"{key}={value}"]
    for key, value in {**doc["labels"], IMAGE_LABEL: spec.image, SPEC_LABEL: digest}.items():
        args += ["--label", f"{key}={value}"]
    if health := doc["health"]:
        args += [
            "--health-cmd", health["command"], "--health-interval", f"{health['interval_s']}s",
            "--health-timeout", f"{health['timeout_s']}s", "--health-retries", str(health["retries"]),
        ]
    return docker(*args, spec.image, *doc["command"])


def locked(lock: str | None, command: str) -> str:
    """Run `command` holding the `flock` on `lock`, when there is one."""
    if lock is None:
        return command
    folder = str(PurePosixPath(lock).parent)
    return f"mkdir -p {shlex.quote(folder)} && flock {shlex.quote(lock)} sh -c {shlex.quote(command)}"


def remove_container(name: str) -> str:
    return docker("rm", "--force", name) + " >/dev/null"


def start_container(name: str) -> str:
    return docker("start", name) + " >/dev/null"


def ensure_network(name: str = NETWORK) -> str:
    return f"{docker('network', 'inspect', name)} >/dev/null 2>&1 || {docker('network', 'create', name)} >/dev/null"


def pull(ref: str) -> str:
    return docker("pull", "--quiet", ref) + " >/dev/null"


def wait_healthy(name: str, timeout: int = 90) -> str:
    """Poll Docker's own health status; on timeout print the container's last log lines."""
    fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
    q = shlex.quote
    return (
        f"i=0; until [ \"$({docker('inspect', '--format', fmt, name)} 2>/dev/null)\" = healthy ]; do "
        f"i=$((i+1)); if [ $i -gt {timeout * 4} ]; then echo {q(f'{name} not healthy after {timeout}s; its log:')} >&2;"
        f" {docker('logs', '--tail', '20', name)} >&2; exit 1; fi; sleep 0.25; done"
    )


def write_file(file: Rendered) -> str:
    """Write a file atomically from base64, so any content survives the shell."""
    dest = PurePosixPath(file.dest)
    tmp = f"{dest}.dockyard-new"
    data = base64.b64encode(file.content).decode()
    mode = 0o600 if file.secret else file.mode
    return (
        f"mkdir -p {shlex.quote(str(dest.parent))} && "
        f"printf %s {data} | base64 -d > {shlex.quote(tmp)} && chmod {mode:o} {shlex.quote(tmp)} && "
        f"mv {shlex.quote(tmp)} {shlex.quote(str(dest))}"
    )


# Docker before 28 also forwards packets that arrive from the network addressed to 127.0.0.1 to the ports published
# there (moby/moby#45610): a neighbour on the host's network would reach the registry. Drop them before NAT.
LOOPBACK_GUARD = "PREROUTING ! -i lo -d 127.0.0.0/8 -j DROP"
GUARD = f"iptables -t raw -C {LOOPBACK_GUARD} 2>/dev/null || iptables -t raw -I {LOOPBACK_GUARD}"
APT = "apt-get -o DPkg::Lock::Timeout=300 -qq"  # waits for an earlier, interrupted run still holding the lock


def install_docker(settings: Docker, user: str) -> str:
    """Install Docker, start it now and at boot, and let `user` use it; safe to run again."""
    if settings.install == "script":
        install = (
            f"command -v curl >/dev/null || ({APT} update && {APT} install -y curl >/dev/null)\n"
            f"  curl -fsSL {shlex.quote(settings.script_url)} -o /tmp/get-docker.sh && sh /tmp/get-docker.sh >/dev/null"
        )
    else:
        install = f"{APT} update && {APT} install -y docker.io >/dev/null"
    u = shlex.quote(user)
    start = "(setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &)"
    return f"""export DEBIAN_FRONTEND=noninteractive
# An interrupted earlier run may have left packages half-configured: finish them first.
if ! command -v dockerd >/dev/null 2>&1 || [ -n "$(dpkg --audit 2>/dev/null)" ]; then
  dpkg --configure -a >/dev/null 2>&1 || true
  {install}
fi
if [ -d /run/systemd/system ]; then
  systemctl enable --now docker >/dev/null 2>&1
  cat > /etc/systemd/system/dockyard-loopback-guard.service <<'UNIT'
[Unit]
Description=dockyard: drop packets from the network addressed to 127.0.0.0/8
Before=docker.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c "{GUARD}"
[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload && systemctl enable dockyard-loopback-guard >/dev/null 2>&1
else
  # No systemd (a container or a minimal VM): start dockerd from rc.local at boot, and now.
  if ! grep -qs 'dockyard: dockerd' /etc/rc.local; then
    [ -f /etc/rc.local ] || printf '#!/bin/sh\\n' > /etc/rc.local
    sed -i '/^exit 0$/d' /etc/rc.local
    echo '{start}  # dockyard: dockerd' >> /etc/rc.local
    chmod +x /etc/rc.local
  fi
  grep -qs 'dockyard: loopback guard' /etc/rc.local || echo '{GUARD}  # dockyard: loopback guard' >> /etc/rc.local
  docker info >/dev/null 2>&1 || {start}
fi
{GUARD}
getent group docker >/dev/null || groupadd docker
usermod -aG docker {u}
i=0; until docker info >/dev/null 2>&1; do
  i=$((i+1)); [ $i -lt 60 ] || {{ echo 'dockerd did not start; see /var/log/dockerd.log' >&2; exit 1; }}; sleep 1
done
su -s /bin/sh {u} -c 'docker info >/dev/null'"""
