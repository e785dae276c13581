"""Failures are reported together, host by host, each in the operator's terms."""

import socket

import pytest

from dockyard import deploy
from dockyard.errors import ConnectError, DockyardError
from dockyard.lock import Claim


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_unreachable_hosts(project, tmp_path):
    key = tmp_path / "key"
    key.write_text("not used: nothing answers\n")
    project.inventory("t-down", f"""\
        provider: static
        hosts:
          web1: {{address: 127.0.0.1, port: {closed_port()}, key: {key}, roles: []}}
          web2: {{address: 127.0.0.1, port: {closed_port()}, key: {key}, roles: []}}
        """)
    return project.env("t-down")


def test_every_failed_host_is_reported_in_one_error(two_unreachable_hosts):
    with pytest.raises(DockyardError) as caught:
        deploy.converge(two_unreachable_hosts, Claim("deploy", 1))
    lines = str(caught.value).splitlines()
    assert lines[0] == "2 of 2 hosts failed:"
    assert lines[1].startswith("  web1: web1 (ubuntu@127.0.0.1:") and "connection refused" in lines[1]
    assert lines[2].startswith("  web2: web2 (ubuntu@127.0.0.1:") and "connection refused" in lines[2]


def test_one_failed_host_is_one_line(two_unreachable_hosts, project, tmp_path):
    key = tmp_path / "key"
    project.inventory("t-down", f"""\
        provider: static
        hosts:
          web1: {{address: 127.0.0.1, port: {closed_port()}, key: {key}, roles: []}}
        """)
    with pytest.raises(ConnectError, match=r"^web1 \(ubuntu@127.0.0.1:\d+\): connection refused; check the host"):
        deploy.converge(project.env("t-down"), Claim("deploy", 1))


def test_the_command_line_prints_one_error_line_and_no_traceback(two_unreachable_hosts, project):
    result = project.invoke("t-down", "docker.install", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: 2 of 2 hosts failed:")
    assert "Traceback" not in result.stderr


def test_a_broken_inventory_stops_before_any_host_with_one_line(project):
    path = project.inventory("t-bad", "provider: sandbox\nhosts: {web1: {roles: [app, db]}}\n")
    result = project.invoke("t-bad", "deploy", check=False)
    assert result.returncode == 1
    assert result.stderr == f"error: {path}: hosts.web1.roles: unknown role 'db'; roles are: " \
        "registry, mirror, registry_ui, proxy, app, webhook, manager\n"


def test_an_unknown_environment_names_the_known_ones(project):
    project.inventory("prod", "provider: sandbox\nhosts: {web1: {}}\n")
    result = project.invoke("staging", "provision", check=False)
    assert result.returncode == 1
    assert "no such inventory; known environments: prod (create staging.yml or pass -e/--env)" in result.stderr
