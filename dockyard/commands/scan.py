"""Trivy on the host: its own image, on the host's network so 127.0.0.1:<registry port> is the registry."""

from __future__ import annotations

import shlex

from dockyard.commands import docker

TRIVY_IMAGE = "aquasec/trivy:0.57.1"
TRIVY_CACHE = "dockyard-trivy-cache"  # a volume on the host: the database is fetched once, then updated
CANNOT_PULL = "dockyard-scan: cannot pull"  # how the script says Trivy's image is out of reach ...
CANNOT_PULL_EXIT = 3  # ... and its exit code then


def trivy_arguments(image_ref: str) -> list[str]:
    # Straight from the registry (not a local engine); plain HTTP on 127.0.0.1 is expected.
    return ["image", "--format", "json", "--scanners", "vuln", "--image-src", "remote", "--insecure", image_ref]


def host_script(image_ref: str) -> str:
    unavailable = f"{CANNOT_PULL} {TRIVY_IMAGE} on this host"
    return "\n".join([
        "set -eu",
        f"{docker('image', 'inspect', TRIVY_IMAGE)} >/dev/null 2>&1 || "
        f"{docker('pull', '--quiet', TRIVY_IMAGE)} >/dev/null 2>&1 || "
        f"{{ echo {shlex.quote(unavailable)} >&2; exit {CANNOT_PULL_EXIT}; }}",
        docker("run", "--rm", "--network", "host", "--volume", f"{TRIVY_CACHE}:/root/.cache/trivy", TRIVY_IMAGE,
               *trivy_arguments(image_ref)),
    ])
