"""The day-two tasks: their remote commands exactly, what they parse, and their bad input through the real tasks
against scripted hosts (nothing on a host changes when they refuse)."""

from __future__ import annotations

import json

import pytest

from dockyard import day_two
from dockyard.cli import app
from dockyard.commands import app as commands
from dockyard.errors import FactsError
from roles import app as app_role
from tests.unit.test_remote_failures import FACTS, ScriptedHost, one_error_line, run_task, static  # noqa: F401

SERVING = "serving=$(sed -n 's/^to \\(.*\\):[0-9]*$/\\1/p' /var/lib/dockyard/proxy/app.upstream 2>/dev/null || true)"
REQUIRE = ('[ -n "$serving" ] && docker inspect "$serving" >/dev/null 2>&1 || '
           "{ echo '::dockyard no-app'; exit 1; }")
V1, V2 = "127.0.0.1:5000/flask-pip:deploy-1a2b", "127.0.0.1:5000/flask-pip:v2"


def entry(source: str, before: str, after: str, result: str = "success") -> dict:
    return {"trigger": {"source": source, "tag": after.rpartition(":")[2]}, "result": result,
            "before": {"image": before}, "after": {"image": after}}


def test_logs_read_the_serving_container():
    assert commands.logs(5, since="10m", follow=True) == "\n".join([
        "set -eu", SERVING, REQUIRE, 'docker logs --tail 5 --since 10m --follow "$serving" 2>&1'])


def test_exec_runs_a_one_off_container_of_the_serving_image_with_the_apps_settings():
    from dockyard.inventory import App, Secret

    spec = app_role.container(App(env={"A": "1"}, secrets={"T": Secret("generate", env=True)}))
    assert commands.run(spec, ("flask", "routes")) == "\n".join([
        "set -eu", SERVING, REQUIRE,
        "image=$(docker inspect --format '{{.Config.Image}}' \"$serving\")",
        "docker rm --force dockyard-app-exec >/dev/null 2>/dev/null || true",
        "docker run --rm --name dockyard-app-exec --network dockyard --volume "
        "/etc/dockyard/app/secrets/T:/run/secrets/T:ro --env A=1 --env-file /etc/dockyard/app/secrets.env "
        '"$image" flask routes',
    ])


def test_the_image_before_the_current_one_is_the_one_a_switch_to_it_replaced():
    history = [entry("deploy", "", V1), entry("deploy", V1, V1), entry("webhook", V1, V2),
               entry("deploy", V2, V2), entry("webhook", V2, "x:v3", "failure")]
    assert day_two.earlier_image(history, V2) == V1
    assert day_two.earlier_image(history, V1) is None  # only ever switched to from nothing, or from itself
    assert day_two.named_image(history, "deploy-1a2b") == V1
    assert day_two.named_image(history, "v9") is None


def test_status_parses_every_service_its_upstream_and_the_last_release():
    stack = (FACTS / "stack.txt").read_text()
    containers = stack.split("::containers\n")[1].split("\n::images")[0]
    last = entry("rollback", V2, V1)
    output = f"::now\n2100000000\n::containers\n{containers}\n::upstream\nto dockyard-app-blue:8000\n" \
             f"::release\n{json.dumps(last)}\n::end\n"
    status = day_two.parse_status("web1", output)
    assert {s.role for s in status.services} == {"registry", "mirror", "registry_ui", "proxy", "app", "webhook"}
    app_service = next(s for s in status.services if s.role == "app")
    assert (app_service.health, app_service.restarts) == ("healthy", 0)
    assert app_service.uptime_s > 0
    assert status.upstream == "dockyard-app-blue:8000"
    assert status.last_release == last
    assert json.loads(json.dumps(status.as_dict()))["services"][0]["name"]


def test_a_status_read_cut_short_is_one_line():
    with pytest.raises(FactsError, match="^web1: the status read ended early, in its containers section; rerun"):
        day_two.parse_status("web1", "::now\n1\n::containers\n")


# -- bad input, through the real tasks --------------------------------------------------------------------------
def inspected(image: str) -> str:
    return json.dumps([{"Name": "/dockyard-app-blue", "Image": "sha256:1", "Config": {"Image": image, "Labels": {
        "dockyard.role": "app", "dockyard.spec": "d", "dockyard.image": V1}}, "State": {"Running": True},
        "HostConfig": {}}])


@pytest.fixture
def ran(monkeypatch) -> list[str]:
    """Every script the scripted hosts were sent."""
    scripts: list[str] = []
    original = ScriptedHost._exec

    def recording(self, command, chunks, progress):
        chunks = list(chunks)
        scripts.append(b"".join(chunks).decode())
        return original(self, command, chunks, progress)

    monkeypatch.setattr(ScriptedHost, "_exec", recording)
    return scripts


def test_rollback_with_no_earlier_image_is_one_line_and_changes_nothing(static, project, ran):  # noqa: F811
    history = json.dumps(entry("deploy", "", V1))
    static(web1=(["proxy", "app"], [("echo ::serving", (0, f"::locked\n::serving\n{inspected(V1)}\n::history\n"
                                                            f"{history}\n::end\n::held\n", ""))]))
    assert one_error_line(run_task(project, app.rollback)) == (
        f"error: web1: the app's history holds no image earlier than {V1}, so there is nothing to roll back to; "
        "name one with --to TAG")
    assert len(ran) == 1 and "::switch" not in ran[0]


def test_rollback_to_an_unknown_tag_is_one_line(static, project, ran):  # noqa: F811
    history = json.dumps(entry("webhook", V1, V2))
    static(web1=(["proxy", "app"], [("echo ::serving", (0, f"::locked\n::serving\n{inspected(V2)}\n::history\n"
                                                            f"{history}\n::end\n::held\n", ""))]))
    assert one_error_line(run_task(project, app.rollback, to="v7")) == (
        "error: web1: no image tagged v7 in the app's history; `invoke app.history` lists them")
    assert len(ran) == 1


def test_exec_on_an_environment_without_an_app_host_is_one_line(static, project, ran):  # noqa: F811
    static(web1=(["registry"], []))
    message = one_error_line(run_task(project, app.exec_, "flask routes"))
    assert message == (f"error: no host of t-remote runs the app role; check {project.inventory_dir}/t-remote.yml "
                       f"and `invoke hosts`")
    assert ran == []


def test_exec_with_no_container_serving_is_one_line(static, project):  # noqa: F811
    static(web1=(["proxy", "app"], [("docker run", (1, "::dockyard no-app\n", ""))]))
    assert one_error_line(run_task(project, app.exec_, "flask routes")) == (
        "error: web1: no container of the app serves (the proxy's upstream file names none that exists); run "
        "`invoke deploy`")


def test_exec_returns_the_commands_exit_code(static, project):  # noqa: F811
    static(web1=(["proxy", "app"], [("docker run", (3, "it said so\n", ""))]))
    assert run_task(project, app.exec_, "sh -c 'exit 3'").code == 3

