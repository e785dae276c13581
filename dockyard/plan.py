"""Compare what is declared with what runs, and list only the difference. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from dockyard import commands
from dockyard.facts import HostFacts
from dockyard.inventory import Docker
from dockyard.spec import Desired

TRANSFERS = ("ship", "push")


@dataclass(frozen=True)
class Step:
    role: str
    action: str  # install | ship | push | write | pull | tag | run | recreate | start | wait
    target: str
    reason: str = ""
    command: str = ""  # the shell for a remote step; transfers carry their refs in target/source
    source: str = ""  # local image for a transfer

    @property
    def is_transfer(self) -> bool:
        return self.action in TRANSFERS


@dataclass(frozen=True)
class RolePlan:
    role: str
    steps: tuple[Step, ...]

    @property
    def changed(self) -> bool:
        return bool(self.steps)

    @property
    def summary(self) -> str:
        return "; ".join(f"{s.action} {s.target}" + (f" ({s.reason})" if s.reason else "") for s in self.steps)


@dataclass(frozen=True)
class Plan:
    host: str
    roles: tuple[RolePlan, ...]

    @property
    def changed(self) -> bool:
        return any(r.changed for r in self.roles)


def plan_docker(facts: HostFacts, settings: Docker, user: str) -> RolePlan:
    missing = []
    if not facts.docker_version:
        missing.append("not installed")
    elif not facts.docker_on_boot:
        missing.append("not started at boot")
    elif facts.loopback_exposed:
        missing.append("127.0.0.1 ports reachable from the network")
    if user != "root" and "docker" not in facts.groups:
        missing.append(f"{user} not in docker group")
    if not missing:
        return RolePlan("docker", ())
    target = "docker.io" if settings.install == "apt" else "docker (convenience script)"
    return RolePlan(
        "docker", (Step("docker", "install", target, ", ".join(missing), commands.install_docker(settings, user)),)
    )


def make_plan(host: str, desired: list[Desired], facts: HostFacts, docker: RolePlan | None = None) -> Plan:
    roles = [docker] if docker else []
    delivered: set[str] = set()  # refs an earlier role of this plan already brings
    for want in desired:
        roles.append(RolePlan(want.role, tuple(_role_steps(want, facts, delivered))))
    return Plan(host, tuple(roles))


def _role_steps(want: Desired, facts: HostFacts, delivered: set[str]):
    image, spec = want.image, want.container
    host_ids = set(facts.images.values())

    # 1. the image, from the local engine or a registry
    image_changing = False
    present = facts.images.get(image.ref)
    if image.ref in delivered or (present is not None and image.image_id in (None, present)):
        pass
    elif image.delivery == "pull":
        yield Step(want.role, "pull", image.ref, "missing on host", commands.pull(image.ref))
        image_changing = True
    elif image.image_id in host_ids:
        yield Step(want.role, "tag", image.ref, "image present under another name",
                   commands.docker("tag", image.image_id, image.ref))
    elif image.delivery == "ship":
        yield Step(want.role, "ship", image.ref, "missing on host", source=image.local_ref)
    else:
        yield Step(want.role, "push", image.ref, "missing in registry", source=image.local_ref)
        yield Step(want.role, "pull", image.ref, "from the host's registry", commands.pull(image.ref))
    delivered.add(image.ref)

    # 2. files: write only what differs
    rewritten = []
    for file in want.files:
        seen = facts.files.get(file.dest)
        if seen != file.sha256:
            rewritten.append(file.dest)
            yield Step(want.role, "write", file.dest, "new" if seen is None else "changed", commands.write_file(file))

    # 3. the container
    wanted_id = image.image_id or facts.images.get(image.ref)
    current = facts.containers.get(spec.name)
    create = f"{commands.ensure_network(spec.network)}\n{commands.run_container(spec, want.role, want.digest)}"
    wait = Step(want.role, "wait", spec.name, "healthy", commands.wait_healthy(spec.name))
    if current is None:
        yield Step(want.role, "run", spec.name, "missing", commands.locked(want.lock, create))
        yield wait
        return
    reasons = []
    if current.digest != want.digest:
        reasons.append("config" if rewritten else "spec")
    reasons += [f"drift: {field}" for field in current.drift(spec)]
    # A container the webhook moved to a newer pushed image still counts as declared: deploy changes it
    # only when what deploy declares changes.
    if image_changing or (current.image_id != wanted_id and current.declared_image != image.ref):
        reasons.append("image")
    if rewritten and "config" not in reasons:
        reasons.append("files rewritten")
    if reasons:
        yield Step(
            want.role, "recreate", spec.name, ", ".join(reasons),
            commands.locked(want.lock, f"{commands.remove_container(spec.name)}\n{create}"),
        )
        yield wait
    elif not current.running:
        yield Step(want.role, "start", spec.name, "stopped", commands.start_container(spec.name))
        yield wait
