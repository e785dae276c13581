"""The proxy (Caddy) from the outside: what dockyard asks of it on the host."""

from __future__ import annotations

from dockyard.commands import docker


def root_certificate(container: str, path: str) -> str:
    """Print the internal CA's root certificate, read inside the proxy's container."""
    return docker("exec", container, "cat", path)
