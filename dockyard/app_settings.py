"""What the app's host and container get from its settings and resolved secrets, as data; nothing runs here.

- A plain setting (`services.app.env`) is an environment variable of the container.
- A secret is a file on the host, /etc/dockyard/app/secrets/<NAME>, mode 0600 and owned by the user the app's
  image runs as, mounted read-only at /run/secrets/<NAME>. Each file is mounted on its own, so the host folder can
  stay root's alone while the container's user reads exactly its files.
- A secret with `env: true` is also a line of /etc/dockyard/app/secrets.env (0600, root's), which
  `docker run --env-file` and the webhook read: the value is in no command line and not in container.json.
  `docker inspect` on the host does show such a variable, as it shows any environment variable.

A changed value changes its file, and the files' hashes are part of the app's spec digest (`spec.spec_digest`), so
deploy replaces the app. The digest's input holds a file's hash, never its content.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.errors import SecretError
from dockyard.inventory import App
from dockyard.spec import File
from roles.app import SPEC_DIR

CONTAINER_SECRETS = "/run/secrets"
SECRETS_DIR = f"{SPEC_DIR}/secrets"
ENV_FILE = f"{SPEC_DIR}/secrets.env"


@dataclass(frozen=True)
class AppSettings:
    files: tuple[File, ...] = ()  # written with secret=True
    volumes: tuple[str, ...] = ()  # host file:container file:ro, one per secret
    env: tuple[tuple[str, str], ...] = ()  # the plain settings, by name
    env_file: str | None = None  # for `docker run --env-file`, when a secret is also an environment variable
    # The secret files' owner: the user id the app's image runs as (see `image_user_id`).
    owner: int = 0

    @property
    def secret_files(self) -> tuple[str, ...]:
        """The host files that must belong to `owner`."""
        return tuple(f.dest for f in self.files if f.dest != ENV_FILE)


def host_settings(app: App, values: dict[str, str], owner: int) -> AppSettings:
    """`values`: every secret's resolved value, by name (`app_secrets.resolve`)."""
    names = sorted(app.secrets)
    files = tuple(File(f"{SECRETS_DIR}/{name}", content=values[name], secret=True) for name in names)
    exposed = [name for name in names if app.secrets[name].env]
    if exposed:
        # one NAME=value line each, as `docker run --env-file` reads it; resolving refused values with line breaks
        lines = "".join(f"{name}={values[name]}\n" for name in exposed)
        files += (File(ENV_FILE, content=lines, secret=True),)
    return AppSettings(
        files=files,
        volumes=tuple(f"{SECRETS_DIR}/{name}:{CONTAINER_SECRETS}/{name}:ro" for name in names),
        env=tuple(sorted(app.env.items())),
        env_file=ENV_FILE if exposed else None,
        owner=owner,
    )


def image_user_id(user: str) -> int:
    """The user id a container of the image runs as, from the image's `Config.User` ("" means root)."""
    name = user.partition(":")[0]
    if name in ("", "root"):
        return 0
    if not name.isdigit():
        raise SecretError(
            f"the app's image runs as user {name!r}, and secret files are given to a numeric user id: write "
            f"`USER <id>` in its Dockerfile (apps/flask-pip uses 10001)"
        )
    return int(name)
