"""The proxy as clients reach it: its base URL, and the certificate of its internal CA."""

from __future__ import annotations

from pathlib import Path

from dockyard.environment import Env
from dockyard.errors import DockyardError
from dockyard.inventory import Inventory, port_name
from dockyard.state import HostRecord

CA_FILE = "proxy-ca.crt"  # in the environment's state folder


def url(inventory: Inventory, record: HostRecord) -> str | None:
    """The proxy's base URL on `record` as a client reaches it, e.g. https://app.example.com or
    https://127.0.0.1:32790 on a sandbox; None when the proxy is open to no network."""
    secure = inventory.proxy_certificates() != "off"
    endpoint = record.endpoints.get(port_name("proxy", "https_port" if secure else "http_port"))
    if endpoint is None:
        return None
    address, port = endpoint.rsplit(":", 1)
    domain = inventory.services.proxy.domain
    if domain and inventory.provider != "sandbox":  # a sandbox host is reached through its 127.0.0.1 mapping
        address = domain
    scheme, default_port = ("https", "443") if secure else ("http", "80")
    return f"{scheme}://{address}" + ("" if port == default_port else f":{port}")


def export_ca(env: Env, output: Path | None) -> Path:
    """Write the certificate of the environment's proxy CA, which signs every internal proxy certificate; its path."""
    certificates = env.inventory.proxy_certificates()
    if certificates == "acme":
        raise DockyardError(
            f"the proxy of {env.name} gets its certificates by ACME from a public CA, which clients trust already; "
            f"there is no internal CA to export (services.proxy.tls: internal would make one)"
        )
    if certificates == "off":
        raise DockyardError(f"the proxy of {env.name} serves plain HTTP (services.proxy.tls: off): there is no CA")
    env.hosts_with("proxy")  # an environment without a proxy has no CA to hand out: it says so
    path = output or env.state.dir / CA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(env.state.proxy_authority().certificate)
    return path
