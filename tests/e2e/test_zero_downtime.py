"""Zero downtime through the front door, on one sandbox host.

A bounded load (keep-alive and fresh connections, https verified against the CA `invoke proxy.ca` exports) runs
through each way the app changes: `app.release`, a registry push (`invoke images.push`), a Docker Hub trigger, a
`deploy` of a changed app, and a change to the proxy's own Caddyfile. Each loses no request and ends with the new
version serving; a release whose health check fails loses none either and leaves the old version serving.

Restart safety: a switch cut after each of its phases (as a killed run leaves it: its remote script stops at the
next phase, whose marker it can no longer write), a deploy killed mid-switch, and a host restarted mid-switch each
converge on the next deploy to one app container serving through the proxy, and the deploy after says `no changes`.
Run with -s to see the figures.
"""

from __future__ import annotations

import json
import re
import uuid

import docker
import pytest
import requests

from dockyard import deploy, images
from dockyard.commands import switch
from tests.conftest import SANDBOX_STACK
from tests.e2e.helpers import (
    all_healthy,
    app_containers,
    door,
    host_run,
    kill_group,
    record,
    serving,
    set_app_version,
    start_cli,
    wait_for,
)
from tests.e2e.load import under_load

ENV = "t-zdt"
LOAD_REQUESTS = 1000  # at least; the load runs on until the operation is over
RERUN_REQUESTS = 300  # during the deploy that settles a cut switch
PAUSE = 0.05  # seconds each of the load's threads waits between requests
HEALTH_TIMEOUT = 15
HISTORY = "/var/lib/dockyard/webhook/history.jsonl"


class Stack:
    """The environment under test, the version it should serve, and the figures the tests print."""

    def __init__(self, project):
        self.project = project
        self.version = 1
        self.url, self.ca = door(project, ENV)

    def invoke(self, *args: str, **kwargs):
        return self.project.invoke(ENV, *args, **kwargs)

    def says(self) -> str:
        return requests.get(f"{self.url}/", verify=str(self.ca), timeout=10).text

    def answer(self, version: int) -> str:
        return f"Flask Hello world! Version {version}\n"

    def history(self) -> list[dict]:
        return [json.loads(line) for line in host_run(self.project, ENV, f"cat {HISTORY}").splitlines()]

    def live_upstreams(self) -> set[str]:
        """The app containers Caddy's running config sends requests to, from its admin API."""
        config = host_run(self.project, ENV, "docker exec dockyard-proxy wget -q -O - http://localhost:2019/config/")
        return set(re.findall(r'"dial":"(dockyard-app[a-z-]*):8000"', config))

    def one_app_serving(self) -> str:
        """Exactly one app container, the one the upstream file and Caddy's live config both name; its name."""
        (name,) = app_containers(self.project, ENV)
        assert serving(self.project, ENV) == name
        assert self.live_upstreams() == {name}
        assert self.says() == self.answer(self.version)
        return name

    def under_load(self, what: str, operation, at_least: int = LOAD_REQUESTS):
        """Run `operation` while the load runs; the load, and what the operation returned."""
        return under_load(what, f"{self.url}/", self.ca, operation, at_least, pause=PAUSE)


@pytest.fixture(scope="module")
def stack(module_project):
    module_project.copy_sources()
    module_project.inventory(ENV, SANDBOX_STACK + f"""\
  webhook:
    health_timeout: {HEALTH_TIMEOUT}
    hub_repository: acme/flask-hello
    # Docker Hub cannot be reached from here: a Hub trigger pulls from the private registry instead
    hub_pull: 127.0.0.1:5000/flask-hello
""")
    try:
        module_project.invoke(ENV, "provision", "deploy")
        module_project.invoke(ENV, "proxy.ca")
        yield Stack(module_project)
    finally:
        module_project.invoke(ENV, "teardown", "--yes", check=False)


HEALTHY = 'return {"status": "ok", "version": VERSION}'
BROKEN = 'return {"status": "broken"}, 500'


def set_app(stack: Stack, version: int, healthy: bool = True) -> None:
    """The app's source at `version`, its health check passing or not (whatever an earlier test left)."""
    set_app_version(stack.project, version)
    app = stack.project.sources / "apps" / "flask-hello" / "app.py"
    text = app.read_text()
    app.write_text(text.replace(BROKEN, HEALTHY) if healthy else text.replace(HEALTHY, BROKEN))


def wait_for_redeploy(stack: Stack, seen: int, tag: str) -> dict:
    """The webhook's history entry for `tag`, written once the switch is over."""
    return wait_for(f"the redeploy of {tag}", lambda: next(
        (e for e in stack.history()[seen:] if e["trigger"]["tag"] == tag), None), timeout=120)


def test_a_release_loses_no_request(stack):
    set_app(stack, 2)
    load, result = stack.under_load("app.release v2", lambda: stack.invoke("app.release", "--version", "v2"))
    stack.version = 2
    assert "flask-hello:v2 serving (push" in result.stdout
    assert set(load.answers) == {stack.answer(1), stack.answer(2)}  # the switch happened under load
    assert stack.one_app_serving() == "dockyard-app-green"


def test_a_registry_push_redeploys_with_no_request_lost(stack):
    set_app(stack, 3)
    built = images.build("app", stack.project.sources / "apps/flask-hello", images.build_base(print), print)
    tag = f"t-zdt-{uuid.uuid4().hex[:8]}"  # the local engine is shared: a name no one else uses
    local = f"flask-hello:{tag}"
    docker.from_env().images.get(built.ref).tag("flask-hello", tag)
    seen = len(stack.history())

    def push_and_wait() -> dict:
        stack.invoke("images.push", "--image", local)
        return wait_for_redeploy(stack, seen, tag)

    try:
        load, entry = stack.under_load(f"registry push of {tag}", push_and_wait)
    finally:
        docker.from_env().images.remove(local, noprune=True)
    stack.version = 3
    assert (entry["trigger"]["source"], entry["result"]) == ("registry", "success"), entry
    assert set(load.answers) == {stack.answer(2), stack.answer(3)}
    assert stack.one_app_serving() == "dockyard-app-blue"


def test_a_docker_hub_trigger_redeploys_with_no_request_lost(stack):
    token = stack.project.env(ENV).state.secret("webhook_token")
    payload = {"push_data": {"tag": "v2", "pusher": "acme"},
               "repository": {"repo_name": "acme/flask-hello", "namespace": "acme", "name": "flask-hello"}}
    seen = len(stack.history())

    def trigger_and_wait() -> dict:
        answer = requests.post(f"{stack.url}/hooks/{token}", json=payload, verify=str(stack.ca), timeout=10)
        assert answer.status_code == 202, answer.text
        return wait_for_redeploy(stack, seen, "v2")

    load, entry = stack.under_load("Docker Hub trigger of v2", trigger_and_wait)
    stack.version = 2
    assert (entry["trigger"]["source"], entry["result"]) == ("hub", "success"), entry
    assert set(load.answers) == {stack.answer(3), stack.answer(2)}
    stack.one_app_serving()


def test_a_deploy_that_changes_the_app_loses_no_request(stack):
    set_app(stack, 4)
    load, result = stack.under_load("deploy of app v4", lambda: stack.invoke("deploy"))
    stack.version = 4
    assert "switch dockyard-app (image)" in result.stdout
    assert set(load.answers) == {stack.answer(2), stack.answer(4)}
    stack.one_app_serving()
    assert "no changes (" in stack.invoke("deploy").stdout


def test_a_changed_caddyfile_is_reloaded_with_no_request_lost(stack):
    before = host_run(stack.project, ENV, "docker inspect --format '{{.Id}}' dockyard-proxy")
    template = stack.project.sources / "templates" / "proxy" / "Caddyfile.j2"
    template.write_text(template.read_text().replace("lb_try_duration 5s", "lb_try_duration 6s"))
    _, result = stack.under_load("deploy of a changed Caddyfile", lambda: stack.invoke("deploy"))
    assert "write /etc/dockyard/proxy/Caddyfile (changed); reload dockyard-proxy (files rewritten)" in result.stdout
    assert host_run(stack.project, ENV, "docker inspect --format '{{.Id}}' dockyard-proxy") == before
    live = host_run(stack.project, ENV, "docker exec dockyard-proxy wget -q -O - http://localhost:2019/config/")
    assert '"try_duration":6000000000' in live  # in nanoseconds
    assert "no changes (" in stack.invoke("deploy").stdout


def test_a_release_that_never_gets_healthy_loses_no_request_and_the_old_version_serves(stack):
    set_app(stack, 5, healthy=False)
    before = stack.one_app_serving()
    load, result = stack.under_load(
        "app.release of an unhealthy v5", lambda: stack.invoke("app.release", "--version", "v5", check=False))
    assert result.returncode == 1
    assert result.stderr.startswith("error: web1: release flask-hello:v5 failed: dockyard-app-")
    assert f"not healthy after {HEALTH_TIMEOUT}s on 127.0.0.1:5000/flask-hello:v5 (unhealthy), removed; its log " \
           f"ends: " in result.stderr
    assert "the previous version still serves" in result.stderr
    assert set(load.answers) == {stack.answer(4)}
    assert stack.one_app_serving() == before
    assert stack.history()[-1]["result"] == "failure"


def cut_switch(stack: Stack, after: str) -> None:
    """Run deploy's switch of the declared app on the host up to and including phase `after`, as a run killed
    there leaves it."""
    env = stack.project.env(ENV)
    (want,) = [w for w in deploy.declare(env, [record(stack.project, ENV)])["web1"] if w.role == "app"]
    phases = switch.phases(want.container, want.role, want.digest, want.slots)
    done = [command for _, command in phases[: [name for name, _ in phases].index(after) + 1]]
    host_run(stack.project, ENV, "\n".join(["set -eu", *done]))


def settles(stack: Stack, what: str) -> str:
    """The next deploy, under load, leaves one app container serving; the one after says `no changes`."""
    _, result = stack.under_load(f"deploy after {what}", lambda: stack.invoke("deploy"), at_least=RERUN_REQUESTS)
    stack.one_app_serving()
    assert "no changes (" in stack.invoke("deploy").stdout
    return result.stdout


@pytest.mark.parametrize("after", ["start", "gate", "upstream", "reload"])
def test_a_switch_cut_after_each_phase_settles_on_the_next_deploy(stack, after):
    set_app(stack, 4)  # what runs: the cut switch starts the same version in the other slot
    old = stack.one_app_serving()
    cut_switch(stack, after)
    new = next(n for n in app_containers(stack.project, ENV) if n != old)
    switched = after in ("upstream", "reload")
    assert serving(stack.project, ENV) == (new if switched else old)
    assert stack.live_upstreams() == {new if after == "reload" else old}
    output = settles(stack, f"a switch cut after its {after} phase")
    assert f"settle {old if switched else new} (left by a switch cut short)" in output


def test_a_deploy_killed_mid_switch_converges_on_the_next_run(stack):
    set_app(stack, 6)
    old = stack.one_app_serving()
    host = docker.from_env().containers.get(record(stack.project, ENV).provider["container"])

    def new_slot_started() -> bool:
        names = host.exec_run(["docker", "ps", "-a", "--format", "{{.Names}}"]).output.decode().split()
        return any(n.startswith("dockyard-app-") and n != old for n in names)

    log = stack.project.root / "killed-deploy.log"
    process = start_cli(stack.project, ENV, log, "deploy")
    try:
        wait_for("the new slot's container", new_slot_started, timeout=300, interval=0.1)
    finally:
        kill_group(process)
    # its remote script outlives it until its next phase marker, and the host lock with it
    wait_for("the killed run's switch to stop", lambda: host.exec_run(
        ["flock", "-n", "/var/lib/dockyard/lock/host.lock", "true"]).exit_code == 0, timeout=120)
    left = {name: serving(stack.project, ENV) == name for name in app_containers(stack.project, ENV)}
    print(f"\nkilled as the new slot started; left: {left} (True: the upstream file names it)")
    stack.version = 6
    settles(stack, "a deploy killed mid-switch")


def test_a_host_restarted_mid_switch_converges_on_the_next_deploy(stack):
    old = stack.one_app_serving()
    cut_switch(stack, "reload")  # both slots run; the upstream file and Caddy name the new one
    host = docker.from_env().containers.get(record(stack.project, ENV).provider["container"])
    host.stop()
    assert "started" in stack.invoke("provision").stdout
    wait_for("every service healthy after the restart", lambda: all_healthy(stack.project, ENV), timeout=180)
    assert len(app_containers(stack.project, ENV)) == 2 and serving(stack.project, ENV) != old
    output = settles(stack, "a host restart mid-switch")
    assert f"settle {old} (left by a switch cut short)" in output
