"""Converge: declare every role for every host, read facts, plan the difference, apply it.

The flow runs one way: inventory -> declare -> plan -> run -> report. Local image builds happen once,
before the hosts are converged in parallel, each over its own single connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import jinja2

from dockyard import app_secrets, app_settings, facts, images, lock
from dockyard.commands import containers
from dockyard.commands import facts as facts_command
from dockyard.contract import APP_SERVICE, CLUSTER_NETWORK, CLUSTER_REGISTRY_PORT, PUSHED_TAG_PREFIX
from dockyard.environment import Env
from dockyard.errors import DockyardError, ImageError
from dockyard.lock import Claim
from dockyard.plan import Plan, Transfer, make_plan, plan_docker
from dockyard.runner import Applier
from dockyard.spec import Cluster, ContainerSpec, Desired, Rendered, ResolvedImage, RoleSpec, ServerTls, Target
from dockyard.ssh import STATS, HostConnection
from dockyard.state import HostRecord
from dockyard.swarm import Membership
from roles import MODULES, host_roles
from roles import app as app_role
from roles import proxy as proxy_role

SECRETS = ("registry_http_secret", "webhook_token", "notify_token")


def converge(env: Env, claim: Claim | None, only: tuple[str, ...] | None = None, yes: bool = False) -> list[Plan]:
    """Bring every host to what the inventory declares, holding each host's lock for `claim`; without a claim,
    a dry run: read, plan and print, change nothing. `only` limits the roles (() = Docker alone). On a swarm the
    hosts join it first; `yes` answers the question before a node is removed from it."""
    started = time.monotonic()
    records = env.hosts()
    membership = Membership(env, records, swarm_cluster(env, records), yes) if env.inventory.swarm and claim else None
    plans, failures = [], []
    declared: Future[dict[str, list[Desired]]] = Future()

    def one_host(record: HostRecord) -> Plan:
        try:
            return _converge_host(env, record, lambda: declared.result()[record.name], claim, membership)
        except BaseException as e:
            if membership:
                membership.abandon(record.name, e)
            raise

    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        # each host connects and is asked for its lock while the hosts are declared here
        hosts = [(r, pool.submit(one_host, r)) for r in records]
        try:
            declared.set_result(declare(env, records, only))
            for record, future in hosts:
                try:
                    plans.append(future.result())
                except DockyardError as e:
                    failures.append((record.name, e))
        except BaseException as e:
            if not declared.done():
                declared.set_exception(e)  # each host stops where it waits for what it should run
            raise
        finally:
            env.layers.stop()
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
    inv = env.inventory
    roles = {r.name: [role for role in host_roles(r.roles, inv.swarm) if only is None or role in only] for r in records}
    # where images come from matters only to hosts with services; Docker alone needs no local engine
    # read before anything is built or any host touched: a source that cannot be read stops the run here
    secrets = app_secrets.resolve(env) if any("app" in r for r in roles.values()) else {}
    online = any(roles.values()) and env.images_source() == "online"
    cluster = swarm_cluster(env, records) if inv.swarm else None
    targets = [Target(inv, r, online, secrets, cluster, proxy_tls(env, r) if "proxy" in roles[r.name] else None)
               for r in records]
    specs = {t.host.name: [MODULES[role].declare(t) for role in roles[t.host.name]] for t in targets}
    built = build_images(env, [s for host_specs in specs.values() for s in host_specs], online)
    context = {"secrets": {name: env.secret(name) for name in SECRETS}, "online": online}
    templates = _templates(env.root / "templates")
    return {
        t.host.name: [resolve(spec, t, built, templates, context) for spec in specs[t.host.name]] for t in targets
    }


def proxy_tls(env: Env, record: HostRecord) -> ServerTls | None:
    """The certificate of the proxy on `record`, when it uses the internal CA."""
    if env.inventory.proxy_certificates() != "internal":
        return None
    return env.state.proxy_tls(record.name, proxy_role.site_names(env.inventory, record))


def swarm_cluster(env: Env, records: list[HostRecord]) -> Cluster:
    """What a swarm's hosts declare with: its registry's TLS twin on the registry host's private address."""
    address = next(r for r in records if "registry" in r.roles).private_address
    return Cluster(f"{address}:{CLUSTER_REGISTRY_PORT}", env.inventory.replicas(), env.state.registry_tls(address))


def read_facts(conn: HostConnection, desired: Sequence[Desired] = (), swarm: bool = False) -> facts.HostFacts:
    """The host's facts in one round trip, read only: its engine, and the files and containers `desired` declares."""
    return facts.parse(conn.run(facts_script(conn, desired, swarm=swarm), what="read facts"), conn.where)


def facts_script(conn: HostConnection, desired: Sequence[Desired] = (), start: bool = False, swarm: bool = False,
                 paths: Sequence[str] = ()) -> str:
    """The facts read (tests/fixtures/facts/ holds recorded outputs); `start`: bring a stopped engine up first;
    `swarm`: read the node and, on a manager, the swarm; `paths`: files to hash besides the declared ones."""
    paths = [*paths, *(f.dest for want in desired for f in (*want.files, *filter(None, [want.stack_file])))]
    names = [name for want in desired for name in want.container_names]
    wanted = {i for want in desired for i in (want.image.ref, want.image.image_id) if i}
    return facts_command.script(conn.record.user, paths, names, sorted(wanted), start, swarm)


def _converge_host(env: Env, record: HostRecord, wanted: Callable[[], list[Desired]], claim: Claim | None,
                   membership: Membership | None) -> Plan:
    """`wanted`: what the host should run, which may still be being declared when the host is reached."""
    swarm = env.inventory.swarm
    with env.connect(record) as conn:
        if claim is None:
            desired = wanted()
            plan = _plan(env, record, desired, read_facts(conn, desired, swarm))
            for role in plan.roles:
                env.out.step(record.name, role.role, "change" if role.changed else "ok", role.summary)
            for role in plan.unknown:
                env.out.step(record.name, role, "unknown", "dockerd does not answer; deploy starts it, then plans this")
            return plan
        trusted = [membership.trust.dest] if membership else []

        def read() -> str:
            return facts_script(conn, wanted(), start=True, swarm=swarm, paths=trusted)

        with lock.held(conn, env.out, claim, read, "read facts") as output:
            desired = wanted()
            seen = facts.parse(output, conn.where)
            if seen.docker_woken:
                how, seconds = seen.docker_woken
                if how == "started":
                    env.out.step(record.name, "dockerd", "changed", "was not answering: started it", seconds)
                else:
                    env.out.step(record.name, "dockerd", "ok", "was starting: waited until it answered", seconds)
            plan = _plan(env, record, desired, seen)
            # packed while a fresh host installs Docker: what the plan sends is ready when the registry is;
            # the registry's own image first, as it is shipped before anything can be pushed
            transfers = [step for role in plan.roles for step in role.steps if isinstance(step, Transfer)]
            for kind in ("ship", "push"):
                env.layers.prepare(step.local_image for step in transfers if step.kind == kind)
            with Applier(env, conn) as applier:
                if membership:  # Docker, then the swarm, then the services
                    docker, *services = plan.roles
                    applier.apply_role(record.name, docker)
                    membership.converge(conn, seen, applier)
                    for role in services:
                        applier.apply_role(record.name, role)
                else:
                    applier.apply(plan)
                if plan.unknown:  # half-configured packages kept the engine down: now it runs, read again
                    seen = facts.parse(conn.run(facts_script(conn, desired, start=True, swarm=swarm),
                                                what="read facts"), conn.where)
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
            # the host names its registry 127.0.0.1:<port>; a swarm's nodes pull the stack's image from the twin
            registry = target.cluster.registry if spec.stack else f"127.0.0.1:{target.inventory.services.registry.port}"
            repository = image.repository or local.ref.split(":")[0]
            tag = PUSHED_TAG_PREFIX + local.ref.split(":")[1]
            resolved = ResolvedImage(
                f"{registry}/{repository}:{tag}", local.image_id, "push", local.ref, f"{repository}:{tag}"
            )
        else:
            resolved = ResolvedImage(local.ref, local.image_id, "ship", local.ref)
    # on a swarm the host's containers share the overlay with the stack's tasks
    network = CLUSTER_NETWORK if target.cluster else spec.container.network
    container = replace(spec.container, image=resolved.ref, network=network)
    release = spec.slots.release if spec.slots else spec.stack.release if spec.stack else ()
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
    stack_file = None
    if spec.stack:
        stack_values = {**values, **_stack_values(spec, container, target, files)}
        stack_file = Rendered(spec.stack.file, templates.get_template(spec.stack.template).render(stack_values)
                              .encode(), 0o644, False)
    return Desired(spec.role, container, resolved, files, spec.reload, spec.slots, spec.stack, stack_file)


def _stack_values(spec: RoleSpec, container: ContainerSpec, target: Target, files: tuple[Rendered, ...]) -> dict:
    """What the stack's template adds to a role's values: its image, replicas, named volumes and secrets."""
    settings = target.inventory.services.app
    by_dest = {f.dest: f for f in files}
    secrets = [
        {"name": name, "key": f"{APP_SERVICE}_{name}_{by_dest[path].sha256[:12]}".lower(), "file": path,
         "uid": by_dest[path].owner}
        for name, path in ((n, f"{app_settings.SECRETS_DIR}/{n}") for n in sorted(settings.secrets))
    ]
    return {
        "image": container.image, "replicas": spec.stack.replicas, "service": APP_SERVICE,
        "volumes": settings.volumes, "secrets": secrets, "env_file": container.env_file,
        "stop_grace": container.stop_timeout, "monitor": app_role.UPDATE_MONITOR,
    }


def _templates(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        autoescape=False,
    )
