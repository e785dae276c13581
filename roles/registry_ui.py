"""The registry's web UI: joxit/docker-registry-ui where it can be pulled, dockyard's console offline.

Both proxy the registry from their own origin, on the same port and behind the same tunnel.
"""

from dockyard.spec import ContainerSpec, Health, Image, RoleSpec, Target

JOXIT = Image("registry-ui", pull="joxit/docker-registry-ui:2")
CONSOLE = Image("registry-console", build="images/registry-console")
REGISTRY_URL = "http://dockyard-registry:5000"


def kind(target: Target) -> str:
    chosen = target.inventory.services.registry_ui.kind
    if chosen == "auto":
        return "joxit" if target.online else "console"
    return chosen


def declare(target: Target) -> RoleSpec:
    settings = target.inventory.services.registry_ui
    if kind(target) == "joxit":
        return RoleSpec(
            role="registry_ui",
            image=JOXIT,
            container=ContainerSpec(
                name="dockyard-registry-ui",
                ports=target.publish("registry_ui", {"port": 80}),
                env=(
                    ("NGINX_PROXY_PASS_URL", REGISTRY_URL), ("SINGLE_REGISTRY", "true"),
                    ("DELETE_IMAGES", "true"), ("REGISTRY_TITLE", settings.title),
                ),
                health=Health(80, "/"),
            ),
        )
    return RoleSpec(
        role="registry_ui",
        image=CONSOLE,
        container=ContainerSpec(
            name="dockyard-registry-ui",
            ports=target.publish("registry_ui", {"port": 8080}),
            env=(("REGISTRY_URL", REGISTRY_URL), ("TITLE", settings.title)),
            health=Health(8080, "/healthz"),
        ),
    )
