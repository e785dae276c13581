"""Sandbox settings in the inventory, and the project id that keeps two clones' sandbox hosts apart."""

import pytest

from dockyard import inventory
from dockyard.errors import InventoryError
from dockyard.providers.sandbox import project_id
from dockyard.state import State


def load(project, text: str):
    project.inventory("t", text)
    return inventory.load(project.inventory_dir, "t")


def test_sandbox_hosts_boot_the_classic_init_unless_told(project):
    assert load(project, "provider: sandbox\nhosts: {web1: {}}\n").sandbox.init == "classic"
    assert load(project, "provider: sandbox\nsandbox: {init: systemd}\nhosts: {web1: {}}\n").sandbox.init == "systemd"


@pytest.mark.parametrize(("text", "message"), [
    ("sandbox: {init: upstart}", "sandbox.init: 'upstart' is not one of: classic, systemd"),
    ("sandbox: {inti: systemd}", "sandbox.inti: unknown key; known keys here: init"),
    ("sandbox: systemd", "sandbox: expected a mapping, got text"),
])
def test_a_wrong_sandbox_setting_is_named(project, text, message):
    with pytest.raises(InventoryError) as caught:
        load(project, f"provider: sandbox\n{text}\nhosts: {{web1: {{}}}}\n")
    assert str(caught.value) == f"{project.inventory_dir / 't.yml'}: {message}"


def test_a_project_id_is_made_once_and_shared_by_the_environments(tmp_path):
    first = project_id(State(tmp_path / "state", "sandbox"))
    assert len(first) == 8 and int(first, 16) >= 0
    assert project_id(State(tmp_path / "state", "prod")) == first
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["project-id"]


def test_a_teardown_keeps_the_project_id(tmp_path):
    state = State(tmp_path / "state", "sandbox")
    first = project_id(state)
    state.ensure_key()
    state.clear()
    assert project_id(state) == first


def test_two_clones_get_different_ids(tmp_path):
    assert project_id(State(tmp_path / "a", "sandbox")) != project_id(State(tmp_path / "b", "sandbox"))
