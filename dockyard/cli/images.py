"""images.*: the base image, and moving local images onto the hosts."""

from dockyard import images as local_images
from dockyard import transfer
from dockyard.cli import open_env, task
from dockyard.ssh import STATS


@task
def base(c, env=None):
    """Build the base image from Debian packages (debootstrap + docker import), unless cached."""
    e = open_env(c, env)
    local_images.build_base(e.out.say)


@task(iterable=["image"], help={"image": "local image to stream to every host (repeatable)"})
def ship(c, image, env=None):
    """Stream images to every host with `docker save | ssh docker load`, no temporary file."""
    e = open_env(c, env)
    for record in e.hosts():
        with e.connect(record) as conn:
            for ref in image:
                transfer.ship(conn, e.out, ref)
    e.out.say(f"shipped {len(image)} image(s); {STATS.bytes_sent} bytes sent over SSH")


@task(iterable=["image"], help={"image": "local image (name:tag) to push to each host's registry (repeatable)"})
def push(c, image, env=None):
    """Push images to each host's private registry through an SSH tunnel; only missing layers travel."""
    e = open_env(c, env)
    for record in e.hosts_with("registry"):
        with e.connect(record) as conn, conn.tunnel(e.inventory.services.registry.port) as port:
            for ref in image:
                name = ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"
                transfer.push(conn, e.out, port, name, name)
    e.out.say(f"pushed {len(image)} image(s); {STATS.bytes_sent} bytes sent over SSH")
