"""What deploy and the webhook listener agree on. The listener's image carries this very file
(roles/webhook.py adds it to the build context), so there is nothing to copy and nothing to keep in step.

Standard library only: it runs inside the listener's image as well as in dockyard.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import get_args, get_origin

# Labels deploy puts on each container it starts.
ROLE_LABEL = "dockyard.role"
SPEC_LABEL = "dockyard.spec"  # the digest of the declared spec and its files
IMAGE_LABEL = "dockyard.image"  # the image deploy declared
# Deploy's bookkeeping: the listener carries these over to the app's new container, so deploy sees no change.
CARRIED_LABELS = (SPEC_LABEL, IMAGE_LABEL)

PUSHED_TAG_PREFIX = "deploy-"  # tags deploy pushes itself; the listener never acts on them
DOCKER_STOP_TIMEOUT = 10  # seconds `docker stop` waits when the container sets none

# On the host. Deploy writes the app's container document into HOST_APP_SPEC_DIR; the listener keeps its
# history and the lock that deploy also takes into HOST_LISTENER_DIR.
CONFIG_ROOT = "/etc/dockyard"
HOST_APP_SPEC_DIR = f"{CONFIG_ROOT}/app"
HOST_LISTENER_DIR = "/var/lib/dockyard/webhook"
# Inside the listener's container, where roles/webhook.py mounts them. The app spec's folder, not its file:
# deploy replaces the file atomically, which a file mount would miss.
LISTENER_CONFIG = "/etc/dockyard-webhook/config.json"
LISTENER_APP_SPEC_DIR = "/etc/dockyard-webhook/app"
LISTENER_STATE_DIR = "/var/lib/dockyard-webhook"
# The same names in the host's folder and in the listener's.
APP_SPEC_NAME = "container.json"
APP_ENV_FILE_NAME = "secrets.env"  # the app's secrets exposed as environment variables, beside its document
HISTORY_NAME = "history.jsonl"

# The host lock: every run that changes the host holds an exclusive `flock` on HOST_LOCK_NAME for its whole duration
# (deploy through its SSH session, the listener around a redeploy), and whoever takes it writes HOLDER_NAME beside
# it: who, from where, which task, since when (UTC) and the holder's pid, as one JSON object of HOLDER_FIELDS.
HOST_LOCK_DIR = "/var/lib/dockyard/lock"
LISTENER_LOCK_DIR = "/var/lib/dockyard-lock"  # where the listener mounts HOST_LOCK_DIR
HOST_LOCK_NAME = "host.lock"
HOLDER_NAME = "holder.json"
HOLDER_FIELDS = {"who": str, "from": str, "task": str, "since": str, "pid": int}

# Zero-downtime replacement: the app runs as `<name>-blue` or `<name>-green`, and the proxy serves the one the
# upstream file names. The file is state, not config: deploy and the listener rewrite it on each switch, and Caddy
# reads it at start, so the current slot survives proxy restarts and host reboots.
SLOTS = ("blue", "green")
HOST_UPSTREAM_DIR = "/var/lib/dockyard/proxy"
LISTENER_UPSTREAM_DIR = "/var/lib/dockyard-webhook-proxy"  # where the listener mounts that folder
UPSTREAM_NAME = "app.upstream"
HOST_UPSTREAM_FILE = f"{HOST_UPSTREAM_DIR}/{UPSTREAM_NAME}"
PROXY_CONTAINER = "dockyard-proxy"
# Run inside the proxy's container: Caddy adapts its Caddyfile again, the upstream file it imports included, and
# swaps the config in without dropping a request (an unchanged config is left alone).
PROXY_RELOAD = ("caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile")
# After the reload and before the old container is stopped: requests the old config still routes get there.
SWITCH_SETTLE_SECONDS = 1
# A starting container is waited for with its readiness probe, run every READY_INTERVAL_S until it passes: Docker's
# health check says `starting` until its first check, which comes only an interval after the start.
READY_INTERVAL_S = 0.1
# A swarm (`cluster: swarm`): the app is the service APP_SERVICE of the stack STACK, on the attachable overlay
# CLUSTER_NETWORK that the first manager's containers join too, so the proxy resolves `tasks.<service>`. Its nodes
# pull from the registry's read-only twin, served with TLS from dockyard's CA on the registry host's private
# address at CLUSTER_REGISTRY_PORT.
STACK = "dockyard"
APP_SERVICE = f"{STACK}_app"
CLUSTER_NETWORK = "dockyard-cluster"
CLUSTER_REGISTRY_PORT = 5443
_UPSTREAM = re.compile(r"to ([A-Za-z0-9][A-Za-z0-9_.-]*):([0-9]{1,5})")


def slot_names(name: str) -> tuple[str, str]:
    """The containers a service with slots runs as, `dockyard-app-blue` and `dockyard-app-green`."""
    return tuple(f"{name}-{slot}" for slot in SLOTS)


def upstream_line(container: str, port: int) -> str:
    """The upstream file's content: the one directive Caddy imports into the app's `reverse_proxy` block."""
    return f"to {container}:{port}\n"


def upstream_target(text: str) -> tuple[str, int] | None:
    """The container and port an upstream file names; None when it names none."""
    match = _UPSTREAM.fullmatch(text.strip())
    return (match[1], int(match[2])) if match else None


def next_slot(name: str, serving: str, exists: Callable[[str], bool]) -> str:
    """Where a new container of `name` starts: green while blue serves (the upstream file names it and it
    exists), blue otherwise. Never the container that serves. `commands.switch` says the same in shell."""
    blue, green = slot_names(name)
    return green if serving == blue and exists(blue) else blue

# The app's container document: everything `docker run` gets but the image, as
# dockyard.commands.containers.container_document writes it. A nested table is an object that may also be null.
HEALTH_FIELDS = {"command": str, "interval_s": int, "timeout_s": int, "retries": int}
CONTAINER_FIELDS = {
    "name": str, "ports": list[str], "volumes": list[str], "env": dict[str, str], "command": list[str],
    "restart": str, "network": str, "labels": dict[str, str], "log": dict[str, str], "health": HEALTH_FIELDS,
    "env_file": bool, "release": list[str],
}


def document_problem(doc: object, fields: dict = CONTAINER_FIELDS, where: str = "") -> str | None:
    """What makes `doc` not a document of `fields`, naming the key; None when it is one."""
    if not isinstance(doc, dict):
        return f"{where.rstrip('.') or 'the document'} is not a JSON object"
    for key, kind in fields.items():
        value, name = doc.get(key), where + key
        if isinstance(kind, dict):
            problem = value is not None and document_problem(value, kind, f"{name}.")
            if problem:
                return problem
            continue
        container, item = get_origin(kind) or kind, (get_args(kind) or (object,))[-1]
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if not isinstance(value, container) or not all(isinstance(i, item) for i in items):
            return f"{name} missing or not {_describe(kind)}"
    return None


def _describe(kind) -> str:
    origin = get_origin(kind)
    return f"{origin.__name__}[{', '.join(a.__name__ for a in get_args(kind))}]" if origin else kind.__name__


def readiness_probe(health_command: str | None) -> tuple[str, ...]:
    """The readiness probe's command line inside a container: the command of its health check, or, without one, a
    command that passes while the container runs."""
    return ("sh", "-c", health_command) if health_command else ("true",)
