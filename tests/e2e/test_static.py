"""provider: static end to end: a server dockyard did not make, reached over SSH and left as it was.

The "server" is a sandbox host of another environment (t-static-box) in the same test project; the static
environment points at its SSH port on 127.0.0.1 and uses that environment's key file.
"""

import docker
import pytest

BOX = "t-static-box"
ENV = "t-static"


@pytest.fixture(scope="module")
def static(module_project):
    module_project.inventory(BOX, "provider: sandbox\nhosts: {web1: {roles: []}}\n")
    try:
        module_project.invoke(BOX, "provision")
        (server,) = module_project.env(BOX).hosts()
        module_project.inventory(ENV, f"""
            provider: static
            hosts:
              web1:
                roles: [proxy, app]
                address: 127.0.0.1
                port: {server.port}
                user: ubuntu
                key: {module_project.state_dir / BOX / "id_ed25519"}
        """)
        yield module_project
    finally:
        module_project.invoke(ENV, "teardown", "--yes", check=False)
        module_project.invoke(BOX, "teardown", "--yes", check=False)


def test_provision_logs_in_and_pins_the_host_key(static):
    result = static.invoke(ENV, "provision")
    assert "web1       static       changed" in result.stdout and "ubuntu@127.0.0.1:" in result.stdout
    assert "lets us in; host key pinned" in result.stdout
    pinned = (static.state_dir / ENV / "known_hosts").read_text()
    assert pinned == (static.state_dir / BOX / "known_hosts").read_text()  # the very same server
    (record,) = static.env(ENV).state.hosts()
    assert record.key == str(static.state_dir / BOX / "id_ed25519")
    assert record.endpoints == {"proxy.http_port": "127.0.0.1:80", "proxy.https_port": "127.0.0.1:443"}


def test_a_second_provision_changes_nothing(static):
    result = static.invoke(ENV, "provision")
    assert "web1       static       ok" in result.stdout
    assert "no changes: every host exists and runs" in result.stdout


def test_docker_install_works_over_it(static):
    result = static.invoke(ENV, "docker.install")
    assert "web1       docker       changed" in result.stdout
    env = static.env(ENV)
    (record,) = env.hosts()
    with env.connect(record) as conn:
        info = conn.connection.run("docker info --format '{{.ServerVersion}}'", hide=True, in_stream=False)
    assert info.stdout.strip()


def test_teardown_forgets_the_server_and_leaves_it_running(static):
    result = static.invoke(ENV, "teardown", "--yes")
    assert "web1       static       changed   forgotten; the server itself is untouched" in result.stdout
    assert not (static.state_dir / ENV).exists()
    (server,) = docker.from_env().containers.list(filters={"label": f"dockyard.env={BOX}"})
    assert server.exec_run(["pgrep", "-x", "dockerd"]).exit_code == 0  # still running what it ran
