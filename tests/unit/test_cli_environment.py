"""One environment per command line: `-e` on any task holds for every task, two different ones are refused."""

import pytest

# The default environment's inventory is broken on purpose: a task that fell back to it would say so.
BROKEN = "provider: sandbox\n"
GOOD = "provider: sandbox\nhosts: {web1: {}}\n"
PINNED = "web1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEm6b6b3gYB2nZ7Qy1l7s9oQYd3a0V2XbQ8cK1p8c9kD\n"


@pytest.fixture
def two_envs(project):
    project.inventory("sandbox", BROKEN)
    project.inventory("good", GOOD)
    project.inventory("other", GOOD)
    known_hosts = project.state_dir / "good" / "known_hosts"
    known_hosts.parent.mkdir(parents=True)
    known_hosts.write_text(PINNED)
    return project, known_hosts


def test_e_after_the_last_task_holds_for_the_first_one_too(two_envs):
    project, known_hosts = two_envs
    # teardown without a terminal stops at its question, which names the environment: no engine is needed
    result = project.invoke("sandbox", "hosts.forget", "web1", "teardown", "-e", "good", check=False)
    assert "web1: pinned host key removed" in result.stdout
    assert known_hosts.read_text() == ""
    assert result.stderr.strip() == (
        "error: tear down environment good (sandbox)? needs confirmation; pass --yes to proceed without a terminal"
    )


def test_e_on_the_first_task_holds_for_the_last_one(two_envs):
    project, known_hosts = two_envs
    result = project.invoke("sandbox", "hosts.forget", "web1", "-e", "good", "teardown", check=False)
    assert known_hosts.read_text() == ""
    assert "tear down environment good (sandbox)?" in result.stderr


def test_without_e_every_task_takes_the_configured_environment(two_envs):
    project, known_hosts = two_envs
    result = project.invoke("good", "hosts.forget", "web1", "teardown", check=False)
    assert known_hosts.read_text() == ""
    assert "tear down environment good (sandbox)?" in result.stderr


def test_two_environments_on_one_command_line_are_refused_before_anything_runs(two_envs):
    project, known_hosts = two_envs
    result = project.invoke("sandbox", "hosts.forget", "web1", "-e", "good", "teardown", "-e", "other", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: -e good and -e other on one command line; give one environment, it holds for every task\n"
    )
    assert known_hosts.read_text() == PINNED
