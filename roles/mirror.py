"""A pull-through mirror: a second registry in proxy mode, which refuses pushes by design."""

from dockyard.contract import CONFIG_ROOT
from dockyard.spec import ContainerSpec, File, RoleSpec, Target
from roles import registry

CONFIG = f"{CONFIG_ROOT}/mirror/config.yml"


def declare(target: Target) -> RoleSpec:
    return RoleSpec(
        role="mirror",
        image=registry.IMAGE,
        files=(
            File(
                CONFIG, template="mirror/config.yml.j2", secret=True,
                values=(("remote_url", target.inventory.services.mirror.remote_url or docker_hub()),),
            ),
        ),
        container=ContainerSpec(
            name="dockyard-mirror",
            ports=target.publish("mirror", {"port": registry.CONTAINER_PORT}),
            volumes=("dockyard-mirror-cache:/var/lib/registry", f"{CONFIG}:/etc/docker/registry/config.yml:ro"),
            health=registry.HEALTH,
        ),
    )


def docker_hub() -> str:
    """Docker Hub's registry endpoint, as the Docker SDK names the index. Imported here: the SDK takes a tenth of a
    second to import, and an inventory that names its mirror's remote never needs it."""
    from docker.auth import INDEX_NAME

    return f"https://registry-1.{INDEX_NAME}"
