"""The AWS provider: carries out the plans of `model.py` through the calls of `ec2.py`, and reports each step.

`provision` is `ensure_hosts` (the AWS side, recorded in state) followed by a wait until SSH lets us in;
from then on `deploy` reaches the hosts recorded in state as it reaches any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from dockyard.environment import Env
from dockyard.errors import ConnectError, ProviderError
from dockyard.providers.aws import ec2
from dockyard.providers.aws.errors import AWS_ERRORS, translated
from dockyard.providers.aws.model import (
    SSH_PORT,
    Group,
    Image,
    InstancePlan,
    Network,
    diff_rules,
    endpoints,
    not_ready,
    plan_instances,
    unwanted,
    wanted_rules,
)
from dockyard.report import confirm
from dockyard.ssh import HostKeyChanged
from dockyard.state import HostRecord

POLL_SECONDS = 5
READY_SECONDS = 600  # running with both status checks ok: 2-5 minutes for a fresh instance
SSH_SECONDS = 300  # cloud-init installs the key pair's public key while the checks run
TERMINATE_SECONDS = 600
GROUP_RELEASE_SECONDS = 300  # a terminated instance's network interface holds on to its group for a while


@dataclass(frozen=True)
class Change:
    """What happened to one host's instance; reported once it runs and has an address."""

    instance_id: str
    status: str  # ok | changed
    detail: str


@dataclass
class Created:
    """What this run made, so that a refused launch can remove it again."""

    key_pair: str | None = None
    security_group: str | None = None
    instances: list[str] = field(default_factory=list)


class Aws:
    """EC2 hosts for one environment: its key pair, its security group, and one instance per host.

    Holds the environment, its AWS clients (made on first use: `hosts` asks nothing of AWS) and what the
    current run created.
    """

    def __init__(self, env: Env, region: str | None = None):
        self.env = env
        self.region = region  # None: the region of the environment's AWS configuration
        self.created = Created()

    @cached_property
    def cloud(self) -> ec2.Cloud:
        return ec2.connect(self.env.inventory, self.region)

    # -- the Provider interface
    def provision(self, yes: bool = False) -> list[HostRecord]:
        records = self.ensure_hosts(yes)
        for record in records:
            self.wait_for_ssh(record)
        return records

    def hosts(self) -> list[HostRecord]:
        """The hosts as the last provision recorded them; nothing is asked of AWS."""
        inv = self.env.inventory
        recorded = {r.name: r for r in self.env.state.hosts()}
        records = []
        for host in inv.hosts:
            record = recorded.get(host.name)
            if record is None:
                raise ProviderError(f"aws host {host.name} is not provisioned; run `invoke provision`")
            # The cluster too: a swarm's ports open only when provision runs (a record without one predates swarms).
            if (record.roles != host.roles or record.endpoints != endpoints(inv, host, record.address)
                    or record.provider.get("cluster", "none") != inv.cluster):
                raise ProviderError(
                    f"aws host {host.name}: its roles, open ports or cluster changed since it was provisioned; run "
                    f"`invoke provision` to update its security group"
                )
            records.append(record)
        return records

    def teardown(self, yes: bool = False) -> None:
        """Remove every instance, security group and key pair dockyard tagged for the environment.

        In the region configured now, and in each region the hosts were recorded in.
        """
        here = self.cloud.region
        recorded = {r.provider["region"] for r in self.env.state.hosts() if r.provider.get("region")}
        for region in [here, *sorted(recorded - {here})]:
            (self if region == here else Aws(self.env, region))._clear_region()

    # -- the AWS side of provision
    def ensure_hosts(self, yes: bool = False) -> list[HostRecord]:
        """Key pair, security group and one running instance per host, with status checks passed; saved in state."""
        env, cloud = self.env, self.cloud
        self.created = Created()  # this run's alone: what an earlier run made is in use
        with translated(env.inventory, cloud.region):
            plan = plan_instances(env.inventory.hosts, cloud.instances())
            if plan.terminate:
                doomed = ", ".join(f"{i.id} ({unwanted(env.inventory.hosts, i)})" for i in plan.terminate)
                confirm(f"terminate {doomed}?", yes)
            image = self.find_image() if plan.launch else None
            started = time.monotonic()
            try:
                key_pair = self._ensure_key_pair()
                group = self._ensure_security_group()
                changes = self._ensure_instances(plan, image, key_pair, group)
            except AWS_ERRORS:
                self._remove_created()
                raise
            records = self._wait_until_ready(changes, group, key_pair, started)
        env.state.save_hosts(records)
        return records

    def find_image(self) -> Image:
        """`aws.ami`, else the current Ubuntu 24.04 as Canonical publishes it in SSM, else its newest image by name."""
        inv, cloud = self.env.inventory, self.cloud
        ami = inv.aws.ami or cloud.current_ubuntu(inv.aws.arch)
        if ami:
            image = cloud.image(ami)
            if image is None:  # deregistered
                raise ProviderError(
                    f"image {ami} no longer exists in {cloud.region}; {'fix' if inv.aws.ami else 'set'} aws.ami in "
                    f"{inv.path}"
                )
            return image
        image = cloud.newest_ubuntu(inv.aws.arch)
        if image is None:
            raise ProviderError(
                f"no Ubuntu 24.04 {inv.aws.arch} image found in {cloud.region}; set aws.ami in {inv.path}"
            )
        return image

    def _ensure_key_pair(self) -> str:
        """The key pair instances launch with: `aws.key_name`, or the environment's key imported as dockyard-<env>."""
        env, cloud = self.env, self.cloud
        aws = env.inventory.aws
        key_path = env.env_key()
        public_key = env.state.public_key(key_path)
        name = aws.key_name or f"dockyard-{env.name}"
        theirs = cloud.key_pair(name)
        if theirs is not None:
            if theirs and theirs.split()[:2] != public_key.split()[:2]:
                fix = (
                    f"fix ssh.key or aws.key_name in {env.inventory.path}" if aws.key_name
                    else "the environment's key changed since it was imported: restore it, or run `invoke teardown` "
                         "and provision again"
                )
                raise ProviderError(f"key pair {name} in {cloud.region} does not match {key_path}; {fix}")
            env.out.step("-", "aws", "ok", f"key pair {name} matches {key_path}")
            return name
        if aws.key_name:
            raise ProviderError(
                f"key pair {name} does not exist in {cloud.region}; fix aws.key_name in {env.inventory.path}, or "
                f"remove it to let dockyard import {key_path}"
            )
        cloud.import_key_pair(name, public_key)
        self.created.key_pair = name
        env.out.step("-", "aws", "changed", f"imported the public key of {key_path} as key pair {name}")
        return name

    def _ensure_security_group(self) -> str:
        """The environment's security group, with exactly the inbound rules the inventory declares."""
        env, cloud = self.env, self.cloud
        name = f"dockyard-{env.name}"
        vpc = self._vpc()
        group = cloud.security_group(name, vpc)
        made = []
        if group is None:
            group = cloud.create_security_group(name, vpc)
            self.created.security_group = group
            made = [f"created in {vpc}"]
        wanted = wanted_rules(env.inventory, Group(group))
        changes = diff_rules(cloud.inbound_rules(group), wanted)
        cloud.change_rules(group, changes)
        ssh_cidr = env.inventory.aws.ssh_cidr
        if Network.of(ssh_cidr).everyone:
            env.out.say(
                f"warning: aws.ssh_cidr {ssh_cidr} lets the whole internet try SSH on the hosts; narrow it to your "
                f"address, e.g. 203.0.113.7/32"
            )
        if done := [*made, *changes.summary()]:
            env.out.step("-", "aws", "changed", f"security group {name} ({group}): {'; '.join(done)}")
        else:
            opens = ", ".join(str(rule) for rule in sorted(wanted, key=lambda rule: rule.order))
            env.out.step("-", "aws", "ok", f"security group {name} ({group}) opens {opens}")
        return group

    def _vpc(self) -> str:
        inv, cloud = self.env.inventory, self.cloud
        if inv.aws.subnet_id:
            vpc = cloud.subnet_vpc(inv.aws.subnet_id)
            if inv.aws.vpc_id and vpc != inv.aws.vpc_id:
                raise ProviderError(
                    f"subnet {inv.aws.subnet_id} is in {vpc}, not in aws.vpc_id {inv.aws.vpc_id}; fix one of them in "
                    f"{inv.path}"
                )
            return vpc
        vpc = cloud.default_vpc()
        if vpc is None:
            raise ProviderError(
                f"{cloud.region} has no default VPC; set aws.subnet_id in {inv.path} to a subnet with an internet "
                f"gateway"
            )
        return vpc

    def _ensure_instances(self, plan: InstancePlan, image: Image | None, key_pair: str,
                          group: str) -> dict[str, Change]:
        """Carry out the plan: terminate what is no longer declared, start what is stopped, launch what is missing."""
        env, cloud = self.env, self.cloud
        declared = env.inventory.hosts
        if plan.terminate:
            cloud.terminate([i.id for i in plan.terminate])
            names = {h.name for h in declared}
            for instance in plan.terminate:
                if instance.host not in names:
                    env.state.forget_host_key(instance.host)
                detail = f"terminated {instance.id} ({unwanted(declared, instance)})"
                env.out.step(instance.host or "-", "aws", "changed", detail)
        changes = {host.name: Change(i.id, "ok", f"{i.id} {i.state}") for host, i in plan.keep}
        if plan.start:
            stopping = {i.id: host.name for host, i in plan.start if i.state == "stopping"}
            if stopping and (left := self._poll(READY_SECONDS, lambda: self._not_stopped(stopping))):
                raise ProviderError(
                    f"instances did not stop within {READY_SECONDS}s ({left}); rerun `invoke provision`"
                )
            cloud.start([i.id for _, i in plan.start])
            for host, instance in plan.start:
                changes[host.name] = Change(instance.id, "changed", f"started {instance.id} (was {instance.state})")
        for host in plan.launch:
            env.state.forget_host_key(host.name)  # a new machine has a new host key
            instance_id = cloud.launch(host, env.inventory.aws, image, key_pair, group)
            self.created.instances.append(instance_id)
            changes[host.name] = Change(
                instance_id, "changed", f"launched {instance_id} ({env.inventory.aws.instance_type}, {image.id})"
            )
        return changes

    def _wait_until_ready(self, changes: dict[str, Change], group: str, key_pair: str,
                          started: float) -> list[HostRecord]:
        """Wait until every instance runs with both status checks ok, then report each host with its address."""
        env, cloud = self.env, self.cloud
        inv = env.inventory
        names = {change.instance_id: host for host, change in changes.items()}
        if left := self._poll(READY_SECONDS, lambda: not_ready(cloud.statuses(list(names)), names)):
            raise ProviderError(
                f"instances not running with status checks ok after {READY_SECONDS}s ({left}); look at them in the "
                f"EC2 console, then rerun `invoke provision`"
            )
        found = {i.id: i for i in cloud.instances()}
        records = []
        for host in inv.hosts:
            change = changes[host.name]
            instance = found.get(change.instance_id)
            if instance is None:
                raise ProviderError(
                    f"{host.name} ({change.instance_id}) vanished while starting; rerun `invoke provision`"
                )
            if not instance.public_ip:
                raise ProviderError(
                    f"{host.name} ({instance.id}) has no public address; set aws.subnet_id in {inv.path} to a subnet "
                    f"with an internet gateway"
                )
            records.append(HostRecord(
                name=host.name,
                address=instance.public_ip,
                port=SSH_PORT,
                user=inv.ssh.user,
                roles=host.roles,
                endpoints=endpoints(inv, host, instance.public_ip),
                provider={
                    "instance_id": instance.id, "region": cloud.region, "public_dns": instance.public_dns,
                    "public_ip": instance.public_ip, "ip": instance.private_ip, "security_group": group,
                    "key_pair": key_pair, "cluster": inv.cluster,
                },
            ))
            env.out.step(host.name, "aws", change.status, f"{change.detail} at {instance.public_ip}",
                         time.monotonic() - started)
        return records

    def wait_for_ssh(self, record: HostRecord) -> None:
        """Log in once, retrying while the instance boots; pins its host key on first contact."""
        env = self.env
        refusals: list[ConnectError] = []

        def refused() -> str | None:
            try:
                env.check_ssh(record)
            except HostKeyChanged:
                raise
            except ConnectError as e:
                refusals.append(e)
                return f"SSH on {record.name} ({record.address}:{record.port})"
            return None

        if self._poll(SSH_SECONDS, refused):
            raise ProviderError(
                f"{record.name} ({record.provider['instance_id']}): SSH did not let dockyard in within {SSH_SECONDS}s; "
                f"check that aws.ssh_cidr ({env.inventory.aws.ssh_cidr}) holds your public address and read the "
                f"instance's system log in the EC2 console (last attempt: {refusals[-1]})"
            )

    def _remove_created(self) -> None:
        """Undo a run that AWS refused halfway, so that it leaves nothing new behind."""
        env, cloud, created = self.env, self.cloud, self.created
        try:
            if created.instances:
                cloud.terminate(created.instances)
                env.out.step("-", "aws", "changed", f"terminated {', '.join(created.instances)} (launched by this run)")
                if created.security_group:
                    self._wait_terminated(created.instances)
            if created.security_group:
                self._delete_group(created.security_group)
                detail = f"deleted security group {created.security_group} (made by this run)"
                env.out.step("-", "aws", "changed", detail)
            if created.key_pair:
                cloud.delete_key_pair(created.key_pair)
                env.out.step("-", "aws", "changed", f"deleted key pair {created.key_pair} (made by this run)")
        except (*AWS_ERRORS, ProviderError) as e:
            env.out.step("-", "aws", "failed", f"could not remove what this run made ({e}); run `invoke teardown`")

    # -- teardown
    def _clear_region(self) -> None:
        env, cloud = self.env, self.cloud
        with translated(env.inventory, cloud.region):
            instances = cloud.instances((*ec2.LIVE_STATES, "shutting-down"))
            if instances:
                cloud.terminate([i.id for i in instances])
                self._wait_terminated([i.id for i in instances])
                for instance in instances:
                    env.out.step(instance.host or "-", "aws", "changed", f"terminated {instance.id} in {cloud.region}")
            groups = cloud.tagged_security_groups()
            for group_id, name in groups.items():
                self._delete_group(group_id)
                env.out.step("-", "aws", "changed", f"deleted security group {name} ({group_id})")
            # Only key pairs dockyard imported carry its tags: one named by aws.key_name is never deleted.
            key_pairs = cloud.tagged_key_pairs()
            for key_pair in key_pairs:
                cloud.delete_key_pair(key_pair)
                env.out.step("-", "aws", "changed", f"deleted key pair {key_pair}")
            if not (instances or groups or key_pairs):
                env.out.step("-", "aws", "ok", f"nothing tagged dockyard:env={env.name} in {cloud.region}")

    # -- waiting
    def _not_stopped(self, names: dict[str, str]) -> str | None:
        waiting = [f"{names[i]} {state}" for i, state in self.cloud.states(list(names)).items() if state != "stopped"]
        return ", ".join(waiting) or None

    def _wait_terminated(self, instance_ids: list[str]) -> None:
        def running() -> str | None:
            states = self.cloud.states(instance_ids)
            return ", ".join(f"{i} {state}" for i, state in states.items() if state != "terminated") or None

        if left := self._poll(TERMINATE_SECONDS, running):
            raise ProviderError(
                f"instances not terminated after {TERMINATE_SECONDS}s ({left}); rerun `invoke teardown`"
            )

    def _delete_group(self, group: str) -> None:
        def in_use() -> str | None:
            return None if self.cloud.delete_security_group(group) else f"security group {group} to be released"

        if self._poll(GROUP_RELEASE_SECONDS, in_use):
            raise ProviderError(
                f"security group {group} is still in use after {GROUP_RELEASE_SECONDS}s; remove what uses it in the "
                f"EC2 console, then rerun `invoke teardown`"
            )

    def _poll(self, seconds: int, probe: Callable[[], str | None]) -> str | None:
        """Call `probe` until it returns None; None when done, else what it still waited for when time ran out.

        Shows what it waits for when that changes, and every 30 seconds.
        """
        started = time.monotonic()
        shown, shown_at = None, 0.0
        while (waiting := probe()) is not None:
            elapsed = time.monotonic() - started
            if elapsed > seconds:
                return waiting
            if waiting != shown or elapsed - shown_at >= 30:
                self.env.out.say(f"           waiting for {waiting} ({elapsed:.0f}s)")
                shown, shown_at = waiting, elapsed
            time.sleep(POLL_SECONDS)
        return None
