"""images.*: the base image, and moving local images onto the hosts."""

from dockyard import images as local_images
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
                progress = e.out.progress(f"{record.name} ship {ref}", local_images.image_size(ref))
                conn.stream("docker load --quiet", local_images.save_chunks(ref), progress)
                progress.finish()
    e.out.say(f"shipped {len(image)} image(s); {STATS.bytes_sent} bytes sent")
