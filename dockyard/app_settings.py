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

import shlex

from dockyard import contract
from dockyard.errors import SecretError
from dockyard.inventory import App
from dockyard.spec import File

CONTAINER_SECRETS = "/run/secrets"
SECRETS_DIR = f"{contract.HOST_APP_SPEC_DIR}/secrets"
ENV_FILE = f"{contract.HOST_APP_SPEC_DIR}/{contract.APP_ENV_FILE_NAME}"


def container_env(app: App) -> tuple[tuple[str, str], ...]:
    """The plain settings, by name."""
    return tuple(sorted(app.env.items()))


def secret_mounts(app: App) -> tuple[str, ...]:
    """host file:container file:ro, one per secret: the host folder stays root's, the container sees its files."""
    return tuple(f"{SECRETS_DIR}/{name}:{CONTAINER_SECRETS}/{name}:ro" for name in sorted(app.secrets))


def env_file(app: App) -> str | None:
    """For `docker run --env-file`, when a secret is also an environment variable."""
    return ENV_FILE if any(secret.env for secret in app.secrets.values()) else None


def release_words(app: App) -> tuple[str, ...]:
    """The release command as the words `docker run` gets (the inventory's check made sure it splits)."""
    return tuple(shlex.split(app.release_command)) if app.release_command else ()


def secret_files(app: App, values: dict[str, str]) -> tuple[File, ...]:
    """`values`: every secret's resolved value, by name (`app_secrets.resolve`). Each file is 0600 and belongs to
    the user the app's image runs as; the env file is read by Docker, as root."""
    names = sorted(app.secrets)
    files = tuple(File(f"{SECRETS_DIR}/{name}", content=values[name], secret=True, image_user=True) for name in names)
    exposed = [name for name in names if app.secrets[name].env]
    if exposed:
        # one NAME=value line each, as `docker run --env-file` reads it; resolving refused values with line breaks
        files += (File(ENV_FILE, content="".join(f"{name}={values[name]}\n" for name in exposed), secret=True),)
    return files


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
