"""A swarm (`cluster: swarm`) declared and planned with no SSH: the stack, the registry's TLS twin, membership."""

from dataclasses import replace

import yaml
from cryptography import x509

from dockyard import certificates, deploy, facts, inventory
from dockyard.commands import swarm
from dockyard.plan import RemoteStep, make_plan, node_removals, swarm_steps
from dockyard.spec import Cluster, Rendered, Target
from dockyard.state import HostRecord
from roles import MODULES, host_roles
from tests.conftest import PROXY_TLS, REPO
from tests.unit.test_plan import BUILT, SECRETS

ADDRESS = "10.213.0.10"
TLS = certificates.issue("t", ADDRESS)


def swarm_inventory(app: dict | None = None):
    return inventory.parse({
        "provider": "sandbox", "cluster": "swarm",
        "hosts": {"node1": {"roles": ["manager", "registry", "proxy", "app", "webhook"]}, "node2": {"roles": []},
                  "node3": {"roles": []}},
        "services": {"app": {"replicas": 3, **(app or {})}},
    }, env="t", path=REPO / "inventory" / "t.yml")


def manager_desired(inv=None, secrets=None):
    inv = inv or swarm_inventory()
    host = HostRecord("node1", "127.0.0.1", 2222, "ubuntu", inv.host("node1").roles, provider={"ip": ADDRESS})
    target = Target(inv, host, False, secrets or {}, Cluster(f"{ADDRESS}:5443", inv.replicas(), TLS),
                    PROXY_TLS)
    templates = deploy._templates(REPO / "templates")
    return {role: deploy.resolve(MODULES[role].declare(target), target, BUILT, templates, SECRETS)
            for role in host_roles(host.roles, swarm=True)}


def test_the_registry_host_of_a_swarm_also_runs_the_registry_s_tls_twin_right_after_it():
    assert host_roles(("manager", "registry", "proxy", "app", "webhook"), swarm=True) == (
        "registry", "cluster_registry", "proxy", "app", "webhook")
    assert host_roles(("manager",), swarm=True) == ()
    assert "cluster_registry" not in host_roles(("registry",), swarm=False)


def test_the_twin_serves_the_registry_s_storage_read_only_with_tls_on_the_private_address():
    twin = manager_desired()["cluster_registry"]
    assert twin.container.ports == (f"{ADDRESS}:5443:5443",)
    assert "dockyard-registry-data:/var/lib/registry:ro" in twin.container.volumes
    config = yaml.safe_load(next(f for f in twin.files if f.dest.endswith("config.yml")).content)
    assert config["storage"]["maintenance"]["readonly"] == {"enabled": True}
    assert config["http"]["tls"] == {"certificate": "/etc/docker/registry/registry.crt",
                                     "key": "/etc/docker/registry/registry.key"}
    assert "notifications" not in config
    key = next(f for f in twin.files if f.dest.endswith("registry.key"))
    assert key.secret


def test_the_certificate_names_the_address_and_is_signed_by_the_ca_the_nodes_trust():
    ca = x509.load_pem_x509_certificate(TLS.ca.encode())
    certificate = x509.load_pem_x509_certificate(TLS.certificate.encode())
    certificate.verify_directly_issued_by(ca)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == [ADDRESS]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_app_is_a_stack_service_from_the_twin_with_dnsrr_start_first_and_rollback():
    wants = manager_desired()
    app = wants["app"]
    assert app.slots is None and app.stack.replicas == 3
    assert app.image.ref.startswith(f"{ADDRESS}:5443/flask-hello:deploy-")
    assert app.image.delivery == "push"  # through the tunnel to the registry, as on one host
    stack = yaml.safe_load(app.stack_file.content)
    service = stack["services"]["app"]
    assert service["image"] == app.image.ref
    assert "ports" not in service  # start-first never waits for a port a replica holds
    assert service["networks"] == ["dockyard-cluster"] and stack["networks"]["dockyard-cluster"] == {
        "external": True}
    assert service["deploy"]["endpoint_mode"] == "dnsrr"
    assert service["deploy"]["replicas"] == 3
    assert service["deploy"]["update_config"]["order"] == "start-first"
    assert service["deploy"]["update_config"]["failure_action"] == "rollback"
    assert service["healthcheck"]["test"] == ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8000/healthz"]
    # the host's containers share the overlay with the tasks
    assert {w.container.network for w in wants.values()} == {"dockyard-cluster"}


def test_the_proxy_finds_the_tasks_by_name_and_has_no_upstream_file():
    proxy = manager_desired()["proxy"]
    caddyfile = next(f for f in proxy.files if f.dest.endswith("Caddyfile")).content.decode()
    assert "dynamic a tasks.dockyard_app 8000 {" in caddyfile
    assert "lb_policy round_robin" in caddyfile
    assert "app.upstream" not in caddyfile
    assert [f.dest for f in proxy.files] == [f"/etc/dockyard/proxy/{name}" for name in ("Caddyfile", "site.crt",
                                                                                         "site.key")]


def test_secrets_become_swarm_secrets_named_by_their_content():
    inv = swarm_inventory({"secrets": {"API_KEY": "generate"}})
    app = manager_desired(inv, {"API_KEY": "one"})["app"]
    again = manager_desired(inv, {"API_KEY": "two"})["app"]
    stack, changed = (yaml.safe_load(a.stack_file.content) for a in (app, again))
    (name,) = stack["secrets"]
    assert name.startswith("dockyard_app_api_key_")
    assert stack["secrets"][name]["file"] == "/etc/dockyard/app/secrets/API_KEY"
    assert stack["services"]["app"]["secrets"] == [{"source": name, "target": "API_KEY", "uid": "0", "mode": 0o400}]
    assert list(changed["secrets"]) != [name]  # a new value is a new secret, which rolls the tasks


def service_host(app, replicas: int = 3, stack_written: bool = True) -> facts.HostFacts:
    return facts.HostFacts(
        docker="running", images={app.image.ref: app.image.image_id},
        files={**{f.dest: f.sha256 for f in app.files},
               **({app.stack_file.dest: app.stack_file.sha256} if stack_written else {})},
        service=facts.ServiceSeen(app.image.ref, replicas),
    )


def stack_steps(app, host):
    (role,) = make_plan("node1", [app], host).roles
    return [(s.action, s.target, s.reason) for s in role.steps]


def test_the_stack_is_deployed_when_missing_changed_or_scaled_by_hand_and_left_alone_otherwise():
    app = manager_desired()["app"]
    assert stack_steps(app, service_host(app)) == []
    assert stack_steps(app, replace(service_host(app), service=None))[-1] == ("deploy", "stack dockyard", "missing")
    assert stack_steps(app, service_host(app, stack_written=False)) == [
        ("deploy", "stack dockyard", "stack changed")]
    assert stack_steps(app, service_host(app, replicas=1)) == [("deploy", "stack dockyard", "drift: replicas 1")]
    # the webhook moved the service to a newer pushed image: still what deploy declared
    newer = replace(service_host(app), service=facts.ServiceSeen(f"{ADDRESS}:5443/flask-hello:v7", 3))
    assert stack_steps(app, newer) == []


def test_a_stack_change_runs_the_release_then_the_stack_and_only_then_keeps_the_file():
    app = manager_desired(swarm_inventory({"release_command": "flask db-upgrade"}))["app"]
    (step,) = [s for s in make_plan("node1", [app], service_host(app, stack_written=False)).roles[0].steps]
    command = step.command
    order = [command.index(part) for part in (
        "docker network create --driver overlay --attachable dockyard-cluster",
        "/etc/dockyard/stack/dockyard.yml.next", "flask db-upgrade",
        "docker stack deploy --resolve-image never --prune --compose-file /etc/dockyard/stack/dockyard.yml.next "
        "dockyard",
        "mv /etc/dockyard/stack/dockyard.yml.next /etc/dockyard/stack/dockyard.yml",
    )]
    assert order == sorted(order)


TRUST = Rendered("/etc/docker/certs.d/10.213.0.10:5443/ca.crt", TLS.ca.encode(), 0o644, False)


def node_facts(state: str = "active", trusted: bool = True) -> facts.HostFacts:
    return facts.HostFacts(docker="running", node=facts.Node("n1", "node2", state),
                           files={TRUST.dest: TRUST.sha256} if trusted else {})


def test_a_node_trusts_the_ca_then_inits_or_joins_and_a_member_does_nothing():
    assert swarm_steps(node_facts(), TRUST).steps == ()
    fresh = swarm_steps(node_facts("inactive", trusted=False), TRUST, join=("SWMTKN-x", ADDRESS, "10.213.0.11"))
    assert [(s.action, s.target) for s in fresh.steps] == [("write", TRUST.dest), ("join", f"swarm of {ADDRESS}")]
    assert fresh.steps[1].command == (
        "docker swarm leave --force >/dev/null 2>&1 || true\n"
        "docker swarm join --token SWMTKN-x --advertise-addr 10.213.0.11 10.213.0.10:2377 >/dev/null")
    first = swarm_steps(node_facts("inactive"), TRUST, init=ADDRESS)
    assert first.steps == (RemoteStep("swarm", "init", f"swarm at {ADDRESS}", "in no swarm",
                                      "docker swarm init --advertise-addr 10.213.0.10 >/dev/null"),)


def test_entries_left_by_a_host_that_joined_again_go_and_nodes_not_in_the_inventory_are_asked_about():
    nodes = (
        facts.Node("m", "node1", status="Ready"), facts.Node("old2", "node2", status="Down"),
        facts.Node("w3", "node3", status="Ready"), facts.Node("gone", "node9", status="Ready"),
    )
    stale, gone = node_removals(nodes, {"m", "w3"}, {"node1", "node2", "node3"}, rejoined={"node2"})
    assert [n.id for n in stale] == ["old2"] and [n.id for n in gone] == ["gone"]
    assert node_removals(nodes[:1], {"m"}, {"node1"}, set()) == ([], [])
    assert swarm.remove_node("gone", drain=True).splitlines()[0] == (
        "docker node update --availability drain gone >/dev/null")
    assert swarm.remove_node("old2", drain=False) == (
        "docker node demote old2 >/dev/null 2>&1 || true\ndocker node rm --force old2 >/dev/null")


def test_the_swarm_sections_of_the_facts_read_are_parsed():
    output = "\n".join([
        "::docker", "running", *(f"::{s}" for s in (
            "dpkg", "init", "boot", "guard", "guard_boot", "groups", "containers", "images", "files", "owners",
            "upstream")),
        "::swarm", "active abc123 true", "node1",
        "::nodes", "abc123 node1 Ready", "def456 node2 Down",
        "::service", '[{"Spec": {"TaskTemplate": {"ContainerSpec": {"Image": "r:5443/a:v2@sha256:1"}}, '
                     '"Mode": {"Replicated": {"Replicas": 3}}}}]',
        "::end",
    ])
    seen = facts.parse(output, "node1")
    assert seen.node == facts.Node("abc123", "node1", "active")
    assert [(n.id, n.hostname, n.status) for n in seen.nodes] == [("abc123", "node1", "Ready"),
                                                                   ("def456", "node2", "Down")]
    assert seen.service == facts.ServiceSeen("r:5443/a:v2@sha256:1", 3)
    assert facts.parse(output.replace("active abc123 true", "inactive  false"), "n").node.member is False
