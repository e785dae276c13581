"""The webhook listener without Docker: parsing, allowlist, spec translation, coalescing, the HTTP surface."""

from __future__ import annotations

import fcntl
import http.client
import io
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import docker.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard import deploy, inventory
from dockyard import lock as host_lock
from dockyard.commands import containers
from dockyard.contract import SPEC_LABEL
from dockyard.images import Built
from dockyard.spec import ContainerSpec, Health, Target
from dockyard.state import HostRecord
from roles import app, webhook
from tests.conftest import PROXY_TLS, REPO

sys.path.insert(0, str(REPO / "images" / "webhook"))
import listener  # noqa: E402
import redeploy  # noqa: E402
import triggers  # noqa: E402
from redeploy import Coalescer, Outcome  # noqa: E402
from triggers import Config, PayloadError, Trigger  # noqa: E402

HUB_TOKEN = "hub-token-0123456789abcdef"
REGISTRY_TOKEN = "registry-token-0123456789abcdef"
CONFIG = Config(
    hub_token=HUB_TOKEN, registry_token=REGISTRY_TOKEN, registry="127.0.0.1:5000", app_repository="flask-hello",
    tags=("*",), hub_repository="acme/flask-hello", hub_pull="acme/flask-hello", health_timeout=30,
    proxy="dockyard-proxy",
)


def hub_payload(tag="v2", repo_name="acme/flask-hello", namespace="acme", **extra) -> dict:
    """Docker Hub's documented example, trimmed to what matters plus the noise it always carries."""
    return {
        "push_data": {"pushed_at": 1417566161, "pusher": "trustedbuilder", "tag": tag},
        "repository": {
            "repo_name": repo_name, "namespace": namespace, "name": repo_name.rpartition("/")[2],
            "is_private": True, "star_count": 0, "description": "", "repo_url": "https://hub.docker.com/r/x",
        },
        **extra,
    }


def registry_envelope(*events: dict) -> dict:
    return {"events": list(events)}


def push_event(repository="flask-hello", tag: str | None = "v2", action="push") -> dict:
    target = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 708,
        "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
        "repository": repository, "url": "http://127.0.0.1:5000/v2/flask-hello/manifests/sha256:fea8",
    }
    if tag is not None:
        target["tag"] = tag
    return {"id": "320678d8", "timestamp": "2026-11-28T01:00:00Z", "action": action, "target": target,
            "request": {"id": "6a6f", "method": "PUT"}, "actor": {}, "source": {"addr": "registry:5000"}}


def encode(value) -> bytes:
    return json.dumps(value).encode()


# --- Docker Hub payloads ---

def test_hub_payload_gives_its_tag_repository_and_callback():
    body = encode(hub_payload(callback_url="https://registry.hub.docker.com/u/acme/flask-hello/hook/2141b5/"))
    assert triggers.parse_hub_payload(body) == Trigger(
        "hub", "acme/flask-hello", "v2", "https://registry.hub.docker.com/u/acme/flask-hello/hook/2141b5/"
    )


@pytest.mark.parametrize("body, complaint", [
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[]", "not an object"),
    (b'{"push_data": {"tag": NaN}}', "not valid JSON"),
    (b'{"push_data": {}, "push_data": {}}', "not valid JSON"),
    (encode({"repository": {}}), "push_data"),
    (encode(hub_payload(tag="")), "push_data.tag"),
    (encode(hub_payload(tag="-leading-dash")), "push_data.tag"),
    (encode(hub_payload(tag="a" * 129)), "push_data.tag"),
    (encode(hub_payload(tag="v1; rm -rf /")), "push_data.tag"),
    (encode(hub_payload(tag="v1\n")), "push_data.tag"),
    (encode(hub_payload(tag=7)), "push_data.tag"),
    (encode(hub_payload(repo_name="Acme/App", namespace="Acme")), "repo_name"),
    (encode(hub_payload(repo_name="acme/../etc")), "repo_name"),
    (encode(hub_payload(namespace="other")), "namespace"),
    (encode(hub_payload(callback_url="file:///etc/passwd")), "callback_url"),
    (encode(hub_payload(callback_url="http://")), "callback_url"),
    (encode(hub_payload(callback_url="http://x:port/")), "callback_url"),
    (encode(hub_payload(callback_url="http://x/ y")), "callback_url"),
    (encode(hub_payload(callback_url=["http://x/"])), "callback_url"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_hub_payload_refuses(body, complaint):
    with pytest.raises(PayloadError, match=complaint.replace(".", r"\.")):
        triggers.parse_hub_payload(body)


# --- registry notifications ---

def test_registry_envelope_keeps_only_tagged_pushes_in_order():
    envelope = registry_envelope(
        push_event(tag=None),  # a layer, or a manifest pushed by digest
        push_event(tag="v2"),
        push_event(action="pull"),
        push_event(repository="other", tag="v3"),
        push_event(action="delete", tag="v1"),
    )
    assert triggers.parse_registry_envelope(encode(envelope)) == [
        Trigger("registry", "flask-hello", "v2"), Trigger("registry", "other", "v3"),
    ]


def test_registry_envelope_without_events_is_valid_and_empty():
    assert triggers.parse_registry_envelope(encode(registry_envelope())) == []


@pytest.mark.parametrize("envelope, complaint", [
    ({}, "events"),
    ({"events": {}}, "events"),
    ({"events": [1]}, r"events\[0\] is not an object"),
    ({"events": [{"target": {}}]}, "action"),
    ({"events": [{"action": "push"}]}, "target"),
    ({"events": [push_event(tag="v 2")]}, "tag"),
    ({"events": [push_event(tag=2)]}, "tag"),
    ({"events": [push_event(repository="UPPER")]}, "repository"),
    ({"events": [push_event(repository="a" * 256)]}, "repository"),
    ({"events": [push_event()] * 101}, "more than 100"),
])
def test_registry_envelope_refuses(envelope, complaint):
    with pytest.raises(PayloadError, match=complaint):
        triggers.parse_registry_envelope(encode(envelope))


# --- garbage never escapes as anything but PayloadError ---

PARSERS = [triggers.parse_hub_payload, triggers.parse_registry_envelope]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
# Shapes close to valid ones reach the deeper checks.
near_hub = st.fixed_dictionaries({
    "push_data": st.fixed_dictionaries({"tag": json_values}) | json_values,
    "repository": st.fixed_dictionaries({"repo_name": json_values, "namespace": json_values}) | json_values,
    "callback_url": json_values,
})
near_registry = st.fixed_dictionaries({"events": st.lists(
    st.fixed_dictionaries({"action": st.sampled_from(["push", "pull"]) | json_values,
                           "target": st.fixed_dictionaries({"repository": json_values, "tag": json_values})
                           | json_values}) | json_values,
    max_size=4,
)})


def survives(parser, body: bytes) -> None:
    try:
        parser(body)
    except PayloadError:
        pass


@pytest.mark.parametrize("parser", PARSERS)
@given(body=st.binary(max_size=2048))
def test_random_bytes_raise_only_payload_error(parser, body):
    survives(parser, body)


@pytest.mark.parametrize("parser", PARSERS)
@given(value=json_values | near_hub | near_registry)
def test_random_json_raises_only_payload_error(parser, value):
    survives(parser, encode(value))


@pytest.mark.parametrize("parser", PARSERS)
@given(depth=st.integers(1, 60_000), opener=st.sampled_from(['[', '{"a":', '{"events":[']))
@settings(max_examples=25, deadline=None)  # timing varies with the machine's load
def test_deep_nesting_raises_only_payload_error(parser, depth, opener):
    survives(parser, (opener * depth).encode())


@pytest.mark.parametrize("parser", PARSERS)
@given(size=st.integers(1_000, 60_000), char=st.characters())
@settings(max_examples=25, deadline=None)  # timing varies with the machine's load
def test_huge_strings_raise_only_payload_error(parser, size, char):
    huge = char * size
    survives(parser, encode(hub_payload(tag=huge, repo_name=huge, namespace=huge, callback_url=huge)))
    survives(parser, encode(registry_envelope(push_event(repository=huge, tag=huge))))
    survives(parser, b'{"x": ' + b"9" * size + b"}")


tags = st.from_regex(triggers.TAG, fullmatch=True)
components = st.from_regex(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", fullmatch=True).filter(lambda c: len(c) < 60)
https_urls = st.builds(lambda host, path: f"https://{host}.example/{path}",
                       st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
                       st.from_regex(r"[A-Za-z0-9/_.-]{0,40}", fullmatch=True))


@given(tag=tags, namespace=components, name=components, callback=st.none() | https_urls)
def test_valid_hub_payloads_round_trip(tag, namespace, name, callback):
    extra = {"callback_url": callback} if callback else {}
    payload = hub_payload(tag=tag, repo_name=f"{namespace}/{name}", namespace=namespace, **extra)
    assert triggers.parse_hub_payload(encode(payload)) == Trigger("hub", f"{namespace}/{name}", tag, callback)


@settings(max_examples=40, deadline=None)  # timing varies with the machine's load
@given(pushes=st.lists(st.tuples(st.lists(components, min_size=1, max_size=3).map("/".join), tags), max_size=10))
def test_valid_registry_envelopes_round_trip(pushes):
    envelope = registry_envelope(*(push_event(repository, tag) for repository, tag in pushes))
    assert triggers.parse_registry_envelope(encode(envelope)) == [Trigger("registry", r, t) for r, t in pushes]


# --- the allowlist ---

@pytest.mark.parametrize("trigger, config, reason", [
    (Trigger("registry", "flask-hello", "v2"), CONFIG, None),
    (Trigger("hub", "acme/flask-hello", "v2"), CONFIG, None),
    (Trigger("registry", "other", "v2"), CONFIG, "repository other is not flask-hello"),
    (Trigger("registry", "acme/flask-hello", "v2"), CONFIG, "repository acme/flask-hello is not flask-hello"),
    (Trigger("hub", "flask-hello", "v2"), CONFIG, "repository flask-hello is not acme/flask-hello"),
    (Trigger("hub", "acme/flask-hello", "v2"), replace(CONFIG, hub_repository=None), "no hub_repository"),
    (Trigger("registry", "flask-hello", "deploy-abc123"), CONFIG, "dockyard deploy's own push"),
    (Trigger("registry", "flask-hello", "latest"), replace(CONFIG, tags=("v*", "release-*")), "matches none"),
    (Trigger("registry", "flask-hello", "release-7"), replace(CONFIG, tags=("v*", "release-*")), None),
    (Trigger("registry", "flask-hello", "V2"), replace(CONFIG, tags=("v*",)), "matches none"),  # case counts
])
def test_refusal(trigger, config, reason):
    found = triggers.refusal(trigger, config)
    if reason is None:
        assert found is None
    else:
        assert reason in found


def test_image_for_each_source():
    assert CONFIG.image_for(Trigger("registry", "flask-hello", "v2")) == "127.0.0.1:5000/flask-hello:v2"
    assert CONFIG.image_for(Trigger("hub", "acme/flask-hello", "v2")) == "acme/flask-hello:v2"


# --- the files deploy renders: config.json and container.json ---

def rendered(role_module, tmp_path: Path, **webhook_settings) -> dict[str, Path]:
    services = replace(inventory.Services(), webhook=replace(inventory.Webhook(), **webhook_settings))
    inv = replace(inventory.parse({"provider": "sandbox", "hosts": {"web1": {}}}, env="t",
                                  path=REPO / "inventory" / "t.yml"), services=services)
    target = Target(inv, HostRecord("web1", "127.0.0.1", 2222, "ubuntu", inventory.ROLES), False,
                    proxy_tls=PROXY_TLS)
    built = {"app": Built("dockyard/app:abc", "sha256:app", True), "webhook": Built("dockyard/webhook:abc", "x", True)}
    values = {"secrets": {n: f"s3cret-{n}-0123456789" for n in deploy.SECRETS}, "online": False}
    want = deploy.resolve(role_module.declare(target), target, built, deploy._templates(REPO / "templates"), values)
    paths = {}
    for file in want.files:
        paths[Path(file.dest).name] = tmp_path / Path(file.dest).name
        paths[Path(file.dest).name].write_bytes(file.content)
    return paths


def test_config_rendered_by_deploy_loads(tmp_path):
    path = rendered(webhook, tmp_path, hub_repository="acme/flask-hello", tags=("v*",))["config.json"]
    assert triggers.load_config(path) == Config(
        hub_token="s3cret-webhook_token-0123456789", registry_token="s3cret-notify_token-0123456789",
        registry="127.0.0.1:5000", app_repository="flask-hello", tags=("v*",), hub_repository="acme/flask-hello",
        hub_pull="acme/flask-hello", health_timeout=60.0, proxy="dockyard-proxy",
    )


def test_config_without_hub_repository_loads(tmp_path):
    config = triggers.load_config(rendered(webhook, tmp_path)["config.json"])
    assert (config.hub_repository, config.hub_pull) == (None, None)


@pytest.mark.parametrize("change, complaint", [
    ({"hub_token": ""}, "hub_token shorter"),
    ({"registry_token": None}, "registry_token missing"),
    ({"tags": []}, "tags"),
    ({"tags": "*"}, "tags"),
    ({"app_repository": "Flask"}, "app_repository"),
    ({"hub_pull": "a b"}, "hub_pull"),
    ({"registry": "http://127.0.0.1:5000"}, "registry"),
    ({"health_timeout": 0}, "health_timeout"),
    ({"health_timeout": True}, "health_timeout"),
    ({"proxy": "a b"}, "proxy 'a b' is not a container name"),
    ({"proxy": None}, "proxy missing"),
])
def test_config_refuses(tmp_path, change, complaint):
    path = rendered(webhook, tmp_path)["config.json"]
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(triggers.ConfigError, match=complaint):
        triggers.load_config(path)


def test_app_spec_rendered_by_deploy_becomes_the_same_container(tmp_path):
    doc = redeploy.read_app_spec(rendered(app, tmp_path)["container.json"])
    args = redeploy.create_args(doc, "127.0.0.1:5000/flask-hello:v2", {SPEC_LABEL: "0123abcd"}, {})
    assert args == {
        "image": "127.0.0.1:5000/flask-hello:v2",
        "name": "dockyard-app",
        "command": None,
        "environment": {},
        "labels": {"dockyard.role": "app", SPEC_LABEL: "0123abcd"},
        "ports": {},  # reached through the proxy
        "volumes": [],
        "network": "dockyard",
        "restart_policy": {"Name": "always", "MaximumRetryCount": 0},
        "log_config": {"Type": "", "Config": {"max-size": "10m", "max-file": "3"}},
        "detach": True,
        "healthcheck": {
            "test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8000/healthz"],
            "interval": 2_000_000_000, "timeout": 3_000_000_000, "retries": 3,
        },
    }


def test_every_field_of_a_spec_carries_over():
    spec = ContainerSpec(
        name="dockyard-app", image="old", ports=("127.0.0.1:8000:8000", "9090:90/udp", "[::1]:8443:443", "7000"),
        volumes=("/srv/data:/data:ro", "named:/cache"), env=(("A", "1"), ("B", "x=y")), command=("gunicorn", "-w", "2"),
        restart="on-failure:3", network="net", health=None, labels=(("team", "web"),),
    )
    args = redeploy.create_args(containers.container_document(spec, "app"), "new", {}, {})
    assert args["ports"] == {
        "8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}],
        "90/udp": [{"HostIp": "", "HostPort": "9090"}],
        "443/tcp": [{"HostIp": "::1", "HostPort": "8443"}],
        "7000/tcp": [{"HostIp": "", "HostPort": ""}],
    }
    assert args["volumes"] == ["/srv/data:/data:ro", "named:/cache"]
    assert args["environment"] == {"A": "1", "B": "x=y"}
    assert args["command"] == ["gunicorn", "-w", "2"]
    assert args["restart_policy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    # no digest is known here, and none is invented
    assert args["labels"] == {"team": "web", "dockyard.role": "app"}
    assert "healthcheck" not in args


@pytest.mark.parametrize("change, complaint", [
    ({"ports": "8000:8000"}, "ports"),
    ({"env": {"A": 1}}, r"env missing or not dict\[str, str\]"),
    ({"health": {"command": "true", "interval_s": "2s", "timeout_s": 3, "retries": 3}}, "health.interval_s"),
    ({"name": None}, "name"),
])
def test_app_spec_refuses(tmp_path, change, complaint):
    path = rendered(app, tmp_path)["container.json"]
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(redeploy.SpecError, match=complaint):
        redeploy.read_app_spec(path)


@pytest.mark.parametrize("content, complaint", [
    (None, "unreadable"),
    ("", "names no container"),
    ("to dockyard-app-blue\n", "names no container"),
    ("to dockyard-app-blue:8000; rm -rf /\n", "names no container"),
])
def test_the_upstream_file_names_one_container_and_port(tmp_path, content, complaint):
    path = tmp_path / "app.upstream"
    if content is not None:
        path.write_text(content)
    with pytest.raises(redeploy.SpecError, match=complaint):
        redeploy.read_upstream(path)
    path.write_text("to dockyard-app-green:8000\n")
    assert redeploy.read_upstream(path) == ("dockyard-app-green", 8000)


class FlakyRegistry:
    """A Docker client whose pulls answer "manifest unknown" `misses` times, as the registry did once just after
    notifying a push, then succeed."""

    def __init__(self, misses: int, error: str = "manifest unknown"):
        self.misses, self.error, self.pulls = misses, error, 0
        self.images = self

    def pull(self, repository, tag):
        self.pulls += 1
        if self.pulls <= self.misses:
            raise docker.errors.NotFound(f"manifest for {repository}:{tag} not found: {self.error}: {self.error}")
        return f"pulled {repository}:{tag}"


def test_a_pull_right_after_the_push_is_tried_again_briefly(monkeypatch):
    monkeypatch.setattr(redeploy, "POLL_INTERVAL", 0.01)
    client = FlakyRegistry(misses=2)
    assert redeploy.pull(client, "127.0.0.1:5000/flask-hello:v2") == "pulled 127.0.0.1:5000/flask-hello:v2"
    assert client.pulls == 3
    # any other refusal fails at once, and a tag that never comes fails after a few seconds
    with pytest.raises(docker.errors.NotFound):
        redeploy.pull(FlakyRegistry(misses=1, error="unauthorized"), "a:b")
    monkeypatch.setattr(redeploy, "PULL_RETRY_SECONDS", 0.1)
    with pytest.raises(docker.errors.NotFound):
        redeploy.pull(FlakyRegistry(misses=10**6), "a:b")


class StartingContainer:
    """A container whose readiness probe fails `failures` times: the first `refused` runs find it not running yet."""

    name = "dockyard-app-green"

    def __init__(self, failures: int, refused: int = 0):
        self.failures, self.refused, self.probes = failures, refused, []
        self.attrs = {"State": {"Status": "running", "Health": {"Status": "starting"}}}

    def exec_run(self, command):
        self.probes.append(command)
        if len(self.probes) <= self.refused:
            raise docker.errors.APIError("container is not running")
        return SimpleNamespace(exit_code=0 if len(self.probes) > self.failures else 1, output=b"")

    def reload(self):
        self.attrs["State"]["Health"]["Status"] = "unhealthy"


def test_the_new_slot_is_ready_once_its_health_check_passes_when_run_inside_it(monkeypatch):
    monkeypatch.setattr(redeploy, "READY_INTERVAL_S", 0.001)
    container = StartingContainer(failures=3, refused=1)
    probe = ("sh", "-c", "wget -q -O /dev/null http://127.0.0.1:8000/healthz")
    redeployer = redeploy.Redeployer(None, Path("spec"), Path("upstream"), "proxy", 5)
    assert redeployer._wait_ready(container, "reg/app:2", probe) is None
    assert container.probes == [list(probe)] * 4


def test_a_slot_never_ready_fails_after_the_health_timeout_with_dockers_status(monkeypatch):
    monkeypatch.setattr(redeploy, "READY_INTERVAL_S", 0.01)
    container = StartingContainer(failures=10**6)
    redeployer = redeploy.Redeployer(None, Path("spec"), Path("upstream"), "proxy", 0.2)
    started = time.monotonic()
    problem = redeployer._wait_ready(container, "reg/app:3", ("true",))
    assert 0.2 <= time.monotonic() - started < 2
    assert problem == "dockyard-app-green not healthy after 0.2s on reg/app:3 (unhealthy)"
    assert len(container.probes) > 3


def test_app_spec_missing(tmp_path):
    with pytest.raises(redeploy.SpecError, match="unreadable"):
        redeploy.read_app_spec(tmp_path / "container.json")


# --- coalescing ---

class SlowWork:
    """A fake redeploy: records what ran and whether two ever overlapped; the first run waits for a go."""

    def __init__(self):
        self.ran: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()
        self.first_started = threading.Event()
        self.go = threading.Event()

    def __call__(self, tag: str) -> None:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.first_started.set()
        self.go.wait(5)
        time.sleep(0.01)
        with self.lock:
            self.ran.append(tag)
            self.running -= 1


def test_a_burst_during_a_slow_redeploy_ends_with_the_newest_and_never_overlaps():
    work = SlowWork()
    queue = Coalescer(work)
    queue.submit("v0")
    assert work.first_started.wait(5)
    replaced = [queue.submit(f"v{i}") for i in range(1, 20)]
    work.go.set()
    queue.close(timeout=5)
    assert work.ran == ["v0", "v19"]
    assert work.most_at_once == 1
    assert replaced == [None, *(f"v{i}" for i in range(1, 19))]


def test_concurrent_submitters_never_overlap_and_the_last_submitted_runs_last():
    work = SlowWork()
    work.go.set()
    queue = Coalescer(work)
    last = threading.Lock()
    order: list[str] = []

    def submit_many(thread: int):
        for i in range(20):
            with last:  # the lock only records the true submission order
                tag = f"t{thread}-{i}"
                queue.submit(tag)
                order.append(tag)

    threads = [threading.Thread(target=submit_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.close(timeout=10)
    assert work.most_at_once == 1
    assert work.ran[-1] == order[-1]
    assert len(work.ran) == len(set(work.ran)) <= len(order)


def test_the_worker_survives_a_failing_redeploy(caplog):
    ran = []

    def work(tag):
        ran.append(tag)
        if tag == "bad":
            raise RuntimeError("boom")

    queue = Coalescer(work)
    queue.submit("bad")
    time.sleep(0.1)
    queue.submit("good")
    queue.close(timeout=5)
    assert ran == ["bad", "good"]
    assert "boom" in caplog.text


def test_a_closed_coalescer_takes_no_more():
    queue = Coalescer(lambda item: None)
    queue.close(timeout=5)
    with pytest.raises(RuntimeError):
        queue.submit("late")


# --- one redeploy's bookkeeping: history line and Docker Hub callback ---

class FakeRedeployer:
    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        self.images: list[str] = []

    def redeploy(self, image: str) -> Outcome:
        self.images.append(image)
        return self.outcome


class CallbackReceiver:
    """A local HTTP server that records POSTs, standing in for Docker Hub's callback URL."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(302 if self.path == "/redirect" else 200)
                self.send_header("Location", "/elsewhere")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = CallbackReceiver()
    yield r
    r.close()


BEFORE = {"id": "sha256:1", "image": "127.0.0.1:5000/flask-hello:deploy-1", "digests": [], "container": "aaa"}
AFTER = {"id": "sha256:2", "image": "127.0.0.1:5000/flask-hello:v2", "digests": [], "container": "bbb"}


def test_a_redeploy_appends_one_history_line(tmp_path):
    history = tmp_path / "history.jsonl"
    fake = FakeRedeployer(Outcome("success", "", "127.0.0.1:5000/flask-hello:v2", BEFORE, AFTER))
    service = listener.Service(CONFIG, fake, history, listener.HostLock(tmp_path / "lock"))
    service.run(Trigger("registry", "flask-hello", "v2", request_id="r1"))
    service.run(Trigger("registry", "flask-hello", "v2", request_id="r2"))
    service.queue.close()
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert fake.images == ["127.0.0.1:5000/flask-hello:v2"] * 2
    assert [line["trigger"]["request_id"] for line in lines] == ["r1", "r2"]
    entry = lines[0]
    assert entry.pop("started").endswith("Z") and entry.pop("duration_s") >= 0
    assert entry == {
        "trigger": {"source": "registry", "repository": "flask-hello", "tag": "v2", "request_id": "r1"},
        "image": "127.0.0.1:5000/flask-hello:v2", "result": "success", "reason": "", "before": BEFORE, "after": AFTER,
    }


def test_the_history_reads_as_invoke_app_history_reads_it(tmp_path):
    from dockyard import report

    fake = FakeRedeployer(Outcome("success", "", "x", BEFORE, AFTER))
    service = listener.Service(CONFIG, fake, tmp_path / "h", listener.HostLock(tmp_path / "lock"))
    service.run(Trigger("registry", "flask-hello", "v2", request_id="r1"))
    service.queue.close()
    out = report.Reporter(io.StringIO())
    report.history(out, "web1", [json.loads((tmp_path / "h").read_text())])
    lines = out.stream.getvalue().splitlines()
    assert lines[0] == "web1: 1 redeploy(s)"
    assert lines[1].split() == ["when", "trigger", "tag", "before", "after", "result", "took", "why"]
    assert lines[2].split()[1:6] == ["registry", "v2", "1", "2", "success"]


@pytest.mark.parametrize("result, state", [("success", "success"), ("rolled-back", "failure"), ("failure", "failure")])
def test_docker_hub_hears_how_it_ended(tmp_path, receiver, result, state):
    fake = FakeRedeployer(Outcome(result, "why" if result != "success" else "", "acme/flask-hello:v2"))
    service = listener.Service(CONFIG, fake, tmp_path / "history.jsonl", listener.HostLock(tmp_path / "lock"))
    service.run(Trigger("hub", "acme/flask-hello", "v2", f"{receiver.url}/cb", "r1"))
    service.queue.close()
    assert receiver.received[0][0] == "/cb"
    assert receiver.received[0][1]["state"] == state
    assert receiver.received[0][1]["context"] == "dockyard"
    assert result in receiver.received[0][1]["description"]


def test_docker_hub_hears_when_its_push_was_superseded(tmp_path, receiver):
    class Held(FakeRedeployer):
        def __init__(self):
            super().__init__(Outcome("success", "", "x"))
            self.started, self.go = threading.Event(), threading.Event()

        def redeploy(self, image):
            self.started.set()
            self.go.wait(5)
            return super().redeploy(image)

    held = Held()
    service = listener.Service(CONFIG, held, tmp_path / "history.jsonl", listener.HostLock(tmp_path / "lock"))
    service.submit(Trigger("hub", "acme/flask-hello", "v1", request_id="r1"))
    assert held.started.wait(5)
    service.submit(Trigger("hub", "acme/flask-hello", "v2", f"{receiver.url}/v2", "r2"))
    service.submit(Trigger("hub", "acme/flask-hello", "v3", request_id="r3"))
    held.go.set()
    service.queue.close(timeout=5)
    assert held.images == ["acme/flask-hello:v1", "acme/flask-hello:v3"]
    wait_until = time.monotonic() + 5
    while not receiver.received and time.monotonic() < wait_until:
        time.sleep(0.01)
    assert receiver.received == [("/v2", {"state": "success", "description": "superseded by tag v3",
                                          "context": "dockyard"})]


def test_a_redeploy_that_crashes_is_still_in_the_history(tmp_path):
    class Broken:
        def redeploy(self, image):
            raise KeyError("State")

    service = listener.Service(CONFIG, Broken(), tmp_path / "history.jsonl", listener.HostLock(tmp_path / "lock"))
    service.run(Trigger("registry", "flask-hello", "v2", request_id="r1"))
    service.queue.close()
    entry = json.loads((tmp_path / "history.jsonl").read_text())
    assert (entry["result"], entry["reason"]) == ("failure", "internal error: 'State'")


def test_callbacks_never_raise_nor_follow_redirects(receiver):
    assert listener.post_callback(f"{receiver.url}/redirect", "success", "x") is not None
    assert [path for path, _ in receiver.received] == ["/redirect"]
    assert listener.post_callback("http://127.0.0.1:9/closed", "success", "x") is not None
    assert listener.post_callback(f"{receiver.url}/ok", "success", "x" * 10_000) is None
    assert len(receiver.received[-1][1]["description"]) == 255


# --- the HTTP surface, in process ---

class Server:
    """The listener's HTTP server on a free local port; triggers land in `submitted` instead of Docker."""

    def __init__(self, config: Config = CONFIG):
        self.submitted: list[Trigger] = []
        self.httpd = listener.Listener(("127.0.0.1", 0), config, self.submitted.append)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        self.port = self.httpd.server_address[1]

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body if method not in ("GET", "HEAD") else None, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(data)
            return sock.recv(65536)

    def hub(self, body, token: str = HUB_TOKEN, content_type="application/json"):
        body = body if isinstance(body, bytes) else encode(body)
        return self.request("POST", f"/hooks/{token}", body, {"Content-Type": content_type})

    def registry(self, body, token: str | None = REGISTRY_TOKEN,
                 content_type="application/vnd.docker.distribution.events.v1+json"):
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", "/registry/events", body if isinstance(body, bytes) else encode(body), headers)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_healthz(server):
    status, body = server.request("GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_an_allowed_hub_push_is_queued_with_its_request_id(server):
    status, body = server.hub(hub_payload())
    assert status == 202
    assert server.submitted == [Trigger("hub", "acme/flask-hello", "v2", request_id=json.loads(body)["request_id"])]


def test_an_allowed_registry_push_is_queued(server):
    status, _ = server.registry(registry_envelope(push_event(tag=None), push_event(tag="v2")))
    assert status == 202
    assert [(t.source, t.repository, t.tag) for t in server.submitted] == [("registry", "flask-hello", "v2")]


@pytest.mark.parametrize("envelope", [
    registry_envelope(),
    registry_envelope(push_event(tag=None)),
    registry_envelope(push_event(repository="other")),
    registry_envelope(push_event(tag="deploy-abc123")),
    registry_envelope(push_event(action="pull")),
])
def test_irrelevant_registry_envelopes_are_acknowledged_and_ignored(server, envelope):
    status, body = server.registry(envelope)
    assert (status, json.loads(body)["status"]) == (200, "ignored")
    assert server.submitted == []


@pytest.mark.parametrize("call, expected", [
    (lambda s: s.hub(hub_payload(), token="wrong-token-0123456789abcdef"), 404),
    (lambda s: s.hub(hub_payload(), token=""), 404),
    (lambda s: s.hub(hub_payload(), token=HUB_TOKEN + "x"), 404),
    (lambda s: s.hub(hub_payload(repo_name="evil/flask-hello", namespace="evil")), 403),
    (lambda s: s.hub(hub_payload(tag="deploy-abc")), 403),
    (lambda s: s.hub(b"{not json"), 400),
    (lambda s: s.hub(hub_payload(), content_type="text/plain"), 415),
    (lambda s: s.hub(b"{" + b" " * (64 * 1024) + b"}"), 413),
    (lambda s: s.registry(registry_envelope(push_event()), token=None), 401),
    (lambda s: s.registry(registry_envelope(push_event()), token="wrong"), 401),
    (lambda s: s.registry(b"[]"), 400),
    (lambda s: s.registry(registry_envelope(push_event()), content_type="application/x-www-form-urlencoded"), 415),
    (lambda s: s.request("GET", f"/hooks/{HUB_TOKEN}"), 405),
    (lambda s: s.request("PUT", "/registry/events", b"{}"), 405),
    (lambda s: s.request("DELETE", "/healthz"), 405),
    (lambda s: s.request("POST", "/healthz", b"{}"), 405),
    (lambda s: s.request("GET", "/"), 404),
    (lambda s: s.request("POST", "/hooks", b"{}"), 404),
    (lambda s: s.request("POST", f"/hooks/{HUB_TOKEN}", b"{}", {"Transfer-Encoding": "chunked"}), 411),
])
def test_refused_requests_get_a_4xx_and_queue_nothing(server, call, expected):
    status, _ = call(server)
    assert status == expected
    assert server.submitted == []


def test_a_10_mb_body_is_answered_413_and_never_read(server):
    status, _ = server.hub(b"x" * (10 * 1024 * 1024))
    assert status == 413


def test_tokens_never_reach_the_log(server, caplog):
    caplog.set_level(logging.INFO, logger="dockyard-webhook")
    server.hub(hub_payload())
    server.hub(hub_payload(), token="wrong-but-close-to-the-real-one")
    server.registry(registry_envelope(), token="a-guess")
    server.raw(f"GET /{HUB_TOKEN} x y\r\n\r\n".encode())  # a malformed request line, logged by the stdlib
    formatter = listener.RedactingFormatter(CONFIG.secrets)
    text = "\n".join(formatter.format(record) for record in caplog.records)
    assert "/hooks/*** -> 202" in text and "/hooks/*** -> 404" in text and "Bad request" in text
    for secret in (HUB_TOKEN, REGISTRY_TOKEN, "wrong-but-close"):
        assert secret not in text


def test_connections_beyond_the_limit_are_closed(server, monkeypatch):
    held = [server.httpd.slots.acquire(blocking=False) for _ in range(listener.MAX_CONNECTIONS)]
    assert all(held)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        server.request("GET", "/healthz")
    for _ in held:
        server.httpd.slots.release()
    assert server.request("GET", "/healthz")[0] == 200


def test_a_health_spec_translates_like_deploys_command_line():
    """The same numbers `run_container` gives `docker run`, so deploy and the webhook wait alike."""
    spec = ContainerSpec(name="dockyard-app", health=Health(8000, "/healthz"))
    doc = containers.container_document(spec, "app")
    line = containers.run_container(spec, "app", "d")
    check = redeploy.create_args(doc, "img", {}, {})["healthcheck"]
    assert f"--health-interval {check['interval'] // 10**9}s" in line
    assert f"--health-timeout {check['timeout'] // 10**9}s" in line
    assert f"--health-retries {check['retries']}" in line


def test_a_redeploy_holds_the_host_lock_and_names_itself_its_holder(tmp_path):
    folder = tmp_path / "lock"
    seen = {}

    class Looking(FakeRedeployer):
        def redeploy(self, image):
            with (folder / "host.lock").open("a") as other:  # another process's view: a second open file
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    seen["free"] = True
                except BlockingIOError:
                    seen["free"] = False
            seen["record"] = (folder / "holder.json").read_text()
            return super().redeploy(image)

    service = listener.Service(CONFIG, Looking(Outcome("success", "", "x")), tmp_path / "h", listener.HostLock(folder))
    service.run(Trigger("registry", "flask-hello", "v2", request_id="r1"))
    service.queue.close()
    assert seen["free"] is False
    holder = json.loads(seen["record"])
    assert holder.pop("since").endswith("Z")
    assert holder == {"who": "dockyard-webhook", "from": "this host", "task": "redeploy 127.0.0.1:5000/flask-hello:v2",
                      "pid": os.getpid()}
    # a deploy waiting for it reads the record as deploy's own
    assert host_lock.describe(seen["record"]).startswith(
        f"dockyard-webhook from this host (redeploy 127.0.0.1:5000/flask-hello:v2, pid {os.getpid()}, since ")


def test_a_redeploy_waits_for_a_deploy_holding_the_host_lock_then_gives_up_naming_it(tmp_path):
    folder = tmp_path / "lock"
    folder.mkdir()
    (folder / "holder.json").write_text(json.dumps(
        {"who": "ops@laptop", "from": "10.0.0.5", "task": "deploy", "since": "2026-11-28T04:17:02Z", "pid": 7}))
    fake = FakeRedeployer(Outcome("success", "", "x"))
    service = listener.Service(CONFIG, fake, tmp_path / "h", listener.HostLock(folder, timeout=1))
    with (folder / "host.lock").open("a") as deploy_holds:
        fcntl.flock(deploy_holds, fcntl.LOCK_EX)
        started = time.monotonic()
        service.run(Trigger("registry", "flask-hello", "v2", request_id="r1"))
        assert time.monotonic() - started >= 1
    service.run(Trigger("registry", "flask-hello", "v3", request_id="r2"))
    service.queue.close()
    gave_up, ran = (json.loads(line) for line in (tmp_path / "h").read_text().splitlines())
    assert (gave_up["result"], gave_up["reason"]) == (
        "failure", "not redeployed: the host lock stayed held by ops@laptop from 10.0.0.5 (deploy, since "
                   "2026-11-28T04:17:02Z) for 1s; push again once it is free")
    assert fake.images == ["127.0.0.1:5000/flask-hello:v3"] and ran["result"] == "success"


def test_the_env_file_gives_the_new_container_its_secret_variables(tmp_path):
    (tmp_path / "secrets.env").write_text("DATABASE_PASSWORD=pw=with=equals\nAPI_TOKEN=t\n")
    secrets = redeploy.read_env_file(tmp_path / "secrets.env")
    assert secrets == {"DATABASE_PASSWORD": "pw=with=equals", "API_TOKEN": "t"}
    doc = {**containers.container_document(ContainerSpec("dockyard-app", env=(("A", "1"),)), "app")}
    assert redeploy.create_args(doc, "img", {}, secrets)["environment"] == {"A": "1", **secrets}
    with pytest.raises(redeploy.SpecError, match="secrets.env: unreadable"):
        redeploy.read_env_file(tmp_path / "absent" / "secrets.env")
