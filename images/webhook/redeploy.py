"""Recreate the app container on a new image, wait for Docker's health check, put the old image back if it fails.

Only the Docker SDK touches the engine: nothing from a payload ever reaches a shell.
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import docker.errors

from dockyard.contract import CARRIED_LABELS, DOCKER_STOP_TIMEOUT, document_problem

POLL_INTERVAL = 0.5

log = logging.getLogger("dockyard-webhook")
Item = TypeVar("Item")


class SpecError(ValueError):
    """container.json is missing or not what deploy writes; str(e) names the key."""


@dataclass(frozen=True)
class Outcome:
    result: str  # success | failure | rolled-back
    reason: str
    image: str  # the reference pulled
    before: dict | None = None  # image and container the app ran before
    after: dict | None = None  # ... and after


def read_app_spec(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: unreadable ({e})") from None
    if problem := document_problem(doc):
        raise SpecError(f"{path}: {problem}")
    return doc


def create_args(doc: dict, image: str, carried: dict[str, str]) -> dict:
    """Keyword arguments of `containers.create` that give what `commands.run_container` gives, on `image`."""
    restart, _, retries = doc["restart"].partition(":")
    args = {
        "image": image,
        "name": doc["name"],
        "command": doc["command"] or None,
        "environment": doc["env"],
        "labels": {**doc["labels"], **carried},
        "ports": port_bindings(doc["ports"]),
        "volumes": doc["volumes"],  # kept as `-v` strings, so HostConfig.Binds reads as the spec does
        "network": doc["network"],
        "restart_policy": {"Name": restart, "MaximumRetryCount": int(retries or 0)},
        "log_config": {"Type": "", "Config": doc["log"]},  # "": the daemon's default driver, as `--log-opt` alone
        "detach": True,
    }
    if health := doc["health"]:
        args["healthcheck"] = {
            "test": ["CMD-SHELL", health["command"]],  # what `--health-cmd` sends
            "interval": health["interval_s"] * 1_000_000_000,
            "timeout": health["timeout_s"] * 1_000_000_000,
            "retries": health["retries"],
        }
    return args


def port_bindings(ports: list[str]) -> dict[str, list[dict]]:
    """`[ip:][host:]container[/proto]` strings as the SDK's `ports` argument."""
    bindings: dict[str, list[dict]] = {}
    for port in ports:
        rest, _, container = port.rpartition(":")
        ip, _, host_port = rest.rpartition(":")
        key = container if "/" in container else f"{container}/tcp"
        bindings.setdefault(key, []).append({"HostIp": ip.strip("[]"), "HostPort": host_port})
    return bindings


class Redeployer:
    """Replaces the app's container with one running the pushed image, or leaves the previous image running."""

    def __init__(self, client: docker.DockerClient, spec_path: Path, health_timeout: float,
                 lock_path: Path | None = None):
        self.client = client
        self.spec_path = spec_path
        self.health_timeout = health_timeout
        self.lock_path = lock_path

    def redeploy(self, image: str) -> Outcome:
        with self._locked():
            return self._redeploy(image)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Deploy takes the same lock on the host (contract.REPLACE_LOCK_NAME): never both replace the app."""
        if self.lock_path is None:
            yield
            return
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _redeploy(self, image: str) -> Outcome:
        try:
            doc = read_app_spec(self.spec_path)
            repository, _, tag = image.rpartition(":")
            pulled = self.client.images.pull(repository, tag=tag)
        except SpecError as e:
            return Outcome("failure", str(e), image)
        except docker.errors.DockerException as e:
            return Outcome("failure", f"pulling {image} failed: {first_line(e)}", image)
        current = self._container(doc["name"])
        before = self._record(current)
        if current and current.attrs["Image"] == pulled.id and current.attrs["State"]["Running"]:
            return Outcome("success", f"unchanged: {doc['name']} already runs that image", image, before, before)
        carried = {k: v for k, v in (current.labels if current else {}).items() if k in CARRIED_LABELS}

        problem = self._start(current, create_args(doc, image, carried))
        if problem is None:
            return Outcome("success", "", image, before, self._record(self._container(doc["name"])))
        if current is None:
            return Outcome("failure", f"{problem}; there was no previous container to restore", image)

        previous = self._previous_ref(current)
        failed_again = self._start(self._container(doc["name"]), create_args(doc, previous, carried))
        after = self._record(self._container(doc["name"]))
        if failed_again:
            return Outcome("failure", f"{problem}; restoring {previous} failed too: {failed_again}", image,
                           before, after)
        return Outcome("rolled-back", f"{problem}; restored {previous}", image, before, after)

    def _start(self, current, args: dict) -> str | None:
        """Replace `current` by a container made from `args` and wait until Docker calls it healthy."""
        try:
            if current is not None:
                # the old app gets its own stop timeout to finish its requests, as `docker stop` gives it
                current.stop(timeout=current.attrs["Config"].get("StopTimeout") or DOCKER_STOP_TIMEOUT)
                current.remove()
            container = self.client.containers.create(**args)
            container.start()
        except docker.errors.DockerException as e:
            return f"starting {args['image']} failed: {first_line(e)}"
        return self._wait_healthy(container, args["image"])

    def _wait_healthy(self, container, image: str) -> str | None:
        deadline = time.monotonic() + self.health_timeout
        while True:
            try:
                container.reload()
            except docker.errors.DockerException as e:
                return f"{container.name} vanished: {first_line(e)}"
            state = container.attrs["State"]
            # With no health check, running is the best Docker can tell.
            status = state["Health"]["Status"] if state.get("Health") else state["Status"]
            if status in ("healthy", "running"):
                return None
            if time.monotonic() >= deadline:
                return f"{container.name} not healthy after {self.health_timeout:g}s on {image} ({status})"
            time.sleep(POLL_INTERVAL)

    def _container(self, name: str):
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def _previous_ref(self, container) -> str:
        """The name the old container ran by, unless the push moved it (a new `latest`): then the image id."""
        ref = container.attrs["Config"]["Image"]
        try:
            if self.client.images.get(ref).id == container.attrs["Image"]:
                return ref
        except docker.errors.DockerException:
            pass
        return container.attrs["Image"]

    def _record(self, container) -> dict | None:
        if container is None:
            return None
        image_id = container.attrs["Image"]
        try:
            digests = self.client.images.get(image_id).attrs.get("RepoDigests") or []
        except docker.errors.DockerException:
            digests = []
        return {
            "id": image_id, "image": container.attrs["Config"]["Image"], "digests": digests,
            "container": container.id[:12],
        }


class Coalescer(Generic[Item]):
    """One worker runs `work` on items one at a time; items arriving meanwhile replace each other, newest wins.

    A burst of pushes thus ends with the newest image running, and redeploys never overlap.
    """

    def __init__(self, work: Callable[[Item], None]):
        self._work = work
        self._changed = threading.Condition()
        self._pending: Item | None = None
        self._closing = False
        self._worker = threading.Thread(target=self._run, name="redeploy", daemon=True)
        self._worker.start()

    def submit(self, item: Item) -> Item | None:
        """Queue `item`; return the waiting item it replaced, if any."""
        with self._changed:
            if self._closing:
                raise RuntimeError("coalescer closed")
            replaced, self._pending = self._pending, item
            self._changed.notify()
        return replaced

    def close(self, timeout: float | None = None) -> None:
        """Finish the running and the waiting item, then stop the worker."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._worker.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._pending is None and not self._closing:
                    self._changed.wait()
                if self._pending is None:
                    return
                item, self._pending = self._pending, None
            try:
                self._work(item)
            except Exception:  # the worker must outlive any one redeploy
                log.exception("redeploy worker: unexpected error")


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
