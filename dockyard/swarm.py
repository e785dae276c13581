"""A swarm's membership, as the hosts of one deploy, converged in parallel, meet it: the first manager inits the
swarm, the others join it with a token read from that manager, and the first manager then removes the nodes that
no host of the inventory is. The stack waits until every host is in: Swarm spreads tasks only when they start.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

from dockyard.commands import swarm as commands
from dockyard.environment import Env
from dockyard.errors import DockyardError
from dockyard.facts import HostFacts
from dockyard.plan import RemoteStep, RolePlan, node_removals, swarm_steps
from dockyard.report import confirm
from dockyard.runner import Applier
from dockyard.spec import Cluster, Rendered
from dockyard.ssh import HostConnection
from dockyard.state import HostRecord

# Docker trusts a registry's CA by this file, with no restart.
CERTS_DIR = "/etc/docker/certs.d"
JOIN_WAIT = 600  # seconds a host waits for the first manager to be ready (its Docker install included)


@dataclass(frozen=True)
class Member:
    """A host of the inventory as a node, once it is in the swarm."""

    hostname: str
    node_id: str  # empty when it joined in this run
    joined: bool


class Membership:
    def __init__(self, env: Env, records: list[HostRecord], cluster: Cluster, yes: bool):
        self.env, self.yes = env, yes
        self.managers = [h.name for h in env.inventory.managers()]
        self.first = self.managers[0]
        self.records = {r.name: r for r in records}
        self.trust = Rendered(f"{CERTS_DIR}/{cluster.registry}/ca.crt", cluster.tls.ca.encode(), 0o644, False)
        self._ready: Future[frozenset[str]] = Future()  # the first manager is in; the node ids it knows
        self._members: dict[str, Future[Member]] = {name: Future() for name in self.records if name != self.first}
        self._tokens: tuple[str, str] | None = None
        self._token_lock = threading.Lock()
        self._lead: HostConnection | None = None

    def converge(self, conn: HostConnection, seen: HostFacts, applier: Applier) -> None:
        """This host's part, once Docker runs on it."""
        if conn.record.name == self.first:
            self._converge_first(conn, seen, applier)
        else:
            self._converge_other(conn, seen, applier)

    def abandon(self, host: str, error: BaseException) -> None:
        """`host` failed, before its part or in it: the hosts that wait on it stop waiting."""
        future = self._ready if host == self.first else self._members[host]
        if not future.done():
            future.set_exception(error)

    def _converge_first(self, conn: HostConnection, seen: HostFacts, applier: Applier) -> None:
        record = conn.record
        member = seen.node is not None and seen.node.member
        applier.apply_role(record.name, swarm_steps(seen, self.trust, init=None if member else record.private_address))
        self._lead = conn
        self._ready.set_result(frozenset(n.id for n in seen.nodes))
        members = {}
        for name, future in self._members.items():
            try:
                members[name] = future.result(timeout=JOIN_WAIT)
            except Exception as e:
                raise DockyardError(f"{name} did not join the swarm ({e}); the stack waits until every host is in") \
                    from None
        ids = {m.node_id for m in members.values()} | {seen.node.id if seen.node else ""}
        hostnames = {m.hostname for m in members.values()} | {seen.node.hostname if seen.node else ""}
        stale, gone = node_removals(seen.nodes, ids, hostnames, {m.hostname for m in members.values() if m.joined})
        if gone:
            confirm(f"remove {', '.join(n.hostname for n in gone)} from the swarm (not in the inventory; its tasks "
                    f"move to the other nodes)?", self.yes)
        steps = [RemoteStep("nodes", "remove", n.hostname, "joined again" if n in stale else "not in the inventory",
                            commands.remove_node(n.id, drain=n not in stale and n.status == "Ready"))
                 for n in (*stale, *gone)]
        if steps:
            applier.apply_role(record.name, RolePlan("nodes", tuple(steps)))

    def _converge_other(self, conn: HostConnection, seen: HostFacts, applier: Applier) -> None:
        record = conn.record
        try:
            known = self._ready.result(timeout=JOIN_WAIT)
        except Exception:
            raise DockyardError(f"the swarm's first manager {self.first} is not ready; {record.name} did not join") \
                from None
        node = seen.node
        member = node is not None and node.member and node.id in known
        join = None
        if not member:
            worker, manager = self._join_tokens()
            token = manager if record.name in self.managers else worker
            join = (token, self.records[self.first].private_address, record.private_address)
        applier.apply_role(record.name, swarm_steps(seen, self.trust, join=join))
        self._members[record.name].set_result(Member(node.hostname if node else "", node.id if member else "",
                                                     joined=not member))

    def _join_tokens(self) -> tuple[str, str]:
        """The worker's and the manager's join token, read once from the first manager and never printed."""
        with self._token_lock:
            if self._tokens is None:
                output = self._lead.run(commands.join_tokens(), what="read the swarm's join tokens")
                worker, manager = output.split()
                self.env.out.hide(worker, manager)
                self._tokens = (worker, manager)
            return self._tokens
