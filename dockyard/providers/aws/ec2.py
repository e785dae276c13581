"""The EC2 and SSM calls: AWS's requests and replies on one side, the types of `model.py` on the other.

Everything dockyard makes carries the tags `managed-by=dockyard` and `dockyard:env=<env>`, and is found again
by them. Errors AWS answers with leave as botocore errors, for `errors.translated` to word; only the few that
mean an answer ("no such parameter", "still in use") are read here.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ProfileNotFound

from dockyard.errors import ProviderError
from dockyard.inventory import Aws, Host, Inventory
from dockyard.providers.aws.errors import error_code
from dockyard.providers.aws.model import Group, Image, Instance, Network, PrefixList, Rule, RuleChanges, Status

CANONICAL = "099720109477"  # the AWS account Ubuntu's official images come from
UBUNTU_PARAMETER = "/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id"
UBUNTU_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-*"
LIVE_STATES = ("pending", "running", "stopping", "stopped")


CLIENT_CONFIG = Config(retries={"mode": "standard"}, user_agent_extra="dockyard")


def connect(inv: Inventory, region: str | None = None) -> Cloud:
    """The environment's clients in `region`, else in the region its AWS configuration names."""
    aws_session = session(inv, region)
    return Cloud(inv.env, aws_session.region_name, client(inv, aws_session, "ec2"), client(inv, aws_session, "ssm"))


def session(inv: Inventory, region: str | None = None) -> boto3.Session:
    """The environment's AWS settings: aws.profile and aws.region, else the standard AWS configuration."""
    aws = inv.aws
    # boto3 itself reads AWS_DEFAULT_REGION only; AWS_REGION is what the AWS CLI v2 and other SDKs read.
    region = region or aws.region or os.environ.get("AWS_REGION")
    try:
        aws_session = boto3.Session(profile_name=aws.profile, region_name=region)
    except ProfileNotFound as e:
        fix = f"aws.profile in {inv.path}" if aws.profile else "AWS_PROFILE"
        raise ProviderError(
            f"AWS profile {e.kwargs['profile']!r} is not in your AWS config files; fix {fix}, or create it with "
            f"`aws configure --profile {e.kwargs['profile']}`"
        ) from None
    region = aws_session.region_name
    if not region:
        raise ProviderError(
            f"no AWS region chosen; set aws.region in {inv.path}, AWS_REGION, or `region` in your profile's section "
            f"of ~/.aws/config"
        )
    known = {r for p in aws_session.get_available_partitions() for r in aws_session.get_available_regions("ec2", p)}
    if region not in known:
        close = difflib.get_close_matches(region, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        fix = f"aws.region in {inv.path}" if aws.region else "AWS_REGION or your profile's region"
        raise ProviderError(f"AWS region {region!r} does not exist{hint}; fix {fix}")
    return aws_session


def client(inv: Inventory, aws_session: boto3.Session, service: str) -> Any:
    """A client of `service` at the environment's endpoint (aws.endpoint_url, else AWS's own)."""
    return aws_session.client(service, endpoint_url=inv.aws.endpoint_url, config=CLIENT_CONFIG)


class Cloud:
    """One environment's resources in one region, through the EC2 and SSM clients of that region."""

    def __init__(self, env_name: str, region: str, ec2: Any, ssm: Any):
        self.env_name = env_name
        self.region = region
        self.ec2 = ec2
        self.ssm = ssm

    # -- instances
    def instances(self, states: tuple[str, ...] = LIVE_STATES) -> list[Instance]:
        filters = [*self._tag_filters(), {"Name": "instance-state-name", "Values": list(states)}]
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [_instance(i) for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def states(self, instance_ids: list[str]) -> dict[str, str]:
        # A filter, not InstanceIds: an instance long gone is simply not listed instead of failing the call.
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-id", "Values": instance_ids}]
        )
        return {
            i["InstanceId"]: i["State"]["Name"] for page in pages for r in page["Reservations"] for i in r["Instances"]
        }

    def statuses(self, instance_ids: list[str]) -> list[Status]:
        """The instances' states and status checks; one launched a moment ago may not be listed yet."""
        try:
            reply = self.ec2.describe_instance_status(InstanceIds=instance_ids, IncludeAllInstances=True)
        except ClientError as e:
            if error_code(e) == "InvalidInstanceID.NotFound":
                return []
            raise
        return [
            Status(s["InstanceId"], s["InstanceState"]["Name"],
                   (s["InstanceStatus"]["Status"], s["SystemStatus"]["Status"]))
            for s in reply["InstanceStatuses"]
        ]

    def launch(self, host: Host, settings: Aws, image: Image, key_pair: str, group: str) -> str:
        """One instance for `host`, tagged with its name and roles; its id."""
        tags = self._tags({
            "Name": f"dockyard-{self.env_name}-{host.name}", "dockyard:host": host.name,
            "dockyard:role": ",".join(host.roles),
        })
        if settings.subnet_id:
            network = {"NetworkInterfaces": [
                {"DeviceIndex": 0, "SubnetId": settings.subnet_id, "Groups": [group], "AssociatePublicIpAddress": True}
            ]}
        else:
            network = {"SecurityGroupIds": [group]}  # the default VPC's subnets hand out public addresses
        reply = self.ec2.run_instances(
            ImageId=image.id, InstanceType=settings.instance_type, KeyName=key_pair, MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{
                "DeviceName": image.root_device,
                "Ebs": {"VolumeSize": settings.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True},
            }],
            MetadataOptions={"HttpTokens": "required"},  # IMDSv2 only
            TagSpecifications=[{"ResourceType": kind, "Tags": tags} for kind in ("instance", "volume")],
            **network,
        )
        return reply["Instances"][0]["InstanceId"]

    def start(self, instance_ids: list[str]) -> None:
        self.ec2.start_instances(InstanceIds=instance_ids)

    def terminate(self, instance_ids: list[str]) -> None:
        self.ec2.terminate_instances(InstanceIds=instance_ids)

    # -- images
    def image(self, ami: str) -> Image | None:
        """The image `ami`, or None once it is deregistered."""
        images = self.ec2.describe_images(ImageIds=[ami])["Images"]
        return _image(images[0]) if images else None

    def current_ubuntu(self, arch: str) -> str | None:
        """The id of the Ubuntu 24.04 image Canonical names current in SSM, or None where SSM does not say."""
        try:
            return self.ssm.get_parameter(Name=UBUNTU_PARAMETER.format(arch=arch))["Parameter"]["Value"]
        except ClientError as e:
            if error_code(e) in ("ParameterNotFound", "AccessDeniedException"):
                return None
            raise

    def newest_ubuntu(self, arch: str) -> Image | None:
        """Canonical's newest Ubuntu 24.04 image, by its creation date."""
        images = self.ec2.describe_images(
            Owners=[CANONICAL],
            Filters=[
                {"Name": "name", "Values": [UBUNTU_NAME.format(arch=arch)]},
                {"Name": "state", "Values": ["available"]},
            ],
        )["Images"]
        return _image(max(images, key=lambda i: i["CreationDate"])) if images else None

    # -- key pairs
    def key_pair(self, name: str) -> str | None:
        """The public key of the key pair `name` ("" where AWS keeps none), or None when there is no such pair."""
        found = self.ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}], IncludePublicKey=True)
        return found["KeyPairs"][0].get("PublicKey", "") if found["KeyPairs"] else None

    def import_key_pair(self, name: str, public_key: str) -> None:
        self.ec2.import_key_pair(
            KeyName=name, PublicKeyMaterial=public_key.encode(),
            TagSpecifications=[{"ResourceType": "key-pair", "Tags": self._tags()}],
        )

    def tagged_key_pairs(self) -> list[str]:
        """The names of the key pairs dockyard imported for the environment."""
        return [k["KeyName"] for k in self.ec2.describe_key_pairs(Filters=self._tag_filters())["KeyPairs"]]

    def delete_key_pair(self, name: str) -> None:
        self.ec2.delete_key_pair(KeyName=name)

    # -- networks and security groups
    def subnet_vpc(self, subnet_id: str) -> str:
        (subnet,) = self.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
        return subnet["VpcId"]

    def default_vpc(self) -> str | None:
        vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        return vpcs[0]["VpcId"] if vpcs else None

    def security_group(self, name: str, vpc: str) -> str | None:
        groups = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc]}]
        )["SecurityGroups"]
        return groups[0]["GroupId"] if groups else None

    def create_security_group(self, name: str, vpc: str) -> str:
        return self.ec2.create_security_group(
            GroupName=name, VpcId=vpc, Description=f"dockyard environment {self.env_name}: SSH and open service ports",
            TagSpecifications=[{"ResourceType": "security-group", "Tags": self._tags()}],
        )["GroupId"]

    def tagged_security_groups(self) -> dict[str, str]:
        """The environment's security groups: id -> name."""
        groups = self.ec2.describe_security_groups(Filters=self._tag_filters())["SecurityGroups"]
        return {g["GroupId"]: g["GroupName"] for g in groups}

    def delete_security_group(self, group: str) -> bool:
        """False while something (such as a terminated instance's network interface) still uses the group."""
        try:
            self.ec2.delete_security_group(GroupId=group)
        except ClientError as e:
            if error_code(e) == "DependencyViolation":
                return False
            if error_code(e) != "InvalidGroup.NotFound":
                raise
        return True

    def inbound_rules(self, group: str) -> dict[str, Rule]:
        """The group's inbound rules by rule id, whoever added them."""
        rules = self.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
        return {r["SecurityGroupRuleId"]: _rule(r) for r in rules["SecurityGroupRules"] if not r["IsEgress"]}

    def change_rules(self, group: str, changes: RuleChanges) -> None:
        if changes.add:
            self.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=list(map(permission, changes.add)))
        if changes.revoke:
            self.ec2.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=list(changes.revoke))

    # -- tags
    def _tags(self, more: dict[str, str] | None = None) -> list[dict[str, str]]:
        tags = {"managed-by": "dockyard", "dockyard:env": self.env_name, **(more or {})}
        return [{"Key": key, "Value": value} for key, value in tags.items()]

    def _tag_filters(self) -> list[dict]:
        return [
            {"Name": "tag:managed-by", "Values": ["dockyard"]},
            {"Name": "tag:dockyard:env", "Values": [self.env_name]},
        ]


def permission(rule: Rule) -> dict:
    """The rule as `authorize_security_group_ingress` takes it."""
    why = {"Description": rule.description} if rule.description else {}
    match rule.source:
        case Network(cidr) if rule.source.ipv6:
            source = {"Ipv6Ranges": [{"CidrIpv6": cidr, **why}]}
        case Network(cidr):
            source = {"IpRanges": [{"CidrIp": cidr, **why}]}
        case Group(group_id):
            source = {"UserIdGroupPairs": [{"GroupId": group_id, **why}]}
        case PrefixList(prefix_list_id):
            source = {"PrefixListIds": [{"PrefixListId": prefix_list_id, **why}]}
    return {"IpProtocol": rule.protocol, "FromPort": rule.from_port, "ToPort": rule.to_port, **source}


def _rule(data: dict) -> Rule:
    """A rule as `describe_security_group_rules` lists it."""
    if cidr := data.get("CidrIpv4") or data.get("CidrIpv6"):
        source = Network.of(cidr)
    elif group := data.get("ReferencedGroupInfo"):
        source = Group(group["GroupId"])
    else:
        source = PrefixList(data["PrefixListId"])
    return Rule(data["IpProtocol"], data["FromPort"], data["ToPort"], source, data.get("Description", ""))


def _instance(data: dict) -> Instance:
    tags = {t["Key"]: t["Value"] for t in data.get("Tags", [])}
    return Instance(
        id=data["InstanceId"],
        host=tags.get("dockyard:host", ""),
        state=data["State"]["Name"],
        launched=data["LaunchTime"],
        public_ip=data.get("PublicIpAddress", ""),
        public_dns=data.get("PublicDnsName", ""),
        private_ip=data.get("PrivateIpAddress", ""),
    )


def _image(data: dict) -> Image:
    return Image(data["ImageId"], data.get("Name", ""), data["RootDeviceName"])
