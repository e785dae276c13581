"""Reliability on a real sandbox host: deploys killed at random points, a host restart (on both kinds of host, a
shell script or systemd as PID 1), load during a redeploy, and a teardown that leaves nothing behind.

The kill points are fractions of the measured deploy durations drawn from a seed (DOCKYARD_KILL_SEED, printed), so
a failing run can be replayed. Run with -s to see the figures. The teardown check for provider: aws, against moto,
is tests/test_aws.py's test_teardown_leaves_nothing_tagged.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import threading
import time

import docker
import pytest

from dockyard.inventory import SANDBOX_INITS
from tests.conftest import SANDBOX_STACK, Project
from tests.e2e.helpers import (
    APP_CONTAINERS,
    CONTAINERS,
    all_healthy,
    door,
    host_run,
    http,
    kill_group,
    labelled,
    listening_ports,
    record,
    registry_contents,
    remove_push_tags,
    seen_containers,
    serving,
    set_app_version,
    start_cli,
    tunnel,
    wait_for,
)

ENV = "t-rel"
SEED = int(os.environ.get("DOCKYARD_KILL_SEED", "7"))
FRESH_KILLS = 3  # from a freshly provisioned host: docker install, ship, the first pushes
CHANGED_KILLS = 7  # from a converged host with a new app version, every other one with a new registry config
LOAD_REQUESTS = 200
STARTUP_SECONDS = 1.0  # Python and Invoke starting: a kill before does nothing worth testing


class Rel:
    """The environment under test and what the tests learn about it along the way."""

    def __init__(self, project, init: str = "classic"):
        self.project = project
        self.init = init
        self.env = ENV if init == "classic" else f"{ENV}-{init}"
        self.version = 1
        self.cold_seconds = 0.0
        self.tunnel_ports: set[int] = set()  # of killed runs: their pushes' local tags are ours to remove
        self.tmp = project.root / "runs"
        self.tmp.mkdir()

    def invoke(self, *args: str, **kwargs):
        return self.project.invoke(self.env, *args, **kwargs)

    def app_says(self) -> tuple[int, str]:
        url, ca = door(self.project, self.env)
        return http(f"{url}/", timeout=5, ca=ca)


@pytest.fixture(scope="module")
def rel(module_project):
    module_project.copy_sources()
    module_project.inventory(ENV, SANDBOX_STACK)
    state = Rel(module_project)
    try:
        state.invoke("provision")
        started = time.monotonic()
        state.invoke("deploy")
        state.cold_seconds = time.monotonic() - started
        print(f"\ncold deploy: {state.cold_seconds:.1f}s")
        yield state
    finally:
        module_project.invoke(ENV, "teardown", "--yes", check=False)
        removed = remove_push_tags(state.tunnel_ports)
        if removed:
            print(f"removed {len(removed)} local tag(s) left by killed pushes: {', '.join(removed)}")


@pytest.fixture(scope="module")
def systemd_rel(tmp_path_factory):
    """The whole stack on a host whose PID 1 is systemd, for the restart test."""
    project = Project(tmp_path_factory.mktemp("systemd"))
    state = Rel(project, "systemd")
    project.inventory(state.env, SANDBOX_STACK + "sandbox: {init: systemd}\n")
    try:
        state.invoke("provision", "deploy")
        yield state
    finally:
        state.invoke("teardown", "--yes", check=False)


@pytest.fixture(params=SANDBOX_INITS)
def any_rel(request) -> Rel:
    """The classic host of the other tests, or the systemd one."""
    return request.getfixturevalue({"classic": "rel", "systemd": "systemd_rel"}[request.param])


def kill_deploy_after(rel: Rel, delay: float, name: str) -> str:
    """Start `invoke deploy`, SIGKILL its process group after `delay` seconds; its last line of output."""
    log = rel.tmp / f"{name}.log"
    process = start_cli(rel.project, ENV, log, "deploy")
    try:
        process.wait(timeout=delay)
        finished = f"finished first (exit {process.returncode})"
    except subprocess.TimeoutExpired:  # still running, as wanted
        rel.tunnel_ports |= listening_ports(process.pid)
        kill_group(process)
        finished = "killed"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f"{finished}; last output: {lines[-1][:110] if lines else '(none)'}"


def converges_and_serves(rel: Rel) -> None:
    rerun = rel.invoke("deploy", check=False)
    assert rerun.returncode == 0, f"the rerun after a kill failed:\n{rerun.stdout}\n{rerun.stderr}"
    assert "no changes (" in rel.invoke("deploy").stdout
    assert rel.app_says() == (200, f"Flask Hello world! Version {rel.version}\n")


def kill_point(rng: random.Random, i: int, n: int, seconds: float) -> float:
    """The i-th of n kill points: at random within the i-th slice of a run, after the command line has started."""
    return STARTUP_SECONDS + (i + rng.random()) / n * (seconds - STARTUP_SECONDS)


def change(rel: Rel, registry_too: bool) -> None:
    rel.version += 1
    set_app_version(rel.project, rel.version)
    if registry_too:
        template = rel.project.sources / "templates" / "registry" / "config.yml.j2"
        text = template.read_text()
        # a comment line is enough to change the rendered file and recreate the registry
        marker = "# reliability: changed\n"
        template.write_text(text.replace(marker, "") if marker in text else text + marker)


def test_a_deploy_killed_at_random_points_converges_on_the_next_run(rel):
    rng = random.Random(SEED)
    points = []
    print(f"\nkill seed {SEED} (set DOCKYARD_KILL_SEED to replay); cold deploy {rel.cold_seconds:.1f}s")

    # How long a deploy of a changed app and registry config takes, uninterrupted.
    change(rel, registry_too=True)
    started = time.monotonic()
    rel.invoke("deploy")
    changed_seconds = time.monotonic() - started
    print(f"changed deploy (app and registry config): {changed_seconds:.1f}s")

    for i in range(CHANGED_KILLS):
        change(rel, registry_too=i % 2 == 0)
        delay = kill_point(rng, i, CHANGED_KILLS, changed_seconds)
        points.append(("changed", delay, kill_deploy_after(rel, delay, f"changed-{i}")))
        print(f"kill {len(points):2}: changed host, {delay:5.1f}s: {points[-1][2]}")
        converges_and_serves(rel)

    for i in range(FRESH_KILLS):
        rel.invoke("teardown", "--yes")
        rel.invoke("provision")
        delay = kill_point(rng, i, FRESH_KILLS, rel.cold_seconds)
        points.append(("fresh", delay, kill_deploy_after(rel, delay, f"fresh-{i}")))
        print(f"kill {len(points):2}: fresh host,   {delay:5.1f}s: {points[-1][2]}")
        converges_and_serves(rel)

    assert len(points) == FRESH_KILLS + CHANGED_KILLS
    print("kill points (s): " + ", ".join(f"{kind} {delay:.1f}" for kind, delay, _ in points))


def test_a_deploy_cut_between_docker_rm_and_docker_run_converges(rel):
    """A kill rarely lands in that instant: the remote script outlives its SSH session until it next writes. So
    make the state it would leave, the container of a recreate gone, and converge from it; and the app's serving
    container gone too."""
    host_run(rel.project, ENV, f"docker rm --force dockyard-registry {serving(rel.project, ENV)} >/dev/null")
    result = rel.invoke("deploy")
    assert "run dockyard-registry (missing)" in result.stdout and "switch dockyard-app (missing)" in result.stdout
    assert rel.app_says() == (200, f"Flask Hello world! Version {rel.version}\n")
    assert "no changes (" in rel.invoke("deploy").stdout


def test_after_a_host_restart_every_service_comes_back_on_the_same_ports_and_the_registry_is_intact(any_rel):
    rel = any_rel
    with tunnel(rel.project, rel.env, 5000) as url:
        before = registry_contents(url)
    assert before["flask-hello"]
    host_before = record(rel.project, rel.env)

    host = docker.from_env().containers.get(host_before.provider["container"])
    host.stop()
    host.reload()
    assert host.status == "exited"
    started = time.monotonic()
    assert f"started {host.name} (was exited)" in rel.invoke("provision").stdout

    wait_for("every service healthy after the restart", lambda: all_healthy(rel.project, rel.env))
    wait_for("the app answering", lambda: rel.app_says()[0] == 200)
    print(f"\nhost restart ({rel.env}): all services healthy and the app answering "
          f"{time.monotonic() - started:.1f}s after start")
    # a bookmarked URL still works, as a VM's address would
    host_after = record(rel.project, rel.env)
    assert (host_after.port, host_after.endpoints) == (host_before.port, host_before.endpoints)
    assert rel.app_says() == (200, f"Flask Hello world! Version {rel.version}\n")
    url, ca = door(rel.project, rel.env)
    status, answer = http(f"{url}/hooks/not-the-token", "POST", b"{}", {"Content-Type": "application/json"}, ca=ca)
    assert (status, json.loads(answer)["reason"]) == (404, "not found")  # the listener's answer, through the proxy
    with tunnel(rel.project, rel.env, 5000) as url:
        assert registry_contents(url) == before
    with tunnel(rel.project, rel.env, 8080) as url:
        assert http(f"{url}/")[0] == 200
    pid1 = host_run(rel.project, rel.env, "ps -o comm= -p 1").strip()
    assert pid1 == {"classic": "sshd", "systemd": "systemd"}[rel.init]

    result = rel.invoke("deploy")
    assert "no changes (" in result.stdout, result.stdout


def release(rel: Rel, version: int) -> None:
    rel.version = version
    set_app_version(rel.project, version)
    rel.invoke("app.release", "--version", f"v{version}")
    assert rel.app_says() == (200, f"Flask Hello world! Version {version}\n")


def history(rel: Rel) -> list[dict]:
    lines = host_run(rel.project, ENV, "cat /var/lib/dockyard/webhook/history.jsonl").splitlines()
    return [json.loads(line) for line in lines]


def test_requests_during_a_webhook_redeploy(rel):
    # Two releases, so the registry holds v101 and v102 and the app runs v102.
    release(rel, 101)
    release(rel, 102)
    redeploy_seconds = history(rel)[-1]["duration_s"]
    seen = len(history(rel))

    # A registry notification for the v101 already pushed starts a real redeploy at a known moment: pull, start
    # the other slot, wait for its health check, switch the proxy to it, stop the old container.
    e = rel.project.env(ENV)
    url, ca = door(rel.project, ENV)
    pace = max(redeploy_seconds, 3.0) * 1.5 / LOAD_REQUESTS
    results: list[tuple[float, int | str]] = []

    def load() -> None:
        for _ in range(LOAD_REQUESTS):
            sent = time.monotonic()
            try:
                status, _ = http(f"{url}/", timeout=5, ca=ca)
            except Exception as error:  # refused, reset, timed out: a failed request
                status = type(error).__name__
            results.append((sent, status))
            time.sleep(max(0.0, pace - (time.monotonic() - sent)))

    body = json.dumps({"events": [{
        "action": "push",
        "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                   "repository": "flask-hello", "tag": "v101"},
    }]})
    # as the registry sends it, from its own container on the docker network: the listener publishes no port
    notify = shlex.join([
        "docker", "exec", "dockyard-registry", "wget", "-q", "-O", "-",
        "--header", f"Authorization: Bearer {e.state.secret('notify_token')}",
        "--header", "Content-Type: application/vnd.docker.distribution.events.v1+json",
        "--post-data", body, "http://dockyard-webhook:9000/registry/events",
    ])
    loader = threading.Thread(target=load)
    loader.start()
    posted = time.monotonic()
    answer = host_run(rel.project, ENV, notify)  # wget fails on any status but 2xx
    assert json.loads(answer)["status"] == "queued", answer
    loader.join()

    entry = wait_for("the redeploy's history line", lambda: (h := history(rel))[seen:] and h[-1], timeout=60)
    assert entry["trigger"]["tag"] == "v101" and entry["result"] == "success", entry
    failed = [(sent - posted, status) for sent, status in results if status != 200]
    window = f"{failed[0][0]:.2f}s to {failed[-1][0]:.2f}s after the trigger" if failed else "none"
    print(f"\nload during a webhook redeploy: {len(failed)} of {LOAD_REQUESTS} requests failed (failures {window}); "
          f"requests spread over {results[-1][0] - posted:.1f}s, the redeploy took {entry['duration_s']}s; "
          f"kinds: {sorted({str(s) for _, s in failed})}")
    assert len(results) == LOAD_REQUESTS
    assert failed == []  # through the front door, the switch costs no request
    rel.version = 101
    assert rel.app_says() == (200, "Flask Hello world! Version 101\n")
    services = {n for n in CONTAINERS if n not in APP_CONTAINERS}
    assert set(seen_containers(rel.project, ENV)) == {*services, serving(rel.project, ENV)}


def test_teardown_leaves_nothing_labelled_behind(rel):
    rel.invoke("teardown", "--yes")
    assert labelled(rel.project, ENV) == {"containers": [], "volumes": [], "networks": []}
    assert not (rel.project.state_dir / ENV).exists()
