"""The front door: Caddy terminates TLS and passes requests to the app, and /hooks/ to the webhook listener.

Online it is the official image; offline Debian's caddy package on dockyard's base image. Certificates and
the internal CA live on volumes, so recreating the proxy keeps them.
"""

from dockyard import contract
from dockyard.spec import ContainerSpec, File, Health, Image, RoleSpec, Target
from roles import app, webhook

NAME = contract.PROXY_CONTAINER
CONFIG_DIR = f"{contract.CONFIG_ROOT}/proxy"
# The app's upstream: one line, `to <container>:<port>`, imported into the Caddyfile. It lives apart from the
# config because it names the app's slot that serves now: the app's switch writes it, the proxy only creates it.
UPSTREAM_DIR = contract.HOST_UPSTREAM_DIR
UPSTREAM_FILE = contract.HOST_UPSTREAM_FILE
UPSTREAM_MOUNT = "/var/lib/dockyard-proxy"
# The internal CA's root, where Caddy keeps it under XDG_DATA_HOME=/data.
ROOT_CERTIFICATE = "/data/caddy/pki/authorities/local/root.crt"
# A site on the container's loopback, for Docker's health check: the admin API logs every request it gets.
HEALTH_PORT = 2020
INSIDE = {"http_port": 80, "https_port": 443}


def declare(target: Target) -> RoleSpec:
    return RoleSpec(
        role="proxy",
        image=Image("proxy", pull="caddy:2.6", build="images/proxy"),
        files=(
            # folders are mounted, not files: deploy replaces files atomically, which a file mount would miss
            File(f"{CONFIG_DIR}/Caddyfile", template="proxy/Caddyfile.j2", values=_caddyfile_values(target)),
            # Caddy refuses to start without the file it imports; the app's first deploy starts in this slot. A
            # swarm's proxy finds the app's tasks by name instead.
            *(() if target.cluster else (File(
                UPSTREAM_FILE, content=contract.upstream_line(contract.slot_names(app.NAME)[0], app.CONTAINER_PORT),
                create_only=True),)),
        ),
        # a changed Caddyfile is applied in place: the front door stays open
        reload=contract.PROXY_RELOAD,
        container=ContainerSpec(
            name=NAME,
            ports=target.publish("proxy", INSIDE),
            volumes=(
                "dockyard-proxy-data:/data",
                "dockyard-proxy-config:/config",
                f"{CONFIG_DIR}:/etc/caddy:ro",
                f"{UPSTREAM_DIR}:{UPSTREAM_MOUNT}:ro",
            ),
            health=Health(HEALTH_PORT, "/healthz"),
            # a reload opens a new listening socket beside the old one (SO_REUSEPORT); without this, connections
            # still queued on the old one when it closes are reset, instead of handed to the new one (Linux 5.14+)
            sysctls=(("net.ipv4.tcp_migrate_req", "1"),),
        ),
    )


def _caddyfile_values(target: Target) -> tuple[tuple[str, str], ...]:
    settings = target.inventory.services.proxy
    certificates = target.inventory.proxy_certificates()
    if certificates == "acme":
        sites = [settings.domain]
    else:
        # names a client may use without DNS: the host's loopback, and its address
        sites = list(dict.fromkeys(n for n in (settings.domain, "localhost", "127.0.0.1", target.host.address) if n))
    return (
        ("certificates", certificates),
        ("sites", ", ".join(sites)),
        # clients that send no name (https://<ip>/) get the certificate of this one
        ("default_sni", settings.domain or target.host.address),
        ("https_suffix", "" if settings.https_port == 443 else f":{settings.https_port}"),
        ("upstream", f"{UPSTREAM_MOUNT}/{contract.UPSTREAM_NAME}"),
        # a swarm's app: every task's address, which Docker's DNS gives for tasks.<service> (endpoint_mode dnsrr)
        ("tasks", f"tasks.{contract.APP_SERVICE}" if target.cluster else ""),
        ("app_port", str(app.CONTAINER_PORT)),
        ("webhook", f"{webhook.NAME}:{webhook.CONTAINER_PORT}" if "webhook" in target.host.roles else ""),
        ("health_port", str(HEALTH_PORT)),
    )
