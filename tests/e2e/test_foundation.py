"""End to end on real sandbox hosts of both kinds, a shell script or systemd as PID 1: provision, Docker over SSH
and at boot, idempotence, stable ports, pinning, teardown."""

import stat
import subprocess
from dataclasses import replace

import docker
import pytest

from dockyard import images
from dockyard.errors import ConnectError
from dockyard.inventory import SANDBOX_INITS
from dockyard.ssh import HostKeyChanged
from tests.e2e.helpers import host_run, labelled, record


class Found:
    """One kind of host: its environment in the module's project."""

    def __init__(self, project, init: str):
        self.project = project
        self.init = init
        self.env = f"t-found-{init}"

    def invoke(self, *args: str, **kwargs):
        return self.project.invoke(self.env, *args, **kwargs)

    def container(self):
        (name,) = labelled(self.project, self.env)["containers"]
        return docker.from_env().containers.get(name)


@pytest.fixture(scope="module", params=SANDBOX_INITS)
def found(module_project, request):
    kind = Found(module_project, request.param)
    module_project.inventory(kind.env, (
        f"provider: sandbox\nsandbox: {{init: {kind.init}}}\nhosts: {{web1: {{roles: []}}}}\n"))
    yield kind
    kind.invoke("teardown", "--yes", check=False)


def test_provision_creates_a_host_reachable_over_ssh(found):
    result = found.invoke("provision")
    assert "web1       sandbox      changed" in result.stdout
    assert "ssh -i" in result.stdout and "ubuntu@127.0.0.1" in result.stdout
    state = found.project.state_dir / found.env
    assert stat.S_IMODE((state / "id_ed25519").stat().st_mode) == 0o600
    assert (state / "known_hosts").read_text().startswith("web1 ssh-ed25519 ")
    container = found.container()
    assert container.attrs["Config"]["User"] in ("", "root")
    bindings = container.attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for bs in bindings.values() for b in bs} == {"127.0.0.1"}
    mounts = {m["Destination"]: m["Type"] for m in container.attrs["Mounts"]}
    assert mounts["/var/lib/docker"] == "volume"
    pid1 = host_run(found.project, found.env, "ps -o comm= -p 1").strip()
    assert pid1 == {"classic": "sshd", "systemd": "systemd"}[found.init]


def test_docker_install_over_ssh_then_docker_runs_a_container_inside(found):
    result = found.invoke("docker.install")
    assert "web1       docker       changed" in result.stdout
    assert "install docker.io (not installed" in result.stdout

    env = found.project.env(found.env)
    base = images.build_base(lambda _: None).ref
    found.invoke("images.ship", "--image", base)
    (host,) = env.hosts()
    with env.connect(host) as conn:
        # as the SSH user, without sudo: the docker group works
        info = conn.connection.run("docker info --format '{{.ServerVersion}}'", hide=True, in_stream=False)
        assert info.stdout.strip()
        ran = conn.connection.run(f"docker run --rm {base} echo hello-from-the-host", hide=True, in_stream=False)
        assert ran.stdout.strip() == "hello-from-the-host"


def test_docker_starts_at_boot_through_the_hosts_init(found):
    if found.init == "systemd":
        states = host_run(found.project, found.env, (
            "systemctl is-enabled docker dockyard-loopback-guard; systemctl is-active docker; "
            "systemctl is-system-running || true"))
        assert states.split() == ["enabled", "enabled", "active", "running"]
    else:
        rc_local = host_run(found.project, found.env, "[ ! -e /run/systemd/system ] && cat /etc/rc.local")
        assert "# dockyard: dockerd" in rc_local and "# dockyard: loopback guard" in rc_local


def test_second_provision_and_install_change_nothing_in_one_round_trip(found):
    assert "no changes: every host exists and runs" in found.invoke("provision").stdout
    result = found.invoke("docker.install")
    assert "web1       docker       ok" in result.stdout
    assert "1 SSH connection(s), 1 remote command(s)" in result.stdout


def test_a_stopped_host_is_started_again_on_the_same_ports(found):
    before = record(found.project, found.env)
    container = found.container()
    container.stop(timeout=5)
    result = found.invoke("provision")
    assert f"started {container.name} (was exited)" in result.stdout
    after = record(found.project, found.env)
    assert (after.address, after.port) == (before.address, before.port)
    # Docker and its loopback guard come back with the host, through its init: nothing to install
    assert "web1       docker       ok" in found.invoke("docker.install").stdout


def test_a_changed_host_key_is_refused_until_forgotten(found):
    # new host keys, and the listening sshd (the oldest) re-executes to read them
    found.container().exec_run(
        ["sh", "-c", "rm /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && pkill -HUP -o -x sshd"])
    env = found.project.env(found.env)
    (host,) = env.hosts()
    with pytest.raises(HostKeyChanged, match=r"web1 .*host key changed.*invoke hosts.forget web1"):
        _wait_for_sshd(env, host)
    refused = found.invoke("docker.install", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: web1 (") and "host key changed" in refused.stderr
    assert "Traceback" not in refused.stderr

    found.invoke("hosts.forget", "web1")
    assert "web1       docker       ok" in found.invoke("docker.install").stdout


def _wait_for_sshd(env, host):
    """sshd re-executes on SIGHUP; retry until it answers, then surface what the connection says."""
    for _ in range(50):
        try:
            with env.connect(host) as conn:
                conn.run("true")
            return
        except HostKeyChanged:
            raise
        except ConnectError:
            subprocess.run(["sleep", "0.2"])


def test_an_unreachable_host_gives_one_line(found):
    env = found.project.env(found.env)
    (host,) = env.hosts()
    closed = replace(host, port=1)
    with pytest.raises(ConnectError, match=r"^web1 \(ubuntu@127.0.0.1:1\): connection refused; check the host"):
        env.connect(closed).open()


def test_teardown_leaves_nothing_behind(found):
    name = found.container().name
    result = found.invoke("teardown", "--yes")
    assert f"removed {name}" in result.stdout
    assert labelled(found.project, found.env) == {"containers": [], "volumes": [], "networks": []}
    assert not (found.project.state_dir / found.env).exists()


def test_teardown_without_a_terminal_asks_for_yes(found):
    result = found.invoke("teardown", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: tear down environment {found.env} (sandbox)? needs confirmation; pass --yes to proceed without a "
        f"terminal"
    )
