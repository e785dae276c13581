"""Sandbox settings in the inventory, and the project id that keeps two clones' sandbox hosts apart."""

import pytest

from dockyard import inventory
from dockyard.errors import InventoryError, ProviderError
from dockyard.providers.sandbox import Sandbox, project_id
from dockyard.state import HostRecord, State


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


RECORDED = HostRecord("web1", "127.0.0.1", 20000, "ubuntu", ("app",),
                      {"proxy.http_port": "127.0.0.1:20001", "proxy.https_port": "127.0.0.1:20002"},
                      {"container": "dockyard-x-t-web1", "ip": "172.18.0.2", "init": "classic"})


def test_hosts_are_where_provision_recorded_them_with_the_inventorys_roles(project):
    project.inventory("t", "provider: sandbox\nhosts: {web1: {roles: [registry, proxy, app]}}\n")
    env = project.env("t")
    with pytest.raises(ProviderError, match=r"^sandbox host web1 is not provisioned; run `invoke provision`$"):
        Sandbox(env).hosts()
    env.state.save_hosts([RECORDED])
    (record,) = Sandbox(env).hosts()
    assert (record.address, record.port, record.roles) == ("127.0.0.1", 20000, ("registry", "proxy", "app"))
    assert record.endpoints == RECORDED.endpoints and record.provider == RECORDED.provider


@pytest.mark.parametrize("inventory, message", [
    ("provider: sandbox\nhosts: {web1: {}}\nservices: {registry: {open_to: [0.0.0.0/0]}}\n",
     "sandbox host web1 does not publish port 5000; the inventory's open ports changed since it was created: run "
     "`invoke teardown` then `invoke provision`"),
    ("provider: sandbox\nsandbox: {init: systemd}\nhosts: {web1: {}}\n",
     "sandbox host web1 runs init classic, the inventory says systemd: run `invoke teardown` then `invoke provision` "
     "to recreate it"),
])
def test_a_host_unlike_the_inventory_is_named_with_the_fix(project, inventory, message):
    project.inventory("t", inventory)
    env = project.env("t")
    env.state.save_hosts([RECORDED])
    with pytest.raises(ProviderError) as caught:
        Sandbox(env).hosts()
    assert str(caught.value) == message
