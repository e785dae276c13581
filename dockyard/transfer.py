"""Moving local images onto a host, with progress in bytes.

Before the host's registry runs, `ship` streams `docker save` into `docker load` over SSH. Once it runs,
`push` goes through an SSH tunnel to it, so only the layers it lacks travel.
"""

from __future__ import annotations

from dockyard import images
from dockyard.commands import containers
from dockyard.report import Reporter
from dockyard.ssh import HostConnection


def ship(conn: HostConnection, out: Reporter, local_ref: str) -> None:
    progress = out.progress(f"{conn.record.name} ship {local_ref}", images.image_size(local_ref))
    conn.stream(containers.load(), images.save_chunks(local_ref), progress)
    progress.finish()


def push(conn: HostConnection, out: Reporter, tunnel_port: int, local_ref: str, repository: str) -> None:
    """Push `local_ref` as `repository` (name:tag) into the registry behind the tunnel."""
    progress = out.progress(f"{conn.record.name} push {repository}")
    start = conn.bytes_sent
    images.push(local_ref, f"127.0.0.1:{tunnel_port}", repository, lambda: progress(conn.bytes_sent - start))
    progress.finish()
