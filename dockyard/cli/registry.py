"""registry.*: the private registry's repositories and tags, deletes, garbage collection, and a tunnel.

Every command reaches the registry through an SSH tunnel to the host running the `registry` role; the
registry keeps its 127.0.0.1-only port. Basic auth, where the registry has it, comes from
DOCKYARD_REGISTRY_USER and DOCKYARD_REGISTRY_PASSWORD.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack

from dockyard import lock, registry_gc, report
from dockyard.cli import LOCK_HELP, claim, open_env, task
from dockyard.environment import Env
from dockyard.errors import DockyardError
from dockyard.lock import Claim
from dockyard.registry_api import RegistryClient
from dockyard.report import Reporter, confirm
from dockyard.state import HostRecord

HOST_HELP = {"host": "the registry host to use (default: every host with the registry role)"}


@task(help=HOST_HELP)
def ls(c, env=None, host=None):
    """List the registry's repositories with their tag counts."""
    env = open_env(c, env)
    each_registry(env, host, lambda client: report.repositories(env.out, client.tag_counts()))


@task(help={"repository": "repository name, e.g. flask-hello", **HOST_HELP})
def tags(c, repository, env=None, host=None):
    """List a repository's tags with digest, size and creation date."""
    env = open_env(c, env)
    each_registry(env, host, lambda client: report.tags(env.out, repository, client.describe_all(repository)))


@task(help={"reference": "REPOSITORY:TAG to delete", "yes": "do not ask for confirmation", **HOST_HELP, **LOCK_HELP})
def rm(c, reference, env=None, host=None, yes=False, lock_timeout=None):
    """Delete a tag's manifest (with every tag sharing its digest); `registry.gc` frees the space."""
    env = open_env(c, env)
    repository, tag = split_reference(reference)
    each_registry(env, host, lambda client: remove_tag(env.out, client, repository, tag, yes),
                  claim(c, "registry.rm", lock_timeout))


@task(help={**HOST_HELP, **LOCK_HELP})
def gc(c, env=None, host=None, lock_timeout=None):
    """Collect unreferenced blobs: the registry stops meanwhile, then comes back healthy."""
    registry_gc.collect(open_env(c, env), claim(c, "registry.gc", lock_timeout), host)


@task(help={
    "registry_port": "local port for the registry (default: the same as on the host; 0 picks a free one)",
    "ui_port": "local port for the registry UI (default: the same as on the host; 0 picks a free one)",
    **HOST_HELP,
})
def tunnel(c, env=None, host=None, registry_port=None, ui_port=None):
    """Forward local ports to the registry and its UI over SSH, until Ctrl-C."""
    env = open_env(c, env)
    services = env.inventory.services
    record = env.hosts_with("registry", host)[0]
    with env.connect(record) as conn, conn.tunnel(
        services.registry.port, _port(registry_port, services.registry.port)
    ) as local_registry:
        rows = [("registry", f"http://127.0.0.1:{local_registry}/v2/_catalog",
                 f"docker push 127.0.0.1:{local_registry}/NAME:TAG")]
        if "registry_ui" not in record.roles:
            _hold(env.out, record, rows)
            return
        with conn.tunnel(services.registry_ui.port, _port(ui_port, services.registry_ui.port)) as local_ui:
            rows.append(("registry_ui", f"http://127.0.0.1:{local_ui}/", "open it in a browser"))
            _hold(env.out, record, rows)


def _port(chosen: str | int | None, default: int) -> int:
    return default if chosen is None else int(chosen)


def _hold(out: Reporter, record: HostRecord, rows: list[tuple[str, ...]]) -> None:
    out.say(f"tunnels to {record.name} open; Ctrl-C closes them")
    out.table(("service", "url", "try"), rows)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        out.say("tunnels closed")


def each_registry(env: Env, host: str | None, work: Callable[[RegistryClient], None],
                  claim: Claim | None = None) -> None:
    """Run `work` against each registry host's API, holding the host's lock for `claim` if it changes the registry."""
    records = env.hosts_with("registry", host)
    for record in records:
        if len(records) > 1:
            env.out.say(f"{record.name}:")
        with env.open_registry(record) as (conn, client), ExitStack() as stack:
            if claim:
                stack.enter_context(lock.held(conn, env.out, claim))
            work(client)


def split_reference(reference: str) -> tuple[str, str]:
    repository, sep, tag = reference.rpartition(":")
    if not sep or not repository or not tag or "/" in tag:
        raise DockyardError(f"{reference!r} is not REPOSITORY:TAG; e.g. `invoke registry.rm flask-hello:old`")
    return repository, tag


def remove_tag(out: Reporter, client: RegistryClient, repository: str, tag: str, yes: bool) -> None:
    deletion = client.plan_delete(repository, tag)
    short = report.short_digest(deletion.digest)
    question = f"delete {repository}:{tag} ({short})"
    if deletion.shared_with:
        others = ", ".join(deletion.shared_with)
        goes = "it goes" if len(deletion.shared_with) == 1 else "they go"
        out.say(f"warning: {short} is also tagged {others}; {goes} too")
        question += f" and {others}"
    confirm(f"{question}?", yes)
    client.delete(deletion)
    gone = ", ".join(f"{repository}:{t}" for t in (tag, *deletion.shared_with))
    out.say(f"deleted {gone} ({deletion.digest}); `invoke registry.gc` frees the space")
