"""Sandbox hosts: containers on the local Docker engine that behave like fresh cloud VMs.

Each runs Debian with OpenSSH, a user `ubuntu` with passwordless sudo, and `/var/lib/docker` on a volume so Docker
can run inside. Its init is a shell script (`sandbox.init: classic`) or systemd, as on a cloud VM (`systemd`). Its SSH
port and the environment's open ports are published on 127.0.0.1, on ports chosen when it is created: like a VM's
address, they survive restarts. What it makes carries the project's id in its names and labels, so two clones of a
project on one machine never share a host.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import replace

from dockyard.environment import Env
from dockyard.errors import ProviderError
from dockyard.state import HostRecord, State

MANAGED = {"managed-by": "dockyard"}


def project_id(state: State) -> str:
    """This clone's id, generated once in its state folder and kept across teardowns."""
    path = state.dir.parent / "project-id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = path.with_name(f"project-id.{os.getpid()}")
        draft.write_text(secrets.token_hex(4) + "\n")
        try:
            os.link(draft, path)  # of two first runs at once, one wins and both read its id
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


class Sandbox:
    def __init__(self, env: Env):
        self.env = env
        self.project = project_id(env.state)

    def container_name(self, host: str) -> str:
        return f"dockyard-{self.project}-{self.env.name}-{host}"

    def labels(self, host: str | None = None) -> dict[str, str]:
        return {
            **MANAGED, "dockyard.project": self.project, "dockyard.env": self.env.name,
            **({"dockyard.host": host} if host else {}),
        }

    def provision(self, yes: bool = False) -> list[HostRecord]:
        return self._engine().provision()

    def teardown(self, yes: bool = False) -> None:
        self._engine().teardown()

    def hosts(self) -> list[HostRecord]:
        """The hosts as the last provision recorded them: a sandbox host keeps the local ports it was created with,
        across restarts. Nothing is asked of the engine; a host that was removed or stopped since refuses the
        connection, and that error names `invoke provision`."""
        inv = self.env.inventory
        recorded = {r.name: r for r in self.env.state.hosts()}
        records = []
        for host in inv.hosts:
            record = recorded.get(host.name)
            if record is None:
                raise ProviderError(f"sandbox host {host.name} is not provisioned; run `invoke provision`")
            if (init := record.provider.get("init", inv.sandbox.init)) != inv.sandbox.init:
                raise wrong_init(host.name, init, inv.sandbox.init)
            open_ports = inv.open_ports(host)
            for role, port in open_ports.items():
                if role not in record.endpoints:
                    raise unpublished(host.name, port)
            endpoints = {role: record.endpoints[role] for role in open_ports}
            records.append(replace(record, user=inv.ssh.user, roles=host.roles, endpoints=endpoints))
        return records

    def _engine(self):
        # Imported here: creating and removing hosts takes the Docker SDK, a tenth of a second to import, and `hosts`
        # (every other task's way in) needs none of it.
        from dockyard.providers.sandbox_engine import Engine

        return Engine(self)


def wrong_init(host: str, init: str, declared: str) -> ProviderError:
    return ProviderError(
        f"sandbox host {host} runs init {init}, the inventory says {declared}: run `invoke teardown` then "
        f"`invoke provision` to recreate it"
    )


def unpublished(host: str, port: int) -> ProviderError:
    return ProviderError(
        f"sandbox host {host} does not publish port {port}; the inventory's open ports changed since it was created: "
        f"run `invoke teardown` then `invoke provision`"
    )
