"""Containers and their images: run one from its spec, replace, start, wait until healthy, read its log; pull,
tag and load images."""

from __future__ import annotations

import shlex

from dockyard.commands import docker
from dockyard.contract import (
    CLUSTER_NETWORK,
    DOCKER_STOP_TIMEOUT,
    IMAGE_LABEL,
    READY_INTERVAL_S,
    ROLE_LABEL,
    SPEC_LABEL,
    readiness_probe,
)
from dockyard.spec import NETWORK, ContainerSpec, Health

HEALTH_INTERVAL_S, HEALTH_TIMEOUT_S, HEALTH_RETRIES = 2, 3, 3  # Docker's checks of a running container


def container_document(spec: ContainerSpec, role: str, release: tuple[str, ...] = ()) -> dict:
    """Everything `docker run` gets but the image, as data: deploy runs it, and the webhook starts the app's next
    slot from it on each pushed image (`name` is the service's; the slots add to it). Deploy's bookkeeping labels
    are added by `run_container` alone. `env_file` says whether the env file beside the document applies (its
    values are in no document); `release` is the command run before a switch (`Slots.release`)."""
    return {
        "name": spec.name,
        "ports": list(spec.ports),
        "volumes": list(spec.volumes),
        "env": dict(spec.env),
        "command": list(spec.command),
        "restart": spec.restart,
        "network": spec.network,
        "labels": {**dict(spec.labels), ROLE_LABEL: role},
        "log": {"max-size": "10m", "max-file": "3"},
        "health": spec.health and {
            "command": spec.health.command(), "interval_s": HEALTH_INTERVAL_S, "timeout_s": HEALTH_TIMEOUT_S,
            "retries": HEALTH_RETRIES,
        },
        "env_file": spec.env_file is not None,
        "release": list(release),
    }


def run_container(spec: ContainerSpec, role: str, digest: str, name: str | None = None,
                  declared: str | None = None) -> str:
    """`docker run` of the spec; `name` is a shell word to name the container by instead, such as "$slot" for the
    slot a switch picks on the host; `declared` the image deploy declared, when another one runs (a rollback)."""
    doc = container_document(spec, role)
    args = ["--restart", doc["restart"], "--network", doc["network"]]
    if spec.stop_timeout != DOCKER_STOP_TIMEOUT:
        # not in the document: the webhook's SDK cannot set it, and the app keeps Docker's default
        args += ["--stop-timeout", str(spec.stop_timeout)]
    for key, value in doc["log"].items():
        args += ["--log-opt", f"{key}={value}"]
    for port in doc["ports"]:
        args += ["--publish", port]
    for volume in doc["volumes"]:
        args += ["--volume", volume]
    args += _settings(spec)
    for key, value in {**doc["labels"], IMAGE_LABEL: declared or spec.image, SPEC_LABEL: digest}.items():
        args += ["--label", f"{key}={value}"]
    if health := doc["health"]:
        args += [
            "--health-cmd", health["command"], "--health-interval", f"{health['interval_s']}s",
            "--health-timeout", f"{health['timeout_s']}s", "--health-retries", str(health["retries"]),
        ]
    return (f"{docker('run', '--detach', '--name')} {name or shlex.quote(doc['name'])} {_sysctls(spec)}"
            + shlex.join([*args, spec.image, *doc["command"]]))


def _sysctls(spec: ContainerSpec) -> str:
    """`--sysctl` flags, each one only where the host's kernel has the setting: Docker refuses to start a container
    with one it lacks, and an older kernel should cost the feature, not the container."""
    return "".join(
        f"$(test -e /proc/sys/{key.replace('.', '/')} && echo {shlex.quote(f'--sysctl={key}={value}')}) "
        for key, value in spec.sysctls)


def _settings(spec: ContainerSpec) -> list[str]:
    """What a container reads its settings from: plain values on the line, secrets from files."""
    args = []
    for key, value in spec.env:
        args += ["--env", f"{key}={value}"]
    if spec.env_file:
        args += ["--env-file", spec.env_file]
    return args


def one_off(spec: ContainerSpec, name: str, command: tuple[str, ...], image: str | None = None) -> str:
    """`docker run --rm` of `command` in a new container with the spec's settings, network and volumes, but none of
    its ports, labels, health check or restart policy; `image` is a shell word to run instead of the spec's
    ("$image"). Whatever held `name` before, a run cut short, is removed first."""
    args = ["--network", spec.network, *(w for v in spec.volumes for w in ("--volume", v)), *_settings(spec)]
    return (
        f"{remove_container(name)} 2>/dev/null || true\n{docker('run', '--rm', '--name', name, *args)} "
        f"{image or shlex.quote(spec.image)} {shlex.join(command)}"
    )


def remove_container(name: str) -> str:
    return docker("rm", "--force", name) + " >/dev/null"


def start_container(name: str) -> str:
    return docker("start", name) + " >/dev/null"


def run_inside(name: str, command: tuple[str, ...]) -> str:
    """Run `command` in the running container `name`."""
    return docker("exec", name, *command) + " >/dev/null"


def ensure_network(name: str = NETWORK) -> str:
    """The network, created when missing: a swarm's is an overlay that plain containers may join too."""
    driver = ("--driver", "overlay", "--attachable") if name == CLUSTER_NETWORK else ()
    return (f"{docker('network', 'inspect', name)} >/dev/null 2>&1 || "
            f"{docker('network', 'create', *driver, name)} >/dev/null")


def pull(ref: str) -> str:
    return docker("pull", "--quiet", ref) + " >/dev/null"


def tag(image_id: str, ref: str) -> str:
    return docker("tag", image_id, ref)


def load() -> str:
    """Load the images of a `docker save` stream arriving on stdin."""
    return docker("load", "--quiet")


def ready(name: str, health: Health | None) -> str:
    """A condition: the readiness probe of the container `name` (a shell word) passes, run once, bounded by the
    health check's timeout."""
    probe = readiness_probe(health.command() if health else None)
    return f"timeout {HEALTH_TIMEOUT_S} {docker('exec')} {name} {shlex.join(probe)} >/dev/null 2>&1"


def until_ready(name: str, health: Health | None, timeout: int, give_up: str) -> str:
    """Run the readiness probe of the container `name` (a shell word) every READY_INTERVAL_S until it passes; after
    `timeout` seconds run `give_up`, which exits."""
    return (
        f"since=$(date +%s); until {ready(name, health)}; do "
        f"if [ $(($(date +%s) - since)) -ge {timeout} ]; then {give_up}; fi; sleep {READY_INTERVAL_S}; done"
    )


def wait_healthy(name: str, health: Health | None, timeout: int = 90) -> str:
    """Wait until the container is ready; after `timeout` seconds print its last log lines and fail."""
    q = shlex.quote
    give_up = f"echo {q(f'{name} not healthy after {timeout}s; its log:')} >&2; {docker('logs', '--tail', '20', name)}"
    return until_ready(q(name), health, timeout, f"{give_up} >&2; exit 1")


def logs(name: str, tail: int) -> str:
    """The container's last `tail` log lines, both streams on stdout."""
    return docker("logs", "--tail", str(tail), name) + " 2>&1"
