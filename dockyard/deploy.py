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

from dockyard import app_secrets, app_settings, facts, images
from dockyard.commands import containers
from dockyard.commands import facts as facts_command
from dockyard.contract import PUSHED_TAG_PREFIX
from dockyard.environment import Env
from dockyard.errors import DockyardError, ImageError
from dockyard.inventory import ROLES
from dockyard.plan import Plan, make_plan, plan_docker
from dockyard.runner import Applier
from dockyard.spec import Desired, Rendered, ResolvedImage, RoleSpec, Target
from dockyard.ssh import STATS, HostConnection
from dockyard.state import HostRecord
from roles import MODULES

SECRETS = ("registry_http_secret", "webhook_token", "notify_token")


def converge(env: Env, only: tuple[str, ...] | None = None, dry_run: bool = False) -> list[Plan]:
    """Bring every host to what the inventory declares; `only` limits the roles (() = Docker alone)."""
    started = time.monotonic()
    records = env.hosts()
    desired = declare(env, records, only)

    def one_host(record):
        return _converge_host(env, record, desired[record.name], dry_run)

    plans, failures = [], []
    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        for record, future in [(r, pool.submit(one_host, r)) for r in records]:
            try:
                plans.append(future.result())
            except DockyardError as e:
                failures.append((record.name, e))
    if failures:
        if len(failures) == 1:
            raise failures[0][1]
        raise DockyardError(
            f"{len(failures)} of {len(records)} hosts failed:\n" + "\n".join(f"  {h}: {e}" for h, e in failures)
        )
    if not dry_run and not env.out.counts["changed"]:
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
    """The host's facts in one round trip: its engine, and the files and containers `desired` declares."""
    return facts.parse(facts_output(conn, desired), conn.where)


def facts_output(conn: HostConnection, desired: Sequence[Desired] = ()) -> str:
    """What the facts read prints, unparsed (tests/fixtures/facts/ holds recorded ones)."""
    paths = [f.dest for want in desired for f in want.files]
    names = [name for want in desired for name in want.container_names]
    return conn.run(facts_command.script(conn.record.user, paths, names), what="read facts")


def _converge_host(env: Env, record, desired: list[Desired], dry_run: bool) -> Plan:
    with env.connect(record) as conn:
        seen = read_facts(conn, desired)
        plan = make_plan(record.name, desired, seen, plan_docker(seen, env.inventory.docker, record.user))
        if dry_run:
            for role in plan.roles:
                env.out.step(record.name, role.role, "change" if role.changed else "ok", role.summary)
            return plan
        with Applier(conn, env.out, env.inventory.services.registry.port) as applier:
            applier.apply(plan)
    return plan


def build_images(env: Env, specs: list[RoleSpec], online: bool) -> dict[str, images.Built]:
    """Build, once, each image that is not pulled; reuse identical earlier builds."""
    wanted = {s.image.name: s.image for s in specs if not (online and s.image.pull)}
    if not wanted:
        return {}
    base = images.base_image("online" if online else "offline", env.out.say)
    built = {}
    for name, image in wanted.items():
        if not image.build:
            raise ImageError(f"{name}: no image can be pulled offline and none is built; set images: online")
        include = images.module_files(image.modules)
        built[name] = images.build(name, env.root / image.build, base, env.out.say, include=include)
    return built


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
    return Desired(spec.role, container, resolved, files, spec.lock, spec.reload, spec.slots)


def _templates(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        autoescape=False,
    )
