"""Inventory validation: every bad file gives one line naming the file, the key and the fix."""

from pathlib import Path

import pytest

from dockyard import inventory
from dockyard.errors import InventoryError
from tests.conftest import REPO


def load(project, text: str, env: str = "t"):
    project.inventory(env, text)
    return inventory.load(project.inventory_dir, env)


def error(project, text: str) -> str:
    with pytest.raises(InventoryError) as caught:
        load(project, text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(project.inventory_dir / "t.yml"))
    return message


def test_the_shipped_sandbox_inventory_loads():
    inv = inventory.load(REPO / "inventory", "sandbox")
    assert inv.provider == "sandbox"
    assert inv.hosts[0].name == "web1"
    assert inv.hosts[0].roles == inventory.ROLES
    assert inv.services.mirror.remote_url == "http://dockyard-registry:5000"


def test_defaults_fill_what_is_not_said(project):
    inv = load(project, "provider: sandbox\nhosts: {web1: {}}\n")
    assert inv.images == "auto"
    assert inv.ssh.user == "ubuntu"
    assert inv.services.registry.port == 5000
    assert inv.services.registry.open_to == ()
    assert inv.services.app.open_to == inv.services.webhook.open_to == ()  # reached through the proxy
    assert inv.services.proxy == inventory.Proxy(
        domain=None, tls="auto", email=None, http_port=80, https_port=443, open_to=("0.0.0.0/0",)
    )
    assert inv.proxy_certificates() == "internal"
    assert inv.hosts[0].roles == inventory.ROLES


def test_unknown_key_is_named_with_the_keys_that_exist(project):
    message = error(project, "provider: sandbox\nhosts: {web1: {rolez: [app]}}\n")
    assert "hosts.web1.rolez: unknown key; known keys here: roles" in message


def test_unknown_nested_service_key(project):
    message = error(project, "provider: sandbox\nhosts: {web1: {}}\nservices: {registry: {prot: 5000}}\n")
    assert "services.registry.prot: unknown key" in message


def test_wrong_type_names_the_expected_type(project):
    message = error(project, "provider: sandbox\nhosts: {web1: {}}\nservices: {webhook: {port: '80'}}\n")
    assert "services.webhook.port: expected a whole number, got text" in message


def test_a_list_where_text_is_expected(project):
    message = error(project, "provider: sandbox\nhosts: {web1: {roles: app}}\n")
    assert "hosts.web1.roles: expected a list, got text" in message


def test_two_services_on_one_port(project):
    message = error(project, "provider: sandbox\nhosts: {web1: {}}\nservices: {mirror: {port: 5000}}\n")
    assert "services.mirror.port: 5000 is already used by registry on web1; pick another" in message


def test_the_same_port_on_different_hosts_is_fine(project):
    inv = load(
        project,
        "provider: sandbox\nhosts: {a: {roles: [registry]}, b: {roles: [mirror]}}\n"
        "services: {mirror: {port: 5000}}\n",
    )
    assert [h.name for h in inv.hosts] == ["a", "b"]


def test_missing_key_file(project):
    message = error(project, "provider: sandbox\nssh: {key: keys/nope}\nhosts: {web1: {}}\n")
    assert "ssh.key: key file" in message and "does not exist" in message


def test_unknown_role(project):
    message = error(project, "provider: sandbox\nhosts: {web1: {roles: [registry, db]}}\n")
    assert "hosts.web1.roles: unknown role 'db'" in message


def test_unknown_provider(project):
    assert "provider: 'gcp' is not one of: sandbox, aws, static" in error(project, "provider: gcp\nhosts: {a: {}}\n")


def test_no_hosts(project):
    assert "hosts: missing or empty" in error(project, "provider: sandbox\n")


def test_invalid_yaml_names_the_line(project):
    assert "line 2 is not valid YAML" in error(project, "provider: sandbox\nhosts: {a: b: c}\n")


def test_webhook_needs_the_app_on_its_host(project):
    assert "webhook redeploys the app" in error(project, "provider: sandbox\nhosts: {a: {roles: [webhook]}}\n")


def test_bad_cidr(project):
    message = error(project, "provider: sandbox\nhosts: {a: {}}\nservices: {webhook: {open_to: [everyone]}}\n")
    assert "services.webhook.open_to[0]: 'everyone' is not a network" in message


def test_the_app_has_no_port_of_its_own(project):
    """Two of its containers run side by side during a switch: only the proxy reaches it."""
    message = error(project, "provider: sandbox\nhosts: {a: {}}\nservices: {app: {open_to: [0.0.0.0/0]}}\n")
    assert "services.app.open_to: unknown key; known keys here: repository, source, health_path" in message
    assert load(project, "provider: sandbox\nhosts: {a: {}}\n").services.app.ports() == {}


def test_static_hosts_need_an_address(project):
    assert "hosts.a.address: missing" in error(project, "provider: static\nhosts: {a: {}}\n")


def test_address_is_only_for_static(project):
    assert "are for provider: static" in error(project, "provider: sandbox\nhosts: {a: {address: 10.0.0.1}}\n")


def test_aws_needs_ssh_cidr(project):
    assert "aws.ssh_cidr: missing" in error(project, "provider: aws\nhosts: {a: {}}\n")


def test_unknown_environment_lists_the_known_ones(project):
    project.inventory("prod", "provider: sandbox\nhosts: {a: {}}\n")
    with pytest.raises(InventoryError, match=r"no such inventory; known environments: prod"):
        inventory.load(project.inventory_dir, "staging")


def test_relative_key_paths_are_relative_to_the_project():
    assert inventory.resolve_path("keys/k", Path("/p/inventory/x.yml")) == Path("/p/keys/k")


AWS = "provider: aws\naws: {ssh_cidr: 203.0.113.7/32%s}\nhosts: {a: {roles: [proxy, app]}}\n"


def test_an_aws_inventory_loads_with_its_defaults(project):
    inv = load(project, AWS % ", region: eu-west-1")
    assert (inv.aws.region, inv.aws.instance_type, inv.aws.root_volume_gb, inv.aws.arch) == (
        "eu-west-1", "t3.small", 20, "amd64")


def test_aws_ami_must_be_an_image_id(project):
    assert "aws.ami: 'ubuntu-24.04' is not an image id like ami-" in error(project, AWS % ", ami: ubuntu-24.04")


def test_aws_root_volume_holds_the_image(project):
    assert "aws.root_volume_gb: 4 is smaller than Ubuntu's 8 GB image" in error(project, AWS % ", root_volume_gb: 4")


def test_aws_vpc_needs_its_subnet(project):
    assert "aws.vpc_id: set aws.subnet_id too" in error(project, AWS % ", vpc_id: vpc-1")


def test_aws_key_name_needs_its_private_key(project):
    assert "aws.key_name: set ssh.key to that key pair's private key" in error(project, AWS % ", key_name: mine")


def test_aws_arch_is_amd64_or_arm64(project):
    assert "aws.arch: 'x86_64' is not one of: amd64, arm64" in error(project, AWS % ", arch: x86_64")


def test_aws_ssh_cidr_is_a_network(project):
    assert "aws.ssh_cidr: 'my laptop' is not a network" in error(
        project, "provider: aws\naws: {ssh_cidr: my laptop}\nhosts: {a: {}}\n")


def test_no_aws_service_on_the_ssh_port(project):
    message = error(project, AWS % "" + "services: {proxy: {http_port: 22}}\n")
    assert "services.proxy.http_port: 22 is SSH's port on aws hosts; pick another" in message
    # a closed webhook publishes no port: its own port is no one's business
    assert load(project, AWS % "" + "services: {webhook: {port: 22}}\n").services.webhook.port == 22


# -- the proxy ---------------------------------------------------------------------------------------------------
SANDBOX = "provider: sandbox\nhosts: {web1: {}}\nservices: {proxy: %s}\n"


def test_the_proxy_ports_are_checked_like_any_other(project):
    assert "services.proxy.https_port: 70000 is not a TCP port (1-65535)" in error(
        project, SANDBOX % "{https_port: 70000}")
    assert "services.proxy.https_port: 80 is already used by proxy.http_port on web1; pick another" in error(
        project, SANDBOX % "{https_port: 80}")
    assert "services.proxy.http_port: 8080 is already used by registry_ui on web1; pick another" in error(
        project, SANDBOX % "{http_port: 8080}")


def test_an_opened_webhook_takes_its_port_a_closed_one_none(project):
    assert load(project, SANDBOX % "{http_port: 8000}").services.proxy.http_port == 8000
    message = error(project, "provider: sandbox\nhosts: {web1: {}}\n"
                             "services: {proxy: {https_port: 9000}, webhook: {open_to: [10.0.0.0/8]}}\n")
    assert "services.webhook.port: 9000 is already used by proxy.https_port on web1; pick another" in message


def test_without_tls_the_proxy_takes_no_https_port(project):
    inv = load(project, SANDBOX % "{tls: 'off', https_port: 8080}")
    assert inv.open_ports(inv.hosts[0]) == {"proxy.http_port": 80}
    assert inv.proxy_certificates() == "off"


def test_tls_is_one_of_three(project):
    assert "services.proxy.tls: 'acme' is not one of: auto, internal, off" in error(project, SANDBOX % "{tls: acme}")


def test_the_domain_is_a_bare_name(project):
    for domain in ("https://app.example.com", "app.example.com:443", "App.Example.com", "localhost", "10.0.0.1"):
        message = error(project, SANDBOX % f"{{domain: '{domain}'}}")
        assert f"services.proxy.domain: {domain!r} is not a domain name like app.example.com" in message


def test_the_email_is_an_address_and_only_for_acme(project):
    static = "provider: static\nhosts: {web1: {address: 198.51.100.10}}\nservices: {proxy: %s}\n"
    assert "services.proxy.email: 'ops' is not an email address like ops@example.com" in error(
        project, static % "{domain: app.example.com, email: ops}")
    assert "services.proxy.email: only ACME uses it" in error(project, static % "{email: ops@example.com}")
    assert "services.proxy.email: only ACME uses it" in error(
        project, SANDBOX % "{domain: app.example.com, email: ops@example.com}")
    inv = load(project, static % "{domain: app.example.com, email: ops@example.com}")
    assert inv.proxy_certificates() == "acme"


def test_tls_auto_is_acme_for_a_domain_on_a_real_host_and_the_internal_ca_otherwise(project):
    static = "provider: static\nhosts: {web1: {address: 198.51.100.10}}\nservices: {proxy: %s}\n"
    assert load(project, static % "{domain: app.example.com}").proxy_certificates() == "acme"
    assert load(project, static % "{}").proxy_certificates() == "internal"
    assert load(project, static % "{domain: app.example.com, tls: internal}").proxy_certificates() == "internal"
    assert load(project, SANDBOX % "{domain: app.example.com}").proxy_certificates() == "internal"


def test_acme_needs_port_80_or_443(project):
    static = "provider: static\nhosts: {web1: {address: 198.51.100.10}}\nservices: {proxy: %s}\n"
    message = error(project, static % "{domain: app.example.com, http_port: 8081, https_port: 8443}")
    assert "services.proxy: ACME proves the domain on port 80 or 443, and the proxy takes 8081 and 8443" in message
    assert load(project, static % "{domain: app.example.com, http_port: 8081}").services.proxy.https_port == 443


def test_the_app_and_the_proxy_go_together(project):
    assert "hosts.a.roles: the app is served through the proxy on its own host; add proxy to this host" in error(
        project, "provider: sandbox\nhosts: {a: {roles: [app]}}\n")
    assert "hosts.a.roles: the proxy fronts the app on its own host; add app to this host" in error(
        project, "provider: sandbox\nhosts: {a: {roles: [proxy]}}\n")


# -- the app's settings, secrets and release command ----------------------------------------------------------
APP = "provider: sandbox\nhosts: {a: {}}\nservices:\n  app:\n    %s\n"


def test_app_settings_secrets_and_release_command_load(project):
    inv = load(project, APP % """env: {GREETING: Hello, ADMIN_EMAIL: ops@example.com}
    secrets:
      SECRET_KEY: generate
      API_TOKEN: env:ACME_API_TOKEN
      TLS_KEY: file:secrets/tls.key
      DATABASE_PASSWORD: {source: "ssm:/acme/prod/db-password", env: true}
      STRIPE_KEY: secretsmanager:acme/stripe
    release_command: flask --app app db-upgrade""")
    app = inv.services.app
    assert app.env == {"GREETING": "Hello", "ADMIN_EMAIL": "ops@example.com"}
    assert app.secrets == {
        "SECRET_KEY": inventory.Secret("generate"),
        "API_TOKEN": inventory.Secret("env:ACME_API_TOKEN"),
        "TLS_KEY": inventory.Secret("file:secrets/tls.key"),
        "DATABASE_PASSWORD": inventory.Secret("ssm:/acme/prod/db-password", env=True),
        "STRIPE_KEY": inventory.Secret("secretsmanager:acme/stripe"),
    }
    assert (app.secrets["DATABASE_PASSWORD"].kind, app.secrets["DATABASE_PASSWORD"].ref) == (
        "ssm", "/acme/prod/db-password")
    assert app.release_command == "flask --app app db-upgrade"


def test_an_app_without_settings_has_none(project):
    app = load(project, "provider: sandbox\nhosts: {a: {}}\n").services.app
    assert (app.env, app.secrets, app.release_command) == ({}, {}, None)


@pytest.mark.parametrize("source", ["vault:acme/key", "generate:32", "SSM:/x", "/acme/key"])
def test_an_unknown_secret_source_lists_the_sources(project, source):
    message = error(project, APP % f"secrets: {{API_TOKEN: {source!r}}}")
    assert (f"services.app.secrets.API_TOKEN: {source!r} is not a secret source; use generate, env:NAME, "
            "file:PATH, ssm:/path or secretsmanager:name") in message


@pytest.mark.parametrize("source", ["env:", "file:", "ssm:", "secretsmanager:"])
def test_a_source_must_name_what_it_reads(project, source):
    message = error(project, APP % f"secrets: {{API_TOKEN: {source!r}}}")
    assert f"services.app.secrets.API_TOKEN: {source!r} names nothing; write {source}<what to read>" in message


@pytest.mark.parametrize("section", ["env: {%s: x}", "secrets: {%s: generate}"])
@pytest.mark.parametrize("name", ["api-token", "1ST_KEY", "A B"])
def test_names_must_be_environment_variable_names(project, section, name):
    message = error(project, APP % (section % f"{name!r}"))
    key = section.split(":")[0]
    assert f"services.app.{key}.{name}: {name!r} is not an environment variable name" in message


def test_an_env_source_must_name_a_variable(project):
    message = error(project, APP % "secrets: {API_TOKEN: env:acme-token}")
    assert "services.app.secrets.API_TOKEN: env:acme-token is not an environment variable name" in message


def test_a_name_is_either_a_setting_or_a_secret(project):
    message = error(project, APP % "env: {API_TOKEN: x}\n    secrets: {API_TOKEN: generate}")
    assert "services.app.secrets.API_TOKEN: API_TOKEN is also in services.app.env; a name is either" in message


def test_a_file_source_must_not_be_a_folder(project):
    (project.root / "secrets").mkdir()
    message = error(project, APP % "secrets: {TLS_KEY: file:secrets}")
    assert "services.app.secrets.TLS_KEY: file:secrets is a folder; name the file that holds the secret" in message


def test_a_missing_secret_file_is_found_when_secrets_are_read_not_when_the_inventory_loads(project):
    # tasks that read no secrets (hosts, teardown) must work without them
    app = load(project, APP % "secrets: {TLS_KEY: file:secrets/absent}").services.app
    assert app.secrets["TLS_KEY"].ref == "secrets/absent"


def test_a_setting_must_be_text(project):
    message = error(project, APP % "env: {WORKERS: 4}")
    assert 'services.app.env.WORKERS: expected text, got int 4; quote it, e.g. "4"' in message


def test_env_exposure_is_true_or_false(project):
    message = error(project, APP % "secrets: {API_TOKEN: {source: generate, env: 'yes'}}")
    assert "services.app.secrets.API_TOKEN.env: expected true or false, got text" in message


def test_a_secret_mapping_names_its_keys(project):
    message = error(project, APP % "secrets: {API_TOKEN: {from: generate}}")
    assert "services.app.secrets.API_TOKEN.from: unknown key; known keys here: source, env" in message


def test_settings_are_a_mapping(project):
    message = error(project, APP % "env: [GREETING=hi]")
    assert "services.app.env: expected a mapping of names to values, got a list" in message


def test_release_command_quotes_must_close(project):
    message = error(project, APP % """release_command: "flask --app 'app db-upgrade\"""")
    assert ("services.app.release_command: cannot be split into words (No closing quotation); check its quotes"
            in message)


def test_release_command_is_not_empty(project):
    message = error(project, APP % "release_command: ' '")
    assert "services.app.release_command: is empty; give a command" in message


def test_app_volumes_are_mounts(project):
    inv = load(project, APP % 'volumes: ["data:/srv/data", "/srv/uploads:/srv/app/uploads:ro"]')
    assert inv.services.app.volumes == ("data:/srv/data", "/srv/uploads:/srv/app/uploads:ro")
    assert "services.app.volumes[0]: 'data' is not a mount; write NAME:/path/in/container" in error(
        project, APP % 'volumes: ["data"]')


# -- a swarm --------------------------------------------------------------------------------------------------
APP_HOST = "[manager, registry, proxy, app, webhook]"  # the manager that deploys the app's stack


def swarm(web1: str = APP_HOST, web2: str = "[]", web3: str = "[]", cluster: str = "swarm", services: str = "") -> str:
    text = f"provider: sandbox\ncluster: {cluster}\nhosts: {{web1: {{roles: {web1}}}, web2: {{roles: {web2}}}, " \
           f"web3: {{roles: {web3}}}}}\n"
    return text + (f"services: {services}\n" if services else "")


def test_a_three_host_swarm_loads_with_one_replica_per_host_unless_told(project):
    inv = load(project, swarm())
    assert inv.swarm and [h.name for h in inv.managers()] == ["web1"]
    assert [h.roles for h in inv.hosts] == [("manager", "registry", "proxy", "app", "webhook"), (), ()]
    assert inv.services.app.replicas is None and inv.replicas() == 3
    inv = load(project, swarm(web2="[manager]", web3="[manager, mirror]", services="{app: {replicas: 5}}"))
    assert [h.name for h in inv.managers()] == ["web1", "web2", "web3"] and inv.replicas() == 5
    assert not load(project, "provider: sandbox\nhosts: {a: {}}\n").swarm


def test_a_cluster_is_none_or_swarm(project):
    assert "cluster: 'kubernetes' is not one of: none, swarm" in error(project, swarm(cluster="kubernetes"))


PLAIN_APP_HOST = "[registry, proxy, app]"  # the app's host, no manager


@pytest.mark.parametrize(("web1", "web2", "web3", "count"), [
    (APP_HOST, "[manager]", "[]", 2), (PLAIN_APP_HOST, "[manager]", "[manager]", 2), (PLAIN_APP_HOST, "[]", "[]", 0),
])
def test_a_swarm_has_one_or_three_managers_and_the_message_says_why(project, web1, web2, web3, count):
    assert (
        f"hosts: a swarm has 1 or 3 managers, not {count}: the managers act only while a majority of them (a quorum) "
        f"is up, so 3 survive the loss of one, and an even number survives no more losses than one fewer; give "
        f"`manager` to 1 or 3 hosts"
    ) in error(project, swarm(web1, web2, web3))


def test_five_managers_are_more_than_a_swarm_of_dockyard_has(project):
    hosts = ", ".join(f"web{i}: {{roles: [manager]}}" for i in range(2, 6))
    text = f"provider: sandbox\ncluster: swarm\nhosts: {{web1: {{roles: {APP_HOST}}}, {hosts}}}\n"
    assert "hosts: a swarm has 1 or 3 managers, not 5: " in error(project, text)


def test_a_manager_needs_a_swarm(project):
    assert "hosts.web1.roles: manager is a swarm role; set `cluster: swarm` or drop it" in error(
        project, swarm(cluster="none"))


def test_replicas_need_a_swarm(project):
    text = swarm("[registry, proxy, app]", cluster="none", services="{app: {replicas: 2}}")
    assert ("services.app.replicas: replicas are for `cluster: swarm`, and without it each app host runs one app; "
            "drop it, or set `cluster: swarm`") in error(project, text)


@pytest.mark.parametrize("replicas", [0, 101, -1])
def test_replicas_run_one_to_a_hundred_tasks(project, replicas):
    text = swarm(services=f"{{app: {{replicas: {replicas}}}}}")
    assert f"services.app.replicas: {replicas} is out of range; run 1 to 100 app tasks" in error(project, text)
    assert load(project, swarm(services="{app: {replicas: 100}}")).replicas() == 100


@pytest.mark.parametrize(("web1", "web2"), [
    ("[manager, proxy, app]", "[registry]"),  # the registry away from the app
    ("[manager, registry]", "[proxy, app]"),  # the app on a host that is no manager
    ("[manager, registry, proxy, app]", "[proxy, app]"),  # the app on two hosts
])
def test_one_manager_runs_the_app_with_its_registry_and_proxy(project, web1, web2):
    assert ("hosts: on a swarm the app is one service, deployed from one manager that also runs the registry its "
            "nodes pull from: give exactly one manager the roles app, proxy and registry") in error(
        project, swarm(web1, web2))


def test_the_webhook_runs_on_the_app_host(project):
    text = swarm("[manager, registry, proxy, app]", "[webhook]")
    assert "hosts.web2.roles: the webhook updates the app's service: put it on web1" in error(project, text)


def test_a_host_path_volume_exists_on_one_node_only(project):
    text = swarm(services='{app: {volumes: ["data:/srv/data", "/srv/uploads:/srv/app/uploads"]}}')
    assert ("services.app.volumes[1]: '/srv/uploads:/srv/app/uploads' is a host path, which exists on one node of a "
            "swarm; use a named volume (NAME:/path)") in error(project, text)
    assert load(project, swarm(services='{app: {volumes: ["data:/srv/data"]}}')).services.app.volumes == (
        "data:/srv/data",)
