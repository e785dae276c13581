"""Replace the app without downtime: start the pushed image in the app's other slot, wait until its readiness probe
passes, switch the proxy to it, then stop the old container with its grace period. A version that never gets
healthy is removed; the old container was never stopped and keeps serving. On a swarm, `service_update` updates
the app's service instead, pulling and running the release command with the functions here.

Only the Docker SDK touches the engine: nothing from a payload ever reaches a shell.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import docker.errors
import requests

from dockyard.contract import (
    APP_ENV_FILE_NAME,
    CARRIED_LABELS,
    DOCKER_STOP_TIMEOUT,
    PROXY_RELOAD,
    READY_INTERVAL_S,
    SWITCH_SETTLE_SECONDS,
    document_problem,
    next_slot,
    readiness_probe,
    slot_names,
    upstream_line,
    upstream_target,
)

POLL_INTERVAL = 0.5  # between two pulls of a tag the registry does not serve yet
# The registry notifies as the manifest is stored, and a pull right then has been seen to answer "manifest unknown"
# (once, 0.2 s after the push): such a pull is tried again for a few seconds.
PULL_RETRY_SECONDS = 5
LOG_LINES = 3  # of a new container that never got healthy, or a failed release command, into the history's reason
RELEASE_TIMEOUT = 600  # seconds a release command may run

log = logging.getLogger("dockyard-webhook")
Item = TypeVar("Item")


class SpecError(ValueError):
    """container.json or the upstream file is missing or not what deploy writes; str(e) names the key."""


@dataclass(frozen=True)
class Outcome:
    result: str  # success | failure (the container that served before still serves)
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


def read_upstream(path: Path) -> tuple[str, int]:
    """The container the proxy serves now, and its port, as the upstream file names them."""
    try:
        target = upstream_target(path.read_text())
    except (OSError, ValueError) as e:
        raise SpecError(f"{path}: unreadable ({e}); `invoke deploy` writes it") from None
    if target is None:
        raise SpecError(f"{path}: names no container; `invoke deploy` writes it")
    return target


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines, as deploy writes them for `docker run --env-file`."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise SpecError(f"{path}: unreadable ({e.strerror}); `invoke deploy` writes it") from None
    return dict(line.partition("=")[::2] for line in lines if line and not line.startswith("#"))


def create_args(doc: dict, image: str, carried: dict[str, str], secrets: dict[str, str]) -> dict:
    """Keyword arguments of `containers.create` that give what `commands.run_container` gives, on `image`;
    `secrets`: the env file's variables, when the document uses it."""
    restart, _, retries = doc["restart"].partition(":")
    args = {
        "image": image,
        "name": doc["name"],
        "command": doc["command"] or None,
        "environment": {**doc["env"], **secrets},
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
    """Switches the app to a container of the pushed image, or leaves the one that serves serving."""

    def __init__(self, client: docker.DockerClient, spec_path: Path, upstream_path: Path, proxy: str,
                 health_timeout: float, settle: float = SWITCH_SETTLE_SECONDS):
        self.client = client
        self.spec_path = spec_path
        self.env_file_path = spec_path.with_name(APP_ENV_FILE_NAME)
        self.upstream_path = upstream_path
        self.proxy = proxy
        self.health_timeout = health_timeout
        self.settle = settle

    def redeploy(self, image: str) -> Outcome:
        """Switch the app to `image`; the caller holds the host lock."""
        try:
            doc = read_app_spec(self.spec_path)
            serving, port = read_upstream(self.upstream_path)
            secrets = read_env_file(self.env_file_path) if doc["env_file"] else {}
        except SpecError as e:
            return Outcome("failure", str(e), image)
        try:
            pulled = pull(self.client, image)
        except docker.errors.DockerException as e:
            return Outcome("failure", f"pulling {image} failed: {first_line(e)}", image)
        current = self._container(serving)
        before = self._record(current)
        if current and current.attrs["Image"] == pulled.id and current.attrs["State"]["Running"]:
            return Outcome("success", f"unchanged: {serving} already runs that image", image, before, before)
        carried = {k: v for k, v in (current.labels if current else {}).items() if k in CARRIED_LABELS}

        name = next_slot(doc["name"], serving, lambda n: self._container(n) is not None)
        args = {**create_args(doc, image, carried, secrets), "name": name}
        unchanged = f"nothing switched, {serving} still serves"
        problem = run_release(self.client, doc, args, unchanged) if doc["release"] else None
        if problem is None:
            probe = readiness_probe(doc["health"] and doc["health"]["command"])
            problem = self._start(args, probe)
        if problem is None:
            problem = self._switch(name, port, serving)
        if problem is not None:
            return Outcome("failure", problem, image, before, before)
        if current is not None:  # requests the old config routed finish on it
            time.sleep(self.settle)
        retired = self._retire(doc["name"], keep=name)
        return Outcome("success", retired or "", image, before, self._record(self._container(name)))

    def _start(self, args: dict, probe: tuple[str, ...]) -> str | None:
        """Start a container from `args` in place of whatever holds its name, and wait until its readiness `probe`
        passes; when it never does, remove it and say why."""
        leftover = self._container(args["name"])
        try:
            if leftover is not None:
                leftover.remove(force=True)  # a switch that never finished: it never served
            container = self.client.containers.create(**args)
            container.start()
        except docker.errors.DockerException as e:
            return f"starting {args['image']} as {args['name']} failed: {first_line(e)}"
        problem = self._wait_ready(container, args["image"], probe)
        if problem is not None:
            try:
                tail = container.logs(tail=LOG_LINES).decode(errors="replace").strip()
                container.remove(force=True)
            except docker.errors.DockerException as e:
                tail = f"(removing it failed: {first_line(e)})"
            problem += f", removed; its log ends: {' | '.join(tail.splitlines())[:300]}" if tail else ", removed"
        return problem

    def _switch(self, name: str, port: int, serving: str) -> str | None:
        """Point the upstream file at `name` and have the proxy read it. On failure the proxy still serves from
        `serving` (Caddy keeps its config when a reload fails): put the file back and remove `name`."""
        try:
            self._write_upstream(upstream_line(name, port))
            reloaded = self.client.containers.get(self.proxy).exec_run(list(PROXY_RELOAD))
            if reloaded.exit_code == 0:
                return None
            problem = f"reloading {self.proxy} failed: {last_line(reloaded.output.decode(errors='replace'))}"
        except (OSError, docker.errors.DockerException) as e:
            problem = f"switching {self.proxy} to {name} failed: {first_line(e)}"
        try:
            self._write_upstream(upstream_line(serving, port))
            self.client.containers.get(name).remove(force=True)
        except (OSError, docker.errors.DockerException) as e:
            problem += f"; undoing it failed too: {first_line(e)}"
        return problem

    def _write_upstream(self, content: str) -> None:
        """Atomically: the proxy reads the whole old line or the whole new one, even if it restarts meanwhile."""
        new = self.upstream_path.with_name(self.upstream_path.name + ".new")
        new.write_text(content)
        os.replace(new, self.upstream_path)

    def _retire(self, name: str, keep: str) -> str | None:
        """Stop every other container of the app, each with its own grace period to finish its requests, and remove
        it; what went wrong, if anything (the new container serves either way)."""
        problems = []
        for old in (*slot_names(name), name):
            container = None if old == keep else self._container(old)
            if container is None:
                continue
            try:
                container.stop(timeout=container.attrs["Config"].get("StopTimeout") or DOCKER_STOP_TIMEOUT)
                container.remove()
            except docker.errors.DockerException as e:
                problems.append(f"stopping {old} failed: {first_line(e)}")
        return "; ".join(problems) or None

    def _wait_ready(self, container, image: str, probe: tuple[str, ...]) -> str | None:
        """Run the readiness probe inside the new container every READY_INTERVAL_S until it passes, for at most the
        health timeout; then Docker's own status says how it ended."""
        deadline = time.monotonic() + self.health_timeout
        while True:
            try:
                if container.exec_run(list(probe)).exit_code == 0:
                    return None
            except docker.errors.APIError:
                pass  # not running (yet, or any more): not ready
            if time.monotonic() >= deadline:
                break
            time.sleep(READY_INTERVAL_S)
        try:
            container.reload()
        except docker.errors.DockerException as e:
            return f"{container.name} vanished: {first_line(e)}"
        state = container.attrs["State"]
        status = state["Health"]["Status"] if state.get("Health") else state["Status"]
        return f"{container.name} not healthy after {self.health_timeout:g}s on {image} ({status})"

    def _container(self, name: str):
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

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
            "container": container.id[:12], "name": container.name,
        }


def pull(client: docker.DockerClient, image: str):
    """Pull `image`; a tag the registry does not serve yet is tried again for a few seconds."""
    repository, _, tag = image.rpartition(":")
    deadline = time.monotonic() + PULL_RETRY_SECONDS
    while True:
        try:
            return client.images.pull(repository, tag=tag)
        except docker.errors.APIError as e:
            if "manifest unknown" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(POLL_INTERVAL)


def run_release(client: docker.DockerClient, doc: dict, args: dict, unchanged: str) -> str | None:
    """Run the release command once, in a one-off container of the new image with the app's settings, network
    and volumes (as `commands.containers.one_off`); what went wrong, with its last lines, if it failed. `unchanged`
    says what still serves then."""
    name = f"{doc['name']}-release"
    try:
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        container = client.containers.create(
            image=args["image"], name=name, command=doc["release"], environment=args["environment"],
            volumes=args["volumes"], network=args["network"], detach=True,
        )
        try:
            container.start()
            exited = container.wait(timeout=RELEASE_TIMEOUT)["StatusCode"]
            tail = container.logs(tail=LOG_LINES).decode(errors="replace").strip()
        finally:
            container.remove(force=True)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:  # a wait can time out
        return f"release command failed: {first_line(e)}; {unchanged}"
    if exited == 0:
        return None
    said = f"; its last lines: {' | '.join(tail.splitlines())[:300]}" if tail else ""
    return f"release command failed (exit {exited}): {unchanged}{said}"


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


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else "no output"
