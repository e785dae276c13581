"""What the host gets from the app's settings: secret files and their mounts, plain env, the env file on request.

A changed value must replace the app (its spec digest changes) while the value stays out of the digest's input,
the labels, the `docker run` line and the container document the webhook reads.
"""

import json

import pytest

from dockyard import app_settings, spec
from dockyard.commands import containers as commands
from dockyard.commands.files import write_file
from dockyard.errors import SecretError
from dockyard.inventory import App, Secret
from dockyard.spec import ContainerSpec, Rendered

APP = App(
    env={"GREETING": "Hello", "ADMIN_EMAIL": "ops@example.com"},
    secrets={"SECRET_KEY": Secret("generate"), "DATABASE_PASSWORD": Secret("ssm:/acme/db", env=True)},
)
VALUES = {"SECRET_KEY": "k-3f9a8b7c6d5e4f3a2b1c", "DATABASE_PASSWORD": "pw-9e8d7c6b5a4f"}


def test_each_secret_is_a_file_mounted_on_its_own_and_plain_settings_are_env():
    app = App(env=APP.env, secrets={"SECRET_KEY": Secret("generate")})
    assert app_settings.secret_files(app, VALUES) == (
        spec.File("/etc/dockyard/app/secrets/SECRET_KEY", content="k-3f9a8b7c6d5e4f3a2b1c", secret=True,
                  image_user=True),
    )
    assert app_settings.secret_mounts(app) == ("/etc/dockyard/app/secrets/SECRET_KEY:/run/secrets/SECRET_KEY:ro",)
    assert app_settings.container_env(app) == (("ADMIN_EMAIL", "ops@example.com"), ("GREETING", "Hello"))
    assert app_settings.env_file(app) is None


def test_a_secret_is_an_environment_variable_only_when_asked():
    assert app_settings.secret_mounts(APP) == (
        "/etc/dockyard/app/secrets/DATABASE_PASSWORD:/run/secrets/DATABASE_PASSWORD:ro",
        "/etc/dockyard/app/secrets/SECRET_KEY:/run/secrets/SECRET_KEY:ro",
    )
    assert app_settings.env_file(APP) == "/etc/dockyard/app/secrets.env"
    files = app_settings.secret_files(APP, VALUES)
    # Docker reads the env file as root; the container's user reads the secret files
    assert files[-1] == spec.File(
        "/etc/dockyard/app/secrets.env", content="DATABASE_PASSWORD=pw-9e8d7c6b5a4f\n", secret=True)
    assert [f.dest for f in files if f.image_user] == [
        "/etc/dockyard/app/secrets/DATABASE_PASSWORD", "/etc/dockyard/app/secrets/SECRET_KEY"]
    assert all(name not in dict(app_settings.container_env(APP)) for name in VALUES)


def test_an_app_without_secrets_gets_only_its_env():
    app = App(env={"A": "1"})
    assert app_settings.secret_files(app, {}) == ()
    assert app_settings.secret_mounts(app) == ()
    assert app_settings.container_env(app) == (("A", "1"),)


def test_the_release_command_is_split_into_words():
    assert app_settings.release_words(App(release_command="flask --app app db-upgrade")) == (
        "flask", "--app", "app", "db-upgrade")
    assert app_settings.release_words(App()) == ()


def test_secret_files_are_written_0600_and_given_to_the_image_user_in_a_folder_of_roots():
    command = write_file(rendered(app_settings.secret_files(APP, VALUES)[0], owner=10001))
    path = "/etc/dockyard/app/secrets/DATABASE_PASSWORD"
    assert command.startswith("mkdir -p -m 700 /etc/dockyard/app/secrets && ")
    assert command.endswith(f"chmod 600 {path}.dockyard-new && chown 10001:10001 {path}.dockyard-new && "
                            f"mv {path}.dockyard-new {path}")


def rendered(file: spec.File, owner: int = 10001) -> Rendered:
    """As deploy renders a file given by its content."""
    return Rendered(file.dest, file.content.encode(), file.mode, file.secret, owner=owner if file.image_user else 0)


def app_spec(values: dict[str, str], owner: int = 10001) -> tuple[ContainerSpec, tuple[Rendered, ...]]:
    container = ContainerSpec(
        name="dockyard-app", image="127.0.0.1:5000/flask-pip:v1", env=app_settings.container_env(APP),
        volumes=app_settings.secret_mounts(APP), env_file=app_settings.env_file(APP),
        health=spec.Health(8000, "/healthz"),
    )
    return container, tuple(rendered(f, owner) for f in app_settings.secret_files(APP, values))


@pytest.mark.parametrize("name", list(VALUES))
def test_a_changed_value_changes_the_spec_digest(name):
    before = spec.spec_digest(*app_spec(VALUES))
    after = spec.spec_digest(*app_spec({**VALUES, name: VALUES[name] + "-rotated"}))
    assert before != after
    assert spec.spec_digest(*app_spec(dict(VALUES))) == before


def test_a_changed_image_user_changes_the_spec_digest():
    assert spec.spec_digest(*app_spec(VALUES, owner=10001)) != spec.spec_digest(*app_spec(VALUES, owner=10002))


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

    document = json.dumps(commands.container_document(container, "app", ("flask", "db-upgrade")))
    run = commands.run_container(container, "app", digest)
    one_off = commands.one_off(container, "dockyard-app-release", ("flask", "db-upgrade"))
    assert "--env-file /etc/dockyard/app/secrets.env" in run and "--env-file /etc/dockyard/app/secrets.env" in one_off
    assert digest_input and "/etc/dockyard/app/secrets/SECRET_KEY" in digest_input[-1]  # the recording saw it
    for value in VALUES.values():
        for seen in (*digest_input, digest, document, run, one_off):
            assert value not in seen


@pytest.mark.parametrize(("user", "uid"), [("", 0), ("root", 0), ("0", 0), ("10001", 10001), ("10001:10001", 10001)])
def test_the_owner_is_the_user_id_the_image_runs_as(user, uid):
    assert app_settings.image_user_id(user) == uid


def test_a_named_image_user_needs_a_number():
    with pytest.raises(SecretError, match=r"the app's image runs as user 'app', and secret files are given to a "
                                          r"numeric user id: write `USER <id>` in its Dockerfile"):
        app_settings.image_user_id("app:app")
