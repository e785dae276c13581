"""A real app on one sandbox host: apps/flask-pip (Flask from PyPI) with two plain settings and three secrets (one
generated, one from the operator's environment, one from SSM served by moto in server mode), a release command,
and the day-two tasks.

One stack for the whole module; the tests run in order, each leaving the app serving. Run with -s for the figures.
"""

from __future__ import annotations

import json
import os
import re
import time

import boto3
import pytest
import requests

from tests import fake_aws
from tests.conftest import SANDBOX_STACK
from tests.e2e.helpers import app_containers, door, host_run, inspect, serving
from tests.e2e.load import Load

ENV = "t-realapp"
SETTINGS = {"GREETING": "Ahoy", "ADMIN_EMAIL": "ops@example.com"}
API_TOKEN = "tok-5a1d0c3e-first"  # from the operator's environment
DB_PASSWORD = "pw-8c2e7f41-ssm"  # from SSM
SSM_PATH = "/acme/realapp/db-password"
RELEASE = "flask --app app db-upgrade"
DATA_VOLUME = "flask-pip-data"  # on the sandbox host, inside its own engine
HISTORY = "/var/lib/dockyard/webhook/history.jsonl"
LOAD_REQUESTS = 600
SERVICES = {"registry", "mirror", "registry_ui", "proxy", "app", "webhook"}


class Stack:
    def __init__(self, project, cloud: str):
        self.project, self.cloud = project, cloud
        self.outputs: list[str] = []  # everything dockyard printed, to search for secrets
        self.url, self.ca = door(project, ENV)
        self.version = 1

    def invoke(self, *args: str, check: bool = True):
        result = self.project.invoke(ENV, *args, check=check)
        self.outputs += [result.stdout, result.stderr]
        return result

    def secrets(self) -> dict[str, str]:
        generated = json.loads((self.project.state_dir / ENV / "secrets.json").read_text())["app.SECRET_KEY"]
        return {"SECRET_KEY": generated, "API_TOKEN": os.environ["ACME_API_TOKEN"], "DATABASE_PASSWORD": DB_PASSWORD}

    def page(self) -> str:
        return requests.get(f"{self.url}/", verify=str(self.ca), timeout=10).text

    def history(self) -> list[dict]:
        return [json.loads(line) for line in host_run(self.project, ENV, f"cat {HISTORY}").splitlines()]

    def inventory(self, env: dict[str, str]) -> None:
        settings = "".join(f"\n        {k}: {v}" for k, v in env.items())
        self.project.inventory(ENV, inventory(self.cloud, settings))

    def read_in_app(self, name: str) -> str:
        """A secret file as the app container sees it (in the test alone: nothing is printed)."""
        return host_run(self.project, ENV, f"docker exec {serving(self.project, ENV)} cat /run/secrets/{name}")


def inventory(cloud: str, settings: str) -> str:
    return SANDBOX_STACK + f"""\
  app:
    source: apps/flask-pip
    repository: flask-pip
    env:{settings}
    secrets:
      SECRET_KEY: generate
      API_TOKEN: env:ACME_API_TOKEN
      DATABASE_PASSWORD: ssm:{SSM_PATH}
    release_command: {RELEASE}
    volumes: ["{DATA_VOLUME}:/srv/data"]  # the SQLite database the release command migrates
aws:
  region: {fake_aws.REGION}
  endpoint_url: {cloud}
"""


@pytest.fixture(scope="module")
def stack(module_project):
    module_project.copy_sources()
    with fake_aws.moto_server() as cloud, pytest.MonkeyPatch.context() as patch:
        fake_aws.fresh_cloud(cloud, patch, module_project.root)
        patch.setenv("ACME_API_TOKEN", API_TOKEN)
        boto3.client("ssm", region_name=fake_aws.REGION, endpoint_url=cloud).put_parameter(
            Name=SSM_PATH, Value=DB_PASSWORD, Type="SecureString")
        module_project.inventory(ENV, inventory(cloud, "".join(f"\n        {k}: {v}" for k, v in SETTINGS.items())))
        try:
            started = time.monotonic()
            module_project.invoke(ENV, "provision", "deploy")
            module_project.invoke(ENV, "proxy.ca")
            print(f"\nprovision and deploy of the stack with flask-pip: {time.monotonic() - started:.0f}s")
            yield Stack(module_project, cloud)
        finally:
            module_project.invoke(ENV, "teardown", "--yes", check=False)


def test_the_app_reads_its_settings_and_secrets_and_the_release_command_ran(stack):
    page = stack.page()
    assert "Ahoy from flask-pip! Version 1" in page
    assert "<td>ADMIN_EMAIL</td><td>ops@example.com</td>" in page
    for name in stack.secrets():
        assert f"<td>{name}</td><td>secret, from file</td>" in page
    assert "schema version 2, release command runs: 1" in page
    for name, value in stack.secrets().items():
        assert stack.read_in_app(name) == value
    # 0600, the image's user (10001), one mount per file, from a folder of root's alone
    modes = host_run(stack.project, ENV, "stat -c '%a %u %n' /etc/dockyard/app/secrets /etc/dockyard/app/secrets/*")
    assert modes.split("\n")[0] == "700 0 /etc/dockyard/app/secrets"
    files = [f"600 10001 /etc/dockyard/app/secrets/{name}" for name in sorted(stack.secrets())]
    assert sorted(modes.split("\n")[1:-1]) == files


def test_a_missing_source_stops_the_run_before_any_host_is_touched(stack, monkeypatch):
    monkeypatch.delenv("ACME_API_TOKEN")
    result = stack.invoke("deploy", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"error: secret API_TOKEN (env:ACME_API_TOKEN): ACME_API_TOKEN is not set in your environment; export it, "
        f"or change services.app.secrets.API_TOKEN in {stack.project.inventory_dir / (ENV + '.yml')}")


def test_rollback_without_an_earlier_image_says_so_and_changes_nothing(stack):
    before = app_containers(stack.project, ENV)
    result = stack.invoke("app.rollback", check=False)
    assert result.returncode == 1
    assert re.fullmatch(r"error: web1: the app's history holds no image earlier than \S+flask-pip:deploy-\w+, so "
                        r"there is nothing to roll back to; name one with --to TAG\n", result.stderr)
    assert app_containers(stack.project, ENV) == before


def test_a_changed_secret_rolls_the_app_with_no_failed_request(stack):
    os.environ["ACME_API_TOKEN"] = "tok-5a1d0c3e-rotated"  # for the tests after this one too
    old = serving(stack.project, ENV)
    load = Load(f"{stack.url}/healthz", total=10**6, threads=8, ca_file=stack.ca, pause=0.05).start()
    started = time.monotonic()
    try:
        result = stack.invoke("deploy")
    finally:
        took = time.monotonic() - started
        load.finish(LOAD_REQUESTS)
    print(f"\ndeploy of a changed secret: {took:.1f}s; {load.done} requests over {load.threads} threads in "
          f"{load.seconds:.1f}s, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert "write /etc/dockyard/app/secrets/API_TOKEN (changed)" in result.stdout
    assert serving(stack.project, ENV) != old
    assert stack.read_in_app("API_TOKEN") == "tok-5a1d0c3e-rotated"
    assert stack.secrets()["API_TOKEN"] == "tok-5a1d0c3e-rotated"
    assert "release command runs: 2" in stack.page()


def test_a_failing_release_command_switches_nothing_and_the_old_version_keeps_serving(stack):
    before, page = serving(stack.project, ENV), stack.page()
    stack.inventory({**SETTINGS, "FAIL_MIGRATION": '"1"'})
    result = stack.invoke("deploy", check=False)
    print(f"\n{result.stdout}{result.stderr}")
    assert result.returncode == 1
    assert "db-upgrade: failed on purpose (FAIL_MIGRATION=1); nothing was changed | release command failed " \
           f"(exit 1): nothing switched, {before} still serves" in result.stderr
    assert app_containers(stack.project, ENV) == [before]
    assert stack.page() == page
    assert stack.history()[-1]["result"] == "failure"
    stack.inventory(SETTINGS)
    stack.invoke("deploy")
    assert "release command runs: 3" in stack.page()


def set_version(stack: Stack, version: int) -> None:
    app = stack.project.sources / "apps" / "flask-pip" / "app.py"
    app.write_text(re.sub(r"^VERSION = .*$", f"VERSION = {version}", app.read_text(), flags=re.M))


def test_a_release_through_the_webhook_runs_the_release_command_and_rollback_restores_the_previous_version(stack):
    set_version(stack, 2)
    stack.invoke("app.release", "--version", "v2")
    assert "Ahoy from flask-pip! Version 2" in stack.page()
    assert "release command runs: 4" in stack.page()
    assert stack.read_in_app("SECRET_KEY") == stack.secrets()["SECRET_KEY"]

    result = stack.invoke("app.rollback")
    assert re.search(r"rolled back to \S+flask-pip:deploy-\w+ \(from \S+flask-pip:v2\)", result.stdout)
    assert "Ahoy from flask-pip! Version 1" in stack.page()
    last = stack.history()[-1]
    assert (last["trigger"]["source"], last["result"]) == ("rollback", "success")
    assert "rollback" in stack.invoke("app.history").stdout
    # deploy leaves a rolled back app alone until what it declares changes
    set_version(stack, 1)
    assert "no changes" in stack.invoke("deploy").stdout
    assert stack.invoke("app.rollback", "--to", "nosuchtag", check=False).stderr == (
        "error: web1: no image tagged nosuchtag in the app's history; `invoke app.history` lists them\n")


def test_status_names_each_service_and_the_last_release(stack):
    result = stack.invoke("status", "--json")
    (host,) = json.loads(result.stdout)["hosts"]
    assert host["host"] == "web1"
    assert {s["role"] for s in host["services"]} == SERVICES
    app = next(s for s in host["services"] if s["role"] == "app")
    assert (app["name"], app["health"], app["restarts"]) == (serving(stack.project, ENV), "healthy", 0)
    assert app["version"].startswith("deploy-") and app["uptime_s"] >= 0
    assert host["upstream"] == f"{app['name']}:8000"
    assert host["last_release"]["trigger"]["source"] == "rollback"
    shown = stack.invoke("status").stdout
    print(f"\n{shown}")
    assert "proxy upstream: dockyard-app-" in shown


def test_exec_runs_in_a_new_container_with_the_apps_settings_and_returns_its_exit_code(stack):
    result = stack.invoke("app.exec", "flask --app app db-upgrade")
    assert "db-upgrade: schema at version 2 (0 migration(s) applied)" in result.stdout
    # the secret reaches the one-off container, and the output hides it
    assert stack.invoke("app.exec", "cat /run/secrets/API_TOKEN").stdout.strip() == "********"
    assert stack.invoke("app.exec", "sh -c 'exit 3'", check=False).returncode == 3
    assert app_containers(stack.project, ENV) == [serving(stack.project, ENV)]  # nothing left behind


def test_logs_come_from_every_app_host_prefixed_with_its_name(stack):
    lines = stack.invoke("app.logs", "--lines", "5").stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("web1 | ") for line in lines)
    assert any("GET /healthz" in line or "GET / " in line for line in lines)


def test_no_secret_value_in_any_output_log_history_or_inspect(stack):
    name = serving(stack.project, ENV)
    places = {
        "dockyard's output": "\n".join(stack.outputs),
        "the app's log": host_run(stack.project, ENV, f"docker logs {name} 2>&1"),
        "the webhook's log": host_run(stack.project, ENV, "docker logs dockyard-webhook 2>&1"),
        "history.jsonl": host_run(stack.project, ENV, f"cat {HISTORY}"),
        "docker inspect of the app": json.dumps(inspect(stack.project, ENV, name)),
        "the container document": host_run(stack.project, ENV, "cat /etc/dockyard/app/container.json"),
    }
    assert "write /etc/dockyard/app/secrets/API_TOKEN" in places["dockyard's output"]  # the search sees it all
    values = [*stack.secrets().values(), API_TOKEN]
    for where, text in places.items():
        for value in values:
            assert value not in text, f"a secret in {where}"
