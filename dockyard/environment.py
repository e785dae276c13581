"""One environment as the tasks see it: project files, inventory, state, provider and output."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from dockyard import images
from dockyard import inventory as inventory_module
from dockyard.errors import DockyardError
from dockyard.inventory import Inventory, resolve_path
from dockyard.layers import LayerCache
from dockyard.providers import Provider, provider_for
from dockyard.report import Reporter
from dockyard.ssh import HostConnection
from dockyard.state import HostRecord, State


@dataclass
class Env:
    root: Path  # the project: templates/, images/, apps/
    inventory: Inventory
    state: State
    out: Reporter

    @classmethod
    def open(cls, root: Path, name: str, inventory_dir: str | Path, state_dir: str | Path,
             out: Reporter | None = None) -> Env:
        root = Path(root)
        inv = inventory_module.load(root / inventory_dir, name)
        state = State(root / state_dir, name)
        out = out or Reporter()
        out.hide(*state.secret_values())
        return cls(root, inv, state, out)

    @property
    def name(self) -> str:
        return self.inventory.env

    @functools.cached_property
    def provider(self) -> Provider:
        return provider_for(self)

    def images_source(self) -> str:
        """Where images come from (`online` or `offline`); `auto`'s last answer is kept in the state folder."""
        return images.resolve_source(self.inventory.images, self.state.dir.parent / "images-source")

    @functools.cached_property
    def layers(self) -> LayerCache:
        """Local images packed to send, shared by the project's environments."""
        return LayerCache(self.state.dir.parent / "layers")

    def hosts(self) -> list[HostRecord]:
        """The environment's hosts as they can be reached now."""
        return self.provider.hosts()

    def hosts_with(self, role: str, name: str | None = None) -> list[HostRecord]:
        """The hosts that run `role` (only the one called `name`, if given); none is an error."""
        records = [r for r in self.hosts() if role in r.roles and name in (None, r.name)]
        if not records:
            which = f"host {name} of {self.name} does not run" if name else f"no host of {self.name} runs"
            raise DockyardError(f"{which} the {role} role; check {self.inventory.path} and `invoke hosts`")
        return records

    def env_key(self) -> Path:
        """The environment's private key: the inventory's, or one generated in the state folder."""
        if self.inventory.ssh.key:
            return resolve_path(self.inventory.ssh.key, self.inventory.path)
        return self.state.ensure_key()

    def key_path(self, record: HostRecord) -> Path:
        return Path(record.key) if record.key else self.env_key()

    def connect(self, record: HostRecord) -> HostConnection:
        return HostConnection(
            record, self.key_path(record), self.state.known_hosts, self.inventory.ssh.connect_timeout
        )

    def check_ssh(self, record: HostRecord) -> None:
        """Log in once: proves the key works and pins the host key on first contact."""
        with self.connect(record):
            pass

    def secret(self, name: str) -> str:
        value = self.state.secret(name)
        self.out.hide(value)
        return value
