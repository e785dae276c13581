"""The Flask app, built from its folder and served by gunicorn."""

from dockyard.spec import CONFIG_ROOT, ContainerSpec, File, Health, Image, RoleSpec, Target

NAME = "dockyard-app"
CONTAINER_PORT = 8000
# gunicorn's --graceful-timeout in apps/flask-hello is 8 s: `docker stop` waits a little longer for in-flight
# requests before it kills. 10 s is also Docker's default, which a container the webhook recreates gets.
STOP_GRACE = 10
# The webhook recreates the app from this file, so a redeploy keeps exactly what deploy declared.
SPEC_DIR = f"{CONFIG_ROOT}/app"
SPEC_FILE = f"{SPEC_DIR}/container.json"
# Deploy and the webhook listener both hold this lock while they replace the app, so they never do it at
# once; it lives in the listener's own folder on the host, which the listener mounts.
LISTENER_DIR = "/var/lib/dockyard/webhook"
REPLACE_LOCK = f"{LISTENER_DIR}/app.lock"


def declare(target: Target) -> RoleSpec:
    settings = target.inventory.services.app
    return RoleSpec(
        role="app",
        image=Image("app", build=settings.source, repository=settings.repository),
        files=(File(SPEC_FILE, template="app/container.json.j2"),),
        lock=REPLACE_LOCK,
        container=ContainerSpec(
            name=NAME,
            # reached through the proxy, on the docker network; published only when the inventory opens it
            ports=target.publish("app", {"port": CONTAINER_PORT}),
            health=Health(CONTAINER_PORT, settings.health_path),
            stop_timeout=STOP_GRACE,
        ),
    )
