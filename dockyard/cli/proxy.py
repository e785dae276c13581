"""proxy.*: the front door's certificates."""

from pathlib import Path

from dockyard import front_door
from dockyard.cli import open_env, task


@task(help={"output": f"file to write (default: {front_door.CA_FILE} in the environment's state folder)"})
def ca(c, env=None, output=None):
    """Write the proxy's internal CA root certificate to a file, so clients can trust it (curl --cacert)."""
    e = open_env(c, env)
    path = front_door.export_ca(e, Path(output) if output else None)
    e.out.say(f"wrote the root certificate of the proxy's internal CA to {path}; trust it with:")
    for record in e.hosts_with("proxy"):
        url = front_door.url(e.inventory, record)
        if url:
            e.out.say(f"  curl --cacert {path} {url}/")
