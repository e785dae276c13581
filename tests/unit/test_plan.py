"""Declare and plan, with no SSH: exact steps and exact command lines from data."""

from dataclasses import replace

import pytest

from dockyard import commands, deploy, facts, inventory
from dockyard.images import Built
from dockyard.inventory import Docker
from dockyard.plan import make_plan, plan_docker
from dockyard.runner import batches, failed_step, script
from dockyard.spec import ContainerSpec, Health, Rendered, Target
from dockyard.state import HostRecord
from roles import MODULES, mirror
from tests.conftest import REPO

INV = inventory.parse({"provider": "sandbox", "hosts": {"web1": {}}}, env="t", path=REPO / "inventory" / "t.yml")
HOST = HostRecord("web1", "127.0.0.1", 2222, "ubuntu", inventory.ROLES)
SECRETS = {"secrets": {n: f"s3cret-{n}" for n in deploy.SECRETS}, "online": False}
BUILT = {
    name: Built(f"dockyard/{name}:abc123", f"sha256:{name}-id", cached=True)
    for name in ("registry", "registry-console", "proxy", "app", "webhook")
}


def desired(inv=INV, built=BUILT, online=False):
    target = Target(inv, HOST, online)
    templates = deploy._templates(REPO / "templates")
    return [deploy.resolve(MODULES[r].declare(target), target, built, templates, SECRETS) for r in inventory.ROLES]


def converged(wants) -> facts.HostFacts:
    """Facts of a host where every wanted container runs exactly as declared."""
    return facts.HostFacts(
        docker_version="20.10.24",
        docker_on_boot=True,
        groups=frozenset({"ubuntu", "docker"}),
        containers={
            w.container.name: facts.Seen(
                name=w.container.name, role=w.role, digest=w.digest, image_id=w.image.image_id,
                declared_image=w.image.ref, running=True,
                started_at="t0", restart=w.container.restart,
                ports=frozenset(facts.normalize_port(p) for p in w.container.ports),
                env=frozenset(f"{k}={v}" for k, v in w.container.env) | {"PATH=/usr/bin"},
                volumes=frozenset(w.container.volumes),
            )
            for w in wants
        },
        images={w.image.ref: w.image.image_id for w in wants},
        files={f.dest: f.sha256 for w in wants for f in w.files},
    )


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
    seen = facts.HostFacts()
    plan = make_plan("web1", wants, seen, plan_docker(seen, Docker(), "ubuntu"))
    registry_ref = "dockyard/registry:abc123"
    pushed = "127.0.0.1:5000/{}:deploy-abc123"
    assert steps(plan) == [
        ("docker", "install", "docker.io"),
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
        ("proxy", "run", "dockyard-proxy"),
        ("proxy", "wait", "dockyard-proxy"),
        ("app", "push", pushed.format("flask-hello")),
        ("app", "pull", pushed.format("flask-hello")),
        ("app", "write", "/etc/dockyard/app/container.json"),
        ("app", "run", "dockyard-app"),
        ("app", "wait", "dockyard-app"),
        ("webhook", "push", pushed.format("dockyard/webhook")),
        ("webhook", "pull", pushed.format("dockyard/webhook")),
        ("webhook", "write", "/etc/dockyard/webhook/config.json"),
        ("webhook", "run", "dockyard-webhook"),
        ("webhook", "wait", "dockyard-webhook"),
    ]


def test_docker_present_but_user_not_in_group_reinstalls_idempotently():
    seen = facts.HostFacts(docker_version="20.10", docker_on_boot=True, groups=frozenset({"ubuntu"}))
    plan = plan_docker(seen, Docker(), "ubuntu")
    assert [(s.action, s.reason) for s in plan.steps] == [("install", "ubuntu not in docker group")]


def test_a_changed_registry_template_recreates_only_the_registry(tmp_path):
    before = converged(desired())
    edited = replace(
        before, files={**before.files, "/etc/dockyard/registry/config.yml": "an-older-hash"}
    )
    # the running registry was started from the older file: its digest differs too
    registry = edited.containers["dockyard-registry"]
    edited.containers["dockyard-registry"] = replace(registry, digest="older")
    plan = make_plan("web1", desired(), edited)
    assert steps(plan) == [
        ("registry", "write", "/etc/dockyard/registry/config.yml"),
        ("registry", "recreate", "dockyard-registry"),
        ("registry", "wait", "dockyard-registry"),
    ]
    assert plan.roles[0].steps[1].reason == "config"


def test_a_restart_policy_changed_by_hand_is_repaired():
    seen = converged(desired())
    seen.containers["dockyard-app"] = replace(seen.containers["dockyard-app"], restart="no")
    plan = make_plan("web1", desired(), seen)
    assert steps(plan) == [("app", "recreate", "dockyard-app"), ("app", "wait", "dockyard-app")]
    assert plan.roles[4].steps[0].reason == "drift: restart"


def test_a_port_changed_by_hand_is_repaired():
    seen = converged(desired())
    seen.containers["dockyard-registry"] = replace(
        seen.containers["dockyard-registry"], ports=frozenset({"0.0.0.0:5000:5000/tcp"})
    )
    plan = make_plan("web1", desired(), seen)
    assert plan.roles[0].steps[0].reason == "drift: ports"


def test_a_stopped_container_is_started_not_recreated():
    seen = converged(desired())
    seen.containers["dockyard-mirror"] = replace(seen.containers["dockyard-mirror"], running=False)
    assert steps(make_plan("web1", desired(), seen)) == [
        ("mirror", "start", "dockyard-mirror"), ("mirror", "wait", "dockyard-mirror")
    ]


def test_a_new_app_build_is_pushed_pulled_and_recreated():
    seen = converged(desired())
    rebuilt = {**BUILT, "app": Built("dockyard/app:def456", "sha256:app-v2", cached=False)}
    plan = make_plan("web1", desired(built=rebuilt), seen)
    ref = "127.0.0.1:5000/flask-hello:deploy-def456"
    assert steps(plan) == [
        ("app", "push", ref), ("app", "pull", ref),
        ("app", "recreate", "dockyard-app"), ("app", "wait", "dockyard-app"),
    ]
    assert plan.roles[4].steps[2].reason == "image"


def test_an_app_the_webhook_moved_to_a_newer_image_is_left_alone():
    seen = converged(desired())
    seen.containers["dockyard-app"] = replace(seen.containers["dockyard-app"], image_id="sha256:released-v2")
    assert steps(make_plan("web1", desired(), seen)) == []


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


def test_an_opened_app_publishes_its_port_and_a_proxy_without_tls_only_http():
    services = replace(
        INV.services, app=replace(INV.services.app, open_to=("192.0.2.0/24",)),
        proxy=replace(INV.services.proxy, tls="off", http_port=8081),
    )
    ports = {w.role: w.container.ports for w in desired(inv=replace(INV, services=services))}
    assert ports["app"] == ("0.0.0.0:8000:8000",)
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
    assert f'remoteurl: "{mirror.DOCKER_HUB}"' in text
    inv = replace(INV, services=replace(INV.services, mirror=replace(INV.services.mirror, remote_url="http://x")))
    assert 'remoteurl: "http://x"' in desired(inv=inv)[1].files[0].content.decode()


def test_changing_a_template_value_changes_only_that_roles_digest():
    before = {w.role: w.digest for w in desired()}
    inv = replace(INV, services=replace(INV.services, mirror=replace(INV.services.mirror, remote_url="http://x")))
    after = {w.role: w.digest for w in desired(inv=inv)}
    assert {r for r in before if before[r] != after[r]} == {"mirror"}


def test_run_container_command_line():
    spec = ContainerSpec(
        name="dockyard-x", image="img:1", ports=("127.0.0.1:1:2",), volumes=("v:/data",), env=(("A", "b c"),),
        health=Health(2, "/h"),
    )
    assert commands.run_container(spec, "x", "d1g") == (
        "docker run --detach --name dockyard-x --restart always --network dockyard "
        "--log-opt max-size=10m --log-opt max-file=3 --publish 127.0.0.1:1:2 --volume v:/data --env 'A=b c' "
        "--label dockyard.role=x --label dockyard.image=img:1 --label dockyard.spec=d1g "
        "--health-cmd 'wget -q -O /dev/null http://127.0.0.1:2/h' "
        "--health-interval 2s --health-timeout 3s --health-retries 3 img:1"
    )


def test_write_file_is_atomic_and_secret_files_are_0600():
    line = commands.write_file(Rendered("/etc/dockyard/x/c.yml", b"a: 'b'\n", 0o644, secret=True))
    assert line == (
        "mkdir -p /etc/dockyard/x && printf %s YTogJ2InCg== | base64 -d > /etc/dockyard/x/c.yml.dockyard-new"
        " && chmod 600 /etc/dockyard/x/c.yml.dockyard-new && mv /etc/dockyard/x/c.yml.dockyard-new "
        "/etc/dockyard/x/c.yml"
    )


def test_install_docker_uses_apt_by_default_and_the_script_on_request():
    assert "apt-get -o DPkg::Lock::Timeout=300 -qq install -y docker.io" in commands.install_docker(Docker(), "ubuntu")
    scripted = commands.install_docker(Docker(install="script", script_url="https://example.test/d.sh"), "u")
    assert "curl -fsSL https://example.test/d.sh" in scripted
    assert "usermod -aG docker u" in scripted


SAMPLE_FACTS = """::docker
20.10.24+dfsg1
::boot
enabled
::groups
ubuntu sudo docker
::containers
[{"Name": "/dockyard-app", "Image": "sha256:aa", "Config": {"Labels": {"dockyard.role": "app",
  "dockyard.spec": "d1"}, "Env": ["PATH=/bin"]}, "HostConfig": {"RestartPolicy": {"Name": "always"},
  "PortBindings": {"8000/tcp": [{"HostIp": "", "HostPort": "8000"}]}, "Binds": null},
  "State": {"Running": true, "StartedAt": "2026-01-01T00:00:00Z"}}]
::images
127.0.0.1:5000/flask-hello:deploy-1 sha256:aa
<none>:<none> sha256:bb
::files
0123  /etc/dockyard/app/container.json
::end
"""


def test_facts_parse_one_round_trip_of_output():
    seen = facts.parse(SAMPLE_FACTS)
    assert seen.docker_version == "20.10.24+dfsg1"
    assert seen.docker_on_boot
    assert "docker" in seen.groups
    app = seen.containers["dockyard-app"]
    assert (app.role, app.digest, app.image_id, app.running, app.restart) == ("app", "d1", "sha256:aa", True, "always")
    assert app.ports == frozenset({"0.0.0.0:8000:8000/tcp"})
    assert seen.images == {"127.0.0.1:5000/flask-hello:deploy-1": "sha256:aa"}
    assert seen.files == {"/etc/dockyard/app/container.json": "0123"}


def test_facts_of_a_host_without_docker():
    seen = facts.parse("::docker\n::boot\n::groups\nubuntu\n::containers\n::images\n::files\n::end\n")
    assert seen.docker_version is None and seen.containers == {} and seen.images == {}


def test_truncated_facts_are_refused():
    with pytest.raises(ValueError):
        facts.parse("::docker\n20.10\n::boot\n")


def test_a_role_plan_becomes_one_script_between_transfers():
    plan = make_plan("web1", desired(), facts.HostFacts(docker_version="20", docker_on_boot=True,
                                                           groups=frozenset({"docker"})))
    app = next(r for r in plan.roles if r.role == "app")
    assert [[s.action for s in b] for b in batches(app.steps)] == [["push"], ["pull", "write", "run", "wait"]]
    text = script(list(app.steps[1:]))
    assert text.startswith("set -eu\necho '::step 0'\ndocker pull --quiet")
    assert failed_step(list(app.steps[1:]), "::step 0\n::step 1\n").action == "write"


def test_the_app_is_replaced_holding_the_lock_the_webhook_takes():
    seen = converged(desired())
    seen.containers["dockyard-app"] = replace(seen.containers["dockyard-app"], digest="older")
    recreate = make_plan("web1", desired(), seen).roles[4].steps[0]
    assert recreate.command.startswith(
        "mkdir -p /var/lib/dockyard/webhook && flock /var/lib/dockyard/webhook/app.lock sh -c 'docker rm --force"
    )
    registry = make_plan("web1", desired(), facts.HostFacts()).roles[0].steps
    assert not any("flock" in s.command for s in registry)


def test_a_host_without_the_loopback_guard_gets_the_docker_step_again():
    seen = replace(converged(desired()), loopback_exposed=True)
    plan = plan_docker(seen, Docker(), "ubuntu")
    assert [(s.action, s.reason) for s in plan.steps] == [("install", "127.0.0.1 ports reachable from the network")]
    assert "iptables -t raw -I PREROUTING ! -i lo -d 127.0.0.0/8 -j DROP" in plan.steps[0].command
