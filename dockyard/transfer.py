"""Moving local images onto a host, packed once (`layers`), with progress in bytes.

Before the host's registry runs, `ship` streams the image into `docker load` over SSH, its layers gzipped. Once it
runs, `push` goes through an SSH tunnel to it, so only the layers it lacks travel.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.commands import containers
from dockyard.layers import MANIFEST_TYPE, Blob, Packed
from dockyard.report import Reporter
from dockyard.ssh import HostConnection

if TYPE_CHECKING:
    from dockyard.environment import Env
    from dockyard.registry_api import RegistryClient

PARALLEL_BLOBS = 4  # each upload is one more channel of the same SSH connection


def ship(conn: HostConnection, out: Reporter, packed: Packed) -> None:
    progress = out.progress(f"{conn.record.name} ship {packed.ref}", packed.size)
    conn.stream(containers.load(), packed.archive(), progress)
    progress.finish()


def registry(env: Env, host: str, tunnel_port: int) -> RegistryClient:
    """`host`'s registry, which it names 127.0.0.1:<port>, at the local end of a tunnel to it."""
    from dockyard.registry_api import through_tunnel  # urllib's import would cost every no-op deploy

    return through_tunnel(env, host, tunnel_port)


def push(conn: HostConnection, out: Reporter, registry: RegistryClient, packed: Packed, repository: str) -> None:
    """Push `packed` as `repository` (name:tag) into the registry behind the tunnel."""
    name, tag = repository.rsplit(":", 1)
    progress = out.progress(f"{conn.record.name} push {repository}", packed.size)
    start = conn.bytes_sent

    def put(blob: Blob) -> None:
        registry.put_blob(name, blob.digest, blob.size,
                          lambda: _Reported(blob.path, lambda: progress(conn.bytes_sent - start)))

    with ThreadPoolExecutor(PARALLEL_BLOBS) as pool:
        # an image may hold one layer twice; two uploads of one blob at once make the registry answer 500
        list(pool.map(put, {blob.digest: blob for blob in (packed.config, *packed.layers)}.values()))
    registry.put_manifest(name, tag, packed.manifest(), MANIFEST_TYPE)
    progress.finish()


class _Reported(io.FileIO):
    """A file that reports each read: the upload's progress, counted where the bytes enter the tunnel."""

    def __init__(self, path: Path, moved: Callable[[], None]):
        super().__init__(path, "rb")
        self._moved = moved

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self._moved()
        return data
