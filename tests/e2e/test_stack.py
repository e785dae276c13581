"""The whole stack on a sandbox host: provision deploy from nothing, probe each service, converge again."""

import json
import ssl
import urllib.error
import urllib.request
from contextlib import contextmanager

import docker
import pytest

from dockyard import deploy
from tests.conftest import SANDBOX_STACK
from tests.e2e.helpers import CONTAINERS, door

ENV = "t-stack"


@pytest.fixture(scope="module")
def stack(module_project):
    module_project.copy_sources()
    module_project.inventory(ENV, SANDBOX_STACK)
    result = module_project.invoke(ENV, "provision", "deploy")
    yield module_project, result
    module_project.invoke(ENV, "teardown", "--yes", check=False)


MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def http(url: str, method: str = "GET", data: bytes | None = None, headers=None, ca=None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextmanager
def tunnel(project, port: int):
    env = project.env(ENV)
    (record,) = env.hosts()
    with env.connect(record) as conn, conn.tunnel(port) as local:
        yield f"http://127.0.0.1:{local}", conn


def started_at(project) -> dict[str, str]:
    env = project.env(ENV)
    (record,) = env.hosts()
    with env.connect(record) as conn:
        seen = deploy.read_facts(conn)
    return {name: c.started_at for name, c in seen.containers.items()}


def test_cold_deploy_reports_each_step_and_the_service_urls(stack):
    _, result = stack
    for role in ("docker", "registry", "mirror", "registry_ui", "proxy", "app", "webhook"):
        assert f"web1       {role:<12} changed" in result.stdout
    assert "host  service      url" in result.stdout
    assert "web1  registry     127.0.0.1:5000 on the host (invoke registry.tunnel)" in result.stdout


def test_the_app_answers_version_1_through_the_proxy(stack):
    project, _ = stack
    url, ca = door(project, ENV)
    assert http(f"{url}/", ca=ca) == (200, "Flask Hello world! Version 1\n")
    status, body = http(f"{url}/healthz", ca=ca)
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_the_registry_catalog_lists_the_app(stack):
    project, _ = stack
    with tunnel(project, 5000) as (url, _):
        status, body = http(f"{url}/v2/_catalog")
    assert status == 200
    assert "flask-hello" in json.loads(body)["repositories"]


def test_the_mirror_pulls_through_and_refuses_pushes(stack):
    project, _ = stack
    with tunnel(project, 5000) as (registry, _):
        tags = json.loads(http(f"{registry}/v2/flask-hello/tags/list")[1])["tags"]
    with tunnel(project, 5001) as (mirror, conn):
        status, body = http(f"{mirror}/v2/flask-hello/manifests/{tags[0]}", headers={"Accept": MANIFEST_TYPES})
        assert status == 200, body
        # the host's engine pulls through it as through any registry
        conn.run(f"docker pull --quiet 127.0.0.1:5001/flask-hello:{tags[0]}")
        status, body = http(f"{mirror}/v2/pushed/blobs/uploads/", method="POST", data=b"")
    assert status == 405
    assert "UNSUPPORTED" in body


def test_the_ui_page_loads(stack):
    project, _ = stack
    with tunnel(project, 8080) as (url, _):
        status, body = http(f"{url}/")
    assert status == 200
    assert "dockyard registry" in body


def test_the_webhook_answers_hooks_through_the_proxy(stack):
    project, _ = stack
    url, ca = door(project, ENV)
    status, body = http(f"{url}/hooks/not-the-token", "POST", b"{}", {"Content-Type": "application/json"}, ca=ca)
    assert (status, json.loads(body)["reason"]) == (404, "not found")


def test_a_second_deploy_restarts_nothing(stack):
    project, _ = stack
    before = started_at(project)
    result = project.invoke(ENV, "deploy")
    assert "no changes (" in result.stdout
    assert "1 SSH connection(s), 1 remote command(s)" in result.stdout
    assert started_at(project) == before
    assert set(before) == set(CONTAINERS)


def test_plan_prints_changes_without_making_them(stack):
    project, _ = stack
    template = project.sources / "templates" / "mirror" / "config.yml.j2"
    original = template.read_text()
    template.write_text(original.replace("level: info", "level: debug"))
    try:
        before = started_at(project)
        result = project.invoke(ENV, "plan")
        assert "web1       mirror       change" in result.stdout
        assert "recreate dockyard-mirror (config)" in result.stdout
        assert "web1       registry     ok" in result.stdout
        assert started_at(project) == before
    finally:
        template.write_text(original)


def test_a_changed_registry_template_restarts_only_the_registry_and_keeps_its_images(stack):
    project, _ = stack
    before = started_at(project)
    template = project.sources / "templates" / "registry" / "config.yml.j2"
    template.write_text(template.read_text().replace("threshold: 3", "threshold: 5"))

    result = project.invoke(ENV, "deploy")
    assert "web1       registry     changed" in result.stdout
    assert "recreate dockyard-registry (config)" in result.stdout
    after = started_at(project)
    assert [name for name in CONTAINERS if after[name] != before[name]] == ["dockyard-registry"]
    with tunnel(project, 5000) as (url, _):
        assert "flask-hello" in json.loads(http(f"{url}/v2/_catalog")[1])["repositories"]


def test_teardown_removes_everything(stack):
    project, _ = stack
    project.invoke(ENV, "teardown", "--yes")
    client = docker.from_env()
    selector = {"label": f"dockyard.env={ENV}"}
    assert client.containers.list(all=True, filters=selector) == []
    assert client.volumes.list(filters=selector) == []
    assert client.networks.list(filters=selector) == []
    assert not (project.state_dir / ENV).exists()
