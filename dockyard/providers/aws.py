"""EC2 hosts through boto3: per environment one key pair, one security group, and one instance per host.

AWS settings come from the standard configuration (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ~/.aws/config
and credentials), each overridable per environment with `aws.profile`, `aws.region` and `aws.endpoint_url`.
Everything dockyard makes is tagged `managed-by=dockyard` and `dockyard:env=<env>` and found again by those
tags, so a rerun changes nothing and teardown works even when half of it is already gone.

`provision` is `ensure_hosts` (the AWS side, recorded in state) followed by a wait until SSH lets us in;
from then on `deploy` reaches the hosts recorded in state as it reaches any other.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from dockyard.environment import Env
from dockyard.errors import ConnectError, ProviderError
from dockyard.inventory import Host, Inventory
from dockyard.report import confirm
from dockyard.ssh import HostKeyChanged
from dockyard.state import HostRecord

CANONICAL = "099720109477"  # the AWS account Ubuntu's official images come from
UBUNTU_PARAMETER = "/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id"
UBUNTU_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-*"
SSH_PORT = 22
LIVE_STATES = ("pending", "running", "stopping", "stopped")
POLL_SECONDS = 5
READY_SECONDS = 600  # running with both status checks ok: 2-5 minutes for a fresh instance
SSH_SECONDS = 300  # cloud-init installs the key pair's public key while the checks run
TERMINATE_SECONDS = 600
GROUP_RELEASE_SECONDS = 300  # a terminated instance's network interface holds on to its group for a while
CREDENTIAL_CODES = {
    "AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
    "RequestExpired", "SignatureDoesNotMatch",
}
QUOTA_CODES = {"InstanceLimitExceeded", "VcpuLimitExceeded"}
CLIENT_CONFIG = Config(retries={"mode": "standard"}, user_agent_extra="dockyard")


@dataclass(frozen=True)
class Cloud:
    """The EC2 and SSM clients of one region, reached with the environment's AWS configuration."""

    region: str
    ec2: Any
    ssm: Any


@dataclass(frozen=True, order=True)
class Rule:
    """One inbound permission of the security group."""

    from_port: int
    to_port: int
    cidr: str
    protocol: str = "tcp"

    @classmethod
    def tcp(cls, port: int, cidr: str) -> Rule:
        return cls(port, port, str(ipaddress.ip_network(cidr)))

    @property
    def permission(self) -> dict:
        if ":" in self.cidr:
            ranges = {"Ipv6Ranges": [{"CidrIpv6": self.cidr}]}
        else:
            ranges = {"IpRanges": [{"CidrIp": self.cidr}]}
        return {"IpProtocol": self.protocol, "FromPort": self.from_port, "ToPort": self.to_port, **ranges}

    def __str__(self) -> str:
        if self.protocol == "tcp" and self.from_port == self.to_port:
            return f"{self.from_port} to {self.cidr}"
        protocol = "all" if self.protocol == "-1" else self.protocol
        return f"{protocol} {self.from_port}-{self.to_port} to {self.cidr}"


@dataclass(frozen=True)
class Instance:
    """What dockyard reads of one of its instances."""

    id: str
    host: str  # its dockyard:host tag
    state: str
    launched: datetime
    public_ip: str = ""
    public_dns: str = ""


@dataclass(frozen=True)
class InstancePlan:
    """What to do so that each declared host has exactly one instance."""

    keep: tuple[tuple[Host, Instance], ...] = ()
    start: tuple[tuple[Host, Instance], ...] = ()  # stopped or stopping
    launch: tuple[Host, ...] = ()
    terminate: tuple[Instance, ...] = ()  # instances of undeclared hosts, and second instances of a host


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    root_device: str


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


# -- the provider interface -----------------------------------------------------------------------------------
class Aws:
    def __init__(self, env: Env):
        self.env = env

    def provision(self, yes: bool = False) -> list[HostRecord]:
        records = ensure_hosts(self.env, yes)
        for record in records:
            wait_for_ssh(self.env, record)
        return records

    def hosts(self) -> list[HostRecord]:
        """The hosts as the last provision recorded them; nothing is asked of AWS."""
        return hosts(self.env)

    def teardown(self, yes: bool = False) -> None:
        teardown(self.env, yes)


def hosts(env: Env) -> list[HostRecord]:
    recorded = {r.name: r for r in env.state.hosts()}
    records = []
    for host in env.inventory.hosts:
        record = recorded.get(host.name)
        if record is None:
            raise ProviderError(f"aws host {host.name} is not provisioned; run `invoke provision`")
        if record.roles != host.roles or record.endpoints != endpoints(env.inventory, host, record.address):
            raise ProviderError(
                f"aws host {host.name}: its roles or open ports changed since it was provisioned; run "
                f"`invoke provision` to update its security group"
            )
        records.append(record)
    return records


def teardown(env: Env, yes: bool = False) -> None:
    """Remove every instance, security group and key pair dockyard tagged for the environment."""
    cloud = connect(env)
    recorded = {r.provider["region"] for r in env.state.hosts() if r.provider.get("region")}
    for region in [cloud.region, *sorted(recorded - {cloud.region})]:
        here = cloud if region == cloud.region else connect(env, region)
        with translated(env, here):
            _teardown_region(env, here)


# -- the AWS side of provision --------------------------------------------------------------------------------
def ensure_hosts(env: Env, yes: bool = False) -> list[HostRecord]:
    """Key pair, security group and one running instance per host, with status checks passed; saved in state."""
    cloud = connect(env)
    with translated(env, cloud):
        plan = plan_instances(env.inventory.hosts, find_instances(cloud, env.name))
        if plan.terminate:
            doomed = ", ".join(f"{i.id} ({_unwanted(env, i)})" for i in plan.terminate)
            confirm(f"terminate {doomed}?", yes)
        image = find_image(env, cloud) if plan.launch else None
        started = time.monotonic()
        created = Created()
        try:
            key_pair = ensure_key_pair(env, cloud, created)
            group = ensure_security_group(env, cloud, created)
            changes = ensure_instances(env, cloud, plan, image, key_pair, group, created)
        except (BotoCoreError, ClientError):
            remove_created(env, cloud, created)
            raise
        records = wait_until_ready(env, cloud, changes, group, key_pair, started)
    env.state.save_hosts(records)
    return records


def connect(env: Env, region: str | None = None) -> Cloud:
    aws_session = session(env, region)
    return Cloud(aws_session.region_name, client(env, aws_session, "ec2"), client(env, aws_session, "ssm"))


def session(env: Env, region: str | None = None) -> boto3.Session:
    """The environment's AWS settings: aws.profile and aws.region, else the standard AWS configuration."""
    aws = env.inventory.aws
    where = env.inventory.path
    # boto3 itself reads AWS_DEFAULT_REGION only; AWS_REGION is what the AWS CLI v2 and other SDKs read.
    region = region or aws.region or os.environ.get("AWS_REGION")
    try:
        aws_session = boto3.Session(profile_name=aws.profile, region_name=region)
    except ProfileNotFound as e:
        fix = f"aws.profile in {where}" if aws.profile else "AWS_PROFILE"
        raise ProviderError(
            f"AWS profile {e.kwargs['profile']!r} is not in your AWS config files; fix {fix}, or create it with "
            f"`aws configure --profile {e.kwargs['profile']}`"
        ) from None
    region = aws_session.region_name
    if not region:
        raise ProviderError(
            f"no AWS region chosen; set aws.region in {where}, AWS_REGION, or `region` in your profile's section "
            f"of ~/.aws/config"
        )
    known = {r for p in aws_session.get_available_partitions() for r in aws_session.get_available_regions("ec2", p)}
    if region not in known:
        close = difflib.get_close_matches(region, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        fix = f"aws.region in {where}" if aws.region else "AWS_REGION or your profile's region"
        raise ProviderError(f"AWS region {region!r} does not exist{hint}; fix {fix}")
    return aws_session


def client(env: Env, aws_session: boto3.Session, service: str):
    """A client of `service` at the environment's endpoint (aws.endpoint_url, else AWS's own)."""
    return aws_session.client(service, endpoint_url=env.inventory.aws.endpoint_url, config=CLIENT_CONFIG)


def find_instances(cloud: Cloud, env_name: str, states: tuple[str, ...] = LIVE_STATES) -> list[Instance]:
    filters = [*_tag_filters(env_name), {"Name": "instance-state-name", "Values": list(states)}]
    pages = cloud.ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [_instance(i) for page in pages for reservation in page["Reservations"] for i in reservation["Instances"]]


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


def find_image(env: Env, cloud: Cloud) -> Image:
    """`aws.ami`, else the current Ubuntu 24.04 as Canonical publishes it in SSM, else its newest image by name."""
    aws = env.inventory.aws
    if aws.ami:
        return _image(env, cloud, aws.ami)
    try:
        ami = cloud.ssm.get_parameter(Name=UBUNTU_PARAMETER.format(arch=aws.arch))["Parameter"]["Value"]
    except ClientError as e:
        if _code(e) not in ("ParameterNotFound", "AccessDeniedException"):
            raise
    else:
        return _image(env, cloud, ami)
    images = cloud.ec2.describe_images(
        Owners=[CANONICAL],
        Filters=[
            {"Name": "name", "Values": [UBUNTU_NAME.format(arch=aws.arch)]},
            {"Name": "state", "Values": ["available"]},
        ],
    )["Images"]
    if not images:
        raise ProviderError(
            f"no Ubuntu 24.04 {aws.arch} image found in {cloud.region}; set aws.ami in {env.inventory.path}"
        )
    newest = max(images, key=lambda i: i["CreationDate"])
    return Image(newest["ImageId"], newest.get("Name", ""), newest["RootDeviceName"])


def ensure_key_pair(env: Env, cloud: Cloud, created: Created) -> str:
    """The key pair instances are launched with: `aws.key_name`, or the environment's key imported as dockyard-<env>."""
    aws = env.inventory.aws
    key_path = env.env_key()
    public_key = env.state.public_key(key_path)
    name = aws.key_name or f"dockyard-{env.name}"
    found = cloud.ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}], IncludePublicKey=True)
    if found["KeyPairs"]:
        theirs = found["KeyPairs"][0].get("PublicKey")
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
            f"key pair {name} does not exist in {cloud.region}; fix aws.key_name in {env.inventory.path}, or remove "
            f"it to let dockyard import {key_path}"
        )
    cloud.ec2.import_key_pair(
        KeyName=name, PublicKeyMaterial=public_key.encode(),
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": _tags(env.name)}],
    )
    created.key_pair = name
    env.out.step("-", "aws", "changed", f"imported the public key of {key_path} as key pair {name}")
    return name


def wanted_rules(inv: Inventory) -> frozenset[Rule]:
    """SSH from `aws.ssh_cidr`, and each service the hosts run from its own `open_to` networks."""
    roles = {role for host in inv.hosts for role in host.roles}
    return frozenset(
        {Rule.tcp(SSH_PORT, inv.aws.ssh_cidr)}
        | {Rule.tcp(inv.service(r).port, cidr) for r in roles for cidr in inv.service(r).open_to}
    )


def ensure_security_group(env: Env, cloud: Cloud, created: Created) -> str:
    """The environment's security group, with exactly the inbound rules the inventory declares."""
    name = f"dockyard-{env.name}"
    vpc = _vpc(env, cloud)
    groups = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc]}]
    )["SecurityGroups"]
    if groups:
        group, made = groups[0]["GroupId"], []
    else:
        group = cloud.ec2.create_security_group(
            GroupName=name, VpcId=vpc, Description=f"dockyard environment {env.name}: SSH and open service ports",
            TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(env.name)}],
        )["GroupId"]
        created.security_group = group
        made = [f"created in {vpc}"]
    current = _inbound_rules(cloud, group)
    wanted = wanted_rules(env.inventory)
    opened = sorted(wanted - set(current.values()))
    closed = {rule_id: rule for rule_id, rule in current.items() if rule not in wanted}
    if opened:
        cloud.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[r.permission for r in opened])
    if closed:
        cloud.ec2.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=list(closed))
    if Rule.tcp(SSH_PORT, env.inventory.aws.ssh_cidr).cidr in ("0.0.0.0/0", "::/0"):
        env.out.say(
            f"warning: aws.ssh_cidr {env.inventory.aws.ssh_cidr} lets the whole internet try SSH on the hosts; "
            f"narrow it to your address, e.g. 203.0.113.7/32"
        )
    changes = [
        *made,
        *([f"opened {', '.join(map(str, opened))}"] if opened else []),
        *([f"closed {', '.join(map(str, sorted(closed.values())))}"] if closed else []),
    ]
    if changes:
        env.out.step("-", "aws", "changed", f"security group {name} ({group}): {'; '.join(changes)}")
    else:
        env.out.step("-", "aws", "ok", f"security group {name} ({group}) opens {', '.join(map(str, sorted(wanted)))}")
    return group


def ensure_instances(env: Env, cloud: Cloud, plan: InstancePlan, image: Image | None, key_pair: str, group: str,
                     created: Created) -> dict[str, Change]:
    """Carry out the plan: terminate what is no longer declared, start what is stopped, launch what is missing."""
    if plan.terminate:
        cloud.ec2.terminate_instances(InstanceIds=[i.id for i in plan.terminate])
        declared = {h.name for h in env.inventory.hosts}
        for instance in plan.terminate:
            if instance.host not in declared:
                env.state.forget_host_key(instance.host)
            detail = f"terminated {instance.id} ({_unwanted(env, instance)})"
            env.out.step(instance.host or "-", "aws", "changed", detail)
    changes = {host.name: Change(i.id, "ok", f"{i.id} {i.state}") for host, i in plan.keep}
    if plan.start:
        stopping = {i.id: host.name for host, i in plan.start if i.state == "stopping"}
        if stopping and (left := _poll(env, READY_SECONDS, lambda: _not_stopped(cloud, stopping))):
            raise ProviderError(f"instances did not stop within {READY_SECONDS}s ({left}); rerun `invoke provision`")
        cloud.ec2.start_instances(InstanceIds=[i.id for _, i in plan.start])
        for host, instance in plan.start:
            changes[host.name] = Change(instance.id, "changed", f"started {instance.id} (was {instance.state})")
    for host in plan.launch:
        env.state.forget_host_key(host.name)  # a new machine has a new host key
        instance_id = _launch(env, cloud, host, image, key_pair, group)
        created.instances.append(instance_id)
        changes[host.name] = Change(
            instance_id, "changed", f"launched {instance_id} ({env.inventory.aws.instance_type}, {image.id})"
        )
    return changes


def wait_until_ready(env: Env, cloud: Cloud, changes: dict[str, Change], group: str, key_pair: str,
                     started: float) -> list[HostRecord]:
    """Wait until every instance runs with both status checks ok, then report each host with its address."""
    names = {change.instance_id: host for host, change in changes.items()}
    if left := _poll(env, READY_SECONDS, lambda: _not_ready(cloud, names)):
        raise ProviderError(
            f"instances not running with status checks ok after {READY_SECONDS}s ({left}); look at them in the EC2 "
            f"console, then rerun `invoke provision`"
        )
    found = {i.id: i for i in find_instances(cloud, env.name)}
    records = []
    for host in env.inventory.hosts:
        change = changes[host.name]
        instance = found.get(change.instance_id)
        if instance is None:
            raise ProviderError(f"{host.name} ({change.instance_id}) vanished while starting; rerun `invoke provision`")
        if not instance.public_ip:
            raise ProviderError(
                f"{host.name} ({instance.id}) has no public address; set aws.subnet_id in {env.inventory.path} to a "
                f"subnet with an internet gateway"
            )
        records.append(HostRecord(
            name=host.name,
            address=instance.public_ip,
            port=SSH_PORT,
            user=env.inventory.ssh.user,
            roles=host.roles,
            endpoints=endpoints(env.inventory, host, instance.public_ip),
            provider={
                "instance_id": instance.id, "region": cloud.region, "public_dns": instance.public_dns,
                "public_ip": instance.public_ip, "security_group": group, "key_pair": key_pair,
            },
        ))
        env.out.step(host.name, "aws", change.status, f"{change.detail} at {instance.public_ip}",
                     time.monotonic() - started)
    return records


def endpoints(inv: Inventory, host: Host, address: str) -> dict[str, str]:
    return {role: f"{address}:{port}" for role, port in inv.open_ports(host).items()}


def wait_for_ssh(env: Env, record: HostRecord) -> None:
    """Log in once, retrying while the instance boots; pins its host key on first contact."""
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

    if _poll(env, SSH_SECONDS, refused):
        raise ProviderError(
            f"{record.name} ({record.provider['instance_id']}): SSH did not let dockyard in within {SSH_SECONDS}s; "
            f"check that aws.ssh_cidr ({env.inventory.aws.ssh_cidr}) holds your public address and read the "
            f"instance's system log in the EC2 console (last attempt: {refusals[-1]})"
        )


def remove_created(env: Env, cloud: Cloud, created: Created) -> None:
    """Undo a run that AWS refused halfway, so that it leaves nothing new behind."""
    try:
        if created.instances:
            cloud.ec2.terminate_instances(InstanceIds=created.instances)
            env.out.step("-", "aws", "changed", f"terminated {', '.join(created.instances)} (launched by this run)")
            if created.security_group:
                _wait_terminated(env, cloud, created.instances)
        if created.security_group:
            _delete_group(env, cloud, created.security_group)
            env.out.step("-", "aws", "changed", f"deleted security group {created.security_group} (made by this run)")
        if created.key_pair:
            cloud.ec2.delete_key_pair(KeyName=created.key_pair)
            env.out.step("-", "aws", "changed", f"deleted key pair {created.key_pair} (made by this run)")
    except (BotoCoreError, ClientError, ProviderError) as e:
        env.out.step("-", "aws", "failed", f"could not remove what this run made ({e}); run `invoke teardown`")


# -- errors ---------------------------------------------------------------------------------------------------
@contextmanager
def translated(env: Env, cloud: Cloud):
    """botocore errors leave as one ProviderError line."""
    try:
        yield
    except (BotoCoreError, ClientError) as e:
        raise refusal(e, env, cloud.region) from None


def refusal(error: BotoCoreError | ClientError, env: Env, region: str) -> ProviderError:
    """What AWS said, and what to change."""
    aws = env.inventory.aws
    where = env.inventory.path
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return ProviderError(
            f"no AWS credentials found; run `aws configure` or `aws sso login`, choose a profile with AWS_PROFILE or "
            f"aws.profile in {where}, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(error, EndpointConnectionError):
        fix = f"check aws.endpoint_url in {where}" if aws.endpoint_url else "check the network and the region"
        return ProviderError(f"cannot reach AWS at {error.kwargs['endpoint_url']}; {fix}")
    if not isinstance(error, ClientError):
        return ProviderError(f"AWS call in {region} failed ({error}); check the network, then rerun")
    code = _code(error)
    said = f"{code}: {error.response['Error'].get('Message', '').rstrip('.')}"
    if code in CREDENTIAL_CODES:
        return ProviderError(
            f"AWS refused the credentials ({said}); refresh them (`aws sso login`, `aws configure`) or choose "
            f"another profile with AWS_PROFILE or aws.profile in {where}"
        )
    if code == "UnauthorizedOperation" or code.startswith("AccessDenied"):
        return ProviderError(
            f"AWS denied {error.operation_name} in {region}; give your AWS identity the EC2 permissions dockyard "
            f"uses, or choose another profile"
        )
    if code in QUOTA_CODES:
        return ProviderError(
            f"EC2 quota reached in {region} ({said}); terminate instances you no longer need, or request a higher "
            f"limit in the Service Quotas console"
        )
    if code.startswith("InvalidAMIID"):
        fix = "fix aws.ami" if aws.ami else "set aws.ami"
        return ProviderError(f"image not found in {region} ({said}); {fix} in {where} to an image of {region}")
    if (code.startswith("InvalidInstanceType") or code == "Unsupported"
            or (code == "InvalidParameterValue" and re.search(r"instance ?type", said, re.IGNORECASE))):
        return ProviderError(
            f"instance type {aws.instance_type!r} cannot be launched in {region} ({said}); fix aws.instance_type "
            f"(or aws.subnet_id, for another zone) in {where}"
        )
    if code.startswith(("InvalidSubnetID", "InvalidVpcID")):
        return ProviderError(f"{said} in {region}; fix aws.subnet_id or aws.vpc_id in {where}")
    return ProviderError(f"AWS refused {error.operation_name} in {region} ({said})")


# -- helpers --------------------------------------------------------------------------------------------------
def _teardown_region(env: Env, cloud: Cloud) -> None:
    instances = find_instances(cloud, env.name, (*LIVE_STATES, "shutting-down"))
    if instances:
        cloud.ec2.terminate_instances(InstanceIds=[i.id for i in instances])
        _wait_terminated(env, cloud, [i.id for i in instances])
        for instance in instances:
            env.out.step(instance.host or "-", "aws", "changed", f"terminated {instance.id} in {cloud.region}")
    groups = cloud.ec2.describe_security_groups(Filters=_tag_filters(env.name))["SecurityGroups"]
    for group in groups:
        _delete_group(env, cloud, group["GroupId"])
        env.out.step("-", "aws", "changed", f"deleted security group {group['GroupName']} ({group['GroupId']})")
    # Only key pairs dockyard imported carry its tags: one named by aws.key_name is never deleted.
    key_pairs = cloud.ec2.describe_key_pairs(Filters=_tag_filters(env.name))["KeyPairs"]
    for key_pair in key_pairs:
        cloud.ec2.delete_key_pair(KeyName=key_pair["KeyName"])
        env.out.step("-", "aws", "changed", f"deleted key pair {key_pair['KeyName']}")
    if not (instances or groups or key_pairs):
        env.out.step("-", "aws", "ok", f"nothing tagged dockyard:env={env.name} in {cloud.region}")


def _unwanted(env: Env, instance: Instance) -> str:
    if any(h.name == instance.host for h in env.inventory.hosts):
        return f"a second instance of {instance.host}"
    return f"{instance.host or 'no dockyard:host tag'}, no longer declared"


def _launch(env: Env, cloud: Cloud, host: Host, image: Image, key_pair: str, group: str) -> str:
    aws = env.inventory.aws
    tags = _tags(env.name, {
        "Name": f"dockyard-{env.name}-{host.name}", "dockyard:host": host.name, "dockyard:role": ",".join(host.roles),
    })
    if aws.subnet_id:
        network = {"NetworkInterfaces": [
            {"DeviceIndex": 0, "SubnetId": aws.subnet_id, "Groups": [group], "AssociatePublicIpAddress": True}
        ]}
    else:
        network = {"SecurityGroupIds": [group]}  # the default VPC's subnets hand out public addresses
    reply = cloud.ec2.run_instances(
        ImageId=image.id, InstanceType=aws.instance_type, KeyName=key_pair, MinCount=1, MaxCount=1,
        BlockDeviceMappings=[{
            "DeviceName": image.root_device,
            "Ebs": {"VolumeSize": aws.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True},
        }],
        MetadataOptions={"HttpTokens": "required"},  # IMDSv2 only
        TagSpecifications=[{"ResourceType": kind, "Tags": tags} for kind in ("instance", "volume")],
        **network,
    )
    return reply["Instances"][0]["InstanceId"]


def _image(env: Env, cloud: Cloud, ami: str) -> Image:
    images = cloud.ec2.describe_images(ImageIds=[ami])["Images"]
    if not images:  # deregistered
        raise ProviderError(
            f"image {ami} no longer exists in {cloud.region}; {'fix' if env.inventory.aws.ami else 'set'} aws.ami "
            f"in {env.inventory.path}"
        )
    return Image(images[0]["ImageId"], images[0].get("Name", ""), images[0]["RootDeviceName"])


def _vpc(env: Env, cloud: Cloud) -> str:
    aws = env.inventory.aws
    if aws.subnet_id:
        (subnet,) = cloud.ec2.describe_subnets(SubnetIds=[aws.subnet_id])["Subnets"]
        if aws.vpc_id and subnet["VpcId"] != aws.vpc_id:
            raise ProviderError(
                f"subnet {aws.subnet_id} is in {subnet['VpcId']}, not in aws.vpc_id {aws.vpc_id}; fix one of them in "
                f"{env.inventory.path}"
            )
        return subnet["VpcId"]
    vpcs = cloud.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ProviderError(
            f"{cloud.region} has no default VPC; set aws.subnet_id in {env.inventory.path} to a subnet with an "
            f"internet gateway"
        )
    return vpcs[0]["VpcId"]


def _inbound_rules(cloud: Cloud, group: str) -> dict[str, Rule]:
    """The group's inbound rules by rule id, whoever added them."""
    rules = cloud.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
    found = {}
    for r in rules["SecurityGroupRules"]:
        if r["IsEgress"]:
            continue
        cidr = r.get("CidrIpv4") or r.get("CidrIpv6")
        source = str(ipaddress.ip_network(cidr)) if cidr else r.get("PrefixListId") or str(r.get("ReferencedGroupInfo"))
        found[r["SecurityGroupRuleId"]] = Rule(r["FromPort"], r["ToPort"], source, r["IpProtocol"])
    return found


def _not_ready(cloud: Cloud, names: dict[str, str]) -> str | None:
    """What the instances are still waiting for, or None when all run with both status checks ok."""
    try:
        statuses = cloud.ec2.describe_instance_status(InstanceIds=list(names), IncludeAllInstances=True)
    except ClientError as e:
        if _code(e) == "InvalidInstanceID.NotFound":  # EC2 is eventually consistent just after a launch
            return "instances to appear"
        raise
    seen = {s["InstanceId"]: s for s in statuses["InstanceStatuses"]}
    waiting = []
    for instance_id, host in names.items():
        status = seen.get(instance_id)
        if status is None:
            waiting.append(f"{host} pending")
            continue
        state = status["InstanceState"]["Name"]
        checks = (status["InstanceStatus"]["Status"], status["SystemStatus"]["Status"])
        if state in ("shutting-down", "terminated") or "impaired" in checks:
            raise ProviderError(
                f"{host} ({instance_id}) is {state} with status checks {'/'.join(checks)}; read its system log in the "
                f"EC2 console, then run `invoke teardown` and provision again"
            )
        if state != "running" or checks != ("ok", "ok"):
            waiting.append(f"{host} {state}, status checks {'/'.join(checks)}")
    return ", ".join(waiting) or None


def _not_stopped(cloud: Cloud, names: dict[str, str]) -> str | None:
    states = _states(cloud, list(names))
    waiting = [f"{names[i]} {state}" for i, state in states.items() if state != "stopped"]
    return ", ".join(waiting) or None


def _wait_terminated(env: Env, cloud: Cloud, instance_ids: list[str]) -> None:
    def running() -> str | None:
        left = [f"{i} {state}" for i, state in _states(cloud, instance_ids).items() if state != "terminated"]
        return ", ".join(left) or None

    if left := _poll(env, TERMINATE_SECONDS, running):
        raise ProviderError(f"instances not terminated after {TERMINATE_SECONDS}s ({left}); rerun `invoke teardown`")


def _states(cloud: Cloud, instance_ids: list[str]) -> dict[str, str]:
    # A filter, not InstanceIds: an instance long gone is simply not listed instead of failing the call.
    pages = cloud.ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-id", "Values": instance_ids}]
    )
    return {i["InstanceId"]: i["State"]["Name"] for page in pages for r in page["Reservations"] for i in r["Instances"]}


def _delete_group(env: Env, cloud: Cloud, group: str) -> None:
    def in_use() -> str | None:
        try:
            cloud.ec2.delete_security_group(GroupId=group)
        except ClientError as e:
            if _code(e) == "InvalidGroup.NotFound":
                return None
            if _code(e) == "DependencyViolation":
                return f"security group {group} to be released"
            raise
        return None

    if _poll(env, GROUP_RELEASE_SECONDS, in_use):
        raise ProviderError(
            f"security group {group} is still in use after {GROUP_RELEASE_SECONDS}s; remove what uses it in the EC2 "
            f"console, then rerun `invoke teardown`"
        )


def _poll(env: Env, seconds: int, probe: Callable[[], str | None]) -> str | None:
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
            env.out.say(f"           waiting for {waiting} ({elapsed:.0f}s)")
            shown, shown_at = waiting, elapsed
        time.sleep(POLL_SECONDS)
    return None


def _instance(data: dict) -> Instance:
    tags = {t["Key"]: t["Value"] for t in data.get("Tags", [])}
    return Instance(
        id=data["InstanceId"],
        host=tags.get("dockyard:host", ""),
        state=data["State"]["Name"],
        launched=data["LaunchTime"],
        public_ip=data.get("PublicIpAddress", ""),
        public_dns=data.get("PublicDnsName", ""),
    )


def _tags(env_name: str, more: dict[str, str] | None = None) -> list[dict[str, str]]:
    tags = {"managed-by": "dockyard", "dockyard:env": env_name, **(more or {})}
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _tag_filters(env_name: str) -> list[dict]:
    return [{"Name": "tag:managed-by", "Values": ["dockyard"]}, {"Name": "tag:dockyard:env", "Values": [env_name]}]


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")
