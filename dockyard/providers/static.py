"""Servers the operator already runs, listed by address in the inventory: dockyard only logs in over SSH.

provision proves each login works and pins the host key on first contact; teardown forgets the hosts (their
records and pinned keys) and leaves the servers exactly as they are.
"""

from __future__ import annotations

import time

from dockyard.environment import Env
from dockyard.inventory import Host, resolve_path
from dockyard.state import HostRecord


class Static:
    def __init__(self, env: Env):
        self.env = env

    def provision(self, yes: bool = False) -> list[HostRecord]:
        env = self.env
        records = self.hosts()
        recorded = {r.name: r for r in env.state.hosts()}
        for name in sorted(recorded.keys() - {r.name for r in records}):
            env.state.forget_host_key(name)
            env.out.step(name, "static", "changed", "forgotten: no longer declared; the server is untouched")
        for record in records:
            started = time.monotonic()
            pinned = env.state.pinned(record.alias)
            env.check_ssh(record)
            where = f"{record.user}@{record.address}:{record.port}"
            if not pinned:
                status, detail = "changed", f"{where} lets us in; host key pinned"
            elif recorded.get(record.name) != record:
                status, detail = "changed", f"{where} lets us in; record updated"
            else:
                status, detail = "ok", f"{where} lets us in"
            env.out.step(record.name, "static", status, detail, time.monotonic() - started)
        env.state.save_hosts(records)
        return records

    def hosts(self) -> list[HostRecord]:
        """Straight from the inventory: the servers are where it says."""
        return [_record(self.env, host) for host in self.env.inventory.hosts]

    def teardown(self, yes: bool = False) -> None:
        env = self.env
        names = dict.fromkeys([*(h.name for h in env.inventory.hosts), *(r.name for r in env.state.hosts())])
        for name in names:
            env.state.forget_host_key(name)
            env.out.step(name, "static", "changed", "forgotten; the server itself is untouched")
        env.state.save_hosts([])


def _record(env: Env, host: Host) -> HostRecord:
    inv = env.inventory
    return HostRecord(
        name=host.name,
        address=host.address,
        port=host.port,
        user=host.user or inv.ssh.user,
        roles=host.roles,
        endpoints={role: f"{host.address}:{port}" for role, port in inv.open_ports(host).items()},
        key=str(resolve_path(host.key, inv.path)) if host.key else None,
    )
