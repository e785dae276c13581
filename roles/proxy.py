"""The front door: Caddy terminates TLS and passes requests to the app, and /hooks/ to the webhook listener.

Online it is the official image; offline Debian's caddy package on dockyard's base image. ACME certificates
live on volumes, so recreating the proxy keeps them; internal ones are dockyard's, signed by the environment's CA.
"""

from dockyard import contract
from dockyard.inventory import Inventory
from dockyard.spec import ContainerSpec, File, Health, Image, RoleSpec, ServerTls, Target
from dockyard.state import HostRecord
from roles import app, webhook

NAME = contract.PROXY_CONTAINER
CONFIG_DIR = f"{contract.CONFIG_ROOT}/proxy"
# The app's upstream: one line, `to <container>:<port>`, imported into the Caddyfile. It lives apart from the
# config because it names the app's slot that serves now: the app's switch writes it, the proxy only creates it.
UPSTREAM_DIR = contract.HOST_UPSTREAM_DIR
UPSTREAM_FILE = contract.HOST_UPSTREAM_FILE
UPSTREAM_MOUNT = "/var/lib/dockyard-proxy"
# The internal certificate and its key, as the container sees them (CONFIG_DIR is its /etc/caddy).
CERTIFICATE, CERTIFICATE_KEY = "site.crt", "site.key"
# A site on the container's loopback, for Docker's health check: the admin API logs every request it gets.
HEALTH_PORT = 2020
INSIDE = {"http_port": 80, "https_port": 443}


def declare(target: Target) -> RoleSpec:
    internal = target.inventory.proxy_certificates() == "internal"
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
            # Caddy reads a certificate from files before a reloaded config serves; one of its own internal CA was
            # still loading then, and a new connection failed its handshake
            *(_certificate_files(target.proxy_tls) if internal else ()),
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


def _certificate_files(tls: ServerTls) -> tuple[File, ...]:
    return (File(f"{CONFIG_DIR}/{CERTIFICATE}", content=tls.certificate),
            File(f"{CONFIG_DIR}/{CERTIFICATE_KEY}", content=tls.key, secret=True))


def site_names(inventory: Inventory, host: HostRecord) -> list[str]:
    """The names the proxy answers to over https."""
    domain = inventory.services.proxy.domain
    if inventory.proxy_certificates() == "acme":
        return [domain]
    # names a client may use without DNS: the host's loopback, and its address
    return list(dict.fromkeys(n for n in (domain, "localhost", "127.0.0.1", host.address) if n))


def _caddyfile_values(target: Target) -> tuple[tuple[str, str], ...]:
    settings = target.inventory.services.proxy
    return (
        ("certificates", target.inventory.proxy_certificates()),
        ("sites", ", ".join(site_names(target.inventory, target.host))),
        ("certificate", f"/etc/caddy/{CERTIFICATE} /etc/caddy/{CERTIFICATE_KEY}"),
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
