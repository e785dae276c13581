"""The Flask app, built from its folder and served by gunicorn."""

from dockyard.spec import CONFIG_ROOT, ContainerSpec, File, Health, Image, RoleSpec, Target

CONTAINER_PORT = 8000
# The webhook recreates the app from this file, so a redeploy keeps exactly what deploy declared.
SPEC_DIR = f"{CONFIG_ROOT}/app"
SPEC_FILE = f"{SPEC_DIR}/container.json"


def declare(target: Target) -> RoleSpec:
    settings = target.inventory.services.app
    return RoleSpec(
        role="app",
        image=Image("app", build=settings.source, repository=settings.repository),
        files=(File(SPEC_FILE, template="app/container.json.j2"),),
        container=ContainerSpec(
            name="dockyard-app",
            ports=(f"{target.bind('app')}:{settings.port}:{CONTAINER_PORT}",),
            health=Health(CONTAINER_PORT, settings.health_path),
        ),
    )
