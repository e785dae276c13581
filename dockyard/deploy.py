"""Converge: declare every role for every host, read facts, plan the difference, apply it.

The flow runs one way: inventory -> declare -> plan -> run -> report. Local image builds happen once,
before the hosts are converged in parallel, each over its own single connection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import jinja2

from dockyard import app_secrets, app_settings, facts, images, lock
from dockyard.commands import containers
from dockyard.commands import facts as facts_command
from dockyard.contract import PUSHED_TAG_PREFIX
from dockyard.environment import Env
from dockyard.errors import DockyardError, ImageError
from dockyard.inventory import ROLES
from dockyard.lock import Claim
from dockyard.plan import Plan, make_plan, plan_docker
from dockyard.runner import Applier
from dockyard.spec import Desired, Rendered, ResolvedImage, RoleSpec, Target
from dockyard.ssh import STATS, HostConnection
from dockyard.state import HostRecord
from roles import MODULES

SECRETS = ("registry_http_secret", "webhook_token", "notify_token")


def converge(env: Env, claim: Claim | None, only: tuple[str, ...] | None = None) -> list[Plan]:
    """Bring every host to what the inventory declares, holding each host's lock for `claim`; without a claim,
    a dry run: read, plan and print, change nothing. `only` limits the roles (() = Docker alone)."""
    started = time.monotonic()
    records = env.hosts()
    plans, failures = [], []
    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        # each host's SSH handshake goes on while the hosts are declared here
        connecting = {r.name: pool.submit(_connected, env, r) for r in records}
        try:
            desired = declare(env, records, only)

            def one_host(record):
                return _converge_host(env, connecting[record.name].result(), desired[record.name], claim)

            for record, future in [(r, pool.submit(one_host, r)) for r in records]:
                try:
                    plans.append(future.result())
                except DockyardError as e:
                    failures.append((record.name, e))
        finally:
            for future in connecting.values():
                if future.exception() is None:
                    future.result().close()
    if failures:
        if len(failures) == 1:
            raise failures[0][1]
        raise DockyardError(
            f"{len(failures)} of {len(records)} hosts failed:\n" + "\n".join(f"  {h}: {e}" for h, e in failures)
        )
    if claim and not env.out.counts["changed"]:
        env.out.say(f"no changes ({time.monotonic() - started:.1f}s, {STATS.connections} SSH connection(s), "
                    f"{STATS.commands} remote command(s))")
    return plans


def declare(env: Env, records: list[HostRecord], only: tuple[str, ...] | None = None) -> dict[str, list[Desired]]:
    """What each host should run, by host name: its roles declared, their images built once, files rendered."""
    roles = {r.name: [role for role in ROLES if role in r.roles and (only is None or role in only)] for r in records}
    # where images come from matters only to hosts with services; Docker alone needs no local engine
    # read before anything is built or any host touched: a source that cannot be read stops the run here
    secrets = app_secrets.resolve(env) if any("app" in r for r in roles.values()) else {}
    online = any(roles.values()) and images.resolve_source(env.inventory.images) == "online"
    targets = [Target(env.inventory, record, online, secrets) for record in records]
    specs = {t.host.name: [MODULES[role].declare(t) for role in roles[t.host.name]] for t in targets}
    built = build_images(env, [s for host_specs in specs.values() for s in host_specs], online)
    context = {"secrets": {name: env.secret(name) for name in SECRETS}, "online": online}
    templates = _templates(env.root / "templates")
    return {
        t.host.name: [resolve(spec, t, built, templates, context) for spec in specs[t.host.name]] for t in targets
    }


def read_facts(conn: HostConnection, desired: Sequence[Desired] = ()) -> facts.HostFacts:
    """The host's facts in one round trip, read only: its engine, and the files and containers `desired` declares."""
    return facts.parse(conn.run(facts_script(conn, desired), what="read facts"), conn.where)


def facts_script(conn: HostConnection, desired: Sequence[Desired] = (), start: bool = False) -> str:
    """The facts read (tests/fixtures/facts/ holds recorded outputs); `start`: bring a stopped engine up first."""
    paths = [f.dest for want in desired for f in want.files]
    names = [name for want in desired for name in want.container_names]
    wanted = {i for want in desired for i in (want.image.ref, want.image.image_id) if i}
    return facts_command.script(conn.record.user, paths, names, sorted(wanted), start)


def _connected(env: Env, record: HostRecord) -> HostConnection:
    conn = env.connect(record)
    conn.open()
    return conn


def _converge_host(env: Env, conn: HostConnection, desired: list[Desired], claim: Claim | None) -> Plan:
    record = conn.record
    with conn:
        if claim is None:
            plan = _plan(env, record, desired, read_facts(conn, desired))
            for role in plan.roles:
                env.out.step(record.name, role.role, "change" if role.changed else "ok", role.summary)
            for role in plan.unknown:
                env.out.step(record.name, role, "unknown", "dockerd does not answer; deploy starts it, then plans this")
            return plan
        with lock.held(conn, env.out, claim, facts_script(conn, desired, start=True), "read facts") as output:
            seen = facts.parse(output, conn.where)
            if seen.docker_woken:
                how, seconds = seen.docker_woken
                if how == "started":
                    env.out.step(record.name, "dockerd", "changed", "was not answering: started it", seconds)
                else:
                    env.out.step(record.name, "dockerd", "ok", "was starting: waited until it answered", seconds)
            plan = _plan(env, record, desired, seen)
            with Applier(conn, env.out, env.inventory.services.registry.port) as applier:
                applier.apply(plan)
                if plan.unknown:  # half-configured packages kept the engine down: now it runs, read again
                    seen = facts.parse(conn.run(facts_script(conn, desired, start=True), what="read facts"),
                                       conn.where)
                    plan = make_plan(record.name, desired, seen)
                    applier.apply(plan)
    return plan


def _plan(env: Env, record, desired: list[Desired], seen: facts.HostFacts) -> Plan:
    return make_plan(record.name, desired, seen, plan_docker(seen, env.inventory.docker, record.user))


def build_images(env: Env, specs: list[RoleSpec], online: bool) -> dict[str, images.Built]:
    """Build, once, each image that is not pulled; reuse identical earlier builds."""
    wanted = {s.image.name: s.image for s in specs if not (online and s.image.pull)}
    if not wanted:
        return {}
    for name, image in wanted.items():
        if not image.build:
            raise ImageError(f"{name}: no image can be pulled offline and none is built; set images: online")
    base = images.base_image("online" if online else "offline", env.out.say)
    contexts = {name: (env.root / image.build, images.module_files(image.modules)) for name, image in wanted.items()}
    return images.build_all(contexts, base, env.out.say)


def resolve(spec: RoleSpec, target: Target, built: dict[str, images.Built], templates: jinja2.Environment,
            context: dict) -> Desired:
    """Fix the image reference the host will run, then render the role's files."""
    image = spec.image
    if target.online and image.pull:
        resolved = ResolvedImage(ref=image.pull, image_id=None, delivery="pull")
    else:
        local = built[image.name]
        if image.via_registry and "registry" in target.host.roles:
            registry = f"127.0.0.1:{target.inventory.services.registry.port}"
            repository = image.repository or local.ref.split(":")[0]
            tag = PUSHED_TAG_PREFIX + local.ref.split(":")[1]
            resolved = ResolvedImage(
                f"{registry}/{repository}:{tag}", local.image_id, "push", local.ref, f"{repository}:{tag}"
            )
        else:
            resolved = ResolvedImage(local.ref, local.image_id, "ship", local.ref)
    container = replace(spec.container, image=resolved.ref)
    release = spec.slots.release if spec.slots else ()
    values = {
        **context, "inventory": target.inventory, "services": target.inventory.services, "host": target.host,
        "container": containers.container_document(container, spec.role, release), "role": spec.role,
    }
    # the user a container of the image runs as owns the files it reads (its image is built here)
    image_user = app_settings.image_user_id(built[image.name].user) if any(f.image_user for f in spec.files) else 0
    files = tuple(
        Rendered(
            f.dest,
            (templates.get_template(f.template).render(values, **dict(f.values)) if f.template else f.content)
            .encode(),
            f.mode,
            f.secret,
            f.create_only,
            image_user if f.image_user else 0,
        )
        for f in spec.files
    )
    return Desired(spec.role, container, resolved, files, spec.reload, spec.slots)


def _templates(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        autoescape=False,
    )
