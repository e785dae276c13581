"""The Flask app, built from its folder and served by gunicorn."""

from dockyard import app_settings, contract
from dockyard.inventory import App
from dockyard.spec import ContainerSpec, File, Health, Image, RoleSpec, Slots, Stack, Target

NAME = "dockyard-app"
CONTAINER_PORT = 8000
# gunicorn's --graceful-timeout in apps/flask-hello is 8 s: `docker stop` waits a little longer for in-flight
# requests before it kills. 10 s is also Docker's default, which a container the webhook starts gets.
STOP_GRACE = 10
# The webhook starts the app's next slot from this file, so a redeploy keeps exactly what deploy declared.
SPEC_FILE = f"{contract.HOST_APP_SPEC_DIR}/{contract.APP_SPEC_NAME}"
# On a swarm: the stack the app's service runs from, on the manager that deploys it.
STACK_FILE = f"{contract.CONFIG_ROOT}/stack/{contract.STACK}.yml"
# Swarm watches each updated task this long for a failure, which rolls the whole update back.
UPDATE_MONITOR = 5


def declare(target: Target) -> RoleSpec:
    settings = target.inventory.services.app
    release = app_settings.release_words(settings)
    return RoleSpec(
        role="app",
        image=Image("app", build=settings.source, repository=settings.repository),
        files=(File(SPEC_FILE, template="app/container.json.j2"),
               *app_settings.secret_files(settings, target.app_secrets)),
        container=container(settings),
        # one host switches between two containers; a swarm rolls its tasks over, start-first
        slots=None if target.cluster else Slots(CONTAINER_PORT, release=release),
        stack=Stack(STACK_FILE, "stack/dockyard.yml.j2", target.cluster.replicas, release) if target.cluster else None,
    )


def container(settings: App) -> ContainerSpec:
    """The app's container, image aside: what deploy runs, and what a one-off command of the app runs with (on a
    swarm, one-off commands only: its tasks get the secrets as swarm secrets, at the same paths)."""
    return ContainerSpec(
        name=NAME,  # the service's: it runs as dockyard-app-blue or dockyard-app-green
        # no host port: the proxy reaches it on the docker network, and two slots run side by side in a switch
        health=Health(CONTAINER_PORT, settings.health_path),
        stop_timeout=STOP_GRACE,
        env=app_settings.container_env(settings),
        volumes=(*settings.volumes, *app_settings.secret_mounts(settings)),
        env_file=app_settings.env_file(settings),
    )
