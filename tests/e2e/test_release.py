"""Releases and webhook redeploys on a sandbox host, from a push to the new version serving."""

import json
import ssl
import time
import urllib.error
import urllib.request

import docker
import pytest

from tests.conftest import REPO
from tests.e2e.helpers import door, host_run, serving

ENV = "t-release"
RELEASE_BOUND_SECONDS = 60


@pytest.fixture(scope="module")
def stack(module_project):
    module_project.copy_sources()
    module_project.inventory(ENV, """\
        provider: sandbox
        hosts:
          web1: {}
        services:
          mirror: {remote_url: "http://dockyard-registry:5000"}
          webhook:
            health_timeout: 15
            hub_repository: acme/flask-hello
            # Docker Hub cannot be reached from here: a Hub trigger pulls from the private registry instead
            hub_pull: 127.0.0.1:5000/flask-hello
        """)
    module_project.invoke(ENV, "provision", "deploy")
    yield module_project
    module_project.invoke(ENV, "teardown", "--yes", check=False)


def set_app(project, version: int, healthy: bool = True) -> None:
    """The project's app, changed from the repository's own to `version`, optionally failing its health check."""
    text = (REPO / "apps" / "flask-hello" / "app.py").read_text().replace("VERSION = 1", f"VERSION = {version}")
    if not healthy:
        text = text.replace('return {"status": "ok", "version": VERSION}', 'return {"status": "broken"}, 500')
    (project.sources / "apps" / "flask-hello" / "app.py").write_text(text)


def trusted(project) -> ssl.SSLContext:
    """https verified against the proxy's internal CA."""
    return ssl.create_default_context(cafile=door(project, ENV)[1])


def get(url: str, context: ssl.SSLContext) -> str:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return response.read().decode()


def post(url: str, body: bytes, context: ssl.SSLContext, content_type: str = "application/json") -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (ConnectionError, urllib.error.URLError):
        return 0  # the listener may close the connection on a body it refuses to read


def app_url(project) -> str:
    return f"{door(project, ENV)[0]}/"


def hook_url(project, token: str) -> str:
    return f"{door(project, ENV)[0]}/hooks/{token}"


def app_container(project) -> tuple[str, str, str]:
    """The app container that serves: its slot, id and start time."""
    name = serving(project, ENV)
    fields = "{{.Id}} {{.State.StartedAt}}"
    return name, *host_run(project, ENV, f"docker inspect --format '{fields}' {name}").split()


def wait_for(url: str, context: ssl.SSLContext, text: str, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if text in get(url, context):
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {text!r} within {seconds}s")


def hub_payload(tag: str, repo_name: str = "acme/flask-hello") -> bytes:
    namespace, name = repo_name.split("/")
    return json.dumps({
        "push_data": {"tag": tag, "pusher": "acme"},
        "repository": {"repo_name": repo_name, "namespace": namespace, "name": name},
    }).encode()


def test_deploy_serves_version_1(stack):
    assert get(app_url(stack), trusted(stack)) == "Flask Hello world! Version 1\n"


def test_release_serves_version_2_within_a_bounded_time(stack):
    set_app(stack, 2)
    started = time.monotonic()
    result = stack.invoke(ENV, "app.release", "--version", "v2")
    took = time.monotonic() - started
    assert "flask-hello:v2 serving (push" in result.stdout
    assert get(app_url(stack), trusted(stack)) == "Flask Hello world! Version 2\n"
    print(f"\nrelease v2: {took:.1f}s from `invoke app.release` to serving ({result.stdout.strip().splitlines()[-1]})")
    assert took < RELEASE_BOUND_SECONDS


def test_a_docker_hub_payload_with_the_right_token_redeploys(stack):
    set_app(stack, 3)
    stack.invoke(ENV, "app.release", "--version", "v3")
    context = trusted(stack)
    assert get(app_url(stack), context) == "Flask Hello world! Version 3\n"
    token = json.loads((stack.state_dir / ENV / "secrets.json").read_text())["webhook_token"]
    assert post(hook_url(stack, token), hub_payload("v2"), context) == 202
    took = wait_for(app_url(stack), context, "Version 2", 60)
    print(f"\nDocker Hub trigger to Version 2 serving: {took:.1f}s")
    # the listener writes its entry once Docker calls the new container healthy, just after it serves
    for _ in range(30):
        history = stack.invoke(ENV, "app.history").stdout
        if "hub" in history:
            break
        time.sleep(1)
    assert any(line.split()[1:3] == ["hub", "v2"] and "success" in line for line in history.splitlines())


@pytest.mark.parametrize("case", ["wrong token", "wrong repository", "malformed JSON", "10 MB body"])
def test_bad_triggers_are_refused_and_leave_the_app_untouched(stack, case):
    token = json.loads((stack.state_dir / ENV / "secrets.json").read_text())["webhook_token"]
    before = app_container(stack)
    url, body = {
        "wrong token": (hook_url(stack, "x" * 43), hub_payload("v3")),
        "wrong repository": (hook_url(stack, token), hub_payload("v3", repo_name="evil/flask-hello")),
        "malformed JSON": (hook_url(stack, token), b'{"push_data": {"tag": "v3"'),
        "10 MB body": (hook_url(stack, token), b"{" + b" " * (10 * 1024 * 1024) + b"}"),
    }[case]
    context = trusted(stack)
    status = post(url, body, context)
    assert status == 0 or 400 <= status < 500
    time.sleep(2)  # a redeploy, had one been queued, would have begun by now
    assert app_container(stack) == before
    assert get(app_url(stack), context) == "Flask Hello world! Version 2\n"


def test_a_broken_release_leaves_version_2_serving_and_shows_in_history(stack):
    set_app(stack, 4, healthy=False)
    result = stack.invoke(ENV, "app.release", "--version", "v4", check=False)
    assert result.returncode == 1
    assert "release flask-hello:v4 failed" in result.stderr
    assert "the previous version still serves" in result.stderr
    assert get(app_url(stack), trusted(stack)) == "Flask Hello world! Version 2\n"
    history = stack.invoke(ENV, "app.history").stdout
    (line,) = [line for line in history.splitlines() if " v4 " in line]
    assert " failure " in line and "not healthy after 15s" in line


def test_a_later_deploy_of_the_released_source_keeps_the_app_running(stack):
    set_app(stack, 2)
    before = app_container(stack)
    result = stack.invoke(ENV, "deploy")
    # the image is on the host already, as v2: deploy only gives it its own tag
    assert "web1       app          changed" in result.stdout
    assert "tag 127.0.0.1:5000/flask-hello:deploy-" in result.stdout
    assert app_container(stack) == before
    assert get(app_url(stack), trusted(stack)) == "Flask Hello world! Version 2\n"
    assert "no changes" in stack.invoke(ENV, "deploy").stdout


def test_the_webhook_container_holds_the_docker_socket_and_only_ssh_and_the_proxy_are_published(stack):
    env = stack.env(ENV)
    (record,) = env.hosts()
    container = docker.from_env().containers.get(record.provider["container"])
    published = {p.split("/")[0] for p, b in container.attrs["NetworkSettings"]["Ports"].items() if b}
    assert published == {"22", "80", "443"}
