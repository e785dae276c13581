"""Races an operator hits, on one shared stack: concurrent deploys, a deploy while the host boots, a deploy after
dockerd died, and a deploy after another one was killed while it held the host lock.

Each case ends as an operator would check it: a rerun says `no changes` and the app serves through the proxy (https,
verified with the CA `invoke proxy.ca` exports). Run with -s to see each outcome and how long a waiting deploy waited.
"""

from __future__ import annotations

import re
import subprocess
import time

import docker
import pytest

from dockyard import lock
from tests.conftest import SANDBOX_STACK, Project
from tests.e2e.helpers import (
    door,
    host_run,
    http,
    kill_group,
    listening_ports,
    record,
    remove_push_tags,
    set_app_version,
    start_cli,
    wait_for,
)

ENV = "t-chaos"
WAITED = re.compile(r"took the host lock after waiting ([0-9.]+)s")


class Chaos:
    def __init__(self, project: Project):
        self.project = project
        self.version = 1
        self.logs = project.root / "runs"
        self.logs.mkdir()
        self.tunnel_ports: set[int] = set()  # of a killed run: its pushes' local tags are ours to remove

    def invoke(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.project.invoke(ENV, *args, check=check)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        return start_cli(self.project, ENV, self.logs / f"{name}.log", *args)

    def output(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def host_container(self):
        return docker.from_env().containers.get(record(self.project, ENV).provider["container"])

    def converged_and_serving(self) -> None:
        rerun = self.invoke("deploy")
        assert "no changes (" in rerun.stdout, rerun.stdout
        url, ca = door(self.project, ENV)
        assert http(f"{url}/", timeout=5, ca=ca) == (200, f"Flask Hello world! Version {self.version}\n")


def finished(process: subprocess.Popen, timeout: float = 600) -> int:
    return process.wait(timeout=timeout)


def waited(output: str) -> float | None:
    match = WAITED.search(output)
    return float(match.group(1)) if match else None


@pytest.fixture(scope="module")
def chaos(module_project):
    module_project.copy_sources()
    module_project.inventory(ENV, SANDBOX_STACK)
    state = Chaos(module_project)
    try:
        state.invoke("provision")
        state.invoke("deploy")
        yield state
    finally:
        state.invoke("teardown", "--yes", check=False)
        remove_push_tags(state.tunnel_ports)


def test_three_concurrent_deploys_of_a_template_change_recreate_once_and_the_others_wait(chaos):
    template = chaos.project.sources / "templates" / "mirror" / "config.yml.j2"
    template.write_text(template.read_text() + "# chaos: changed\n")  # the rendered file changes: recreate the mirror
    runs = [chaos.start(f"concurrent-{i}", "deploy") for i in range(3)]
    codes = [finished(run) for run in runs]
    outputs = [chaos.output(f"concurrent-{i}") for i in range(3)]
    assert codes == [0, 0, 0], "\n".join(outputs)
    recreated = [i for i, out in enumerate(outputs) if "recreate dockyard-mirror" in out]
    assert len(recreated) == 1, "\n".join(outputs)
    others = [out for i, out in enumerate(outputs) if i not in recreated]
    assert all("no changes (" in out for out in others), "\n".join(others)
    waits = [waited(out) for out in others]
    assert any(w is not None for w in waits), "\n".join(others)  # at least one found the lock held
    line = next(line for line in outputs[recreated[0]].splitlines() if "recreate dockyard-mirror" in line)
    print(f"\nconcurrent deploys: {line.split()[2]} once ({line.split()[3]}); the others waited "
          + ", ".join("no time" if w is None else f"{w:.1f}s" for w in waits) + ", then said no changes")
    chaos.converged_and_serving()


def test_a_stopped_host_provisioned_and_deployed_at_once_is_waited_for_not_reinstalled(chaos):
    host = chaos.host_container()
    host.stop()
    provision = chaos.start("boot-provision", "provision")
    wait_for("the host container running", lambda: host.reload() or host.status == "running", interval=0.05)
    deploy = chaos.start("boot-deploy", "deploy")
    assert finished(provision) == 0, chaos.output("boot-provision")
    assert finished(deploy) == 0, chaos.output("boot-deploy")
    out = chaos.output("boot-deploy")
    assert not re.search(r"install docker|run dockyard-|Conflict", out), out
    dockerd = [line for line in out.splitlines() if line.split()[1:2] == ["dockerd"]]
    print(f"\nstopped host, provision and deploy at once: deploy changed nothing; "
          f"{dockerd[0] if dockerd else 'dockerd answered at its first look'}")
    chaos.converged_and_serving()


def test_deploy_starts_a_killed_dockerd_and_reads_the_containers_once_it_answers(chaos):
    host_run(chaos.project, ENV, "kill -9 $(pgrep -x dockerd)")
    result = chaos.invoke("deploy")
    assert re.search(r"^web1 +dockerd +changed .*was not answering: started it$", result.stdout, re.M), result.stdout
    assert not re.search(r"install docker|run dockyard-|recreate dockyard-", result.stdout), result.stdout
    print("\ndockerd killed, then deploy: " + next(line for line in result.stdout.splitlines() if "dockerd" in line))
    chaos.converged_and_serving()


def test_a_deploy_killed_while_it_holds_the_lock_leaves_none_behind(chaos):
    chaos.version += 1
    set_app_version(chaos.project, chaos.version)  # the killed deploy has an app to replace
    killed = chaos.start("killed", "deploy")
    env = chaos.project.env(ENV)
    (host,) = env.hosts()
    with env.connect(host) as conn:
        def held_by_it() -> str | None:
            holder = lock.holder(conn)
            return holder if holder and f"pid {killed.pid}," in holder else None

        holder = wait_for("the deploy to hold the lock", held_by_it, timeout=300, interval=0.1)
    chaos.tunnel_ports |= listening_ports(killed.pid)
    kill_group(killed)
    started = time.monotonic()
    second = chaos.invoke("deploy")  # from another shell
    took = time.monotonic() - started
    assert "waiting" not in second.stdout, second.stdout
    app = next(line for line in second.stdout.splitlines() if line.split()[1:2] == ["app"])
    print(f"\na deploy killed holding the lock ({holder}); the next deploy took it at once and finished in "
          f"{took:.1f}s: {app}")
    chaos.converged_and_serving()


def test_invoke_lock_says_free_once_every_run_is_over(chaos):
    assert chaos.invoke("lock").stdout.splitlines() == ["host  lock", "web1  free"]
