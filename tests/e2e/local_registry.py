"""A real registry on the local Docker engine, from dockyard's offline image, and tiny images to push to it.

The engine is shared: every name starts with `t-regmgmt-` and the process id, and all of it is removed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from dockyard import images
from tests.conftest import REPO

PREFIX = f"t-regmgmt-{os.getpid()}"
CONFIG = """\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: {delete}
http:
  addr: :5000
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""
HEALTH = {  # as dockyard declares it for the registry role
    "test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:5000/v2/"],
    "interval": 1_000_000_000, "timeout": 3_000_000_000, "retries": 3,
}


@dataclass(frozen=True)
class LocalRegistry:
    container: str
    volume: str
    address: str  # 127.0.0.1:<port>, what the local engine pushes to

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def engine() -> docker.DockerClient:
    return images.engine()


def registry_image() -> str:
    base = images.build_base(print)
    return images.build("registry", REPO / "images/registry", base, print).ref


def console_image() -> str:
    base = images.build_base(print)
    return images.build("registry-console", REPO / "images/registry-console", base, print).ref


@contextmanager
def local_registry(tmp: Path, name: str, *, delete: bool = True, volume: str | None = None,
                   network: str | None = None) -> Iterator[LocalRegistry]:
    """Run the registry until the block ends; `volume` shares another registry's storage."""
    client = engine()
    own_volume = volume is None
    container_name, volume = f"{PREFIX}-{name}", volume or f"{PREFIX}-{name}-data"
    config = tmp / f"{name}-config.yml"
    config.write_text(CONFIG.format(delete=str(delete).lower()))
    container = client.containers.run(
        registry_image(), name=container_name, detach=True,
        volumes={volume: {"bind": "/var/lib/registry", "mode": "rw"},
                 str(config): {"bind": "/etc/docker/registry/config.yml", "mode": "ro"}},
        ports={"5000/tcp": ("127.0.0.1", None)}, healthcheck=HEALTH, network=network,
        labels={"t-regmgmt": PREFIX},
    )
    try:
        wait_healthy(container_name)
        yield LocalRegistry(container_name, volume, published_address(container_name))
    finally:
        container.remove(force=True)
        if own_volume:
            client.volumes.get(volume).remove(force=True)


def wait_healthy(container: str, timeout: float = 60) -> None:
    client = engine()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.containers.get(container).attrs["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(0.2)
    raise AssertionError(f"{container} not healthy after {timeout}s: {client.containers.get(container).logs()[-500:]}")


@contextmanager
def tiny_images(tmp: Path, payloads: dict[str, bytes]) -> Iterator[dict[str, str]]:
    """Build `FROM scratch` images, one file each: {name: local ref}. Removed afterwards."""
    client = engine()
    refs = {}
    try:
        for name, payload in payloads.items():
            context = tmp / f"image-{name}"
            context.mkdir()
            (context / "payload").write_bytes(payload)
            (context / "Dockerfile").write_text("FROM scratch\nCOPY payload /payload\n")
            refs[name] = f"{PREFIX}-tiny:{name}"
            client.images.build(path=str(context), tag=refs[name], rm=True, forcerm=True)
        yield refs
    finally:
        for ref in refs.values():
            try:
                client.images.remove(ref, force=True, noprune=False)
            except docker.errors.NotFound:
                pass


def push_all(registry: LocalRegistry, pushes: list[tuple[str, str]], parallel: int = 8) -> dict[str, str]:
    """Push (local ref, repository:tag) pairs with the docker SDK; returns the digest the engine
    reported for each repository:tag.

    Repositories go in parallel, each one's tags in turn: the registry answers 500 to two uploads of
    the same blob into the same repository at once.
    """
    by_repository: dict[str, list[tuple[str, str]]] = {}
    for ref, target in pushes:
        by_repository.setdefault(target.rpartition(":")[0], []).append((ref, target))

    def push_each(group: list[tuple[str, str]]) -> dict[str, str]:
        return {target: push(ref, registry.address, target) for ref, target in group}

    digests: dict[str, str] = {}
    with ThreadPoolExecutor(parallel) as pool:
        for pushed in pool.map(push_each, by_repository.values()):
            digests.update(pushed)
    return digests


def push(local_ref: str, address: str, target: str) -> str:
    client = engine()
    name, _, tag = f"{address}/{target}".rpartition(":")
    client.images.get(local_ref).tag(name, tag)
    try:
        for event in client.api.push(name, tag=tag, stream=True, decode=True):
            assert "error" not in event, f"push of {target} failed: {event['error']}"
            if "Digest" in event.get("aux", {}):
                digest = event["aux"]["Digest"]
    finally:
        client.api.remove_image(f"{name}:{tag}", noprune=True)
    return digest


def published_address(container: str) -> str:
    """127.0.0.1:<port>; a restart publishes the registry on a new port."""
    ports = engine().containers.get(container).attrs["NetworkSettings"]["Ports"]
    return f"127.0.0.1:{ports['5000/tcp'][0]['HostPort']}"


@contextmanager
def network(name: str) -> Iterator[str]:
    client = engine()
    created = client.networks.create(f"{PREFIX}-{name}", labels={"t-regmgmt": PREFIX})
    try:
        yield created.name
    finally:
        created.remove()
