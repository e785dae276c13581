"""On a swarm: a redeploy updates the app's service to the pushed image. Swarm replaces its tasks one batch at a
time, start-first, and rolls the whole update back when a new task fails within the monitor window; the listener
waits until Swarm says which way it ended, in the service's UpdateStatus (`docker service update` exits 0 either way).

Only the Docker SDK touches the engine: nothing from a payload ever reaches a shell.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import docker.errors
from redeploy import Outcome, SpecError, create_args, first_line, pull, read_app_spec, read_env_file, run_release

from dockyard.contract import APP_ENV_FILE_NAME

UPDATE_POLL_S = 0.5
# Swarm's own defaults, for a service whose spec leaves them out
DEFAULT_MONITOR_S = 5
DEFAULT_PARALLELISM = 1
SUCCEEDED = frozenset({"completed"})
FAILED = frozenset({"rollback_completed", "paused", "rollback_paused"})
TASK_ERRORS = 3  # of the new image's failed tasks, into the history's reason


class ServiceUpdater:
    """Updates the app's service to a pushed image, or leaves it as it is."""

    def __init__(self, client: docker.DockerClient, spec_path: Path, service: str, health_timeout: float,
                 poll: float = UPDATE_POLL_S):
        self.client = client
        self.spec_path = spec_path
        self.env_file_path = spec_path.with_name(APP_ENV_FILE_NAME)
        self.service = service
        self.health_timeout = health_timeout
        self.poll = poll

    def redeploy(self, image: str) -> Outcome:
        """Update the service to `image` and wait until Swarm has completed the update, or rolled it back; the
        caller holds the host lock."""
        try:
            doc = read_app_spec(self.spec_path)  # the release command's settings, as deploy wrote them
            secrets = read_env_file(self.env_file_path) if doc["env_file"] else {}
        except SpecError as e:
            return Outcome("failure", str(e), image)
        try:
            known = self._image_id(image)
            pulled = pull(self.client, image)
        except docker.errors.DockerException as e:
            return Outcome("failure", f"pulling {image} failed: {first_line(e)}", image)
        try:
            service = self.client.api.inspect_service(self.service)
        except docker.errors.NotFound:
            return Outcome("failure", f"the app's service {self.service} does not exist; run `invoke deploy`", image)
        except docker.errors.DockerException as e:
            return Outcome("failure", f"reading {self.service} failed: {first_line(e)}", image)
        before = self._record(service)
        # a tag pushed again names another image: the update is forced, and every node pulls the tag again
        again = before["image"] == image
        if again and known == pulled.id:
            return Outcome("success", f"unchanged: {self.service} already runs that image", image, before, before)
        if doc["release"]:
            args = create_args(doc, image, {}, secrets)
            if problem := run_release(self.client, doc, args, f"{self.service} was not changed"):
                return Outcome("failure", problem, image, before, before)
        try:
            self.client.api.update_service(service["ID"], service["Version"]["Index"],
                                           **update_arguments(service["Spec"], image, force=again))
        except docker.errors.DockerException as e:
            return Outcome("failure", f"updating {self.service} failed: {first_line(e)}", image, before, before)
        bound = update_bound(service["Spec"], self.health_timeout)
        state, message, current = self._wait(service.get("UpdateStatus"), time.monotonic() + bound)
        after = self._record(current)
        if state in SUCCEEDED:
            return Outcome("success", "", image, before, after)
        if state in FAILED:
            ended = "rolled the update back" if state == "rollback_completed" else "paused the update"
            said = f": {message}" if message else ""
            errors = self._task_errors(image)
            return Outcome("failure", f"swarm {ended} ({state}){said}{errors}", image, before, after)
        late = f"{self.service} did not finish its update within {bound:g}s ({state or 'not started'}); swarm goes on"
        return Outcome("failure", late, image, before, after)

    def _wait(self, previous: dict | None, deadline: float) -> tuple[str, str, dict]:
        """Poll the service until the update Swarm started after `previous` (the UpdateStatus before ours) has ended,
        or the deadline passes: its state ("" if it never started), what Swarm said when it turned (which task
        failed; once rolled back it only says so), and the service as last read."""
        started_before = (previous or {}).get("StartedAt")
        turned = ""
        while True:
            service = self.client.api.inspect_service(self.service)
            status = service.get("UpdateStatus") or {}
            ours = status.get("StartedAt") not in (None, started_before)
            state = status.get("State", "") if ours else ""
            if state not in ("", "updating", *SUCCEEDED):
                turned = turned or status.get("Message", "")
            if state in SUCCEEDED | FAILED or time.monotonic() >= deadline:
                return state, turned, service
            time.sleep(self.poll)

    def _task_errors(self, image: str) -> str:
        """Why the tasks of `image` failed, as Swarm recorded it."""
        try:
            tasks = self.client.api.tasks(filters={"service": self.service})
        except docker.errors.DockerException:
            return ""
        errors = [t["Status"]["Err"] for t in tasks
                  if t["Spec"]["ContainerSpec"]["Image"] == image and t["Status"].get("Err")]
        unique = list(dict.fromkeys(errors))[:TASK_ERRORS]
        return f"; its tasks: {' | '.join(unique)[:300]}" if unique else ""

    def _image_id(self, image: str) -> str | None:
        try:
            return self.client.images.get(image).id
        except docker.errors.ImageNotFound:
            return None

    def _record(self, service: dict) -> dict:
        """The image the service's spec names, as this host knows it."""
        image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        try:
            attrs = self.client.images.get(image).attrs
        except docker.errors.DockerException:
            attrs = {}
        return {"id": attrs.get("Id", ""), "image": image, "digests": attrs.get("RepoDigests") or [],
                "name": service["Spec"]["Name"]}


def update_arguments(spec: dict, image: str, force: bool) -> dict:
    """`update_service`'s keywords that keep every part of the service's `spec` but its image (and, with `force`,
    the counter that makes Swarm replace tasks whose spec did not change)."""
    task = copy.deepcopy(spec["TaskTemplate"])
    task["ContainerSpec"]["Image"] = image
    if force:
        task["ForceUpdate"] = task.get("ForceUpdate", 0) + 1
    return {
        "task_template": task, "name": spec["Name"], "labels": spec.get("Labels"), "mode": spec.get("Mode"),
        "update_config": spec.get("UpdateConfig"), "rollback_config": spec.get("RollbackConfig"),
        "endpoint_spec": spec.get("EndpointSpec"),
    }


def update_bound(spec: dict, health_timeout: float) -> float:
    """How long an update of the service may take: each batch of tasks gets the health timeout to start and pass
    its health check, and the last one the monitor window after it."""
    update = spec.get("UpdateConfig") or {}
    replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
    parallelism = update.get("Parallelism", DEFAULT_PARALLELISM)
    batches = math.ceil(replicas / parallelism) if parallelism else 1
    monitor = update.get("Monitor", 0) / 1e9 or DEFAULT_MONITOR_S
    return batches * health_timeout + monitor
