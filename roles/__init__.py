"""One module per service; each declares its image, files and container as data."""

from dockyard.inventory import ROLES
from roles import app, mirror, proxy, registry, registry_ui, webhook

MODULES = {
    "registry": registry, "mirror": mirror, "registry_ui": registry_ui, "proxy": proxy, "app": app,
    "webhook": webhook,
}
assert tuple(MODULES) == ROLES, "roles must be listed in deploy order"
