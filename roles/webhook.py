"""The webhook listener that redeploys the app when a new image is pushed.

It holds the Docker socket, which is root on the host: its surface stays minimal.
"""

from dockyard import contract
from dockyard.spec import ContainerSpec, File, Health, Image, RoleSpec, Target

CONFIG = f"{contract.CONFIG_ROOT}/webhook/config.json"
NAME = "dockyard-webhook"
CONTAINER_PORT = 9000
# The listener imports the contract it shares with deploy: its image carries the very file.
IMAGE = Image("webhook", build="images/webhook", modules=("dockyard.contract",))
# On the host itself, so the audit log outlives the container and `app.history` reads it over SSH.
HISTORY_FILE = f"{contract.HOST_LISTENER_DIR}/{contract.HISTORY_NAME}"


def declare(target: Target) -> RoleSpec:
    cluster = target.cluster
    return RoleSpec(
        role="webhook",
        image=IMAGE,
        files=(File(CONFIG, template="webhook/config.json.j2", secret=True, values=(
            ("proxy", contract.PROXY_CONTAINER),
            # on a swarm a redeploy updates the app's service, whose nodes pull from the registry's twin
            ("swarm_service", contract.APP_SERVICE if cluster else ""),
            ("swarm_registry", cluster.registry if cluster else ""),
        )),),
        container=ContainerSpec(
            name=NAME,
            # Docker Hub reaches /hooks/ through the proxy, the registry the listener on the docker network
            ports=target.publish("webhook", {"port": CONTAINER_PORT}),
            volumes=(
                "/var/run/docker.sock:/var/run/docker.sock",
                f"{CONFIG}:{contract.LISTENER_CONFIG}:ro",
                f"{contract.HOST_APP_SPEC_DIR}:{contract.LISTENER_APP_SPEC_DIR}:ro",
                f"{contract.HOST_LISTENER_DIR}:{contract.LISTENER_STATE_DIR}",
                # the host lock, which each redeploy holds as deploy does
                f"{contract.HOST_LOCK_DIR}:{contract.LISTENER_LOCK_DIR}",
                # it switches the proxy to the app's new slot by rewriting the upstream file
                f"{contract.HOST_UPSTREAM_DIR}:{contract.LISTENER_UPSTREAM_DIR}",
            ),
            health=Health(CONTAINER_PORT, "/healthz"),
            # let a redeploy in flight finish, or roll back, before the listener is stopped
            stop_timeout=target.inventory.services.webhook.health_timeout + 30,
        ),
    )
