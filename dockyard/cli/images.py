"""images.*: the base image, and moving local images onto the hosts."""

from dockyard import images as local_images
from dockyard import lock, transfer
from dockyard.cli import LOCK_HELP, claim, open_env, task
from dockyard.ssh import STATS


@task
def base(c, env=None):
    """Build the base image from Debian packages (debootstrap + docker import), unless cached."""
    env = open_env(c, env)
    local_images.build_base(env.out.say)


@task(iterable=["image"], help={"image": "local image to stream to every host (repeatable)", **LOCK_HELP})
def ship(c, image, env=None, lock_timeout=None):
    """Stream images to every host into `docker load` over SSH, their layers gzipped once for all hosts."""
    env = open_env(c, env)
    held = claim(c, "images.ship", lock_timeout)
    for record in env.hosts():
        with env.connect(record) as conn, lock.held(conn, env.out, held):
            for ref in map(local_images.with_tag, image):
                transfer.ship(conn, env.out, env.layers.packed(ref))
    env.out.say(f"shipped {len(image)} image(s); {STATS.bytes_sent} bytes sent over SSH")


@task(iterable=["image"],
      help={"image": "local image (name:tag) to push to each host's registry (repeatable)", **LOCK_HELP})
def push(c, image, env=None, lock_timeout=None):
    """Push images to each host's private registry through an SSH tunnel; only missing layers travel."""
    env = open_env(c, env)
    held = claim(c, "images.push", lock_timeout)
    for record in env.hosts_with("registry"):
        with (env.connect(record) as conn, lock.held(conn, env.out, held),
              conn.tunnel(env.inventory.services.registry.port) as port):
            for ref in map(local_images.with_tag, image):
                transfer.push(conn, env.out, transfer.registry(env, record.name, port), env.layers.packed(ref), ref)
    env.out.say(f"pushed {len(image)} image(s); {STATS.bytes_sent} bytes sent over SSH")
