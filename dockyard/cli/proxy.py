"""proxy.*: the front door's certificates."""

from pathlib import Path

from dockyard import front_door
from dockyard.cli import open_env, task


@task(help={"output": f"file to write (default: {front_door.CA_FILE} in the environment's state folder)"})
def ca(c, env=None, output=None):
    """Write the certificate of the proxy's internal CA to a file, so clients can trust it (curl --cacert)."""
    env = open_env(c, env)
    path = front_door.export_ca(env, Path(output) if output else None)
    env.out.say(f"wrote the certificate of the proxy's internal CA to {path}; trust it with:")
    for record in env.hosts_with("proxy"):
        url = front_door.url(env.inventory, record)
        if url:
            env.out.say(f"  curl --cacert {path} {url}/")
