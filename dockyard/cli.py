"""The bodies of the Invoke tasks: parse arguments, call the library, print the report.

Expected failures (DockyardError) end as one `error:` line; DOCKYARD_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import invoke
from invoke import Exit

from dockyard import deploy as deployment
from dockyard import images as local_images
from dockyard.environment import Env
from dockyard.errors import Aborted, DockyardError
from dockyard.inventory import ROLES
from dockyard.ssh import STATS

ENV_HELP = {"env": "environment: inventory/<env>.yml (default: config dockyard.env, else sandbox)"}


def task(*args, **kwargs):
    """An Invoke task that turns expected failures into one line and exit code 1."""

    def wrap(body):
        @functools.wraps(body)
        def run(c, *a, **kw):
            try:
                return body(c, *a, **kw)
            except DockyardError as e:
                if os.environ.get("DOCKYARD_DEBUG"):
                    raise
                raise Exit(f"error: {e}", code=1) from None
            except KeyboardInterrupt:
                raise Exit("interrupted; rerun the same command to converge", code=130) from None

        return invoke.task(run, help={**ENV_HELP, **kwargs.pop("help", {})}, **kwargs)

    return wrap(args[0]) if args and callable(args[0]) else wrap


def open_env(c, env: str | None) -> Env:
    config = c.config.dockyard
    return Env.open(Path(config.root), env or config.env, config.inventory_dir, config.state_dir)


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise Aborted(f"{question} needs confirmation; pass --yes to proceed without a terminal")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise Aborted("nothing was changed")


# -- hosts ------------------------------------------------------------------------------------------------
@task(help={"yes": "do not ask before terminating hosts that are no longer declared"})
def provision(c, env=None, yes=False):
    """Create the environment's hosts, or start them; a second run changes nothing."""
    e = open_env(c, env)
    records = e.provider.provision(e, yes=yes)
    if not e.out.counts["changed"]:
        e.out.say("no changes: every host exists and runs")
    print_hosts(e, records)


@task(help={"yes": "do not ask for confirmation"})
def teardown(c, env=None, yes=False):
    """Remove the environment's hosts and everything dockyard made for them, state included."""
    e = open_env(c, env)
    confirm(f"tear down environment {e.name} ({e.inventory.provider})?", yes)
    e.provider.teardown(e, yes=True)
    e.state.clear()
    e.out.say(f"environment {e.name} is gone; state {e.state.dir} removed")


@task
def hosts_list(c, env=None):
    """Show how to reach each host over SSH."""
    e = open_env(c, env)
    print_hosts(e, e.hosts())


@task(help={"host": "the host whose pinned key to drop"})
def hosts_forget(c, host, env=None):
    """Forget a host's pinned SSH key, after rebuilding it on purpose."""
    e = open_env(c, env)
    e.state.forget_host_key(host)
    e.out.say(f"{host}: pinned host key removed; the next connection records the new one")


def print_hosts(e: Env, records) -> None:
    rows = []
    for r in records:
        key = e.key_path(r)
        rows.append((r.name, f"ssh -i {key} -p {r.port} -o UserKnownHostsFile={e.state.known_hosts} "
                             f"-o HostKeyAlias={r.alias} {r.user}@{r.address}"))
    e.out.table(("host", "reach it with"), rows)


# -- docker -----------------------------------------------------------------------------------------------
@task
def docker_install(c, env=None):
    """Install Docker on every host, start it now and at boot; one round trip when it is there."""
    deployment.converge(open_env(c, env), only=())


# -- deploy -----------------------------------------------------------------------------------------------
@task(help={"dry_run": "print what would change, change nothing"})
def deploy(c, env=None, dry_run=False):
    """Converge the whole stack on every host: registry, mirror, UI, app, webhook."""
    e = open_env(c, env)
    deployment.converge(e, dry_run=dry_run)
    if not dry_run:
        print_services(e)


@task
def plan(c, env=None):
    """Print what `deploy` would change, without changing it."""
    deployment.converge(open_env(c, env), dry_run=True)


def role_task(role: str):
    @task(help={"dry_run": "print what would change, change nothing"})
    def deploy_role(c, env=None, dry_run=False):
        deployment.converge(open_env(c, env), only=(role,), dry_run=dry_run)

    deploy_role.__doc__ = f"Converge only the {role} service."
    return deploy_role


ROLE_TASKS = {role: role_task(role) for role in ROLES}


def print_services(e: Env) -> None:
    rows = []
    for record in e.hosts():
        for role in record.roles:
            service = e.inventory.service(role)
            if role in record.endpoints:
                rows.append((record.name, role, f"http://{record.endpoints[role]}/"))
            else:
                rows.append((record.name, role, f"127.0.0.1:{service.port} on the host (invoke registry.tunnel)"))
    e.out.table(("host", "service", "url"), rows)


# -- images -----------------------------------------------------------------------------------------------
@task
def images_base(c, env=None):
    """Build the base image from Debian packages (debootstrap + docker import), unless cached."""
    e = open_env(c, env)
    local_images.build_base(e.out.say)


@task(iterable=["image"], help={"image": "local image to stream to every host (repeatable)"})
def images_ship(c, image, env=None):
    """Stream images to every host with `docker save | ssh docker load`, no temporary file."""
    e = open_env(c, env)
    for record in e.hosts():
        with e.connect(record) as conn:
            for ref in image:
                progress = e.out.progress(f"{record.name} ship {ref}", local_images.image_size(ref))
                conn.stream("docker load --quiet", local_images.save_chunks(ref), progress)
                progress.finish()
    e.out.say(f"shipped {len(image)} image(s); {STATS.bytes_sent} bytes sent")
