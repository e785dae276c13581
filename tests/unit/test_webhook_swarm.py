"""The webhook on a swarm: its config, and a redeploy as an update of the app's service, waited on until Swarm says
how it ended. A scripted manager stands in for the engine: its service goes through the update states given."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import docker
import docker.errors
import pytest

from dockyard import deploy, inventory
from dockyard.contract import APP_SERVICE
from dockyard.images import Built
from dockyard.spec import Cluster, Target
from dockyard.state import HostRecord
from roles import webhook
from tests.conftest import PROXY_TLS, REPO

sys.path.insert(0, str(REPO / "images" / "webhook"))
import service_update  # noqa: E402
import triggers  # noqa: E402
from triggers import Swarm, Trigger  # noqa: E402

TWIN = "10.61.0.2:5443"
V1, V2 = f"{TWIN}/flask-hello:deploy-1a2b", f"{TWIN}/flask-hello:v2"
SECOND = 1_000_000_000
# The app's service as `docker stack deploy` makes it from templates/stack/ (trimmed to what an update touches)
SPEC = {
    "Name": APP_SERVICE,
    "Labels": {"com.docker.stack.image": V1, "com.docker.stack.namespace": "dockyard", "dockyard.spec": "0123abcd",
               "dockyard.image": V1},
    "TaskTemplate": {
        "ContainerSpec": {
            "Image": V1, "Labels": {"com.docker.stack.namespace": "dockyard"}, "Env": ["GREETING=Hello"],
            "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8000/healthz"],
                            "Interval": 2 * SECOND, "Timeout": 3 * SECOND, "Retries": 3},
            "StopGracePeriod": 10 * SECOND, "Isolation": "default",
        },
        "Resources": {}, "RestartPolicy": {"Condition": "any", "Delay": SECOND, "MaxAttempts": 0},
        "Placement": {}, "Networks": [{"Target": "n8d2x", "Aliases": ["app"]}],
        "LogDriver": {"Name": "json-file", "Options": {"max-file": "3", "max-size": "10m"}}, "ForceUpdate": 0,
        "Runtime": "container",
    },
    "Mode": {"Replicated": {"Replicas": 3}},
    "UpdateConfig": {"Parallelism": 1, "FailureAction": "rollback", "Monitor": 5 * SECOND, "MaxFailureRatio": 0,
                     "Order": "start-first"},
    "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause", "MaxFailureRatio": 0, "Order": "start-first"},
    "EndpointSpec": {"Mode": "dnsrr"},
}
# What Swarm says in each state (swarmkit's updater)
MESSAGES = {
    "updating": "update in progress", "completed": "update completed",
    "rollback_started": "update rolled back due to failure or early termination of task n4x2", "rollback_completed":
    "rollback completed", "paused": "update paused due to failure or early termination of task n4x2",
}
EARLIER = {"State": "completed", "StartedAt": "2026-11-30T10:00:00.1Z", "CompletedAt": "2026-11-30T10:00:09.2Z",
           "Message": "update completed"}


class Manager:
    """A swarm manager's engine as the SDK sees it: the app's service, whose UpdateStatus takes the next of `states`
    at each read once an update was sent (after `stale` reads that still show the update before it); the images the
    host has before and after a pull; a release command's exit status."""

    def __init__(self, states=("updating", "completed"), stale: int = 0, image: str = V1, had: str | None = None,
                 pulled: str = "sha256:new", release_exit: int = 0, rolled_back_to: str | None = None):
        self.api = self.images = self.containers = self
        self.spec = copy.deepcopy(SPEC)
        self.spec["TaskTemplate"]["ContainerSpec"]["Image"] = image
        self.status: dict | None = dict(EARLIER)
        self.states, self.stale, self.rolled_back_to = list(states), stale, rolled_back_to
        self.local = {image: "sha256:old"} if had is None else {V2: had}
        self.pulled, self.release_exit = pulled, release_exit
        self.updates: list[tuple] = []
        self.created: list[dict] = []
        self.reads = 0

    # services
    def inspect_service(self, name):
        assert name == APP_SERVICE
        if self.updates:
            self.reads += 1
            if self.reads > self.stale and self.states:
                state = self.states.pop(0)
                self.status = {"State": state, "StartedAt": "2026-11-30T11:00:00.5Z", "Message": MESSAGES[state]}
                if state.startswith("rollback") and self.rolled_back_to:
                    self.spec["TaskTemplate"]["ContainerSpec"]["Image"] = self.rolled_back_to
        return {"ID": "k3v9s0q2x7m1aa", "Version": {"Index": 41 + len(self.updates)}, "Spec": self.spec,
                **({"UpdateStatus": self.status} if self.status else {})}

    def update_service(self, service, version, **arguments):
        self.updates.append((service, version, arguments))
        self.spec = {**self.spec, "TaskTemplate": copy.deepcopy(arguments["task_template"])}

    def tasks(self, filters):
        return [{"Spec": {"ContainerSpec": {"Image": V2}}, "Status": {"Err": "task: non-zero exit (1)"}},
                {"Spec": {"ContainerSpec": {"Image": V2}}, "Status": {"Err": "task: non-zero exit (1)"}},
                {"Spec": {"ContainerSpec": {"Image": V1}}, "Status": {}}]

    # images
    def pull(self, repository, tag):
        self.local[f"{repository}:{tag}"] = self.pulled
        return SimpleNamespace(id=self.pulled)

    def get(self, ref):
        if ref not in self.local:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return SimpleNamespace(id=self.local[ref], attrs={"Id": self.local[ref], "RepoDigests": []})

    # the release command's one-off container
    def create(self, **arguments):
        self.created.append(arguments)
        exited = self.release_exit
        return SimpleNamespace(start=lambda: None, wait=lambda timeout: {"StatusCode": exited},
                               logs=lambda tail: b"migrating\nno such table: users\n", remove=lambda force: None)


def updater(manager: Manager, tmp_path: Path, release: list[str] = (), health_timeout: float = 30):
    spec = tmp_path / "container.json"
    spec.write_text(json.dumps({
        "name": "dockyard-app", "ports": [], "volumes": [], "env": {"GREETING": "Hello"}, "command": [],
        "restart": "always", "network": "dockyard-cluster", "labels": {}, "log": {}, "health": None,
        "env_file": False, "release": list(release),
    }))
    return service_update.ServiceUpdater(manager, spec, APP_SERVICE, health_timeout, poll=0)


def record(image: str, image_id: str = "") -> dict:
    return {"id": image_id, "image": image, "digests": [], "name": APP_SERVICE}


# --- the config deploy renders ---

def rendered_config(tmp_path: Path, cluster: Cluster | None) -> Path:
    inv = inventory.parse({"provider": "sandbox", "hosts": {"web1": {}}}, env="t", path=REPO / "inventory" / "t.yml")
    target = Target(inv, HostRecord("web1", "127.0.0.1", 2222, "ubuntu", inventory.ROLES), False,
                    cluster=cluster, proxy_tls=PROXY_TLS)
    built = {"webhook": Built("dockyard/webhook:abc", "x", True)}
    values = {"secrets": {n: f"s3cret-{n}-0123456789" for n in deploy.SECRETS}, "online": False}
    want = deploy.resolve(webhook.declare(target), target, built, deploy._templates(REPO / "templates"), values)
    path = tmp_path / "config.json"
    path.write_bytes(want.files[0].content)
    return path


def test_on_a_swarm_the_config_names_the_apps_service_and_the_registry_its_nodes_pull_from(tmp_path):
    config = triggers.load_config(rendered_config(tmp_path, Cluster(TWIN, 3, None)))
    assert config.swarm == Swarm(APP_SERVICE, TWIN)
    assert config.image_for(Trigger("registry", "flask-hello", "v2")) == V2


def test_without_a_swarm_the_config_says_so(tmp_path):
    path = rendered_config(tmp_path, None)
    assert json.loads(path.read_text())["swarm"] is None
    assert triggers.load_config(path).swarm is None


@pytest.mark.parametrize("swarm, complaint", [
    ({"service": "a b", "registry": TWIN}, "swarm.service 'a b' is not a service name"),
    ({"registry": TWIN}, "swarm.service None"),
    ({"service": APP_SERVICE, "registry": "https://10.61.0.2"}, "swarm.registry must be host:port"),
    ("dockyard_app", "swarm missing or of the wrong type"),
])
def test_a_config_with_a_broken_swarm_setting_is_refused(tmp_path, swarm, complaint):
    path = rendered_config(tmp_path, Cluster(TWIN, 3, None))
    path.write_text(json.dumps({**json.loads(path.read_text()), "swarm": swarm}))
    with pytest.raises(triggers.ConfigError, match=complaint):
        triggers.load_config(path)


# --- the update ---

def test_the_update_sent_keeps_every_part_of_the_services_spec_but_its_image():
    """Through the SDK's own request building, as the listener's engine would receive it."""
    client = docker.APIClient(base_url="tcp://127.0.0.1:9", version="1.41")
    sent = []
    client._post_json = lambda url, data, params, headers: sent.append((url, data, params)) or SimpleNamespace()
    client._result = lambda response, json: {}
    client.update_service("k3v9s0q2x7m1aa", 41, **service_update.update_arguments(SPEC, V2, force=False))
    (url, data, params), = sent
    expected = copy.deepcopy(SPEC)
    expected["TaskTemplate"]["ContainerSpec"]["Image"] = V2
    assert url.endswith("/services/k3v9s0q2x7m1aa/update") and params == {"version": 41}
    assert data == expected
    forced = service_update.update_arguments(SPEC, V1, force=True)["task_template"]
    assert (forced["ForceUpdate"], forced["ContainerSpec"]["Image"]) == (1, V1)
    assert SPEC["TaskTemplate"]["ContainerSpec"]["Image"] == V1  # the spec read is left as it was


def test_an_update_swarm_completes_is_a_success_from_the_image_before_to_the_new_one(tmp_path):
    manager = Manager(states=("updating", "updating", "completed"))
    outcome = updater(manager, tmp_path).redeploy(V2)
    assert outcome == service_update.Outcome("success", "", V2, record(V1, "sha256:old"), record(V2, "sha256:new"))
    (service, version, arguments), = manager.updates
    assert (service, version, arguments["task_template"]["ForceUpdate"]) == ("k3v9s0q2x7m1aa", 41, 0)
    assert manager.reads == 3


def test_the_update_before_ours_is_not_taken_for_it(tmp_path):
    """Swarm sets the new UpdateStatus a moment after the update is accepted: until then the last one shows."""
    manager = Manager(states=("updating", "rollback_started", "rollback_completed"), stale=4, rolled_back_to=V1)
    outcome = updater(manager, tmp_path).redeploy(V2)
    assert manager.reads == 7
    assert outcome.result == "failure"


def test_an_update_swarm_rolled_back_is_a_failure_that_says_why(tmp_path):
    manager = Manager(states=("updating", "rollback_started", "rollback_completed"), rolled_back_to=V1)
    outcome = updater(manager, tmp_path).redeploy(V2)
    assert outcome == service_update.Outcome(
        "failure", "swarm rolled the update back (rollback_completed): update rolled back due to failure or early "
                   "termination of task n4x2; its tasks: task: non-zero exit (1)", V2, record(V1, "sha256:old"),
        record(V1, "sha256:old"))


def test_an_update_swarm_paused_is_a_failure(tmp_path):
    outcome = updater(Manager(states=("updating", "paused")), tmp_path).redeploy(V2)
    assert (outcome.result, outcome.after["image"]) == ("failure", V2)
    assert outcome.reason == ("swarm paused the update (paused): update paused due to failure or early termination of "
                              "task n4x2; its tasks: task: non-zero exit (1)")


def test_an_update_that_never_ends_fails_after_its_bound_and_swarm_goes_on(tmp_path):
    manager = Manager(states=["updating"] * 10**6)
    manager.spec["UpdateConfig"]["Monitor"] = SECOND // 10
    outcome = updater(manager, tmp_path, health_timeout=0.05).redeploy(V2)
    assert outcome.result == "failure"
    assert outcome.reason == f"{APP_SERVICE} did not finish its update within 0.25s (updating); swarm goes on"


def test_the_bound_gives_each_batch_of_tasks_the_health_timeout_and_the_last_the_monitor_window():
    assert service_update.update_bound(SPEC, 60) == 3 * 60 + 5
    all_at_once = {**SPEC, "UpdateConfig": {**SPEC["UpdateConfig"], "Parallelism": 0}}
    assert service_update.update_bound(all_at_once, 60) == 65
    two_by_two = {**SPEC, "UpdateConfig": {"Parallelism": 2}}
    assert service_update.update_bound(two_by_two, 60) == 2 * 60 + 5  # Swarm's default monitor window


def test_the_image_the_service_already_runs_is_left_alone(tmp_path):
    manager = Manager(image=V2, had="sha256:new")
    outcome = updater(manager, tmp_path).redeploy(V2)
    assert (outcome.result, outcome.reason) == ("success", f"unchanged: {APP_SERVICE} already runs that image")
    assert manager.updates == []


def test_a_tag_pushed_again_with_another_image_forces_the_update(tmp_path):
    manager = Manager(image=V2, had="sha256:previous")
    assert updater(manager, tmp_path).redeploy(V2).result == "success"
    (_, _, arguments), = manager.updates
    assert arguments["task_template"]["ForceUpdate"] == 1


def test_the_release_command_runs_first_and_its_failure_changes_nothing(tmp_path):
    manager = Manager(release_exit=3)
    outcome = updater(manager, tmp_path, release=["flask", "db-upgrade"]).redeploy(V2)
    assert outcome == service_update.Outcome(
        "failure", f"release command failed (exit 3): {APP_SERVICE} was not changed; its last lines: migrating | "
                   "no such table: users", V2, record(V1, "sha256:old"), record(V1, "sha256:old"))
    (created,) = manager.created
    assert (created["image"], created["command"], created["network"]) == (V2, ["flask", "db-upgrade"],
                                                                          "dockyard-cluster")
    assert manager.updates == []
    manager = Manager()
    assert updater(manager, tmp_path, release=["flask", "db-upgrade"]).redeploy(V2).result == "success"
    assert len(manager.updates) == 1


def test_a_missing_service_is_a_failure_that_says_to_deploy(tmp_path):
    class NoService(Manager):
        def inspect_service(self, name):
            raise docker.errors.NotFound(f"service {name} not found")

    outcome = updater(NoService(), tmp_path).redeploy(V2)
    assert outcome == service_update.Outcome(
        "failure", f"the app's service {APP_SERVICE} does not exist; run `invoke deploy`", V2)

