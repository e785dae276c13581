"""The front door on a sandbox host: https verified with the exported CA, the redirect, /hooks/ to the webhook,
nothing else published, drift of the proxy repaired, and a baseline load through it with no failure."""

import json
from dataclasses import replace

import docker
import pytest
import requests

from dockyard import deploy
from dockyard.commands.files import write_file
from dockyard.images import Built
from dockyard.inventory import Proxy
from dockyard.spec import Target
from roles import proxy
from tests.conftest import REPO, SANDBOX_STACK
from tests.e2e.helpers import host_run, inspect, serving, wait_for
from tests.e2e.load import Load

ENV = "t-frontdoor"
HTTPS_PORT = 8443  # not 443, so the redirect must carry it
BASELINE_REQUESTS = 1200
CADDYFILE = f"{proxy.CONFIG_DIR}/Caddyfile"
BUILT = Built("dockyard/proxy:check", "sha256:check", cached=True)


@pytest.fixture(scope="module")
def door(module_project):
    module_project.copy_sources()
    module_project.inventory(ENV, SANDBOX_STACK + f"  proxy: {{https_port: {HTTPS_PORT}}}\n")
    try:
        deployed = module_project.invoke(ENV, "provision", "deploy")
        exported = module_project.invoke(ENV, "proxy.ca")
        yield module_project, deployed.stdout, exported.stdout
    finally:
        module_project.invoke(ENV, "teardown", "--yes", check=False)


def host(project):
    (record,) = project.env(ENV).hosts()
    return record


def url(project) -> str:
    return f"https://{host(project).endpoints['proxy.https_port']}"


def ca_file(project):
    return project.state_dir / ENV / "proxy-ca.crt"


def test_a_second_deploy_says_no_changes_in_one_ssh_connection(door):
    project, _, _ = door
    result = project.invoke(ENV, "deploy")
    assert "no changes (" in result.stdout
    assert "1 SSH connection(s), 1 remote command(s)" in result.stdout


def test_the_url_table_and_webhook_url_are_https_through_the_proxy(door):
    project, deployed, _ = door
    base = url(project)
    assert f"web1  app          {base}/\n" in deployed
    assert f"web1  webhook      {base}/hooks/<token>\n" in deployed
    printed = project.invoke(ENV, "webhook.url").stdout
    assert printed.startswith(f"web1: {base}/hooks/<token>  (token: webhook_token in ")
    assert project.env(ENV).state.secret("webhook_token") not in printed


def test_https_is_verified_with_the_ca_that_proxy_ca_exports(door):
    project, _, exported = door
    assert f"curl --cacert {ca_file(project)} {url(project)}/" in exported
    assert ca_file(project).read_text().startswith("-----BEGIN CERTIFICATE-----")
    answer = requests.get(f"{url(project)}/", verify=str(ca_file(project)), timeout=10)
    assert (answer.status_code, answer.text) == (200, "Flask Hello world! Version 1\n")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url(project)}/", timeout=10)  # the system's CAs do not know it


def test_http_redirects_to_https_on_the_public_https_port(door):
    project, _, _ = door
    answer = requests.get(f"http://{host(project).endpoints['proxy.http_port']}/some/path?x=1",
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 301
    assert answer.headers["Location"] == f"https://127.0.0.1:{HTTPS_PORT}/some/path?x=1"


def hook(project, token: str) -> requests.Response:
    return requests.post(f"{url(project)}/hooks/{token}", json={}, verify=str(ca_file(project)), timeout=10)


def test_hooks_reach_the_webhook_and_a_wrong_token_gets_a_4xx(door):
    project, _, _ = door
    right = hook(project, project.env(ENV).state.secret("webhook_token"))
    assert right.status_code == 400 and right.json()["reason"] == "push_data missing or not an object"
    wrong = hook(project, "not-the-token")
    assert wrong.status_code == 404 and "X-Request-Id" in wrong.headers  # the listener's answer, not the app's


def test_the_token_stays_out_of_the_proxy_log_when_the_webhook_is_down(door):
    project, _, _ = door
    token = project.env(ENV).state.secret("webhook_token")
    host_run(project, ENV, "docker stop dockyard-webhook >/dev/null")
    try:
        assert hook(project, token).status_code == 502
    finally:
        host_run(project, ENV, "docker start dockyard-webhook >/dev/null")
    log = host_run(project, ENV, "docker logs dockyard-proxy 2>&1")
    assert '"uri":"/hooks/***"' in log and token not in log


def test_only_ssh_and_the_proxy_are_published(door):
    project, _, _ = door
    sandbox_host = docker.from_env().containers.get(host(project).provider["container"])
    published = {p.split("/")[0] for p, b in sandbox_host.attrs["NetworkSettings"]["Ports"].items() if b}
    assert published == {"22", "80", str(HTTPS_PORT)}
    app = serving(project, ENV)
    inside = inspect(project, ENV, app, "dockyard-webhook", "dockyard-proxy")
    assert inside[app]["HostConfig"]["PortBindings"] == {}
    assert inside["dockyard-webhook"]["HostConfig"]["PortBindings"] == {}
    assert set(inside["dockyard-proxy"]["HostConfig"]["PortBindings"]) == {"80/tcp", "443/tcp"}


def test_the_proxy_serves_dockyards_certificate_and_hands_a_reloads_queued_connections_over(door):
    project, _, _ = door
    issued = json.loads((project.state_dir / ENV / f"proxy-tls-{host(project).name}.json").read_text())
    assert host_run(project, ENV, "docker exec dockyard-proxy cat /etc/caddy/site.crt") == issued["certificate"]
    assert host_run(project, ENV, "docker exec dockyard-proxy cat /proc/sys/net/ipv4/tcp_migrate_req").strip() == "1"


def test_a_baseline_load_through_the_proxy_loses_no_request(door):
    project, _, _ = door
    load = Load(f"{url(project)}/", total=BASELINE_REQUESTS, threads=8, ca_file=ca_file(project))
    assert load.run() == []
    assert load.answers == {"Flask Hello world! Version 1\n": BASELINE_REQUESTS}
    print(f"\nbaseline through the proxy: {BASELINE_REQUESTS} requests over {load.threads} threads (keep-alive and "
          f"fresh connections) in {load.seconds:.1f}s, {len(load.failures)} failed")


def test_a_recreated_proxy_keeps_its_root_certificate(door):
    project, _, _ = door
    before = ca_file(project).read_text()
    host_run(project, ENV, "docker rm --force dockyard-proxy >/dev/null")
    result = project.invoke(ENV, "deploy")
    assert "run dockyard-proxy (missing)" in result.stdout
    project.invoke(ENV, "proxy.ca")
    assert ca_file(project).read_text() == before
    assert requests.get(f"{url(project)}/", verify=str(ca_file(project)), timeout=10).status_code == 200


def test_a_caddyfile_edited_on_the_host_is_repaired_by_deploy(door):
    project, _, _ = door
    # without its /hooks/ route, and live: the app answers /hooks/ now
    host_run(project, ENV, f"sed -i '/handle \\/hooks\\/\\*/,+2d' {CADDYFILE} && docker restart dockyard-proxy")
    # a Response is falsy on a 4xx: wait for any answer at all
    (edited,) = wait_for("the restarted proxy", lambda: (hook(project, "not-the-token"),), timeout=60)
    assert edited.status_code == 404 and "X-Request-Id" not in edited.headers

    result = project.invoke(ENV, "deploy")
    # Caddy reads it again in place: the front door stays open
    assert "write /etc/dockyard/proxy/Caddyfile (changed); reload dockyard-proxy (files rewritten)" in result.stdout
    assert "X-Request-Id" in hook(project, "not-the-token").headers
    assert "no changes (" in project.invoke(ENV, "deploy").stdout


def test_each_caddyfile_the_template_makes_is_one_caddy_accepts(door):
    """ACME for a domain with an email, and plain HTTP, validated by the Caddy that runs on the host."""
    project, _, _ = door
    env, record = project.env(ENV), host(project)
    for settings in ({"domain": "app.example.com", "email": "ops@example.com"}, {"tls": "off"}):
        services = replace(env.inventory.services, proxy=Proxy(**settings))
        target = Target(replace(env.inventory, provider="static", services=services), record, online=False)
        want = deploy.resolve(proxy.declare(target), target, {"proxy": BUILT}, deploy._templates(REPO / "templates"),
                              {"secrets": {}, "online": False})
        caddyfile = next(f for f in want.files if f.dest == CADDYFILE)
        check = replace(caddyfile, dest="/tmp/Caddyfile.check")
        validate = "caddy adapt --config /tmp/Caddyfile --adapter caddyfile --validate >/dev/null && echo valid"
        answer = host_run(project, ENV, f"""{write_file(check)}
docker cp {check.dest} dockyard-proxy:/tmp/Caddyfile
docker exec dockyard-proxy {validate}""")
        assert answer.strip() == "valid", caddyfile.content.decode()
