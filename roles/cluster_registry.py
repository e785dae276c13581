"""On a swarm, the registry's read-only twin: every node pulls the app's image from it over TLS, with a certificate
from dockyard's CA, on the registry host's private address. It serves the registry's own storage; pushes still go
to the registry, through the SSH tunnel."""

from dockyard.contract import CLUSTER_REGISTRY_PORT, CONFIG_ROOT
from dockyard.spec import ContainerSpec, File, Health, RoleSpec, Target
from roles import registry

CONFIG_DIR = f"{CONFIG_ROOT}/registry-cluster"
INSIDE = "/etc/docker/registry"
# Its API speaks TLS only: Docker's health check asks the debug listener, on the container's loopback.
DEBUG_PORT = 5001


def declare(target: Target) -> RoleSpec:
    tls = target.cluster.tls
    return RoleSpec(
        role="cluster_registry",
        image=registry.IMAGE,
        files=(
            File(f"{CONFIG_DIR}/config.yml", template="registry/config.yml.j2", secret=True,
                 values=(("twin_port", str(CLUSTER_REGISTRY_PORT)), ("debug_port", str(DEBUG_PORT)),
                         ("tls_dir", INSIDE))),
            File(f"{CONFIG_DIR}/registry.crt", content=tls.certificate),
            File(f"{CONFIG_DIR}/registry.key", content=tls.key, secret=True),
        ),
        container=ContainerSpec(
            name="dockyard-registry-cluster",
            # the swarm's nodes reach it on their network; the swarm ports' rules let only them in
            ports=(f"{target.host.private_address}:{CLUSTER_REGISTRY_PORT}:{CLUSTER_REGISTRY_PORT}",),
            volumes=("dockyard-registry-data:/var/lib/registry:ro", f"{CONFIG_DIR}:{INSIDE}:ro"),
            health=Health(DEBUG_PORT, "/debug/health"),
        ),
    )
