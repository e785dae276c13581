"""One module per service; each declares its image, files and container as data."""

from dockyard.inventory import ROLES
from roles import app, cluster_registry, mirror, proxy, registry, registry_ui, webhook

# In deploy order. On a swarm, the registry's host also runs its TLS twin, which no inventory lists.
MODULES = {
    "registry": registry, "cluster_registry": cluster_registry, "mirror": mirror, "registry_ui": registry_ui,
    "proxy": proxy, "app": app, "webhook": webhook,
}
assert tuple(r for r in MODULES if r in ROLES) == ROLES, "roles must be listed in deploy order"


def host_roles(roles: tuple[str, ...], swarm: bool) -> tuple[str, ...]:
    """The modules a host with the inventory's `roles` runs, in deploy order."""
    implied = {"cluster_registry"} if swarm and "registry" in roles else set()
    return tuple(r for r in MODULES if r in roles or r in implied)
