"""registry.*: the private registry's repositories and tags, deletes, garbage collection, and a tunnel.

Every command reaches the registry through an SSH tunnel to the host running the `registry` role; the
registry keeps its 127.0.0.1-only port. Basic auth, where the registry has it, comes from
DOCKYARD_REGISTRY_USER and DOCKYARD_REGISTRY_PASSWORD.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dockyard.cli import open_env, task
from dockyard.environment import Env
from dockyard.errors import DockyardError
from dockyard.registry_api import PARALLEL_REQUESTS, RegistryClient
from dockyard.registry_gc import collect_garbage
from dockyard.report import Reporter, confirm, human_bytes
from dockyard.state import HostRecord

HOST_HELP = {"host": "the registry host to use (default: every host with the registry role)"}


@task(help=HOST_HELP)
def ls(c, env=None, host=None):
    """List the registry's repositories with their tag counts."""
    e = open_env(c, env)
    each_registry(e, host, lambda client: show_repositories(e.out, client))


@task(help={"repository": "repository name, e.g. flask-hello", **HOST_HELP})
def tags(c, repository, env=None, host=None):
    """List a repository's tags with digest, size and creation date."""
    e = open_env(c, env)
    each_registry(e, host, lambda client: show_tags(e.out, client, repository))


@task(help={"reference": "REPOSITORY:TAG to delete", "yes": "do not ask for confirmation", **HOST_HELP})
def rm(c, reference, env=None, host=None, yes=False):
    """Delete a tag's manifest (with every tag sharing its digest); `registry.gc` frees the space."""
    e = open_env(c, env)
    repository, tag = split_reference(reference)
    each_registry(e, host, lambda client: remove_tag(e.out, client, repository, tag, yes))


@task(help=HOST_HELP)
def gc(c, env=None, host=None):
    """Collect unreferenced blobs: the registry stops meanwhile, then comes back healthy."""
    e = open_env(c, env)
    auth = registry_auth(e)
    for record in e.hosts_with("registry", host):
        with e.connect(record) as conn:
            with conn.tunnel(e.inventory.services.registry.port) as port:
                index = RegistryClient(f"http://127.0.0.1:{port}", f"{record.name} registry", auth).find_index()
            if index:
                e.out.say(
                    f"{record.name}: {index} is a multi-platform index, so untagged images stay: distribution 2.8's "
                    f"--delete-untagged would delete its platform images (distribution/distribution#3004)"
                )
            e.out.say(f"{record.name}: stopping dockyard-registry for garbage collection")
            result = collect_garbage(conn, delete_untagged=index is None)
        e.out.say(
            f"{record.name}: freed {human_bytes(result.bytes_freed)} ({result.bytes_freed} bytes, "
            f"{result.blobs_deleted} blobs); volume {human_bytes(result.bytes_before)} -> "
            f"{human_bytes(result.bytes_after)}; registry stopped {result.seconds_stopped}s, healthy again"
        )


@task(help={
    "registry_port": "local port for the registry (default: the same as on the host; 0 picks a free one)",
    "ui_port": "local port for the registry UI (default: the same as on the host; 0 picks a free one)",
    **HOST_HELP,
})
def tunnel(c, env=None, host=None, registry_port=None, ui_port=None):
    """Forward local ports to the registry and its UI over SSH, until Ctrl-C."""
    e = open_env(c, env)
    services = e.inventory.services
    record = e.hosts_with("registry", host)[0]
    with e.connect(record) as conn, conn.tunnel(
        services.registry.port, _port(registry_port, services.registry.port)
    ) as local_registry:
        rows = [("registry", f"http://127.0.0.1:{local_registry}/v2/_catalog",
                 f"docker push 127.0.0.1:{local_registry}/NAME:TAG")]
        if "registry_ui" not in record.roles:
            _hold(e.out, record, rows)
            return
        with conn.tunnel(services.registry_ui.port, _port(ui_port, services.registry_ui.port)) as local_ui:
            rows.append(("registry_ui", f"http://127.0.0.1:{local_ui}/", "open it in a browser"))
            _hold(e.out, record, rows)


def _port(chosen: str | int | None, default: int) -> int:
    return default if chosen is None else int(chosen)


def _hold(out: Reporter, record: HostRecord, rows: list[tuple[str, ...]]) -> None:
    out.say(f"tunnels to {record.name} open; Ctrl-C closes them")
    out.table(("service", "url", "try"), rows)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        out.say("tunnels closed")



def each_registry(e: Env, host: str | None, work: Callable[[RegistryClient], None]) -> None:
    """Run `work` against each registry host's API, reached through an SSH tunnel."""
    records = e.hosts_with("registry", host)
    auth = registry_auth(e)
    for record in records:
        if len(records) > 1:
            e.out.say(f"{record.name}:")
        with e.connect(record) as conn, conn.tunnel(e.inventory.services.registry.port) as port:
            work(RegistryClient(f"http://127.0.0.1:{port}", where=f"{record.name} registry", auth=auth))


def registry_auth(e: Env) -> tuple[str, str] | None:
    user, password = os.environ.get("DOCKYARD_REGISTRY_USER"), os.environ.get("DOCKYARD_REGISTRY_PASSWORD")
    if not user:
        return None
    e.out.hide(password or "")
    return user, password or ""


def split_reference(reference: str) -> tuple[str, str]:
    repository, sep, tag = reference.rpartition(":")
    if not sep or not repository or not tag or "/" in tag:
        raise DockyardError(f"{reference!r} is not REPOSITORY:TAG; e.g. `invoke registry.rm flask-hello:old`")
    return repository, tag


def show_repositories(out: Reporter, client: RegistryClient) -> None:
    names = client.catalog()
    with ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
        counts = list(pool.map(lambda name: len(client.tags(name, missing_ok=True)), names))
    out.table(("repository", "tags"), [(name, str(count)) for name, count in zip(names, counts, strict=True)])
    out.say(f"{len(names)} repositories, {sum(counts)} tags")


def show_tags(out: Reporter, client: RegistryClient, repository: str) -> None:
    names = client.tags(repository)
    with ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
        infos = list(pool.map(lambda tag: client.describe(repository, tag), names))
    rows = [(i.tag, short_digest(i.digest), human_bytes(i.size), short_date(i.created)) for i in infos]
    out.table(("tag", "digest", "size", "created"), rows)
    out.say(f"{repository}: {len(infos)} tags")


def remove_tag(out: Reporter, client: RegistryClient, repository: str, tag: str, yes: bool) -> None:
    deletion = client.plan_delete(repository, tag)
    question = f"delete {repository}:{tag} ({short_digest(deletion.digest)})"
    if deletion.shared_with:
        others = ", ".join(deletion.shared_with)
        goes = "it goes" if len(deletion.shared_with) == 1 else "they go"
        out.say(f"warning: {short_digest(deletion.digest)} is also tagged {others}; {goes} too")
        question += f" and {others}"
    confirm(f"{question}?", yes)
    client.delete(deletion)
    gone = ", ".join(f"{repository}:{t}" for t in (tag, *deletion.shared_with))
    out.say(f"deleted {gone} ({deletion.digest}); `invoke registry.gc` frees the space")


def short_digest(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}"


def short_date(created: str | None) -> str:
    """`2026-11-28T01:48:03.123456789Z` as `2026-11-28 01:48:03Z`."""
    if not created:
        return "-"
    day, _, clock = created.partition("T")
    return f"{day} {clock[:8]}Z" if clock else day
