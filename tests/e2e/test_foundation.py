"""End to end on a real sandbox host: provision, Docker over SSH, idempotence, pinning, teardown."""

import stat
import subprocess

import docker
import pytest

from dockyard import images
from dockyard.errors import ConnectError
from dockyard.ssh import HostKeyChanged

ENV = "t-found"


@pytest.fixture(scope="module")
def found(module_project):
    module_project.inventory(ENV, "provider: sandbox\nhosts: {web1: {roles: []}}\n")
    yield module_project
    module_project.invoke(ENV, "teardown", "--yes", check=False)


def labelled(kind: str) -> list:
    client = docker.from_env()
    collection = {"containers": client.containers, "volumes": client.volumes, "networks": client.networks}[kind]
    selector = {"label": f"dockyard.env={ENV}"}
    return collection.list(all=True, filters=selector) if kind == "containers" else collection.list(filters=selector)


def test_provision_creates_a_host_reachable_over_ssh(found):
    result = found.invoke(ENV, "provision")
    assert "web1       sandbox      changed" in result.stdout
    assert "ssh -i" in result.stdout and "ubuntu@127.0.0.1" in result.stdout
    state = found.state_dir / ENV
    assert stat.S_IMODE((state / "id_ed25519").stat().st_mode) == 0o600
    assert (state / "known_hosts").read_text().startswith("web1 ssh-ed25519 ")
    container = labelled("containers")[0]
    assert container.attrs["Config"]["User"] in ("", "root")
    bindings = container.attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for bs in bindings.values() for b in bs} == {"127.0.0.1"}
    mounts = {m["Destination"]: m["Type"] for m in container.attrs["Mounts"]}
    assert mounts["/var/lib/docker"] == "volume"


def test_docker_install_over_ssh_then_docker_runs_a_container_inside(found):
    result = found.invoke(ENV, "docker.install")
    assert "web1       docker       changed" in result.stdout
    assert "install docker.io (not installed" in result.stdout

    env = found.env(ENV)
    base = images.build_base(lambda _: None).ref
    found.invoke(ENV, "images.ship", "--image", base)
    (record,) = env.hosts()
    with env.connect(record) as conn:
        # as the SSH user, without sudo: the docker group works
        info = conn.connection.run("docker info --format '{{.ServerVersion}}'", hide=True, in_stream=False)
        assert info.stdout.strip()
        ran = conn.connection.run(f"docker run --rm {base} echo hello-from-the-host", hide=True, in_stream=False)
        assert ran.stdout.strip() == "hello-from-the-host"


def test_second_provision_and_install_change_nothing_in_one_round_trip(found):
    assert "no changes: every host exists and runs" in found.invoke(ENV, "provision").stdout
    result = found.invoke(ENV, "docker.install")
    assert "web1       docker       ok" in result.stdout
    assert "1 SSH connection(s), 1 remote command(s)" in result.stdout


def test_a_stopped_host_is_started_again(found):
    labelled("containers")[0].stop(timeout=1)
    result = found.invoke(ENV, "provision")
    assert "started dockyard-t-found-web1 (was exited)" in result.stdout
    # dockerd comes back with the host, started from rc.local: nothing to install
    assert "web1       docker       ok" in found.invoke(ENV, "docker.install").stdout


def test_a_changed_host_key_is_refused_until_forgotten(found):
    container = labelled("containers")[0]
    container.exec_run(["sh", "-c", "rm /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && kill -HUP 1"])
    env = found.env(ENV)
    (record,) = env.hosts()
    with pytest.raises(HostKeyChanged, match=r"web1 .*host key changed.*invoke hosts.forget web1"):
        _wait_for_sshd(env, record)
    refused = found.invoke(ENV, "docker.install", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: web1 (") and "host key changed" in refused.stderr
    assert "Traceback" not in refused.stderr

    found.invoke(ENV, "hosts.forget", "web1")
    assert "web1       docker       ok" in found.invoke(ENV, "docker.install").stdout


def _wait_for_sshd(env, record):
    """sshd re-executes on SIGHUP; retry until it answers, then surface what the connection says."""
    for _ in range(50):
        try:
            with env.connect(record) as conn:
                conn.run("true")
            return
        except HostKeyChanged:
            raise
        except ConnectError:
            subprocess.run(["sleep", "0.2"])


def test_an_unreachable_host_gives_one_line(found):
    env = found.env(ENV)
    (record,) = env.hosts()
    from dataclasses import replace

    closed = replace(record, port=1)
    with pytest.raises(ConnectError, match=r"^web1 \(ubuntu@127.0.0.1:1\): connection refused; check the host"):
        env.connect(closed).open()


def test_teardown_leaves_nothing_behind(found):
    result = found.invoke(ENV, "teardown", "--yes")
    assert "removed dockyard-t-found-web1" in result.stdout
    assert labelled("containers") == []
    assert labelled("volumes") == []
    assert labelled("networks") == []
    assert not (found.state_dir / ENV).exists()


def test_teardown_without_a_terminal_asks_for_yes(found):
    result = found.invoke(ENV, "teardown", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: tear down environment t-found (sandbox)? needs confirmation; pass --yes to proceed without a terminal"
    )
