"""The day-two tasks: their remote commands exactly, what they parse, and their bad input through the real tasks
against scripted hosts (nothing on a host changes when they refuse)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dockyard import day_two
from dockyard.cli import app
from dockyard.commands import app as commands
from dockyard.commands import lock as lock_commands
from dockyard.commands import swarm as swarm_commands
from dockyard.contract import APP_SERVICE, CLUSTER_NETWORK
from dockyard.environment import Env
from dockyard.errors import FactsError, StepFailed
from dockyard.inventory import App
from roles import app as app_role
from tests.unit.test_remote_failures import (  # noqa: F401
    FACTS,
    ScriptedHost,
    one_error_line,
    run_task,
    static,
    task_context,
)

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



# -- on a swarm -------------------------------------------------------------------------------------------------
SERVICE_IMAGE = ("image=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' dockyard_app "
                 "2>/dev/null) || { echo '::dockyard no-service'; exit 1; }")
T1, T2 = "10.61.0.2:5443/flask-pip:deploy-1a2b", "10.61.0.2:5443/flask-pip:v2"


def test_on_a_swarm_logs_are_the_services_from_every_task():
    assert commands.service_logs(5, since="10m", follow=True) == "\n".join([
        "set -eu", SERVICE_IMAGE,
        "docker service logs --no-task-ids --tail 5 --since 10m --follow dockyard_app 2>&1"])
    assert commands.service_logs(100).endswith("docker service logs --no-task-ids --tail 100 dockyard_app 2>&1")


def test_on_a_swarm_exec_runs_the_services_image_on_the_overlay():
    spec = replace(app_role.container(App(env={"A": "1"})), network=CLUSTER_NETWORK)
    assert commands.service_run(spec, ("flask", "routes")) == "\n".join([
        "set -eu", SERVICE_IMAGE,
        "docker rm --force dockyard-app-exec >/dev/null 2>/dev/null || true",
        'docker run --rm --name dockyard-app-exec --network dockyard-cluster --env A=1 "$image" flask routes',
    ])


def test_on_a_swarm_the_status_read_adds_the_task_containers_the_service_and_its_tasks():
    assert commands.status(swarm=True) == "\n".join([
        commands.status().removesuffix("\necho ::end"),
        "echo ::task_containers; ids=$(docker ps -q --filter label=com.docker.swarm.service.name=dockyard_app); "
        'if [ -n "$ids" ]; then docker inspect $ids; fi',
        "echo ::service; docker service inspect dockyard_app 2>/dev/null || true",
        "echo ::tasks; docker service ps --no-trunc --filter desired-state=running --format '{{json .}}' "
        "dockyard_app 2>/dev/null || true",
        "echo ::end",
    ])
    assert commands.service_rollback_facts() == "\n".join([
        "echo ::serving; docker service inspect dockyard_app 2>/dev/null || true",
        "echo ::history; tail -n 200 /var/lib/dockyard/webhook/history.jsonl 2>/dev/null || true",
        "echo ::end",
    ])


def task_container(task_id: str, health: str | None, status: str = "running") -> dict:
    return {"Config": {"Labels": {"com.docker.swarm.task.id": task_id, "com.docker.swarm.service.name": APP_SERVICE}},
            "State": {"Status": status, **({"Health": {"Status": health}} if health else {})}}


def service_inspect(image: str = T2, replicas: int = 3, update: str | None = "completed") -> dict:
    return {"ID": "k3v9s0q2x7m1", "Spec": {"Name": APP_SERVICE, "TaskTemplate": {"ContainerSpec": {"Image": image}},
                                           "Mode": {"Replicated": {"Replicas": replicas}}},
            **({"UpdateStatus": {"State": update}} if update else {})}


def task_line(task_id: str, slot: int, node: str, state: str = "Running 2 minutes ago", error: str = "") -> str:
    return json.dumps({"CurrentState": state, "DesiredState": "Running", "Error": error, "ID": task_id,
                       "Image": T2, "Name": f"{APP_SERVICE}.{slot}", "Node": node, "Ports": ""})


def status_output(containers: list[dict], service: dict | None = None, tasks: tuple[str, ...] = ()) -> str:
    return (f"::now\n2100000000\n::containers\n::upstream\n::release\n"
            f"::task_containers\n{json.dumps(containers) if containers else ''}\n"
            f"::service\n{json.dumps([service]) if service else ''}\n::tasks\n" + "".join(f"{t}\n" for t in tasks)
            + "::end\n")


def test_the_services_status_joins_the_managers_tasks_with_each_nodes_health():
    manager = status_output(
        [task_container("t1", "healthy")], service_inspect(),
        (task_line("t2", 2, "web2"), task_line("t1", 1, "web1"), task_line("t3", 3, "web3", "Starting 1 second ago")))
    web2 = status_output([task_container("t2", "unhealthy")])
    web3 = status_output([task_container("t3", None, "created")])
    nodes = [day_two.parse_node(host, output) for host, output in (("web1", manager), ("web2", web2), ("web3", web3))]
    assert day_two.service_status(nodes) == day_two.ServiceStatus(APP_SERVICE, T2, 2, 3, "completed", (
        day_two.Task("t1", f"{APP_SERVICE}.1", "web1", "Running 2 minutes ago", T2, "healthy", ""),
        day_two.Task("t2", f"{APP_SERVICE}.2", "web2", "Running 2 minutes ago", T2, "unhealthy", ""),
        day_two.Task("t3", f"{APP_SERVICE}.3", "web3", "Starting 1 second ago", T2, "created", ""),
    ))
    as_json = json.loads(json.dumps(day_two.Status([], True, day_two.service_status(nodes)).as_dict()))
    assert (as_json["service"]["running"], as_json["service"]["tasks"][1]["health"]) == (2, "unhealthy")
    # a worker knows no service; nothing deployed yet is no service at all
    assert day_two.service_status(nodes[1:]) is None


def test_a_service_read_that_makes_no_sense_is_one_line():
    with pytest.raises(StepFailed, match="^web1: the status read returned what it cannot parse"):
        day_two.parse_node("web1", status_output([], {"Spec": {"Name": APP_SERVICE}}))


@pytest.fixture
def swarm(project, tmp_path, monkeypatch):
    """A swarm `t-remote` of three scripted hosts, web1 its manager and app host: swarm(web1=answers, ...)."""
    key = tmp_path / "key"
    key.write_text("unused: the hosts are scripted\n")

    def make(**answers: list) -> None:
        roles = {"web1": ["manager", "registry", "proxy", "app", "webhook"], "web2": [], "web3": []}
        lines = [f"  {name}: {{address: 127.0.0.{i}, key: {key}, roles: {json.dumps(r)}}}"
                 for i, (name, r) in enumerate(roles.items(), 1)]
        project.inventory("t-remote", "provider: static\ncluster: swarm\nhosts:\n" + "\n".join(lines) + "\n")
        monkeypatch.setattr(Env, "connect", lambda env, record: ScriptedHost(record, *answers.get(record.name, [])))

    return make


def rollback_read(service: dict | None, *entries: dict) -> tuple[str, tuple[int, str, str]]:
    history = "\n".join(json.dumps(e) for e in entries)
    return "echo ::serving", (0, f"::locked\n::serving\n{json.dumps([service]) if service else ''}\n::history\n"
                                 f"{history}\n::end\n::held\n", "")


def test_on_a_swarm_rollback_updates_the_services_image_back_and_waits_for_swarm(swarm, project, ran):
    swarm(web1=[rollback_read(service_inspect(T2), entry("deploy", "", T1), entry("webhook", T1, T2)),
                ("docker service update", (0, "", ""))])
    app.rollback(task_context(project))
    read, update = ran
    assert read.endswith(f"{commands.service_rollback_facts()}\n{lock_commands.hold()}\n")
    assert update == swarm_commands.update_image(T1, swarm_commands.UPDATE_TIMEOUT, "rollback")


def test_on_a_swarm_a_rollback_swarm_undid_is_one_line(swarm, project):
    why = f"{APP_SERVICE}: swarm rolled the update back (rollback_completed): {APP_SERVICE}.1 task: non-zero exit (1);"
    swarm(web1=[rollback_read(service_inspect(T2), entry("webhook", T1, T2)), ("docker service update", (1, "", why))])
    assert one_error_line(run_task(project, app.rollback)) == (
        f"error: web1 (ubuntu@127.0.0.1:22): roll the app back to {T1} failed (exit 1): {why}")


def test_on_a_swarm_a_rollback_with_no_service_is_one_line(swarm, project, ran):
    swarm(web1=[rollback_read(None, entry("webhook", T1, T2))])
    assert one_error_line(run_task(project, app.rollback, to="deploy-1a2b")) == (
        f"error: web1: the app's service {APP_SERVICE} does not exist; run `invoke deploy` first")
    assert len(ran) == 1


def test_on_a_swarm_logs_and_exec_run_on_the_app_host(swarm, project, ran, capsys):
    swarm(web1=[("docker service logs", (0, f"{APP_SERVICE}.1@web2    | GET /healthz 200\n", "")),
                ("docker run", (4, "", ""))])
    app.app_logs(task_context(project), lines=1)
    assert capsys.readouterr().out == f"{APP_SERVICE}.1@web2    | GET /healthz 200\n"  # it names task and node
    assert run_task(project, app.exec_, "sh -c 'exit 4'").code == 4
    assert ran == [commands.service_logs(1), "\n".join([
        "set -eu", SERVICE_IMAGE, "docker rm --force dockyard-app-exec >/dev/null 2>/dev/null || true",
        "docker run --rm --name dockyard-app-exec --network dockyard-cluster \"$image\" sh -c 'exit 4'"])]


def test_on_a_swarm_logs_of_a_service_never_deployed_is_one_line(swarm, project):
    swarm(web1=[("docker service logs", (1, "::dockyard no-service\n", ""))])
    assert one_error_line(run_task(project, app.app_logs)) == (
        f"error: web1: the app's service {APP_SERVICE} does not exist; run `invoke deploy`")


def test_on_a_swarm_status_shows_the_service_and_its_tasks(swarm, project, capsys):
    manager = status_output([task_container("t1", "healthy")], service_inspect(replicas=2),
                            (task_line("t1", 1, "web1"), task_line("t2", 2, "web2")))
    swarm(web1=[("echo ::now", (0, manager, ""))],
          web2=[("echo ::now", (0, status_output([task_container("t2", "healthy")]), ""))],
          web3=[("echo ::now", (0, status_output([]), ""))])
    app.status(task_context(project), json_=True)
    shown = json.loads(capsys.readouterr().out)
    assert [h["host"] for h in shown["hosts"]] == ["web1", "web2", "web3"]
    assert (shown["service"]["running"], shown["service"]["declared"]) == (2, 2)
    assert [(t["node"], t["health"]) for t in shown["service"]["tasks"]] == [("web1", "healthy"), ("web2", "healthy")]
    app.status(task_context(project))
    text = capsys.readouterr().out
    assert f"app service {APP_SERVICE}: 2/2 running, image {T2}, last update completed" in text
    assert "proxy upstream" not in text
    assert "web3: a node of the swarm, with no service of its own\n" in text
