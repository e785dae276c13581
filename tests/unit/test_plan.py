"""Declare and plan, with no SSH: exact steps from data, against facts recorded on a real host."""

import json
from dataclasses import replace

import pytest

from dockyard import deploy, facts, inventory
from dockyard.commands import containers, engine, switch
from dockyard.images import Built
from dockyard.inventory import Docker
from dockyard.plan import RemoteStep, Transfer, make_plan, plan_docker
from dockyard.runner import batches, failed_step, script
from dockyard.spec import Target
from dockyard.state import HostRecord
from roles import MODULES, mirror
from tests.conftest import PROXY_TLS, REPO

FACTS = REPO / "tests/fixtures/facts"

INV = inventory.parse({"provider": "sandbox", "hosts": {"web1": {}}}, env="t", path=REPO / "inventory" / "t.yml")
HOST = HostRecord("web1", "127.0.0.1", 2222, "ubuntu", inventory.ROLES)
SECRETS = {"secrets": {n: f"s3cret-{n}" for n in deploy.SECRETS}, "online": False}
BUILT = {
    name: Built(f"dockyard/{name}:abc123", f"sha256:{name}-id", cached=True)
    for name in ("registry", "registry-console", "proxy", "app", "webhook")
}


def desired(inv=INV, built=BUILT, online=False):
    target = Target(inv, HOST, online, proxy_tls=PROXY_TLS)
    templates = deploy._templates(REPO / "templates")
    return [deploy.resolve(MODULES[r].declare(target), target, built, templates, SECRETS) for r in inventory.ROLES]


def recorded(name: str) -> facts.HostFacts:
    """Facts read from a real sandbox host (tests/fixtures/facts/README.md says how)."""
    return facts.parse((FACTS / name).read_text(), "web1")


def inspected(name: str) -> facts.Seen:
    (inspect,) = json.loads((FACTS / "inspect" / f"{name}.json").read_text())
    return facts.seen(inspect)


def converged(wants, host: facts.HostFacts | None = None) -> facts.HostFacts:
    """The recorded stack (or `host`) with the bookkeeping of `wants`: spec digests, image ids and file hashes,
    which depend on this test's builds and secrets. What each container runs with stays as recorded."""
    host = host or recorded("stack.txt")
    by_name = {name: w for w in wants for name in w.container_names}
    return replace(
        host,
        containers={
            name: replace(seen, digest=by_name[name].digest if seen.digest else "",
                          image_id=by_name[name].image.image_id, declared_image=by_name[name].image.ref)
            for name, seen in host.containers.items()
        },
        images={w.image.ref: w.image.image_id for w in wants},
        files={f.dest: f.sha256 for w in wants for f in w.files},
    )


def with_container(host: facts.HostFacts, seen: facts.Seen) -> facts.HostFacts:
    return replace(host, containers={**host.containers, seen.name: seen})


def steps(plan):
    return [(s.role, s.action, s.target) for r in plan.roles for s in r.steps]


def test_a_converged_host_has_no_steps_for_any_role():
    wants = desired()
    seen = converged(wants)
    plan = make_plan("web1", wants, seen, plan_docker(seen, Docker(), "ubuntu"))
    assert steps(plan) == []
    assert [r.role for r in plan.roles] == ["docker", *inventory.ROLES]
    assert not plan.changed


def test_a_fresh_host_gets_docker_then_every_service_in_order():
    wants = desired()
    seen = recorded("fresh-host.txt")
    plan = make_plan("web1", wants, seen, plan_docker(seen, Docker(), "ubuntu"))
    registry_ref = "dockyard/registry:abc123"
    pushed = "127.0.0.1:5000/{}:deploy-abc123"
    assert steps(plan) == [
        ("docker", "install", "docker.io"),
        ("docker", "enable", "dockerd at boot (/etc/rc.local)"),
        ("docker", "enable", "loopback guard at boot (/etc/rc.local)"),
        ("docker", "guard", "127.0.0.0/8"),
        ("docker", "start", "dockerd"),
        ("docker", "wait", "dockerd"),
        ("docker", "group", "ubuntu"),
        ("registry", "ship", registry_ref),
        ("registry", "write", "/etc/dockyard/registry/config.yml"),
        ("registry", "run", "dockyard-registry"),
        ("registry", "wait", "dockyard-registry"),
        # the mirror runs the registry's image, already shipped
        ("mirror", "write", "/etc/dockyard/mirror/config.yml"),
        ("mirror", "run", "dockyard-mirror"),
        ("mirror", "wait", "dockyard-mirror"),
        ("registry_ui", "push", pushed.format("dockyard/registry-console")),
        ("registry_ui", "pull", pushed.format("dockyard/registry-console")),
        ("registry_ui", "run", "dockyard-registry-ui"),
        ("registry_ui", "wait", "dockyard-registry-ui"),
        ("proxy", "push", pushed.format("dockyard/proxy")),
        ("proxy", "pull", pushed.format("dockyard/proxy")),
        ("proxy", "write", "/etc/dockyard/proxy/Caddyfile"),
        ("proxy", "write", "/var/lib/dockyard/proxy/app.upstream"),
        ("proxy", "write", "/etc/dockyard/proxy/site.crt"),
        ("proxy", "write", "/etc/dockyard/proxy/site.key"),
        ("proxy", "run", "dockyard-proxy"),
        ("proxy", "wait", "dockyard-proxy"),
        ("app", "push", pushed.format("flask-hello")),
        ("app", "pull", pushed.format("flask-hello")),
        ("app", "write", "/etc/dockyard/app/container.json"),
        ("app", "switch", "dockyard-app"),  # it waits for the new container's health check itself
        ("webhook", "push", pushed.format("dockyard/webhook")),
        ("webhook", "pull", pushed.format("dockyard/webhook")),
        ("webhook", "write", "/etc/dockyard/webhook/config.json"),
        ("webhook", "run", "dockyard-webhook"),
        ("webhook", "wait", "dockyard-webhook"),
    ]


def test_a_converged_host_reads_as_converged_for_docker_too():
    assert plan_docker(recorded("stack.txt"), Docker(), "ubuntu").steps == ()


def test_only_the_missing_pieces_of_docker_are_planned():
    stack = recorded("stack.txt")
    cases = {
        "docker-stopped.txt": [("start", "dockerd", "not running"), ("wait", "dockerd", "answering")],
        "user outside the group": [("group", "ubuntu", "not in docker group")],
        "no loopback guard": [("guard", "127.0.0.0/8", "127.0.0.1 ports reachable from the network")],
        "half-configured packages": [
            ("install", "docker.io", "packages half-configured"),
            ("start", "dockerd", "not running"), ("wait", "dockerd", "answering"),
        ],
    }
    hosts = {
        "docker-stopped.txt": recorded("docker-stopped.txt"),
        "user outside the group": replace(stack, groups=frozenset({"ubuntu"})),
        "no loopback guard": replace(stack, loopback_guard=False),
        "half-configured packages": replace(recorded("docker-stopped.txt"), packages_broken=True),
    }
    for case, expected in cases.items():
        planned = plan_docker(hosts[case], Docker(), "ubuntu").steps
        assert [(s.action, s.target, s.reason) for s in planned] == expected, case


def test_an_engine_that_does_not_answer_gets_started_and_no_service_is_planned_from_it():
    for seen in (recorded("docker-stopped.txt"), replace(recorded("docker-stopped.txt"), packages_broken=True)):
        plan = make_plan("web1", desired(), seen, plan_docker(seen, Docker(), "ubuntu"))
        assert [r.role for r in plan.roles] == ["docker"]
        assert [s.action for s in plan.roles[0].steps][-2:] == ["start", "wait"]
        assert plan.unknown == inventory.ROLES
    # once it answers, deploy's own read sees the stack: nothing to install, start or run
    wants = desired()
    started = converged(wants, recorded("docker-started.txt"))
    assert steps(make_plan("web1", wants, started, plan_docker(started, Docker(), "ubuntu"))) == []


def test_each_piece_of_docker_is_its_command():
    planned = plan_docker(recorded("fresh-host.txt"), Docker(), "ubuntu").steps
    assert [s.command for s in planned] == [
        engine.install_package(Docker()), engine.enable_at_boot(False), engine.guard_at_boot(False),
        engine.guard_now(), engine.start_now(False), engine.wait_for_daemon(False),
        engine.add_to_docker_group("ubuntu"),
    ]


def test_a_systemd_host_gets_the_systemd_pieces_and_root_needs_no_group():
    host = replace(recorded("fresh-host.txt"), systemd=True)
    planned = plan_docker(host, Docker(install="script"), "root").steps
    assert [(s.action, s.target) for s in planned] == [
        ("install", "docker (convenience script)"), ("enable", "dockerd at boot (systemd)"),
        ("enable", "loopback guard at boot (systemd)"), ("guard", "127.0.0.0/8"), ("start", "dockerd"),
        ("wait", "dockerd"),
    ]
    assert [s.command for s in planned[1:3]] == [engine.enable_at_boot(True), engine.guard_at_boot(True)]


def test_a_changed_registry_template_recreates_only_the_registry():
    before = converged(desired())
    registry = before.containers["dockyard-registry"]
    edited = replace(
        before,
        files={**before.files, "/etc/dockyard/registry/config.yml": "an-older-hash"},
        # the running registry was started from the older file: its digest differs too
        containers={**before.containers, "dockyard-registry": replace(registry, digest="older")},
    )
    plan = make_plan("web1", desired(), edited)
    assert steps(plan) == [
        ("registry", "write", "/etc/dockyard/registry/config.yml"),
        ("registry", "recreate", "dockyard-registry"),
        ("registry", "wait", "dockyard-registry"),
    ]
    assert plan.roles[0].steps[1].reason == "config"


@pytest.mark.parametrize("fixture, role, reason", [
    ("proxy-ports", "proxy", "drift: ports"),
    ("registry-mounts", "registry", "drift: mounts"),
    ("mirror-network", "mirror", "drift: network"),
    ("registry-ui-env", "registry_ui", "drift: env"),
    ("registry-ui-labels", "registry_ui", "spec, drift: labels"),  # without labels the spec digest went too
    ("webhook-health", "webhook", "drift: health"),
])
def test_a_container_changed_by_hand_is_recreated_naming_what_changed(fixture, role, reason):
    changed = inspected(fixture)
    host = converged(desired(), with_container(recorded("stack.txt"), changed))
    plan = make_plan("web1", desired(), host)
    assert steps(plan) == [(role, "recreate", changed.name), (role, "wait", changed.name)]
    assert plan.roles[inventory.ROLES.index(role)].steps[0].reason == reason


@pytest.mark.parametrize("fixture, reason", [
    ("app-restart", "drift: restart"),
    ("app-ports", "drift: ports"),  # published by hand, past the proxy
])
def test_an_app_changed_by_hand_is_switched_to_a_new_slot_naming_what_changed(fixture, reason):
    changed = inspected(fixture)
    assert changed.name == "dockyard-app-blue"  # the slot the recorded upstream file names
    host = converged(desired(), with_container(recorded("stack.txt"), changed))
    (switch,) = make_plan("web1", desired(), host).roles[4].steps
    assert (switch.action, switch.target, switch.reason) == ("switch", "dockyard-app", reason)


def test_a_stopped_container_is_started_not_recreated():
    seen = converged(desired())
    seen = with_container(seen, replace(seen.containers["dockyard-mirror"], running=False))
    assert steps(make_plan("web1", desired(), seen)) == [
        ("mirror", "start", "dockyard-mirror"), ("mirror", "wait", "dockyard-mirror")
    ]


def test_a_new_app_build_is_pushed_pulled_and_switched_to():
    seen = converged(desired())
    rebuilt = {**BUILT, "app": Built("dockyard/app:def456", "sha256:app-v2", cached=False)}
    plan = make_plan("web1", desired(built=rebuilt), seen)
    ref = "127.0.0.1:5000/flask-hello:deploy-def456"
    assert steps(plan) == [("app", "push", ref), ("app", "pull", ref), ("app", "switch", "dockyard-app")]
    assert plan.roles[4].steps[2].reason == "image"


def test_an_app_the_webhook_moved_to_a_newer_image_is_left_alone():
    released = inspected("app-released")  # started by the webhook from deploy's container document
    assert released.name == "dockyard-app-green"
    stack = recorded("stack.txt")
    host = converged(desired(), replace(stack, containers={
        **{n: c for n, c in stack.containers.items() if n != "dockyard-app-blue"}, released.name: released,
    }, serving=released.name))
    host = with_container(host, replace(host.containers[released.name], image_id=released.image_id))
    assert steps(make_plan("web1", desired(), host)) == []


def test_an_image_already_on_the_host_under_another_tag_is_only_tagged():
    seen = converged(desired())
    rebuilt = {**BUILT, "app": Built("dockyard/app:def456", "sha256:app-id", cached=True)}
    plan = make_plan("web1", desired(built=rebuilt), seen)
    assert steps(plan)[0] == ("app", "tag", "127.0.0.1:5000/flask-hello:deploy-def456")


def test_online_images_are_pulled_and_the_ui_is_joxit():
    wants = desired(online=True)
    by_role = {w.role: w for w in wants}
    assert by_role["registry"].image.ref == "registry:2"
    assert by_role["registry"].image.delivery == "pull"
    assert by_role["registry_ui"].image.ref == "joxit/docker-registry-ui:2"
    assert ("DELETE_IMAGES", "true") in by_role["registry_ui"].container.env
    assert by_role["app"].image.delivery == "push"


def test_registry_and_ui_listen_on_loopback_the_proxy_everywhere_app_and_webhook_nowhere():
    ports = {w.role: w.container.ports for w in desired()}
    assert ports == {
        "registry": ("127.0.0.1:5000:5000",),
        "mirror": ("127.0.0.1:5001:5000",),
        "registry_ui": ("127.0.0.1:8080:8080",),
        "proxy": ("0.0.0.0:80:80", "0.0.0.0:443:443"),
        "app": (),
        "webhook": (),
    }


def test_an_opened_webhook_publishes_its_port_and_a_proxy_without_tls_only_http():
    services = replace(
        INV.services, webhook=replace(INV.services.webhook, open_to=("192.0.2.0/24",)),
        proxy=replace(INV.services.proxy, tls="off", http_port=8081),
    )
    ports = {w.role: w.container.ports for w in desired(inv=replace(INV, services=services))}
    assert ports["webhook"] == ("0.0.0.0:9000:9000",)
    assert ports["proxy"] == ("0.0.0.0:8081:80",)


def test_registry_config_carries_secret_cors_and_notifications():
    registry = desired()[0]
    config = registry.files[0]
    text = config.content.decode()
    assert config.secret
    assert 'secret: "s3cret-registry_http_secret"' in text
    assert "http://127.0.0.1:8080" in text
    assert "url: http://dockyard-webhook:9000/registry/events" in text
    assert '"Bearer s3cret-notify_token"' in text
    assert "enabled: true" in text.split("delete:")[1].splitlines()[1]


def test_mirror_proxies_the_configured_remote():
    text = desired()[1].files[0].content.decode()
    assert 'remoteurl: "http://x"' not in text
    assert f'remoteurl: "{mirror.docker_hub()}"' in text
    inv = replace(INV, services=replace(INV.services, mirror=replace(INV.services.mirror, remote_url="http://x")))
    assert 'remoteurl: "http://x"' in desired(inv=inv)[1].files[0].content.decode()


def test_changing_a_template_value_changes_only_that_roles_digest():
    before = {w.role: w.digest for w in desired()}
    inv = replace(INV, services=replace(INV.services, mirror=replace(INV.services.mirror, remote_url="http://x")))
    after = {w.role: w.digest for w in desired(inv=inv)}
    assert {r for r in before if before[r] != after[r]} == {"mirror"}


def test_a_role_plan_becomes_one_script_between_transfers():
    plan = make_plan("web1", desired(), recorded("fresh-host.txt"))
    app = next(r for r in plan.roles if r.role == "app")
    push, remote = batches(app.steps)
    assert push == Transfer("app", "push", "dockyard/app:abc123", "127.0.0.1:5000/flask-hello:deploy-abc123",
                            "missing in registry", repository="flask-hello:deploy-abc123")
    assert [s.action for s in remote] == ["pull", "write", "switch"]
    assert all(isinstance(s, RemoteStep) for s in remote)
    text = script(remote)
    assert text.startswith("set -eu\necho '::step 0'\ndocker pull --quiet")
    assert failed_step(remote, "::step 0\n::step 1\n").action == "write"
    registry = next(r for r in plan.roles if r.role == "registry")
    assert batches(registry.steps)[0] == Transfer(
        "registry", "ship", "dockyard/registry:abc123", "dockyard/registry:abc123", "missing on host")


def slot_host(serving: str, *present: str, running: bool = True) -> facts.HostFacts:
    """The converged stack with the app as containers `present` (the recorded blue one under each name), and the
    upstream file naming `serving`."""
    host = converged(desired())
    blue = host.containers["dockyard-app-blue"]
    others = {n: c for n, c in host.containers.items() if n != "dockyard-app-blue"}
    apps = {name: replace(blue, name=name, running=running or name != serving) for name in present}
    return replace(host, containers={**others, **apps}, serving=serving)


def app_steps(host: facts.HostFacts) -> list[tuple[str, str, str]]:
    return [(s.action, s.target, s.reason) for s in make_plan("web1", desired(), host).roles[4].steps]


def test_what_a_switch_cut_short_left_is_settled():
    # killed before the upstream file was written: the new container is a leftover
    assert app_steps(slot_host("dockyard-app-blue", "dockyard-app-blue", "dockyard-app-green")) == [
        ("settle", "dockyard-app-green", "left by a switch cut short")]
    # killed after it was written: the old one is the leftover (and Caddy perhaps not reloaded yet)
    assert app_steps(slot_host("dockyard-app-green", "dockyard-app-blue", "dockyard-app-green")) == [
        ("settle", "dockyard-app-blue", "left by a switch cut short")]
    # an app from before slots, beside the slot that serves
    assert app_steps(slot_host("dockyard-app-blue", "dockyard-app-blue", "dockyard-app")) == [
        ("settle", "dockyard-app", "left by a switch cut short")]
    assert app_steps(slot_host("dockyard-app-green", "dockyard-app-green")) == []


def test_the_serving_slot_stopped_is_started_before_the_leftovers_go():
    assert app_steps(slot_host("dockyard-app-green", "dockyard-app-blue", "dockyard-app-green", running=False)) == [
        ("start", "dockyard-app-green", "stopped"), ("wait", "dockyard-app-green", "healthy"),
        ("settle", "dockyard-app-blue", "left by a switch cut short"),
    ]


def test_no_slot_serving_is_a_switch():
    # an app from before slots, which the upstream file still names
    assert app_steps(slot_host("dockyard-app", "dockyard-app")) == [("switch", "dockyard-app", "no slot serves")]
    # the upstream file names a slot that is gone
    assert app_steps(slot_host("dockyard-app-blue", "dockyard-app-green")) == [
        ("switch", "dockyard-app", "no slot serves")]
    assert app_steps(slot_host("", )) == [("switch", "dockyard-app", "missing")]


def test_the_switch_and_the_settling_are_the_commands_module_s():
    """No lock of their own: they run inside deploy's run, which holds the host lock the webhook takes too."""
    want = next(w for w in desired() if w.role == "app")
    host = slot_host("dockyard-app-green", "dockyard-app-blue", "dockyard-app-green")
    (settle,) = make_plan("web1", desired(), host).roles[4].steps
    assert settle.command == switch.settle(want.container, want.slots)
    seen = converged(desired())
    seen.containers["dockyard-app-blue"] = replace(seen.containers["dockyard-app-blue"], digest="older")
    (moved,) = make_plan("web1", desired(), seen).roles[4].steps
    assert (moved.action, moved.reason) == ("switch", "spec")
    assert moved.command == switch.switch(want.container, "app", want.digest, want.slots)


def test_a_changed_caddyfile_reloads_the_proxy_and_drift_still_recreates_it():
    seen = converged(desired())
    edited = replace(seen, files={**seen.files, "/etc/dockyard/proxy/Caddyfile": "edited-on-the-host"})
    plan = make_plan("web1", desired(), edited)
    assert steps(plan) == [("proxy", "write", "/etc/dockyard/proxy/Caddyfile"), ("proxy", "reload", "dockyard-proxy")]
    assert plan.roles[3].steps[1].command == (
        "docker exec dockyard-proxy caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile >/dev/null")
    # a stopped proxy reads its files as it starts
    stopped = with_container(edited, replace(edited.containers["dockyard-proxy"], running=False))
    assert steps(make_plan("web1", desired(), stopped))[1:] == [
        ("proxy", "start", "dockyard-proxy"), ("proxy", "wait", "dockyard-proxy")]
    by_hand = replace(edited.containers["dockyard-proxy"], settings=inspected("proxy-ports").settings)
    drifted = with_container(edited, by_hand)
    recreate = make_plan("web1", desired(), drifted).roles[3].steps[1:]
    assert [(s.action, s.reason) for s in recreate] == [("recreate", "drift: ports"), ("wait", "healthy")]


def test_the_upstream_file_is_the_app_s_once_the_proxy_has_created_it():
    seen = converged(desired())
    switched = replace(seen, files={**seen.files, "/var/lib/dockyard/proxy/app.upstream": "another-slot's-hash"})
    assert steps(make_plan("web1", desired(), switched)) == []
    proxy = next(w for w in desired() if w.role == "proxy")
    upstream = next(f for f in proxy.files if f.create_only)
    assert upstream.content == b"to dockyard-app-blue:8000\n"
    assert proxy.digest == replace(proxy, files=tuple(f for f in proxy.files if f is not upstream)).digest


# -- the app's settings and secrets ------------------------------------------------------------------------------
APP_INV = inventory.parse({"provider": "sandbox", "hosts": {"web1": {}}, "services": {"app": {
    "env": {"GREETING": "Ahoy"}, "secrets": {"API_TOKEN": "env:ACME_TOKEN", "DB": {"source": "generate", "env": True}},
    "release_command": "flask --app app db-upgrade"}}}, env="t", path=REPO / "inventory" / "t.yml")


def app_desired(user: str = "10001:10001", token: str = "tok-1"):
    target = Target(APP_INV, HOST, False, {"API_TOKEN": token, "DB": "db-1"}, proxy_tls=PROXY_TLS)
    built = {**BUILT, "app": replace(BUILT["app"], user=user)}
    templates = deploy._templates(REPO / "templates")
    return deploy.resolve(MODULES["app"].declare(target), target, built, templates, SECRETS)


def test_the_apps_secrets_belong_to_its_images_user_and_reach_it_as_mounts_and_an_env_file():
    want = app_desired()
    assert {f.dest: f.owner for f in want.files} == {
        "/etc/dockyard/app/container.json": 0, "/etc/dockyard/app/secrets/API_TOKEN": 10001,
        "/etc/dockyard/app/secrets/DB": 10001, "/etc/dockyard/app/secrets.env": 0,
    }
    assert want.container.env == (("GREETING", "Ahoy"),)
    assert want.container.env_file == "/etc/dockyard/app/secrets.env"
    assert want.slots.release == ("flask", "--app", "app", "db-upgrade")
    document = json.loads(next(f for f in want.files if f.dest.endswith("container.json")).content)
    assert (document["env_file"], document["release"]) == (True, ["flask", "--app", "app", "db-upgrade"])
    assert "tok-1" not in json.dumps(document) and "db-1" not in json.dumps(document)


def app_converged(want) -> facts.HostFacts:
    """The recorded app container, running exactly what `want` declares, and its files in place."""
    stack = recorded("stack.txt")
    apps = {n: replace(c, settings=facts.Settings.declared(containers.container_document(want.container, "app")))
            for n, c in stack.containers.items() if n.startswith("dockyard-app")}
    return converged([want], replace(stack, containers=apps, owners={f.dest: f.owner for f in want.files}))


def test_a_secret_file_is_written_again_when_the_images_user_changes_and_the_app_is_switched():
    before = app_desired()
    host = app_converged(before)
    assert make_plan("web1", [before], host).roles[0].steps == ()
    after = app_desired(user="10002")
    plan = make_plan("web1", [after], replace(host, files={f.dest: f.sha256 for f in after.files}))
    assert [(s.action, s.target, s.reason) for s in plan.roles[0].steps] == [
        ("write", "/etc/dockyard/app/secrets/API_TOKEN", "owner changed"),
        ("write", "/etc/dockyard/app/secrets/DB", "owner changed"),
        ("switch", "dockyard-app", "config"),
    ]


def test_a_changed_secret_switches_the_app():
    before, after = app_desired(), app_desired(token="tok-2")
    plan = make_plan("web1", [after], app_converged(before))
    assert [(s.action, s.target, s.reason) for s in plan.roles[0].steps] == [
        ("write", "/etc/dockyard/app/secrets/API_TOKEN", "changed"),
        ("switch", "dockyard-app", "config"),
    ]
