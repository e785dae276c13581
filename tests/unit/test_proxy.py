"""The proxy declared as data: its Caddyfile for each way of getting certificates, its container, its URL."""

import io
from dataclasses import replace

from dockyard import deploy, front_door, inventory
from dockyard.cli.deploy import print_services
from dockyard.images import Built
from dockyard.report import Reporter
from dockyard.spec import Target
from dockyard.state import HostRecord
from roles import proxy
from tests.conftest import PROXY_TLS, REPO

BUILT = {"proxy": Built("dockyard/proxy:abc", "sha256:proxy", cached=True)}
SITE_TLS = ("\t# dockyard's, signed by the environment's CA: clients trust it through `invoke proxy.ca`\n"
            "\ttls /etc/caddy/site.crt /etc/caddy/site.key\n")
SANDBOX_ENDPOINTS = {"proxy.http_port": "127.0.0.1:32801", "proxy.https_port": "127.0.0.1:32802"}


def parse(data: dict):
    return inventory.parse(data, env="t", path=REPO / "inventory" / "t.yml")


def sandbox(**settings):
    return parse({"provider": "sandbox", "hosts": {"web1": {}}, "services": {"proxy": settings}})


def static(**settings):
    return parse({"provider": "static", "hosts": {"web1": {"address": "198.51.100.10"}},
                  "services": {"proxy": settings}})


def record(inv, address="127.0.0.1", endpoints=None):
    return HostRecord("web1", address, 22, "ubuntu", inv.hosts[0].roles, endpoints=endpoints or {})


def declared(inv, address="127.0.0.1"):
    target = Target(inv, record(inv, address), online=False, proxy_tls=PROXY_TLS)
    context = {"secrets": {}, "online": False}
    want = deploy.resolve(proxy.declare(target), target, BUILT, deploy._templates(REPO / "templates"), context)
    return want, {f.dest: f.content.decode() for f in want.files}


def caddyfile(inv, address="127.0.0.1") -> str:
    return declared(inv, address)[1]["/etc/dockyard/proxy/Caddyfile"]


def test_on_a_sandbox_the_internal_ca_signs_for_the_loopback_names():
    want, files = declared(sandbox())
    text = files["/etc/dockyard/proxy/Caddyfile"]
    assert "\tdefault_sni 127.0.0.1\n" in text and "\tauto_https disable_redirects\n" in text
    assert "\nhttp://:80 {\n\tredir https://{host}{uri} permanent\n}\n" in text
    assert "\nlocalhost, 127.0.0.1 {\n" + SITE_TLS + "\timport routes\n}\n" in text
    assert "email" not in text
    # Caddy loads these before a reloaded config serves: no handshake waits for a certificate still loading
    assert files["/etc/dockyard/proxy/site.crt"] == PROXY_TLS.certificate
    assert files["/etc/dockyard/proxy/site.key"] == PROXY_TLS.key
    assert next(f for f in want.files if f.dest.endswith("site.key")).secret


def test_a_reload_hands_the_connections_queued_on_the_old_listener_to_the_new_one():
    want, _ = declared(sandbox())
    assert want.container.sysctls == (("net.ipv4.tcp_migrate_req", "1"),)


def test_the_redirect_keeps_a_public_https_port_other_than_443():
    assert "\tredir https://{host}:8443{uri} permanent\n" in caddyfile(sandbox(https_port=8443))


def test_the_app_is_the_imported_upstream_and_hooks_go_to_the_webhook():
    want, files = declared(sandbox())
    text = files["/etc/dockyard/proxy/Caddyfile"]
    assert "\thandle /hooks/* {\n\t\treverse_proxy dockyard-webhook:9000\n\t}\n" in text
    assert "\t\t\timport /var/lib/dockyard-proxy/app.upstream\n" in text
    assert "\t\t\tlb_try_duration 5s\n" in text
    assert files["/var/lib/dockyard/proxy/app.upstream"] == "to dockyard-app-blue:8000\n"
    assert want.container.volumes == (
        "dockyard-proxy-data:/data", "dockyard-proxy-config:/config", "/etc/dockyard/proxy:/etc/caddy:ro",
        "/var/lib/dockyard/proxy:/var/lib/dockyard-proxy:ro",
    )
    assert want.container.ports == ("0.0.0.0:80:80", "0.0.0.0:443:443")
    assert want.container.health.command() == "wget -q -O /dev/null http://127.0.0.1:2020/healthz"
    assert "\nhttp://127.0.0.1:2020 {\n\tbind 127.0.0.1\n\trespond /healthz \"ok\"\n}\n" in text
    assert "\t\t\t\trequest>uri regexp ^/hooks/.* /hooks/***\n" in text  # the token stays out of the log


def test_without_the_webhook_on_the_host_no_hooks_route():
    inv = parse({"provider": "sandbox", "hosts": {"web1": {"roles": ["proxy", "app"]}}})
    assert "handle /hooks/" not in caddyfile(inv)


def test_a_real_host_without_a_domain_gets_the_internal_ca_for_its_address():
    text = caddyfile(static(), address="198.51.100.10")
    assert "\nlocalhost, 127.0.0.1, 198.51.100.10 {\n" + SITE_TLS in text
    assert "\tdefault_sni 198.51.100.10\n" in text


def test_a_domain_on_a_real_host_gets_acme_with_the_email():
    text = caddyfile(static(domain="app.example.com", email="ops@example.com"), address="198.51.100.10")
    assert "\tdefault_sni app.example.com\n" in text and "\temail ops@example.com\n" in text
    assert "\napp.example.com {\n\timport routes\n}\n" in text
    assert "\ttls " not in text


def test_tls_off_serves_the_routes_on_http_only():
    text = caddyfile(sandbox(tls="off"))
    assert "\nhttp://:80 {\n\timport routes\n}\n" in text
    assert "redir" not in text and "\ttls " not in text and "default_sni" not in text


def test_the_url_is_the_sandbox_mapping_or_the_domain_without_a_default_port():
    assert front_door.url(sandbox(), record(sandbox(), endpoints=SANDBOX_ENDPOINTS)) == "https://127.0.0.1:32802"
    inv = sandbox(domain="app.example.com")  # a sandbox host is reached through its mapping, domain or not
    assert front_door.url(inv, record(inv, endpoints=SANDBOX_ENDPOINTS)) == "https://127.0.0.1:32802"
    inv = static(domain="app.example.com")
    opened = {"proxy.http_port": "198.51.100.10:80", "proxy.https_port": "198.51.100.10:443"}
    assert front_door.url(inv, record(inv, "198.51.100.10", opened)) == "https://app.example.com"
    inv = static(https_port=8443)
    opened = {"proxy.http_port": "198.51.100.10:80", "proxy.https_port": "198.51.100.10:8443"}
    assert front_door.url(inv, record(inv, "198.51.100.10", opened)) == "https://198.51.100.10:8443"
    inv = static(tls="off")
    assert front_door.url(inv, record(inv, "198.51.100.10", {"proxy.http_port": "198.51.100.10:80"})) == (
        "http://198.51.100.10")
    assert front_door.url(sandbox(open_to=[]), record(sandbox(open_to=[]))) is None


class FakeEnv:
    def __init__(self, inv, records):
        self.inventory, self._records = inv, records
        self.out = Reporter(io.StringIO())

    def hosts(self):
        return self._records


def test_the_url_table_sends_the_app_and_hooks_through_the_proxy():
    inv = sandbox()
    env = FakeEnv(inv, [record(inv, endpoints=SANDBOX_ENDPOINTS)])
    print_services(env)
    assert env.out.stream.getvalue().splitlines() == [
        "host  service      url",
        "web1  registry     127.0.0.1:5000 on the host (invoke registry.tunnel)",
        "web1  mirror       127.0.0.1:5001 on the host (invoke registry.tunnel)",
        "web1  registry_ui  127.0.0.1:8080 on the host (invoke registry.tunnel)",
        "web1  proxy        https://127.0.0.1:32802/  (its internal CA: trust it with `invoke proxy.ca`)",
        "web1  app          https://127.0.0.1:32802/",
        "web1  webhook      https://127.0.0.1:32802/hooks/<token>",
    ]
    closed = replace(inv, services=replace(inv.services, proxy=replace(inv.services.proxy, open_to=())))
    env = FakeEnv(closed, [record(closed)])
    print_services(env)
    assert "web1  app          on the host only: services.proxy.open_to is empty" in env.out.stream.getvalue()


def test_proxy_ca_fails_in_one_line_without_an_internal_ca_or_a_proxy(project):
    static = "provider: static\nhosts: {web1: {address: 198.51.100.10, roles: %s}}\nservices: {proxy: %s}\n"
    cases = {
        "t-acme": (static % ("[proxy, app]", "{domain: app.example.com}"),
                   "error: the proxy of t-acme gets its certificates by ACME from a public CA, which clients trust "
                   "already; there is no internal CA to export (services.proxy.tls: internal would make one)\n"),
        "t-plain": (static % ("[proxy, app]", "{tls: 'off'}"),
                    "error: the proxy of t-plain serves plain HTTP (services.proxy.tls: off): there is no CA\n"),
        "t-none": (static % ("[registry]", "{}"),
                   f"error: no host of t-none runs the proxy role; check {project.inventory_dir / 't-none.yml'} "
                   f"and `invoke hosts`\n"),
    }
    for env, (text, expected) in cases.items():
        project.inventory(env, text)
        result = project.invoke(env, "proxy.ca", check=False)
        assert (result.returncode, result.stderr) == (1, expected)
