"""dockyard against pyinfra, side by side in one run: whole processes, the median of N runs of each.

pyinfra comes from PyPI into its own virtualenv (bench/.peers/, gitignored) and deploys the stack's five
services before the proxy (registry, mirror, UI, app, webhook) to a sandbox host of its own: the images dockyard
builds, with the ports, volumes, env, restart policy, health checks and files dockyard's roles declare for that
host. dockyard's side is a plain `./run invoke deploy` of the bench's environment, whatever its stack holds.
Runs of the two tools alternate, so a busy moment of the shared machine hits both.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard import deploy, images, transfer
from dockyard.commands import containers
from dockyard.environment import Env
from dockyard.spec import Desired, Target
from roles import MODULES

REPO = Path(__file__).resolve().parents[1]
PYINFRA = "pyinfra==3.10.0"
VENVS = REPO / "bench" / ".peers"
PEER_ROLES = ("registry", "mirror", "registry_ui", "app", "webhook")
# One real setting of the registry's config, toggled before each run of the template measure.
TEMPLATE = Path("registry") / "config.yml.j2"
TEMPLATE_LINES = ("      age: 168h\n", "      age: 169h\n")
REGISTRY = "dockyard-registry"  # whose restart policy is changed by hand


@dataclass
class Tool:
    """A deploy command and the sandbox host it converges."""

    name: str
    command: list[str]
    cwd: Path
    environ: dict[str, str]
    host_container: str  # the sandbox host, a container on the local engine
    template: Path  # the template file the tool renders for the registry's config
    said_nothing_changed: Callable[[str], bool]  # reads the tool's output

    def run(self, expect_no_change: bool = False) -> float:
        started = time.monotonic()
        result = subprocess.run(self.command, cwd=self.cwd, env=self.environ, capture_output=True, text=True)
        seconds = time.monotonic() - started
        output = result.stdout + result.stderr
        tail = " | ".join(output.splitlines()[-8:])
        if result.returncode != 0:
            raise SystemExit(f"error: {self.name} exited {result.returncode}: {tail}")
        if expect_no_change and not self.said_nothing_changed(output):
            raise SystemExit(f"error: {self.name} changed something on a no-op run: {tail}")
        return seconds

    def on_host(self, script: str) -> str:
        """A shell script run by root inside the sandbox host, beside its Docker engine."""
        return subprocess.run(
            ["docker", "exec", self.host_container, "sh", "-c", script], capture_output=True, text=True, check=True
        ).stdout

    def toggle_template(self) -> None:
        text = self.template.read_text()
        old, new = TEMPLATE_LINES if TEMPLATE_LINES[0] in text else reversed(TEMPLATE_LINES)
        self.template.write_text(text.replace(old, new, 1))

    def remove_containers(self) -> None:
        self.on_host("docker rm --force $(docker ps --all --quiet) >/dev/null")

    def restart_policy(self) -> str:
        return self.on_host(f"docker inspect --format '{{{{.HostConfig.RestartPolicy.Name}}}}' {REGISTRY}").strip()


def pyinfra_executable() -> Path:
    """pyinfra in its own virtualenv, installed from PyPI once per pinned version."""
    venv = VENVS / PYINFRA.replace("==", "-")
    executable = venv / "bin" / "pyinfra"
    if not executable.exists():
        print(f"  installing {PYINFRA} into {venv.relative_to(REPO)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", PYINFRA], check=True)
    return executable


def dockyard_tool(env: Env, state_dir: Path, inventory_dir: Path) -> Tool:
    """`./run invoke deploy` on the bench's environment, in its throwaway project."""
    (record,) = env.hosts()
    environ = {
        **os.environ,
        "INVOKE_DOCKYARD_ROOT": str(env.root),
        "INVOKE_DOCKYARD_INVENTORY_DIR": str(inventory_dir),
        "INVOKE_DOCKYARD_STATE_DIR": str(state_dir),
    }
    return Tool(
        "dockyard", ["./run", "invoke", "deploy", "-e", env.name], REPO, environ, record.provider["container"],
        env.root / "templates" / TEMPLATE, lambda output: "no changes (" in output,
    )


def pyinfra_tool(env: Env, folder: Path) -> Tool:
    """pyinfra's project for the peer host: inventory, the workload and its files; images loaded on the host."""
    (record,) = env.hosts()
    online = env.images_source() == "online"
    target = Target(env.inventory, record, online)
    specs = [MODULES[role].declare(target) for role in PEER_ROLES]
    built = deploy.build_images(env, specs, online)
    context = {"secrets": {name: env.secret(name) for name in deploy.SECRETS}, "online": online}
    templates = deploy._templates(env.root / "templates")
    wanted = [deploy.resolve(spec, target, built, templates, context) for spec in specs]
    with env.connect(record) as conn:
        for built_image in built.values():
            transfer.ship(conn, env.out, env.layers.packed(built_image.ref))
    workload = {
        "network": wanted[0].container.network,
        "services": [service(want, built, folder) for want in wanted],
    }
    (folder / "workload.json").write_text(json.dumps(workload, indent=2))
    host_data = {
        "ssh_port": record.port, "ssh_user": record.user, "ssh_key": str(env.key_path(record)),
        "ssh_known_hosts_file": str(folder / "known_hosts"), "ssh_strict_host_key_checking": "accept-new",
        "_sudo": True, "workload": str(folder / "workload.json"),
    }
    (folder / "inventory.py").write_text(f"hosts = [({record.address!r}, {host_data!r})]\n")
    shutil.copyfile(REPO / "bench" / "pyinfra_deploy.py", folder / "deploy.py")
    command = [str(pyinfra_executable()), "inventory.py", "deploy.py", "-y"]
    environ = {**os.environ, "PYINFRA_PROGRESS": "off"}
    return Tool("pyinfra", command, folder, environ, record.provider["container"],
                folder / "files" / "etc" / "dockyard" / "registry" / "config.yml", pyinfra_changed_nothing)


def pyinfra_changed_nothing(output: str) -> bool:
    """pyinfra's results end with `Grand total  <hosts> <changed> <errors> <no change>`, `-` for none."""
    totals = next(line.split() for line in reversed(output.splitlines()) if "Grand total" in line)
    return totals[totals.index("total") + 2] == "-"


def service(want: Desired, built: dict[str, images.Built], folder: Path) -> dict:
    """One container of the workload, as pyinfra's docker.container takes it, with its files."""
    spec = want.container
    doc = containers.container_document(spec, want.role)
    extra = ["--stop-timeout", str(spec.stop_timeout)]
    for key, value in doc["log"].items():
        extra += ["--log-opt", f"{key}={value}"]
    if health := doc["health"]:
        extra += [
            "--health-cmd", health["command"], "--health-interval", f"{health['interval_s']}s",
            "--health-timeout", f"{health['timeout_s']}s", "--health-retries", str(health["retries"]),
        ]
    files = []
    for rendered in want.files:
        local = folder / "files" / rendered.dest.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        # the text dockyard rendered, kept literal when pyinfra renders it as its template
        local.write_bytes(b"{% raw %}" + rendered.content + b"{% endraw %}")
        files.append({"src": str(local), "dest": rendered.dest, "mode": f"{rendered.mode:o}"})
    return {
        "name": spec.name,
        "image": want.image.local_ref or spec.image,
        "ports": doc["ports"],
        "volumes": doc["volumes"],
        "env": [f"{k}={v}" for k, v in doc["env"].items()],
        "labels": [f"{k}={v}" for k, v in doc["labels"].items()],
        "restart": doc["restart"],
        "extra_args": extra,
        "command": shlex.join(doc["command"]),
        "files": files,
    }


def median_runs(tools: list[Tool], runs: int, prepare: Callable[[Tool], None] | None = None) -> dict[str, float]:
    """The median seconds of `runs` whole-process runs of each tool, the tools taking turns; without `prepare`,
    each run must be a no-op."""
    seconds = {tool.name: [] for tool in tools}
    for _ in range(runs):
        for tool in tools:
            if prepare:
                prepare(tool)
            seconds[tool.name].append(tool.run(expect_no_change=prepare is None))
    return {name: statistics.median(values) for name, values in seconds.items()}


def repairs_restart_policy(tool: Tool) -> bool:
    """Whether the tool puts back a restart policy changed by hand on the host."""
    tool.on_host(f"docker update --restart no {REGISTRY} >/dev/null")
    tool.run()
    return tool.restart_policy() == "always"
