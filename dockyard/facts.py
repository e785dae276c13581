"""Everything a plan needs to know about a host, read in one round trip.

`script()` is the one remote command; `parse()` is a pure function of its output.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from dockyard.commands import LOOPBACK_GUARD
from dockyard.contract import IMAGE_LABEL, ROLE_LABEL, SPEC_LABEL
from dockyard.spec import ContainerSpec

SECTIONS = ("docker", "boot", "guard", "groups", "containers", "images", "files")


@dataclass(frozen=True)
class Seen:
    """A container as it runs now, narrowed to what a spec controls."""

    name: str
    role: str
    digest: str
    image_id: str
    declared_image: str  # what deploy asked for; differs from the running image after a webhook redeploy
    running: bool
    started_at: str
    restart: str
    ports: frozenset[str]
    env: frozenset[str]
    volumes: frozenset[str]

    def drift(self, spec: ContainerSpec) -> list[str]:
        """Fields changed by hand outside dockyard."""
        changed = []
        if self.restart != spec.restart:
            changed.append("restart")
        if self.ports != frozenset(normalize_port(p) for p in spec.ports):
            changed.append("ports")
        if not {f"{k}={v}" for k, v in spec.env} <= self.env:
            changed.append("env")
        if self.volumes != frozenset(spec.volumes):
            changed.append("volumes")
        return changed


@dataclass(frozen=True)
class HostFacts:
    docker_version: str | None = None
    docker_on_boot: bool = False
    loopback_exposed: bool = False  # ports published on 127.0.0.1 take packets from the network: no guard
    groups: frozenset[str] = frozenset()
    containers: dict[str, Seen] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # ref -> image id
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256


def script(user: str, paths: list[str]) -> str:
    files = " ".join(shlex.quote(p) for p in sorted(paths)) or "/dev/null"
    return f"""echo ::docker; docker version --format '{{{{.Server.Version}}}}' 2>/dev/null || true
echo ::boot; if [ -d /run/systemd/system ]; then systemctl is-enabled docker 2>/dev/null || true; \
else grep -qs 'dockyard: dockerd' /etc/rc.local && echo enabled || true; fi
echo ::guard; iptables -t raw -C {LOOPBACK_GUARD} 2>/dev/null && echo present || true
echo ::groups; id -nG {shlex.quote(user)} 2>/dev/null || true
echo ::containers; ids=$(docker ps -aq --filter label={ROLE_LABEL} 2>/dev/null || true); \
if [ -n "$ids" ]; then docker inspect $ids; fi
echo ::images; docker image ls --no-trunc --format '{{{{.Repository}}}}:{{{{.Tag}}}} {{{{.ID}}}}' 2>/dev/null || true
echo ::files; sha256sum {files} 2>/dev/null || true
echo ::end"""


def parse(output: str) -> HostFacts:
    sections = _split(output)
    version = sections["docker"].strip() or None
    containers = {}
    raw = sections["containers"].strip()
    for item in json.loads(raw) if raw else []:
        seen = _seen(item)
        containers[seen.name] = seen
    images = {}
    for line in sections["images"].splitlines():
        ref, _, image_id = line.strip().partition(" ")
        if image_id and not ref.endswith(":<none>"):
            images[ref] = image_id
    files = {}
    for line in sections["files"].splitlines():
        digest, _, path = line.strip().partition("  ")
        if path:
            files[path] = digest
    return HostFacts(
        docker_version=version,
        docker_on_boot=sections["boot"].strip() == "enabled",
        loopback_exposed=version is not None and sections["guard"].strip() != "present",
        groups=frozenset(sections["groups"].split()),
        containers=containers,
        images=images,
        files=files,
    )


def _split(output: str) -> dict[str, str]:
    sections = {name: [] for name in SECTIONS}
    current = None
    for line in output.splitlines():
        if line.startswith("::"):
            current = line[2:].strip()
            if current == "end":
                break
            continue
        if current in sections:
            sections[current].append(line)
    if current != "end":
        raise ValueError("facts output ended early")
    return {name: "\n".join(lines) for name, lines in sections.items()}


def _seen(inspect: dict) -> Seen:
    config, host, state = inspect["Config"], inspect["HostConfig"], inspect["State"]
    labels = config.get("Labels") or {}
    return Seen(
        name=inspect["Name"].lstrip("/"),
        role=labels.get(ROLE_LABEL, ""),
        digest=labels.get(SPEC_LABEL, ""),
        image_id=inspect["Image"],
        declared_image=labels.get(IMAGE_LABEL, ""),
        running=bool(state.get("Running")),
        started_at=state.get("StartedAt", ""),
        restart=(host.get("RestartPolicy") or {}).get("Name", ""),
        ports=frozenset(
            normalize_port(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort', '')}:{port}")
            for port, bindings in (host.get("PortBindings") or {}).items()
            for b in bindings or ()
        ),
        env=frozenset(config.get("Env") or ()),
        volumes=frozenset(host.get("Binds") or ()),
    )


def normalize_port(port: str) -> str:
    """`ip:host:container[/proto]` in one spelling, so a spec and `docker inspect` compare equal."""
    parts = port.split(":")
    container = parts[-1] if "/" in parts[-1] else f"{parts[-1]}/tcp"
    host_port = parts[-2] if len(parts) >= 2 else ""
    ip = parts[-3] if len(parts) >= 3 else "0.0.0.0"
    return f"{ip or '0.0.0.0'}:{host_port}:{container}"
