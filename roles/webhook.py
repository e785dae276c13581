"""The webhook listener that redeploys the app when a new image is pushed.

It holds the Docker socket, which is root on the host: its surface stays minimal.
"""

from dockyard.spec import CONFIG_ROOT, ContainerSpec, File, Health, Image, RoleSpec, Target
from roles import app

CONFIG = f"{CONFIG_ROOT}/webhook/config.json"
NAME = "dockyard-webhook"
CONTAINER_PORT = 9000
# On the host itself, so the audit log outlives the container and `app.history` reads it over SSH.
HISTORY_DIR = app.LISTENER_DIR
HISTORY_FILE = f"{HISTORY_DIR}/history.jsonl"


def declare(target: Target) -> RoleSpec:
    return RoleSpec(
        role="webhook",
        image=Image("webhook", build="images/webhook"),
        files=(File(CONFIG, template="webhook/config.json.j2", secret=True),),
        container=ContainerSpec(
            name=NAME,
            # Docker Hub reaches /hooks/ through the proxy, the registry the listener on the docker network
            ports=target.publish("webhook", {"port": CONTAINER_PORT}),
            volumes=(
                "/var/run/docker.sock:/var/run/docker.sock",
                f"{CONFIG}:/etc/dockyard-webhook/config.json:ro",
                # the folder, not the file: deploy replaces the file atomically, which a file mount would miss
                f"{app.SPEC_DIR}:/etc/dockyard-webhook/app:ro",
                f"{HISTORY_DIR}:/var/lib/dockyard-webhook",
            ),
            health=Health(CONTAINER_PORT, "/healthz"),
            # let a redeploy in flight finish, or roll back, before the listener is stopped
            stop_timeout=target.inventory.services.webhook.health_timeout + 30,
        ),
    )
