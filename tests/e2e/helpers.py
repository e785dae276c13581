"""Shared by the reliability and security e2e tests: the CLI as a subprocess, HTTP, and a look inside a host."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import docker
import docker.errors

from dockyard import deploy, facts, front_door
from dockyard.contract import HOST_UPSTREAM_FILE, slot_names
from dockyard.providers.sandbox import project_id
from dockyard.state import State
from roles import app
from tests.conftest import REPO, Project

# The stack's containers after `provision deploy`; the app starts in its first slot, and each switch moves it to
# the other one.
CONTAINERS = (
    "dockyard-registry", "dockyard-mirror", "dockyard-registry-ui", "dockyard-proxy", "dockyard-app-blue",
    "dockyard-webhook",
)
APP_CONTAINERS = (*slot_names(app.NAME), app.NAME)  # its slots, and its name from before slots
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def cli_environ(project: Project, env: str) -> dict[str, str]:
    """The variables `Project.invoke` gives the real command line."""
    return {
        **os.environ,
        "INVOKE_DOCKYARD_ENV": env,
        "INVOKE_DOCKYARD_INVENTORY_DIR": str(project.inventory_dir),
        "INVOKE_DOCKYARD_STATE_DIR": str(project.state_dir),
        "INVOKE_DOCKYARD_ROOT": str(project.sources),
    }


def start_cli(project: Project, env: str, log: Path, *args: str) -> subprocess.Popen:
    """The real command line in its own process group, its output (both streams) going to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "invoke", *args], cwd=REPO, env=cli_environ(project, env), stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything in its group, then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def listening_ports(pid: int) -> set[int]:
    """TCP ports a local process listens on (its SSH tunnels), from /proc: no psutil needed."""
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    ports = set()
    for line in table:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def remove_push_tags(ports: set[int]) -> list[str]:
    """Drop the `127.0.0.1:<port>/...` names a killed push left on the local engine (its tunnel ports only)."""
    client = docker.from_env()
    removed = []
    for image in client.images.list():
        for tag in image.tags:
            match = re.match(r"127\.0\.0\.1:(\d+)/", tag)
            if match and int(match.group(1)) in ports:
                try:
                    client.api.remove_image(tag, noprune=True)
                    removed.append(tag)
                except docker.errors.APIError:
                    pass
    return removed


def http(url: str, method: str = "GET", data: bytes | None = None, headers=None, timeout: float = 10,
         ca: Path | None = None):
    """(status, body); an HTTP error status is an answer too. https is verified against `ca`, a CA file."""
    request = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what: str, check, timeout: float = 120, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def can_connect(address: str, port: int, timeout: float = 2) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def record(project: Project, env: str):
    (host,) = project.env(env).hosts()
    return host


def door(project: Project, env: str) -> tuple[str, Path]:
    """The proxy's https URL on the environment's one host, and a file with its internal CA's root."""
    e = project.env(env)
    (host,) = e.hosts()
    return front_door.url(e.inventory, host), front_door.export_ca(e, None)


def host_run(project: Project, env: str, script: str) -> str:
    """Run a script as root on the environment's one host; its stdout."""
    e = project.env(env)
    (host,) = e.hosts()
    with e.connect(host) as conn:
        return conn.run(script)


def seen_containers(project: Project, env: str) -> dict[str, facts.Seen]:
    e = project.env(env)
    (host,) = e.hosts()
    with e.connect(host) as conn:
        return deploy.read_facts(conn).containers


def inspect(project: Project, env: str, *names: str) -> dict[str, dict]:
    """`docker inspect` on the host, by container name."""
    out = host_run(project, env, "docker inspect " + " ".join(names))
    return {item["Name"].lstrip("/"): item for item in json.loads(out)}


def app_containers(project: Project, env: str) -> list[str]:
    """The app's containers on the host, whichever slot (or none) they are in."""
    names = host_run(project, env, "docker ps -a --format '{{.Names}}'").split()
    return sorted(n for n in names if n in APP_CONTAINERS)


def serving(project: Project, env: str) -> str:
    """The app container the proxy's upstream file names."""
    return host_run(project, env, f"sed -n 's/^to \\(.*\\):[0-9]*$/\\1/p' {HOST_UPSTREAM_FILE}").strip()


def all_healthy(project: Project, env: str) -> bool:
    """Each service's container, and the one app container the upstream file names, running and healthy."""
    try:
        names = [*(n for n in CONTAINERS if n not in APP_CONTAINERS), serving(project, env)]
        states = {name: item["State"] for name, item in inspect(project, env, *names).items()}
    except Exception:  # a host still booting: dockerd not up, a container not there yet
        return False
    return len(states) == len(names) and all(
        s["Running"] and (s.get("Health") or {}).get("Status", "healthy") == "healthy" for s in states.values()
    )


@contextmanager
def tunnel(project: Project, env: str, port: int):
    """http://127.0.0.1:<local> reaching the host's 127.0.0.1:<port>."""
    e = project.env(env)
    (host,) = e.hosts()
    with e.connect(host) as conn, conn.tunnel(port) as local:
        yield f"http://127.0.0.1:{local}"


def registry_contents(url: str) -> dict[str, dict[str, str]]:
    """repository -> tag -> manifest digest; every manifest fetched in full, so each must be readable."""
    contents = {}
    for repository in json.loads(http(f"{url}/v2/_catalog")[1])["repositories"]:
        contents[repository] = {}
        for tag in json.loads(http(f"{url}/v2/{repository}/tags/list")[1])["tags"] or []:
            request = urllib.request.Request(f"{url}/v2/{repository}/manifests/{tag}",
                                             headers={"Accept": MANIFEST_TYPES})
            with urllib.request.urlopen(request, timeout=10) as response:
                json.loads(response.read())
                contents[repository][tag] = response.headers["Docker-Content-Digest"]
    return contents


def set_app_version(project: Project, version: int) -> None:
    app = project.sources / "apps" / "flask-hello" / "app.py"
    app.write_text(re.sub(r"^VERSION = .*$", f"VERSION = {version}", app.read_text(), flags=re.M))


def labelled(project: Project, env: str) -> dict[str, list[str]]:
    """What the local engine still holds for the project's environment, by dockyard's labels."""
    client = docker.from_env()
    selector = {"label": [f"dockyard.project={project_id(State(project.state_dir, env))}", f"dockyard.env={env}"]}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=selector)],
        "volumes": [v.name for v in client.volumes.list(filters=selector)],
        "networks": [n.name for n in client.networks.list(filters=selector)],
    }
