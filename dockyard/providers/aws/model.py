"""What dockyard wants of EC2 and how it differs from what is there. Pure: no boto3, no AWS call.

The EC2 calls (`ec2.py`) turn AWS's replies into these types, and the provider (`provider.py`) carries out what
the plans here say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dockyard.contract import CLUSTER_REGISTRY_PORT
from dockyard.errors import ProviderError
from dockyard.inventory import Host, Inventory, port_name

SSH_PORT = 22
EVERY_PROTOCOL = "-1"  # EC2's name for "all protocols", whose rules have no ports (-1)
# What a swarm's hosts open to each other, and why; the source of each rule is the environment's own group.
SWARM_PORTS = (
    ("tcp", 2377, "swarm cluster management, between the hosts of the environment"),
    ("tcp", 7946, "swarm node gossip over tcp, between the hosts of the environment"),
    ("udp", 7946, "swarm node gossip over udp, between the hosts of the environment"),
    ("udp", 4789, "swarm overlay network (VXLAN), between the hosts of the environment"),
    ("tcp", CLUSTER_REGISTRY_PORT, "cluster registry over TLS, where the swarm nodes pull the app image from"),
)


# -- security group rules -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Network:
    """Addresses in CIDR notation, IPv4 or IPv6."""

    cidr: str

    @classmethod
    def of(cls, cidr: str) -> Network:
        # Normalised, so that "::0/0" as written in an inventory equals "::/0" as AWS reports it.
        return cls(str(ipaddress.ip_network(cidr)))

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_network(self.cidr).version == 6

    @property
    def everyone(self) -> bool:
        return ipaddress.ip_network(self.cidr).prefixlen == 0

    def __str__(self) -> str:
        return self.cidr


@dataclass(frozen=True)
class Group:
    """The instances in a security group, such as the environment's own group for traffic between its hosts."""

    id: str

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class PrefixList:
    """The networks of a managed prefix list: dockyard opens none, but reads (and revokes) one added by hand."""

    id: str

    def __str__(self) -> str:
        return self.id


Source = Network | Group | PrefixList


@dataclass(frozen=True)
class Rule:
    """One inbound permission of a security group: a protocol's ports, open to one source."""

    protocol: str  # as EC2 names it: tcp, udp, icmp, or EVERY_PROTOCOL
    from_port: int
    to_port: int
    source: Source
    # Why the rule is there, for whoever reads the group in the EC2 console. Not part of the rule's identity:
    # EC2 refuses a second rule that differs from one in place only by its description.
    description: str = field(default="", compare=False)

    @classmethod
    def tcp(cls, port: int, source: Source, description: str = "") -> Rule:
        return cls("tcp", port, port, source, description)

    @property
    def order(self) -> tuple:
        """Sorts by port, then source: the order in which the rules are reported."""
        return self.from_port, self.to_port, str(self.source), self.protocol

    def __str__(self) -> str:
        if self.protocol == EVERY_PROTOCOL:
            return f"all traffic to {self.source}"
        ports = str(self.from_port) if self.from_port == self.to_port else f"{self.from_port}-{self.to_port}"
        protocol = "" if self.protocol == "tcp" else f"{self.protocol} "
        return f"{protocol}{ports} to {self.source}"


def wanted_rules(inv: Inventory, itself: Group) -> frozenset[Rule]:
    """SSH from `aws.ssh_cidr`, each port the hosts' services publish from the service's `open_to` networks, and
    on a swarm its ports from the environment's own group `itself` (its hosts and nothing else)."""
    return frozenset(
        {Rule.tcp(SSH_PORT, Network.of(inv.aws.ssh_cidr), "SSH for dockyard, from aws.ssh_cidr")}
        | {
            Rule.tcp(port, Network.of(cidr), f"{port_name(role, key)}, open to services.{role}.open_to")
            for host in inv.hosts for role, key, port in inv.ports(host) for cidr in inv.service(role).open_to
        }
        | {Rule(protocol, port, port, itself, why) for protocol, port, why in SWARM_PORTS if inv.swarm}
    )


@dataclass(frozen=True)
class RuleChanges:
    """What makes a security group's inbound rules exactly the wanted ones."""

    add: tuple[Rule, ...] = ()
    revoke: Mapping[str, Rule] = field(default_factory=dict)  # by the rule id AWS gave it

    def summary(self) -> list[str]:
        """What was done, in words, once the changes are made."""
        return [
            *([f"opened {', '.join(map(str, self.add))}"] if self.add else []),
            *([f"closed {', '.join(map(str, self.revoke.values()))}"] if self.revoke else []),
        ]


def diff_rules(current: Mapping[str, Rule], wanted: Iterable[Rule]) -> RuleChanges:
    """Add what is wanted and missing; revoke what is there and not wanted, whoever added it. Both in order."""
    wanted = set(wanted)
    add = sorted(wanted - set(current.values()), key=lambda rule: rule.order)
    revoke = sorted(((rule_id, rule) for rule_id, rule in current.items() if rule not in wanted),
                    key=lambda item: item[1].order)
    return RuleChanges(tuple(add), dict(revoke))


# -- instances ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instance:
    """What dockyard reads of one of its instances."""

    id: str
    host: str  # its dockyard:host tag
    state: str
    launched: datetime
    public_ip: str = ""
    public_dns: str = ""
    private_ip: str = ""  # its address in the VPC, where the environment's other hosts reach it


@dataclass(frozen=True)
class InstancePlan:
    """What to do so that each declared host has exactly one instance."""

    keep: tuple[tuple[Host, Instance], ...] = ()
    start: tuple[tuple[Host, Instance], ...] = ()  # stopped or stopping
    launch: tuple[Host, ...] = ()
    terminate: tuple[Instance, ...] = ()  # instances of undeclared hosts, and second instances of a host


def plan_instances(declared: tuple[Host, ...], instances: list[Instance]) -> InstancePlan:
    """Keep one instance per declared host, running ones first, then the oldest; start it if it is stopped."""
    rank = {"pending": 0, "running": 0, "stopping": 1, "stopped": 1}
    by_host: dict[str, list[Instance]] = {}
    for instance in sorted(instances, key=lambda i: (rank[i.state], i.launched, i.id)):
        by_host.setdefault(instance.host, []).append(instance)
    keep, start, launch, terminate = [], [], [], []
    for host in declared:
        first, *extra = by_host.pop(host.name, None) or [None]
        if first is None:
            launch.append(host)
        elif first.state in ("stopping", "stopped"):
            start.append((host, first))
        else:
            keep.append((host, first))
        terminate.extend(extra)
    terminate.extend(i for undeclared in by_host.values() for i in undeclared)
    return InstancePlan(tuple(keep), tuple(start), tuple(launch), tuple(terminate))


def unwanted(declared: tuple[Host, ...], instance: Instance) -> str:
    """Why the plan terminates `instance`."""
    if any(h.name == instance.host for h in declared):
        return f"a second instance of {instance.host}"
    return f"{instance.host or 'no dockyard:host tag'}, no longer declared"


@dataclass(frozen=True)
class Status:
    """An instance's state and its two status checks (instance, system), as EC2 reports them."""

    instance_id: str
    state: str
    checks: tuple[str, str]


def not_ready(statuses: list[Status], names: dict[str, str]) -> str | None:
    """What the instances (id -> host) still wait for, or None when all run with both status checks ok.

    An instance that died or whose checks failed will not get better by waiting: that is an error.
    """
    seen = {s.instance_id: s for s in statuses}
    waiting = []
    for instance_id, host in names.items():
        status = seen.get(instance_id)
        if status is None:  # EC2 is eventually consistent just after a launch
            waiting.append(f"{host} pending")
            continue
        if status.state in ("shutting-down", "terminated") or "impaired" in status.checks:
            raise ProviderError(
                f"{host} ({instance_id}) is {status.state} with status checks {'/'.join(status.checks)}; read its "
                f"system log in the EC2 console, then run `invoke teardown` and provision again"
            )
        if status.state != "running" or status.checks != ("ok", "ok"):
            waiting.append(f"{host} {status.state}, status checks {'/'.join(status.checks)}")
    return ", ".join(waiting) or None


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    root_device: str


def endpoints(inv: Inventory, host: Host, address: str) -> dict[str, str]:
    return {role: f"{address}:{port}" for role, port in inv.open_ports(host).items()}
