"""Generated state of one environment, kept in `.dockyard/<env>/` (gitignored).

It holds what providers learn (ids, addresses), the SSH key pair, pinned host keys and secrets.
Secret files are written with mode 0600 from the start, never chmod-ed afterwards.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockyard.spec import Authority, ServerTls

PROXY_AUTHORITY = "proxy-ca.json"  # the proxies' CA, with its key


@dataclass(frozen=True)
class HostRecord:
    """A reachable host: where SSH answers and where its published services are."""

    name: str
    address: str
    port: int
    user: str
    roles: tuple[str, ...]
    # service -> "address:port" an operator uses to reach it (sandbox maps them to 127.0.0.1 ports)
    endpoints: dict[str, str] = field(default_factory=dict)
    # provider-specific facts: instance id, region, container id ...
    provider: dict[str, str] = field(default_factory=dict)
    key: str | None = None  # private key, when the host does not use the environment's key

    @property
    def private_address(self) -> str:
        """Where the environment's other hosts reach it: its address on their network."""
        return self.provider.get("ip") or self.address

    @property
    def alias(self) -> str:
        """The name its host key is pinned under: stable even when the address or port changes."""
        return self.name


class State:
    def __init__(self, state_dir: Path, env: str):
        self.env = env
        self.dir = Path(state_dir) / env

    # -- files -------------------------------------------------------------------------------------------
    @property
    def key_path(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def _write(self, name: str, text: str, secret: bool = False) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.dir / name
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    def _read_json(self, name: str, default):
        path = self.dir / name
        return json.loads(path.read_text()) if path.is_file() else default

    # -- hosts -------------------------------------------------------------------------------------------
    def hosts(self) -> list[HostRecord]:
        return [
            HostRecord(**{**h, "roles": tuple(h["roles"])}) for h in self._read_json("hosts.json", [])
        ]

    def save_hosts(self, records: list[HostRecord]) -> None:
        self._write("hosts.json", json.dumps([asdict(r) for r in records], indent=2) + "\n")

    def data(self, name: str, default=None):
        """Small provider data (e.g. what an EC2 run created), one JSON file per name."""
        return self._read_json(f"{name}.json", default)

    def save_data(self, name: str, value) -> None:
        self._write(f"{name}.json", json.dumps(value, indent=2) + "\n")

    # -- secrets -----------------------------------------------------------------------------------------
    def secret(self, name: str) -> str:
        """A long random secret, generated on first use and then kept."""
        values = self._read_json("secrets.json", {})
        if name not in values:
            values[name] = secrets.token_urlsafe(32)
            self._write("secrets.json", json.dumps(values, indent=2) + "\n", secret=True)
        return values[name]

    def secret_values(self) -> list[str]:
        return list(self._read_json("secrets.json", {}).values())

    def registry_tls(self, address: str) -> ServerTls:
        """The swarm registry's certificate for `address` and the CA that signed it, made the first time."""
        name = f"registry-tls-{address}.json"
        data = self._read_json(name, None)
        if data is None:
            from dockyard import certificates  # x509 only when a certificate is made

            data = certificates.issue(self.env, address).as_dict()
            self._write(name, json.dumps(data, indent=2) + "\n", secret=True)
        return ServerTls(**data)

    def proxy_tls(self, host: str, names: list[str]) -> ServerTls:
        """The proxy's certificate on `host` for `names`, signed by the environment's proxy CA (made the first time);
        issued again when its names or the CA change, and in its last month."""
        name = f"proxy-tls-{host}.json"
        authority = self.proxy_authority()
        now = datetime.datetime.now(datetime.UTC)
        # the names and the renewal date are kept beside the certificate: a deploy reads them without parsing x509
        try:
            data = self._read_json(name, None)
            current = data is not None and (data["names"] == names and data["ca"] == authority.certificate
                                            and now < datetime.datetime.fromisoformat(data["renew_after"]))
        except (ValueError, KeyError, TypeError):  # not what dockyard wrote: issued again, as nothing depends on it
            current = False
        if not current:
            from dockyard import certificates  # x509 only when a certificate is made

            tls = certificates.sign(authority, names, certificates.PROXY_DAYS)
            renew_after = now + datetime.timedelta(days=certificates.PROXY_DAYS - certificates.RENEW_DAYS)
            data = {**tls.as_dict(), "names": names, "renew_after": renew_after.isoformat()}
            self._write(name, json.dumps(data, indent=2) + "\n", secret=True)
        return ServerTls(data["ca"], data["certificate"], data["key"])

    def proxy_authority(self) -> Authority:
        """The CA of the environment's proxies, made the first time: what their clients trust."""
        data = self._read_json(PROXY_AUTHORITY, None)
        if data is None:
            from dockyard import certificates

            data = certificates.new_authority(f"dockyard {self.env} proxy CA").as_dict()
            self._write(PROXY_AUTHORITY, json.dumps(data, indent=2) + "\n", secret=True)
        return Authority(**data)

    # -- keys --------------------------------------------------------------------------------------------
    def ensure_key(self) -> Path:
        """The environment's SSH key pair, generated locally the first time."""
        if not self.key_path.is_file():
            key = Ed25519PrivateKey.generate()
            private = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
            public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            self._write(self.key_path.name, private.decode(), secret=True)
            self._write(self.key_path.name + ".pub", f"{public.decode()} dockyard-{self.env}\n")
        return self.key_path

    def public_key(self, private_key: Path) -> str:
        pub = private_key.with_name(private_key.name + ".pub")
        if pub.is_file():
            return pub.read_text().strip()
        key = serialization.load_ssh_private_key(private_key.read_bytes(), password=None)
        return key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()

    def pinned(self, alias: str) -> bool:
        """Whether a host key is recorded under this host's name."""
        lines = self.known_hosts.read_text().splitlines() if self.known_hosts.is_file() else []
        return any(line.split(" ", 1)[0] == alias for line in lines)

    def forget_host_key(self, alias: str) -> None:
        if self.known_hosts.is_file():
            kept = [line for line in self.known_hosts.read_text().splitlines() if line.split(" ", 1)[0] != alias]
            self._write(self.known_hosts.name, "".join(f"{line}\n" for line in kept))

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
