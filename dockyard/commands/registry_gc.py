"""Garbage collection of the private registry, as one script run on its host.

Deleting a tag only unlinks its manifest; the blobs stay on disk until `garbage-collect` runs, and it
must not run while the registry accepts pushes (a blob uploaded meanwhile could be collected). So the
script stops the registry, collects with the same image and mounts, starts it again, waits for it to
be healthy, and measures the volume before and after. If collecting fails, the registry still restarts.
Its last line is the summary `dockyard.registry_gc.parse_summary` reads.

`--delete-untagged` also collects images whose tag moved on (a re-pushed `latest`), but distribution
2.8 deletes the untagged platform images of a tagged multi-platform index with them
(distribution/distribution#3004), so the caller leaves it out when the registry holds an index.
"""

from __future__ import annotations

import shlex

from dockyard.commands import docker
from dockyard.commands.containers import wait_healthy
from roles import registry

CONTAINER = "dockyard-registry"
VOLUME = "dockyard-registry-data"
CONFIG = "/etc/docker/registry/config.yml"  # where the container sees dockyard's config
# The official image ships `registry`, Debian's package `docker-registry`: the first one found runs.
BINARIES = ("registry", "docker-registry")


def collector_command(config: str = CONFIG, delete_untagged: bool = True) -> str:
    """What runs inside the collecting container: whichever registry binary the image has."""
    run = f"garbage-collect {'--delete-untagged ' if delete_untagged else ''}{shlex.quote(config)}"
    names = " ".join(BINARIES)
    return (
        f'for b in {names}; do if command -v "$b" >/dev/null 2>&1; then exec "$b" {run}; fi; done; '
        f"echo 'no registry binary ({names}) in the image' >&2; exit 127"
    )


def gc_script(container: str = CONTAINER, volume: str = VOLUME, config: str = CONFIG,
              delete_untagged: bool = True, health_timeout: int = 90) -> str:
    q = shlex.quote
    fmt_image, fmt_mount = "{{.Image}}", "{{.Mountpoint}}"
    # Same image and mounts as the registry itself, so the data and config are where it expects them.
    collect = (
        f'{docker("run", "--rm", "--entrypoint", "/bin/sh", "--volumes-from", container)} "$image" '
        f"-c {q(collector_command(config, delete_untagged))}"
    )
    return "\n".join([
        "set -eu",
        f"{docker('inspect', container)} >/dev/null 2>&1 || "
        f"{{ echo {q(f'no {container} container on this host; run `invoke deploy.registry` first')} >&2; exit 1; }}",
        f"image=$({docker('inspect', '--format', fmt_image, container)})",
        f"data=$({docker('volume', 'inspect', '--format', fmt_mount, volume)})",
        'before=$(du -sb "$data" | cut -f1)',
        "log=$(mktemp)",
        # From here on the registry comes back whatever happens.
        f"trap '{docker('start', container)} >/dev/null; rm -f \"$log\"' EXIT",
        f"{docker('stop', container)} >/dev/null",
        "stopped_at=$(date +%s)",
        f'if ! {collect} >"$log" 2>&1; then',
        '  echo "garbage-collect failed; its last lines:" >&2; tail -n 5 "$log" >&2; exit 1',
        "fi",
        f"{docker('start', container)} >/dev/null",
        "trap 'rm -f \"$log\"' EXIT",
        wait_healthy(container, registry.HEALTH, health_timeout),
        "stopped=$(( $(date +%s) - stopped_at ))",
        'after=$(du -sb "$data" | cut -f1)',
        "deleted=$(grep -c 'blob eligible for deletion' \"$log\" || true)",
        'echo "dockyard-gc before=$before after=$after deleted=$deleted stopped=$stopped"',
    ])
