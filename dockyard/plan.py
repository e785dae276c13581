"""Compare what is declared with what runs, and list only the difference. Pure: no I/O.

A plan holds two kinds of step, as pyinfra's StringCommand and FileUploadCommand: a remote step is a shell command
run on the host; a transfer moves a local image onto it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dockyard.commands import containers, engine, files, swarm, switch
from dockyard.commands.facts import ABSENT, RUNNING, STOPPED
from dockyard.contract import STACK, slot_names
from dockyard.facts import HostFacts, Node, Seen
from dockyard.inventory import Docker
from dockyard.spec import Desired, Rendered


@dataclass(frozen=True)
class RemoteStep:
    role: str
    # install | enable | guard | start | wait | group | write | pull | tag | run | recreate | reload | switch | settle
    action: str
    target: str
    reason: str
    command: str


@dataclass(frozen=True)
class Transfer:
    """A local image moved onto the host: streamed into its engine (ship) or pushed to its registry (push)."""

    role: str
    kind: Literal["ship", "push"]
    local_image: str
    target: str  # the image as the host names it
    reason: str
    repository: str = ""  # push: name:tag inside the host's registry, which the host reaches as `target`

    @property
    def action(self) -> str:
        return self.kind


Step = RemoteStep | Transfer


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
    # roles left unplanned: their containers and images are unknown while an installed engine does not answer
    unknown: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return any(r.changed for r in self.roles)


def plan_docker(facts: HostFacts, settings: Docker, user: str) -> RolePlan:
    """Only the pieces of the engine's install that the facts show missing, in the order they depend on."""
    systemd = facts.systemd
    boot = "systemd" if systemd else "/etc/rc.local"

    def step(action: str, target: str, reason: str, command: str) -> RemoteStep:
        return RemoteStep("docker", action, target, reason, command)

    steps = []
    if facts.docker == ABSENT or facts.packages_broken:
        package = "docker.io" if settings.install == "apt" else "docker (convenience script)"
        why = "not installed" if facts.docker == ABSENT else "packages half-configured"
        steps.append(step("install", package, why, engine.install_package(settings)))
    if not facts.docker_on_boot:
        steps.append(step("enable", f"dockerd at boot ({boot})", "not started at boot", engine.enable_at_boot(systemd)))
    if not facts.loopback_guard_on_boot:
        steps.append(step("enable", f"loopback guard at boot ({boot})", "not set at boot",
                          engine.guard_at_boot(systemd)))
    if not facts.loopback_guard:
        steps.append(step("guard", "127.0.0.0/8", "127.0.0.1 ports reachable from the network", engine.guard_now()))
    if facts.docker != RUNNING:
        steps.append(step("start", "dockerd", "not running", engine.start_now(systemd)))
        steps.append(step("wait", "dockerd", "answering", engine.wait_for_daemon(systemd)))
    if user != "root" and "docker" not in facts.groups:
        steps.append(step("group", user, "not in docker group", engine.add_to_docker_group(user)))
    return RolePlan("docker", tuple(steps))


def make_plan(host: str, desired: list[Desired], facts: HostFacts, docker: RolePlan | None = None) -> Plan:
    """`docker`'s steps, then each role's. A host without Docker has no containers; an engine installed but not
    answering tells nothing of them, so no role is planned from it (deploy starts the engine before it reads)."""
    roles = [docker] if docker else []
    if facts.docker == STOPPED:
        return Plan(host, tuple(roles), unknown=tuple(want.role for want in desired))
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
        yield RemoteStep(want.role, "pull", image.ref, "missing on host", containers.pull(image.ref))
        image_changing = True
    elif image.image_id in host_ids and not want.stack:  # a stack's image must be in the registry, for every node
        yield RemoteStep(want.role, "tag", image.ref, "image present under another name",
                         containers.tag(image.image_id, image.ref))
    elif image.delivery == "ship":
        yield Transfer(want.role, "ship", image.local_ref, image.ref, "missing on host")
    else:
        yield Transfer(want.role, "push", image.local_ref, image.ref, "missing in registry", image.repository)
        yield RemoteStep(want.role, "pull", image.ref, "from the host's registry", containers.pull(image.ref))
    delivered.add(image.ref)

    # 2. files: write only what differs; a file created once is left alone afterwards
    rewritten = []
    for file in want.files:
        seen = facts.files.get(file.dest)
        # a secret the container reads belongs to its image's user: written again when that user changes
        owned = not file.owner or facts.owners.get(file.dest) == file.owner
        if (seen == file.sha256 and owned) or (file.create_only and seen is not None):
            continue
        if not file.create_only:
            rewritten.append(file.dest)
        reason = "new" if seen is None else "changed" if seen != file.sha256 else "owner changed"
        yield RemoteStep(want.role, "write", file.dest, reason, files.write_file(file))

    # 3. the container
    wanted_id = image.image_id or facts.images.get(image.ref)

    def changes(current: Seen) -> list[str]:
        """Why `current` must be replaced; none when it runs what is declared."""
        reasons = []
        if current.digest != want.digest:
            reasons.append("config" if rewritten and not want.reload else "spec")
        reasons += [f"drift: {name}" for name in current.drift(containers.container_document(spec, want.role))]
        # A container the webhook moved to a newer pushed image still counts as declared: deploy changes it
        # only when what deploy declares changes.
        if image_changing or (current.image_id != wanted_id and current.declared_image != image.ref):
            reasons.append("image")
        if rewritten and not want.reload and "config" not in reasons:
            reasons.append("files rewritten")
        return reasons

    if want.slots:
        yield from _slot_steps(want, facts, changes)
        return
    if want.stack:
        yield from _stack_steps(want, facts, image_changing)
        return
    current = facts.containers.get(spec.name)
    create = f"{containers.ensure_network(spec.network)}\n{containers.run_container(spec, want.role, want.digest)}"
    wait = RemoteStep(want.role, "wait", spec.name, "healthy", containers.wait_healthy(spec.name, spec.health))
    if current is None:
        yield RemoteStep(want.role, "run", spec.name, "missing", create)
        yield wait
        return
    if reasons := changes(current):
        yield RemoteStep(want.role, "recreate", spec.name, ", ".join(reasons),
                         f"{containers.remove_container(spec.name)}\n{create}")
        yield wait
    elif not current.running:
        yield RemoteStep(want.role, "start", spec.name, "stopped", containers.start_container(spec.name))
        yield wait
    elif rewritten:  # a role that reloads its files in place (without one, rewritten files recreate it above)
        yield RemoteStep(want.role, "reload", spec.name, "files rewritten",
                         containers.run_inside(spec.name, want.reload))


def _stack_steps(want: Desired, facts: HostFacts, image_changing: bool):
    """A swarm's service: the stack file on the host is the one the swarm last accepted. A different one, a missing
    service or replicas scaled by hand are a `docker stack deploy`, which the step waits on. A webhook's newer image
    still counts as declared, as for a container."""
    stack, service = want.stack_file, facts.service
    reasons = []
    if service is None:
        reasons.append("missing")
    else:
        if facts.files.get(stack.dest) != stack.sha256:
            reasons.append("stack changed")
        if service.replicas != want.stack.replicas:
            reasons.append(f"drift: replicas {service.replicas}")
    if image_changing and not reasons:
        reasons.append("image")
    if reasons:
        yield RemoteStep(want.role, "deploy", f"stack {STACK}", ", ".join(reasons),
                         swarm.deploy(want.container, stack, want.stack.release))


def swarm_steps(facts: HostFacts, trust: Rendered, init: str | None = None,
                join: tuple[str, str, str] | None = None) -> RolePlan:
    """A node's membership: the registry's CA trusted, then the swarm inited (`init`: the first manager's address)
    or joined (`join`: token, the first manager's address, this host's), as the caller decided from the facts."""
    steps = []
    if facts.files.get(trust.dest) != trust.sha256:
        steps.append(RemoteStep("swarm", "write", trust.dest, "trust the registry's CA", files.write_file(trust)))
    if init:
        steps.append(RemoteStep("swarm", "init", f"swarm at {init}", "in no swarm", swarm.init(init)))
    if join:
        token, manager, address = join
        steps.append(RemoteStep("swarm", "join", f"swarm of {manager}", "in no swarm or another one",
                                swarm.join(token, manager, address)))
    return RolePlan("swarm", tuple(steps))


def node_removals(nodes: tuple[Node, ...], ids: set[str], hostnames: set[str],
                  rejoined: set[str]) -> tuple[list[Node], list[Node]]:
    """Of a manager's `nodes`, (stale, gone): entries an inventory host left behind (it joined again now, or its
    entry is down while it is in under another id), and nodes of hosts no longer in the inventory. `ids`: the node
    ids of the inventory's hosts in the swarm; `hostnames`: their host names; `rejoined`: those that joined now."""
    others = [n for n in nodes if n.id not in ids]
    stale = [n for n in others if n.hostname in hostnames and (n.hostname in rejoined or n.status != "Ready")]
    gone = [n for n in others if n.hostname not in hostnames]
    return stale, gone


def _slot_steps(want: Desired, facts: HostFacts, changes: Callable[[Seen], list[str]]):
    """A service with slots: the container the upstream file names serves. A change, or none serving, is a switch
    to the other slot; any other container of the service was left by a switch cut short, and is settled."""
    spec, slots = want.container, want.slots
    serving = facts.containers.get(facts.serving) if facts.serving in slot_names(spec.name) else None
    leftovers = [n for n in slots.names(spec.name) if n in facts.containers and not (serving and n == serving.name)]
    if serving is None or (reasons := changes(serving)):
        reason = ", ".join(reasons) if serving else "no slot serves" if leftovers else "missing"
        yield RemoteStep(want.role, "switch", spec.name, reason, switch.switch(spec, want.role, want.digest, slots))
        return
    if not serving.running:
        yield RemoteStep(want.role, "start", serving.name, "stopped", containers.start_container(serving.name))
        yield RemoteStep(want.role, "wait", serving.name, "healthy",
                         containers.wait_healthy(serving.name, spec.health))
    if leftovers:
        yield RemoteStep(want.role, "settle", ", ".join(leftovers), "left by a switch cut short",
                         switch.settle(spec, slots))
