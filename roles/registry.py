"""The private registry: CNCF distribution, with dockyard's own config."""

from dockyard.contract import CONFIG_ROOT
from dockyard.spec import ContainerSpec, File, Health, Image, RoleSpec, Target

CONFIG = f"{CONFIG_ROOT}/registry/config.yml"
# Offline it is Debian's docker-registry package; it must reach the host before it can serve anything.
IMAGE = Image("registry", pull="registry:2", build="images/registry", via_registry=False)
CONTAINER_PORT = 5000
HEALTH = Health(CONTAINER_PORT, "/v2/")


def declare(target: Target) -> RoleSpec:
    return RoleSpec(
        role="registry",
        image=IMAGE,
        files=(File(CONFIG, template="registry/config.yml.j2", secret=True),),
        container=ContainerSpec(
            name="dockyard-registry",
            ports=target.publish("registry", {"port": CONTAINER_PORT}),
            volumes=("dockyard-registry-data:/var/lib/registry", f"{CONFIG}:/etc/docker/registry/config.yml:ro"),
            health=HEALTH,
        ),
    )
