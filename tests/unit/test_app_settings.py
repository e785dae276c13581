"""What the host gets from the app's settings: secret files and their mounts, plain env, the env file on request.

A changed value must replace the app (its spec digest changes) while the value stays out of the digest's input,
the labels, the `docker run` line and the container document the webhook reads.
"""

import json

import pytest

from dockyard import app_settings, commands, spec
from dockyard.errors import SecretError
from dockyard.inventory import App, Secret
from dockyard.spec import ContainerSpec, Rendered

APP = App(
    env={"GREETING": "Hello", "ADMIN_EMAIL": "ops@example.com"},
    secrets={"SECRET_KEY": Secret("generate"), "DATABASE_PASSWORD": Secret("ssm:/acme/db", env=True)},
)
VALUES = {"SECRET_KEY": "k-3f9a8b7c6d5e4f3a2b1c", "DATABASE_PASSWORD": "pw-9e8d7c6b5a4f"}


def test_each_secret_is_a_file_mounted_on_its_own_and_plain_settings_are_env():
    got = app_settings.host_settings(App(env=APP.env, secrets={"SECRET_KEY": Secret("generate")}), VALUES, 10001)
    assert got == app_settings.AppSettings(
        files=(spec.File("/etc/dockyard/app/secrets/SECRET_KEY", content="k-3f9a8b7c6d5e4f3a2b1c", secret=True),),
        volumes=("/etc/dockyard/app/secrets/SECRET_KEY:/run/secrets/SECRET_KEY:ro",),
        env=(("ADMIN_EMAIL", "ops@example.com"), ("GREETING", "Hello")),
        env_file=None,
        owner=10001,
    )
    assert got.secret_files == ("/etc/dockyard/app/secrets/SECRET_KEY",)


def test_a_secret_is_an_environment_variable_only_when_asked():
    got = app_settings.host_settings(APP, VALUES, 10001)
    assert got.volumes == (
        "/etc/dockyard/app/secrets/DATABASE_PASSWORD:/run/secrets/DATABASE_PASSWORD:ro",
        "/etc/dockyard/app/secrets/SECRET_KEY:/run/secrets/SECRET_KEY:ro",
    )
    assert got.env_file == "/etc/dockyard/app/secrets.env"
    assert got.files[-1] == spec.File(
        "/etc/dockyard/app/secrets.env", content="DATABASE_PASSWORD=pw-9e8d7c6b5a4f\n", secret=True)
    assert got.secret_files == (
        "/etc/dockyard/app/secrets/DATABASE_PASSWORD", "/etc/dockyard/app/secrets/SECRET_KEY")
    assert all(name not in dict(got.env) for name in VALUES)


def test_an_app_without_secrets_gets_only_its_env():
    assert app_settings.host_settings(App(env={"A": "1"}), {}, 0) == app_settings.AppSettings(env=(("A", "1"),))


def test_secret_files_are_written_0600():
    for file in app_settings.host_settings(APP, VALUES, 10001).files:
        assert f"chmod 600 {file.dest}.dockyard-new" in commands.write_file(rendered(file))


def rendered(file: spec.File) -> Rendered:
    """As deploy renders a file given by its content."""
    return Rendered(file.dest, file.content.encode(), file.mode, file.secret)


def app_spec(values: dict[str, str]) -> tuple[ContainerSpec, tuple[Rendered, ...]]:
    got = app_settings.host_settings(APP, values, 10001)
    container = ContainerSpec(
        name="dockyard-app", image="127.0.0.1:5000/flask-pip:v1", ports=("0.0.0.0:8000:8000",), env=got.env,
        volumes=got.volumes, health=spec.Health(8000, "/healthz"),
    )
    return container, tuple(rendered(f) for f in got.files)


@pytest.mark.parametrize("name", list(VALUES))
def test_a_changed_value_changes_the_spec_digest(name):
    before = spec.spec_digest(*app_spec(VALUES))
    after = spec.spec_digest(*app_spec({**VALUES, name: VALUES[name] + "-rotated"}))
    assert before != after
    assert spec.spec_digest(*app_spec(dict(VALUES))) == before


def test_no_value_reaches_the_digest_input_labels_command_line_or_container_document(monkeypatch):
    container, files = app_spec(VALUES)
    digest_input = []
    dumps = json.dumps

    def recording(value, **kwargs):
        text = dumps(value, **kwargs)
        digest_input.append(text)
        return text

    monkeypatch.setattr(spec.json, "dumps", recording)
    digest = spec.spec_digest(container, files)
    monkeypatch.undo()

    document = json.dumps(commands.container_document(container, "app"))
    run = commands.run_container(container, "app", digest)
    assert digest_input and "/etc/dockyard/app/secrets/SECRET_KEY" in digest_input[-1]  # the recording saw it
    for value in VALUES.values():
        for seen in (*digest_input, digest, document, run):
            assert value not in seen


@pytest.mark.parametrize(("user", "uid"), [("", 0), ("root", 0), ("0", 0), ("10001", 10001), ("10001:10001", 10001)])
def test_the_owner_is_the_user_id_the_image_runs_as(user, uid):
    assert app_settings.image_user_id(user) == uid


def test_a_named_image_user_needs_a_number():
    with pytest.raises(SecretError, match=r"the app's image runs as user 'app', and secret files are given to a "
                                          r"numeric user id: write `USER <id>` in its Dockerfile"):
        app_settings.image_user_id("app:app")
