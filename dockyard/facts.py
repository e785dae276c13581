"""What a plan knows about a host: the facts read's output (`dockyard.commands.facts`), parsed. Pure: no I/O.

A container's settings are compared with its declaration field by field, each in a stated mode, as
community.docker's module_utils compare theirs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from dockyard.commands.facts import ABSENT, RUNNING, SECTIONS, STOPPED, SWARM_SECTIONS
from dockyard.contract import IMAGE_LABEL, ROLE_LABEL, SPEC_LABEL, upstream_target
from dockyard.errors import FactsError

STRICT = "strict"  # equal: what is added by hand is drift too
DECLARED = "declared"  # what is declared must be present; Docker and the image may add more

# The settings a hand change touches, and how each is compared with the declaration.
DRIFT = (
    ("restart", STRICT),
    ("ports", STRICT),
    ("mounts", STRICT),
    ("network", STRICT),
    ("env", DECLARED),  # the image adds its own ENV (PATH ...)
    ("labels", DECLARED),  # the image adds its labels, deploy its bookkeeping (spec digest, declared image)
    ("health", DECLARED),  # none declared: the image's HEALTHCHECK applies
    ("command", DECLARED),  # none declared: the image's CMD applies
)


@dataclass(frozen=True)
class Settings:
    """What a container runs with, narrowed to what a spec controls, spelled alike for both sides."""

    restart: str
    ports: frozenset[str]
    mounts: frozenset[str]
    network: frozenset[str]
    env: frozenset[str]
    labels: frozenset[str]
    health: tuple | None  # (test, interval ns, timeout ns, retries)
    command: tuple[str, ...]

    @classmethod
    def declared(cls, document: dict) -> Settings:
        """From the container document (`dockyard.commands.containers.container_document`)."""
        health = document["health"]
        return cls(
            restart=document["restart"],
            ports=frozenset(normalize_port(p) for p in document["ports"]),
            mounts=frozenset(document["volumes"]),
            network=frozenset({document["network"]}),
            env=frozenset(f"{k}={v}" for k, v in document["env"].items()),
            labels=frozenset(f"{k}={v}" for k, v in document["labels"].items()),
            health=(
                ("CMD-SHELL", health["command"]), health["interval_s"] * 10**9, health["timeout_s"] * 10**9,
                health["retries"],
            ) if health else None,
            command=tuple(document["command"]),
        )

    @classmethod
    def inspected(cls, inspect: dict) -> Settings:
        """From `docker inspect`."""
        config, host = inspect["Config"], inspect["HostConfig"]
        policy = host.get("RestartPolicy") or {}
        health = config.get("Healthcheck")
        return cls(
            restart=policy.get("Name", "") + (f":{n}" if (n := policy.get("MaximumRetryCount")) else ""),
            ports=frozenset(
                normalize_port(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort', '')}:{port}")
                for port, bindings in (host.get("PortBindings") or {}).items()
                for b in bindings or ()
            ),
            mounts=frozenset(host.get("Binds") or ()),
            network=frozenset((inspect.get("NetworkSettings") or {}).get("Networks") or ()),
            env=frozenset(config.get("Env") or ()),
            labels=frozenset(f"{k}={v}" for k, v in (config.get("Labels") or {}).items()),
            health=(
                tuple(health.get("Test") or ()), health.get("Interval", 0), health.get("Timeout", 0),
                health.get("Retries", 0),
            ) if health else None,
            command=tuple(config.get("Cmd") or ()),
        )


def differs(mode: str, declared, actual) -> bool:
    if mode == STRICT:
        return declared != actual
    if isinstance(declared, frozenset):
        return not declared <= actual
    return bool(declared) and declared != actual


@dataclass(frozen=True)
class Seen:
    """A container as it runs now."""

    name: str
    role: str
    digest: str
    image_id: str
    declared_image: str  # what deploy asked for; differs from the running image after a webhook redeploy
    running: bool
    started_at: str
    settings: Settings

    def drift(self, document: dict) -> list[str]:
        """The settings changed outside dockyard, against the container document deploy runs it from."""
        declared = Settings.declared(document)
        return [name for name, mode in DRIFT if differs(mode, getattr(declared, name), getattr(self.settings, name))]


@dataclass(frozen=True)
class Node:
    """A swarm's node: this host as `docker info` tells it, or one of a manager's `docker node ls`."""

    id: str  # empty while the host is in no swarm
    hostname: str
    state: str = ""  # the host's own: inactive | pending | active | error | locked
    status: str = ""  # a manager's view: Ready | Down | Unknown

    @property
    def member(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class ServiceSeen:
    """The app's swarm service, as a manager inspects it."""

    image: str
    replicas: int


@dataclass(frozen=True)
class HostFacts:
    docker: str = ABSENT  # absent | stopped (installed, not answering) | running
    # how this read got a stopped daemon to answer: ("started" or "waited" for a start under way, seconds)
    docker_woken: tuple[str, int] | None = None
    packages_broken: bool = False  # dpkg holds half-configured packages (read while the daemon does not answer)
    systemd: bool = False
    docker_on_boot: bool = False
    loopback_guard: bool = False  # packets from the network to 127.0.0.1 ports are dropped now
    loopback_guard_on_boot: bool = False
    groups: frozenset[str] = frozenset()
    containers: dict[str, Seen] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # ref -> image id
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256
    owners: dict[str, int] = field(default_factory=dict)  # path -> user id
    serving: str = ""  # the app container the proxy's upstream file names; empty when it names none
    node: Node | None = None  # on a swarm: this host as a node
    nodes: tuple[Node, ...] = ()  # on a swarm's manager: every node
    service: ServiceSeen | None = None  # on a swarm's manager: the app's service


def parse(output: str, where: str) -> HostFacts:
    """The facts read's output as HostFacts; any other bytes raise FactsError naming `where`."""
    sections = split_sections(output, (*SECTIONS, *SWARM_SECTIONS), where)
    try:
        docker, woken = _docker(sections["docker"])
        return HostFacts(
            docker=docker,
            docker_woken=woken,
            packages_broken=bool(sections["dpkg"].strip()),
            systemd=sections["init"].strip() == "systemd",
            docker_on_boot=sections["boot"].strip() == "enabled",
            loopback_guard=sections["guard"].strip() == "present",
            loopback_guard_on_boot=sections["guard_boot"].strip() == "enabled",
            groups=frozenset(sections["groups"].split()),
            containers={c.name: c for c in map(seen, _json_list(sections["containers"]))},
            images={ref: image_id for ref, image_id in _pairs(sections["images"], " ") if not ref.endswith(":<none>")},
            files={path: digest for digest, path in _pairs(sections["files"], "  ")},
            owners={path: int(uid) for uid, path in _pairs(sections["owners"], " ")},
            serving=(upstream_target(sections["upstream"]) or ("",))[0],
            node=_node(sections["swarm"]),
            nodes=tuple(_listed_node(line) for line in sections["nodes"].splitlines() if line.strip()),
            service=next((_service(s) for s in _json_list(sections["service"])), None),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FactsError(f"{where}: the facts read returned what it cannot parse ({type(e).__name__}: {e}); "
                         f"rerun, and if it persists run with DOCKYARD_DEBUG=1") from e


def _docker(text: str) -> tuple[str, tuple[str, int] | None]:
    """The docker section: `absent`, `stopped` or `running`, then maybe `started|waited <seconds>`."""
    first, *rest = text.splitlines() or [""]
    if first not in (ABSENT, STOPPED, RUNNING) or len(rest) > 1:
        raise ValueError(f"docker section {text!r}")
    if not rest:
        return first, None
    how, _, seconds = rest[0].partition(" ")
    if how not in ("started", "waited"):
        raise ValueError(f"docker section {text!r}")
    return first, (how, int(seconds))


def _node(text: str) -> Node | None:
    """`state id manages` (the read itself asks `manages`), then the host name; nothing off a swarm."""
    lines = text.splitlines()
    if not lines:
        return None
    state, node_id = (lines[0].split() + ["", ""])[:2]
    return Node(node_id, lines[1].strip(), state)


def _listed_node(line: str) -> Node:
    node_id, hostname, status = line.split()[:3]
    return Node(node_id, hostname, status=status)


def _service(inspect: dict) -> ServiceSeen:
    spec = inspect["Spec"]
    return ServiceSeen(
        image=spec["TaskTemplate"]["ContainerSpec"]["Image"],
        replicas=spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0),
    )


def split_sections(output: str, names: Iterable[str], where: str, what: str = "the facts read") -> dict[str, str]:
    """The `::name` sections of a read from a host, closed by `::end`; `what` names the read if it ended early."""
    sections: dict[str, list[str]] = {name: [] for name in names}
    current = None
    for line in output.splitlines():
        if line.startswith("::"):
            current = line[2:].strip()
            if current == "end":
                return {name: "\n".join(lines) for name, lines in sections.items()}
            continue
        if current in sections:
            sections[current].append(line)
    ended = f"in its {current} section" if current else "before its first section"
    raise FactsError(
        f"{where}: {what} ended early, {ended}; rerun, and if it persists run with DOCKYARD_DEBUG=1"
    )


def _json_list(text: str) -> list:
    items = json.loads(text) if text.strip() else []
    if not isinstance(items, list):
        raise TypeError("docker inspect printed no list")
    return items


def _pairs(text: str, separator: str) -> list[tuple[str, str]]:
    """Lines of two fields; a line without the second one is skipped."""
    split = (line.strip().partition(separator) for line in text.splitlines())
    return [(first, second) for first, _, second in split if second]


def seen(inspect: dict) -> Seen:
    """A container as `docker inspect` shows it."""
    labels = inspect["Config"].get("Labels") or {}
    state = inspect["State"]
    return Seen(
        name=inspect["Name"].lstrip("/"),
        role=labels.get(ROLE_LABEL, ""),
        digest=labels.get(SPEC_LABEL, ""),
        image_id=inspect["Image"],
        declared_image=labels.get(IMAGE_LABEL, ""),
        running=bool(state.get("Running")),
        started_at=state.get("StartedAt", ""),
        settings=Settings.inspected(inspect),
    )


def normalize_port(port: str) -> str:
    """`ip:host:container[/proto]` in one spelling, so a spec and `docker inspect` compare equal."""
    parts = port.split(":")
    container = parts[-1] if "/" in parts[-1] else f"{parts[-1]}/tcp"
    host_port = parts[-2] if len(parts) >= 2 else ""
    ip = parts[-3] if len(parts) >= 3 else "0.0.0.0"
    return f"{ip or '0.0.0.0'}:{host_port}:{container}"
