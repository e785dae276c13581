"""The facts read's output, parsed, and drift: recorded on a real host (tests/fixtures/facts/README.md)."""

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard import facts
from dockyard.commands.containers import container_document
from dockyard.errors import FactsError
from dockyard.spec import ContainerSpec, Health
from tests.conftest import REPO

FACTS = REPO / "tests/fixtures/facts"


def recorded(name: str) -> str:
    return (FACTS / name).read_text()


def inspect(name: str) -> dict:
    (item,) = json.loads((FACTS / "inspect" / f"{name}.json").read_text())
    return item


def test_the_stack_host_is_read_section_by_section():
    host = facts.parse(recorded("stack.txt"), "web1")
    assert (host.docker, host.docker_woken, host.packages_broken, host.systemd) == ("running", None, False, False)
    assert (host.docker_on_boot, host.loopback_guard, host.loopback_guard_on_boot) == (True, True, True)
    assert host.groups == {"ubuntu", "docker"}
    assert sorted(host.containers) == [
        "dockyard-app-blue", "dockyard-mirror", "dockyard-proxy", "dockyard-registry", "dockyard-registry-ui",
        "dockyard-webhook"]
    assert host.serving == "dockyard-app-blue"  # what the upstream file names
    assert host.owners["/etc/dockyard/app/container.json"] == 0  # the user ids of the files the plan writes
    app = host.containers["dockyard-app-blue"]
    assert (app.role, app.digest, app.running) == ("app", "69275543e38b3dd7", True)
    assert app.declared_image == "127.0.0.1:5000/flask-hello:deploy-85bc2b6387c4"
    assert host.images[app.declared_image] == app.image_id
    assert app.settings == facts.Settings(
        restart="always",
        ports=frozenset(),  # reached through the proxy only
        mounts=frozenset(),
        network=frozenset({"dockyard"}),
        env=frozenset({"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}),
        labels=frozenset({"dockyard.role=app", "dockyard.spec=69275543e38b3dd7",
                          f"dockyard.image={app.declared_image}"}),
        health=(("CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8000/healthz"), 2 * 10**9, 3 * 10**9, 3),
        command=("gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "-k", "gthread", "--threads", "4",
                 "--keep-alive", "5", "--graceful-timeout", "8", "--access-logfile", "-", "app:app"),
    )
    proxy = host.containers["dockyard-proxy"].settings
    assert proxy.ports == {"0.0.0.0:80:80/tcp", "0.0.0.0:443:443/tcp"}
    assert proxy.mounts == {"dockyard-proxy-data:/data", "dockyard-proxy-config:/config",
                            "/etc/dockyard/proxy:/etc/caddy:ro", "/var/lib/dockyard/proxy:/var/lib/dockyard-proxy:ro"}
    assert set(host.files) == {"/etc/dockyard/registry/config.yml", "/etc/dockyard/mirror/config.yml",
                               "/etc/dockyard/proxy/Caddyfile", "/var/lib/dockyard/proxy/app.upstream",
                               "/etc/dockyard/app/container.json", "/etc/dockyard/webhook/config.json"}
    assert not any(ref.endswith(":<none>") for ref in host.images)


@pytest.mark.parametrize("upstream, serving", [
    ("to dockyard-app-green:8000\n", "dockyard-app-green"),
    ("", ""),  # no file
    ("to dockyard-app-green\n", ""),
    ("reverse_proxy somewhere\n", ""),
])
def test_the_upstream_file_names_the_container_that_serves(upstream, serving):
    text = recorded("stack.txt").replace("::upstream\nto dockyard-app-blue:8000\n", f"::upstream\n{upstream}")
    assert facts.parse(text, "web1").serving == serving


def test_a_fresh_host_a_stopped_daemon_and_one_deploy_started():
    fresh = facts.parse(recorded("fresh-host.txt"), "web1")
    assert fresh == facts.HostFacts(groups=frozenset({"ubuntu"}))
    assert fresh.docker == "absent"
    stopped = facts.parse(recorded("docker-stopped.txt"), "web1")
    assert (stopped.docker, stopped.docker_on_boot) == ("stopped", True)
    assert stopped.containers == {} and stopped.images == {} and len(stopped.files) == 6
    # deploy's read on that host: it started dockerd, waited for it, then read the containers
    started = facts.parse(recorded("docker-started.txt"), "web1")
    assert started.docker == "running"
    how, seconds = started.docker_woken
    assert how == "started" and 0 <= seconds < 60
    assert len(started.containers) == 6 and started.files == stopped.files


@pytest.mark.parametrize("section", ["", "running 20.10", "stopped 20.10", "installed", "running\nslept 3",
                                     "running\nstarted soon", "absent\nstarted 1\nwaited 2"])
def test_a_docker_section_that_is_none_of_the_three_states_is_a_facts_error(section):
    text = recorded("fresh-host.txt").replace("::docker\nabsent\n", f"::docker\n{section}\n")
    with pytest.raises(FactsError, match=r"^web1: the facts read returned what it cannot parse \(ValueError"):
        facts.parse(text, "web1")


APP = ContainerSpec(name="dockyard-app", health=Health(8000, "/healthz"))


def test_the_app_the_webhook_recreated_has_no_drift_though_docker_added_env_and_labels():
    released = facts.seen(inspect("app-released"))
    assert released.drift(container_document(APP, "app")) == []
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in released.settings.env
    assert len(released.settings.labels) == 3  # the role declared, deploy's bookkeeping carried over


@pytest.mark.parametrize("fixture, field", [
    ("app-restart", "restart"),
    ("app-ports", "ports"),
])
def test_one_hand_change_is_drift_of_exactly_its_field(fixture, field):
    assert facts.seen(inspect(fixture)).drift(container_document(APP, "app")) == [field]


def test_what_is_declared_must_be_present_and_the_image_may_add_more():
    app = facts.seen(inspect("app-released"))
    document = container_document(APP, "app")
    # env and labels: the declared ones must be there, more are fine
    assert app.drift({**document, "env": {"APP_MODE": "production"}}) == ["env"]
    assert app.drift({**document, "labels": {**document["labels"], "team": "web"}}) == ["labels"]
    # command and health check: none declared leaves the image's; one declared must be the one running
    assert app.drift({**document, "command": ["gunicorn", "app:app"]}) == ["command"]
    assert app.drift({**document, "command": list(app.settings.command)}) == []
    assert app.drift({**document, "health": None}) == []
    assert app.drift({**document, "health": {**document["health"], "retries": 5}}) == ["health"]
    # strict ones: what is added by hand counts as well
    published = replace(app, settings=replace(app.settings, ports=frozenset({"0.0.0.0:8000:8000/tcp"})))
    assert published.drift({**document, "ports": ["0.0.0.0:8000:8000"]}) == []
    assert published.drift(document) == ["ports"]


def test_the_drift_table_names_each_field_once_with_a_stated_mode():
    names = [name for name, _ in facts.DRIFT]
    assert names == ["restart", "ports", "mounts", "network", "env", "labels", "health", "command"]
    assert {mode for _, mode in facts.DRIFT} == {facts.STRICT, facts.DECLARED}
    assert set(names) == set(facts.Settings.__dataclass_fields__)


def test_a_truncated_read_names_the_host_and_where_it_stopped():
    with pytest.raises(FactsError, match=r"^web1 \(u@h:22\): the facts read ended early, in its boot section; "):
        facts.parse("::docker\n20.10\n::boot\n", "web1 (u@h:22)")
    with pytest.raises(FactsError, match="before its first section"):
        facts.parse("", "web1")


def test_unreadable_inspect_output_is_a_facts_error():
    broken = recorded("stack.txt").replace('"Config": {', '"Config": [{', 1)
    with pytest.raises(FactsError, match=r"^web1: the facts read returned what it cannot parse \(JSONDecodeError"):
        facts.parse(broken, "web1")
    with pytest.raises(FactsError, match=r"cannot parse \(KeyError: 'Config'\)"):
        facts.parse(recorded("fresh-host.txt").replace("::containers\n", "::containers\n[{}]\n"), "web1")


INSPECT_KEYS = ("Name", "Image", "Config", "HostConfig", "State", "NetworkSettings", "Networks", "Labels", "Env",
                "Cmd", "Healthcheck", "Test", "PortBindings", "Binds", "RestartPolicy", "Running", "HostIp")
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(INSPECT_KEYS), inner, max_size=6),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(facts.SECTIONS), st.text(max_size=40)),
    st.lists(st.dictionaries(st.sampled_from(INSPECT_KEYS), JSON, min_size=3), max_size=2),
    st.booleans(),
)
def test_any_output_parses_or_raises_only_facts_error(sections, containers, complete):
    text = "\n".join(f"::{name}\n{body}" for name, body in {**sections, "containers": json.dumps(containers)}.items())
    try:
        facts.parse(text + ("\n::end" if complete else ""), "web1")
    except FactsError:
        pass
