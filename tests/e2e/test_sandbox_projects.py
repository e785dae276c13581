"""Two clones of a project on one machine, one environment name: each owns its sandbox host, reached with its own
key on ports that stay put across a `docker restart`, and a teardown removes only its own project's resources."""

import docker
import pytest

from dockyard.providers.sandbox import project_id
from dockyard.state import State
from tests.conftest import Project
from tests.e2e.helpers import host_run, labelled, record

ENV = "t-twin"


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    pair = [Project(tmp_path_factory.mktemp(name)) for name in ("clone-a", "clone-b")]
    for clone in pair:
        clone.inventory(ENV, "provider: sandbox\nhosts: {web1: {roles: []}}\n")
    yield pair
    for clone in pair:
        clone.invoke(ENV, "teardown", "--yes", check=False)


def test_two_clones_with_one_environment_name_get_a_host_each(clones):
    for clone in clones:
        # the second clone's key would be refused by the first clone's host, were it adopted
        assert "web1       sandbox      changed     " in clone.invoke(ENV, "provision").stdout
    hosts = [record(clone, ENV) for clone in clones]
    assert hosts[0].provider["container"] != hosts[1].provider["container"]
    assert hosts[0].port != hosts[1].port
    engine = docker.from_env()
    owners = [engine.containers.get(host.provider["container"]).labels["dockyard.project"] for host in hosts]
    assert owners == [project_id(State(clone.state_dir, ENV)) for clone in clones]
    assert owners[0] != owners[1]
    assert [host_run(clone, ENV, "hostname").strip() for clone in clones] == ["web1", "web1"]


def test_a_docker_restart_keeps_the_hosts_ports(clones):
    clone = clones[0]
    before = record(clone, ENV)
    docker.from_env().containers.get(before.provider["container"]).restart(timeout=5)
    assert "web1       sandbox      ok" in clone.invoke(ENV, "provision").stdout  # waits for SSH
    after = record(clone, ENV)
    assert (after.address, after.port) == (before.address, before.port)
    assert host_run(clone, ENV, "hostname").strip() == "web1"


def test_a_teardown_removes_only_its_own_projects_resources(clones):
    mine, theirs = clones
    kept = labelled(theirs, ENV)
    assert len(kept["containers"]) == len(kept["volumes"]) == len(kept["networks"]) == 1
    mine.invoke(ENV, "teardown", "--yes")
    assert labelled(mine, ENV) == {"containers": [], "volumes": [], "networks": []}
    assert labelled(theirs, ENV) == kept
    assert host_run(theirs, ENV, "hostname").strip() == "web1"
