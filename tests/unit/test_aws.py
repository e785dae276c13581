"""provider: aws against moto in server mode: what provisioning creates, reruns, rule changes, teardown, failures.

moto instances cannot be reached over SSH, so these tests stop below `provision` at `ensure_hosts` (everything
on the AWS side, recorded in state); tests/e2e/test_aws.py runs the whole of `provision`, SSH included. The pure
model (plans, rules and their diff) is tested without moto in test_aws_model.py.
"""

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockyard.errors import Aborted, ProviderError
from dockyard.providers.aws import provider
from dockyard.providers.aws.ec2 import permission
from dockyard.providers.aws.errors import refusal
from dockyard.providers.aws.model import Group, Image, Network, PrefixList, Rule, RuleChanges
from dockyard.providers.aws.provider import Aws
from tests import fake_aws
from tests.conftest import output

ENV = "t-aws"
WEB1 = {"web1": {"roles": ["registry", "proxy", "app", "webhook"]}}
FRONT = {"roles": ["proxy", "app"]}  # the app with the proxy in front, as every app host has


@pytest.fixture(scope="module")
def endpoint():
    with fake_aws.moto_server() as url:
        yield url


@pytest.fixture
def cloud(endpoint, monkeypatch, tmp_path):
    """A fresh fake cloud with one current Ubuntu image; yields a client to look at it."""
    fake_aws.fresh_cloud(endpoint, monkeypatch, tmp_path)
    fake_aws.publish_ubuntu("20250115")
    return fake_aws.ec2(endpoint)


@pytest.fixture
def declare(project, endpoint):
    """Write the environment's inventory, reaching the fake cloud, and open it."""

    def write(hosts=None, **sections):
        aws_settings = {"endpoint_url": endpoint, **sections.pop("aws", {})}
        fake_aws.aws_inventory(project, ENV, hosts or WEB1, aws=aws_settings, **sections)
        return project.env(ENV)

    return write


def rules(client, group_id: str) -> set[tuple[int, str]]:
    found = client.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    inbound = [r for r in found["SecurityGroupRules"] if not r["IsEgress"]]
    return {(r["FromPort"], r.get("CidrIpv4") or r["CidrIpv6"]) for r in inbound}


def tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


# -- creating -------------------------------------------------------------------------------------------------
def test_provisioning_creates_a_key_pair_a_group_and_one_tagged_instance_per_host(cloud, declare):
    env = declare(
        {**WEB1, "web2": FRONT},
        services={"registry": {"open_to": ["10.0.0.0/8"]}, "webhook": {"open_to": ["0.0.0.0/0", "::/0"]}},
    )
    records = Aws(env).ensure_hosts()

    found = fake_aws.tagged(cloud, ENV)
    (key_pair,) = found["key_pairs"]
    assert key_pair["KeyName"] == "dockyard-t-aws"
    (imported,) = cloud.describe_key_pairs(KeyNames=["dockyard-t-aws"], IncludePublicKey=True)["KeyPairs"]
    assert imported["PublicKey"].split()[:2] == env.state.public_key(env.env_key()).split()[:2]
    (group,) = found["security_groups"]
    assert group["GroupName"] == "dockyard-t-aws"
    assert rules(cloud, group["GroupId"]) == {
        (22, fake_aws.SSH_CIDR), (5000, "10.0.0.0/8"), (80, "0.0.0.0/0"), (443, "0.0.0.0/0"), (9000, "0.0.0.0/0"),
        (9000, "::/0"),
    }

    instances = sorted(found["instances"], key=lambda i: tags(i)["dockyard:host"])
    assert [tags(i) for i in instances] == [
        {"Name": "dockyard-t-aws-web1", "managed-by": "dockyard", "dockyard:env": ENV, "dockyard:host": "web1",
         "dockyard:role": "registry,proxy,app,webhook"},
        {"Name": "dockyard-t-aws-web2", "managed-by": "dockyard", "dockyard:env": ENV, "dockyard:host": "web2",
         "dockyard:role": "proxy,app"},
    ]
    web1 = instances[0]
    assert web1["InstanceType"] == "t3.small" and web1["KeyName"] == "dockyard-t-aws"
    assert web1["ImageId"] == "ami-20250115a0000000"
    assert [g["GroupId"] for g in web1["SecurityGroups"]] == [group["GroupId"]]
    assert web1["MetadataOptions"]["HttpTokens"] == "required"
    volume = cloud.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [web1["InstanceId"]]}])
    assert [(v["Size"], v["VolumeType"]) for v in volume["Volumes"]] == [(20, "gp3")]

    ip = web1["PublicIpAddress"]
    assert records[0].address == ip and records[0].port == 22 and records[0].user == "ubuntu"
    assert records[0].endpoints == {
        "registry": f"{ip}:5000", "proxy.http_port": f"{ip}:80", "proxy.https_port": f"{ip}:443",
        "webhook": f"{ip}:9000",
    }
    assert records[0].provider == {
        "instance_id": web1["InstanceId"], "region": "us-east-1", "public_dns": web1["PublicDnsName"],
        "public_ip": ip, "ip": web1["PrivateIpAddress"], "security_group": group["GroupId"],
        "key_pair": "dockyard-t-aws", "cluster": "none",
    }
    assert records[0].private_address == web1["PrivateIpAddress"] != ip
    assert env.state.hosts() == records == Aws(env).hosts()
    lines = output(env)
    assert "-          aws          changed   imported the public key of " in lines
    assert "web1       aws          changed" in lines and f"launched {web1['InstanceId']} (t3.small, " in lines


def test_a_second_run_changes_nothing(cloud, declare):
    env = declare()
    first = Aws(env).ensure_hosts()
    again = declare()
    assert Aws(again).ensure_hosts() == first
    assert again.out.counts["changed"] == 0
    lines = output(again).splitlines()
    assert lines[0].startswith("-          aws          ok        key pair dockyard-t-aws matches ")
    assert lines[1].startswith("-          aws          ok        security group dockyard-t-aws (sg-")
    assert lines[1].endswith(f"opens 22 to {fake_aws.SSH_CIDR}, 80 to 0.0.0.0/0, 443 to 0.0.0.0/0")
    assert lines[2].startswith("web1       aws          ok")
    assert f"{first[0].provider['instance_id']} running at {first[0].address}" in lines[2]


def test_the_security_group_follows_the_inventory(cloud, declare):
    (record,) = Aws(declare()).ensure_hosts()
    group = record.provider["security_group"]
    cloud.authorize_security_group_ingress(  # added by hand: not declared, so revoked
        GroupId=group, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
                                       "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    env = declare(
        {"web1": {"roles": ["registry", "proxy", "app"]}},
        aws={"ssh_cidr": "198.51.100.0/24"},
        services={"registry": {"open_to": ["10.1.0.0/16"]}, "proxy": {"open_to": ["192.0.2.0/24"]}},
    )
    (record,) = Aws(env).ensure_hosts()
    assert rules(cloud, group) == {
        (22, "198.51.100.0/24"), (5000, "10.1.0.0/16"), (80, "192.0.2.0/24"), (443, "192.0.2.0/24"),
    }
    assert (
        f"security group dockyard-t-aws ({group}): opened 22 to 198.51.100.0/24, 80 to 192.0.2.0/24, "
        f"443 to 192.0.2.0/24, 5000 to 10.1.0.0/16; closed 22 to {fake_aws.SSH_CIDR}, 80 to 0.0.0.0/0, "
        f"443 to 0.0.0.0/0, 3306 to 0.0.0.0/0"
    ) in output(env)
    assert set(record.endpoints) == {"registry", "proxy.http_port", "proxy.https_port"}


def test_ssh_open_to_everyone_only_when_said_and_then_with_a_warning(cloud, declare):
    env = declare(aws={"ssh_cidr": "0.0.0.0/0"})
    (record,) = Aws(env).ensure_hosts()
    assert (22, "0.0.0.0/0") in rules(cloud, record.provider["security_group"])
    assert "warning: aws.ssh_cidr 0.0.0.0/0 lets the whole internet try SSH on the hosts; narrow it" in output(env)
    narrowed = declare()
    Aws(narrowed).ensure_hosts()
    assert "warning" not in output(narrowed)
    assert rules(cloud, record.provider["security_group"]) == {(22, fake_aws.SSH_CIDR), (80, "0.0.0.0/0"),
                                                              (443, "0.0.0.0/0")}


def test_a_stopped_instance_is_started(cloud, declare):
    (record,) = Aws(declare()).ensure_hosts()
    instance_id = record.provider["instance_id"]
    cloud.stop_instances(InstanceIds=[instance_id])
    env = declare()
    Aws(env).ensure_hosts()
    assert f"started {instance_id} (was stopped) at " in output(env)
    (instance,) = fake_aws.tagged(cloud, ENV)["instances"]
    assert instance["State"]["Name"] == "running"


def test_more_hosts_add_instances_fewer_ask_before_terminating(cloud, declare):
    (web1,) = Aws(declare()).ensure_hosts()
    env = declare({**WEB1, "web2": FRONT})
    records = Aws(env).ensure_hosts()
    assert records[0] == web1
    assert [line.split()[:3] for line in output(env).splitlines()[2:]] == [
        ["web1", "aws", "ok"], ["web2", "aws", "changed"],
    ]
    web2 = records[1].provider["instance_id"]

    env = declare()
    asked = rf"^terminate {web2} \(web2, no longer declared\)\? needs confirmation; pass --yes"
    with pytest.raises(Aborted, match=asked):
        Aws(env).ensure_hosts()
    assert len(fake_aws.tagged(cloud, ENV)["instances"]) == 2

    assert Aws(env).ensure_hosts(yes=True) == [web1]
    assert f"web2       aws          changed   terminated {web2} (web2, no longer declared)" in output(env)
    assert [i["InstanceId"] for i in fake_aws.tagged(cloud, ENV)["instances"]] == [web1.provider["instance_id"]]


def test_a_second_instance_of_a_host_is_terminated(cloud, declare):
    (web1,) = Aws(declare()).ensure_hosts()
    duplicate = cloud.run_instances(
        ImageId="ami-20250115a0000000", MinCount=1, MaxCount=1, InstanceType="t3.small",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "managed-by", "Value": "dockyard"}, {"Key": "dockyard:env", "Value": ENV},
            {"Key": "dockyard:host", "Value": "web1"},
        ]}],
    )["Instances"][0]["InstanceId"]
    cloud.stop_instances(InstanceIds=[duplicate])  # the running one is kept
    env = declare()
    assert Aws(env).ensure_hosts(yes=True) == [web1]
    assert f"terminated {duplicate} (a second instance of web1)" in output(env)


# -- removing -------------------------------------------------------------------------------------------------
def test_teardown_leaves_nothing_tagged(cloud, declare):
    env = declare({**WEB1, "web2": FRONT})
    web1, web2 = Aws(env).ensure_hosts()
    env = declare({**WEB1, "web2": FRONT})
    Aws(env).teardown(yes=True)
    assert fake_aws.tagged(cloud, ENV) == {"instances": [], "security_groups": [], "key_pairs": []}
    assert output(env).splitlines() == [
        f"web1       aws          changed   terminated {web1.provider['instance_id']} in us-east-1",
        f"web2       aws          changed   terminated {web2.provider['instance_id']} in us-east-1",
        f"-          aws          changed   deleted security group dockyard-t-aws ({web1.provider['security_group']})",
        "-          aws          changed   deleted key pair dockyard-t-aws",
    ]


def test_teardown_works_when_half_is_already_gone(cloud, declare):
    env = declare({**WEB1, "web2": FRONT})
    _, web2 = Aws(env).ensure_hosts()
    cloud.terminate_instances(InstanceIds=[web2.provider["instance_id"]])
    cloud.delete_key_pair(KeyName="dockyard-t-aws")
    env.state.clear()  # tags, not local state, say what is the environment's

    Aws(env).teardown(yes=True)
    assert fake_aws.tagged(cloud, ENV) == {"instances": [], "security_groups": [], "key_pairs": []}
    env = declare()
    Aws(env).teardown(yes=True)
    assert output(env) == f"-          aws          ok        nothing tagged dockyard:env={ENV} in us-east-1\n"


def test_teardown_also_clears_the_region_the_hosts_were_recorded_in(cloud, declare):
    (record,) = Aws(declare()).ensure_hosts()
    env = declare(aws={"region": "eu-west-1"})  # changed after provisioning
    Aws(env).teardown(yes=True)
    assert fake_aws.tagged(cloud, ENV) == {"instances": [], "security_groups": [], "key_pairs": []}
    lines = output(env)
    assert f"-          aws          ok        nothing tagged dockyard:env={ENV} in eu-west-1" in lines
    assert f"terminated {record.provider['instance_id']} in us-east-1" in lines


def test_a_key_pair_named_in_the_inventory_is_used_and_kept(cloud, declare, project):
    key = Ed25519PrivateKey.generate()
    key_file = project.root / "keys" / "mine"
    key_file.parent.mkdir()
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    cloud.import_key_pair(KeyName="mine", PublicKeyMaterial=public)

    env = declare(aws={"key_name": "mine"}, ssh={"key": "keys/mine"})
    Aws(env).ensure_hosts()
    (instance,) = fake_aws.tagged(cloud, ENV)["instances"]
    assert instance["KeyName"] == "mine"
    assert fake_aws.tagged(cloud, ENV)["key_pairs"] == []
    Aws(env).teardown(yes=True)
    assert [k["KeyName"] for k in cloud.describe_key_pairs()["KeyPairs"]] == ["mine"]


def test_a_key_pair_that_does_not_match_the_key_is_refused(cloud, declare):
    env = declare()
    other = Ed25519PrivateKey.generate().public_key()
    cloud.import_key_pair(KeyName="dockyard-t-aws", PublicKeyMaterial=other.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    with pytest.raises(ProviderError, match=r"^key pair dockyard-t-aws in us-east-1 does not match .*id_ed25519; "
                                            r"the environment's key changed"):
        Aws(env).ensure_hosts()


def test_hosts_go_into_the_subnet_named_in_the_inventory(cloud, declare):
    vpc = cloud.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = cloud.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    (record,) = Aws(declare(aws={"vpc_id": vpc, "subnet_id": subnet})).ensure_hosts()
    (instance,) = fake_aws.tagged(cloud, ENV)["instances"]
    assert (instance["SubnetId"], instance["VpcId"]) == (subnet, vpc)
    assert instance["PublicIpAddress"] == record.address  # asked for, whatever the subnet's default
    (group,) = fake_aws.tagged(cloud, ENV)["security_groups"]
    assert group["VpcId"] == vpc

    default_vpc = cloud.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    env = declare(aws={"vpc_id": default_vpc, "subnet_id": subnet})
    with pytest.raises(ProviderError, match=rf"^subnet {subnet} is in {vpc}, not in aws.vpc_id {default_vpc}; fix"):
        Aws(env).ensure_hosts()


# -- failing --------------------------------------------------------------------------------------------------
def test_a_refused_launch_removes_what_the_run_created(cloud, declare):
    env = declare(aws={"instance_type": "t3.bogus"})
    with pytest.raises(ProviderError) as refused:
        Aws(env).ensure_hosts()
    assert str(refused.value) == (
        "instance type 't3.bogus' cannot be launched in us-east-1 (InvalidInstanceType.NotFound: The instance type "
        "'t3.bogus' does not exist); fix aws.instance_type (or aws.subnet_id, for another zone) in "
        f"{env.inventory.path}"
    )
    assert fake_aws.tagged(cloud, ENV) == {"instances": [], "security_groups": [], "key_pairs": []}
    assert "deleted security group sg-" in output(env) and "deleted key pair dockyard-t-aws" in output(env)
    assert env.state.hosts() == []


def test_a_refused_launch_keeps_what_earlier_runs_made(cloud, declare):
    (web1,) = Aws(declare()).ensure_hosts()
    env = declare({**WEB1, "web2": FRONT}, aws={"instance_type": "t3.bogus"})
    with pytest.raises(ProviderError, match="instance type 't3.bogus' cannot be launched"):
        Aws(env).ensure_hosts()
    found = fake_aws.tagged(cloud, ENV)
    assert [i["InstanceId"] for i in found["instances"]] == [web1.provider["instance_id"]]
    assert len(found["security_groups"]) == len(found["key_pairs"]) == 1


def test_an_unknown_image_stops_the_run_before_anything_is_made(cloud, declare):
    env = declare(aws={"ami": "ami-0000000000000dead"})
    with pytest.raises(ProviderError) as refused:
        Aws(env).ensure_hosts()
    assert str(refused.value) == (
        "image not found in us-east-1 (InvalidAMIID.NotFound: The image id '[ami-0000000000000dead]' does not exist); "
        f"fix aws.ami in {env.inventory.path} to an image of us-east-1"
    )
    assert fake_aws.tagged(cloud, ENV) == {"instances": [], "security_groups": [], "key_pairs": []}


def test_no_credentials(cloud, declare, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ProviderError, match=r"^no AWS credentials found; run `aws configure` or `aws sso login`"):
        Aws(declare()).ensure_hosts()


def test_credentials_aws_does_not_accept(cloud, declare, endpoint):
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        with pytest.raises(ProviderError, match=r"^AWS refused the credentials \(AuthFailure: AWS was not able to "
                                                r"validate the provided access credentials\); refresh them"):
            Aws(declare()).ensure_hosts()
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


def test_a_misspelt_region_is_named_with_the_likely_one(cloud, declare):
    env = declare(aws={"region": "eu-wset-1"})
    with pytest.raises(ProviderError) as refused:
        Aws(env).ensure_hosts()
    assert str(refused.value) == (
        f"AWS region 'eu-wset-1' does not exist (did you mean eu-west-1?); fix aws.region in {env.inventory.path}"
    )


def test_no_region_anywhere(cloud, declare):
    with pytest.raises(ProviderError, match=r"^no AWS region chosen; set aws.region in .*t-aws.yml, AWS_REGION"):
        Aws(declare(aws={"region": None})).ensure_hosts()


def test_an_unknown_profile(cloud, declare):
    env = declare(aws={"profile": "nope"})
    with pytest.raises(ProviderError) as refused:
        Aws(env).ensure_hosts()
    assert str(refused.value) == (
        f"AWS profile 'nope' is not in your AWS config files; fix aws.profile in {env.inventory.path}, or create it "
        f"with `aws configure --profile nope`"
    )


def test_region_and_endpoint_come_from_the_standard_aws_configuration(cloud, declare, endpoint, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    fake_aws.publish_ubuntu("20250115", region="eu-west-1")
    (record,) = Aws(declare(aws={"region": None, "endpoint_url": None})).ensure_hosts()
    assert record.provider["region"] == "eu-west-1"
    assert len(fake_aws.tagged(fake_aws.ec2(endpoint, "eu-west-1"), ENV)["instances"]) == 1


@pytest.mark.parametrize(("code", "message", "expected"), [
    ("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit of 5 allows",
     "EC2 quota reached in us-east-1 (VcpuLimitExceeded: You have requested more vCPU capacity than your current "
     "vCPU limit of 5 allows); terminate instances you no longer need, or request a higher limit in the Service "
     "Quotas console"),
    ("InstanceLimitExceeded", "Your quota allows for 0 more running instance(s)",
     "EC2 quota reached in us-east-1 (InstanceLimitExceeded: Your quota allows for 0 more running instance(s));"),
    ("ExpiredToken", "The security token included in the request is expired",
     "AWS refused the credentials (ExpiredToken: The security token included in the request is expired); refresh "
     "them (`aws sso login`, `aws configure`) or choose another profile with AWS_PROFILE or aws.profile in "),
    ("UnrecognizedClientException", "The security token included in the request is invalid",
     "AWS refused the credentials (UnrecognizedClientException: "),
    ("InvalidParameterValue", "Invalid value 't3.smal' for InstanceType.",
     "instance type 't3.small' cannot be launched in us-east-1 (InvalidParameterValue: Invalid value 't3.smal' for "
     "InstanceType); fix aws.instance_type"),
    ("Unsupported", "Your requested instance type (t3.small) is not supported in your requested Availability Zone",
     "instance type 't3.small' cannot be launched in us-east-1 (Unsupported: "),
    ("InvalidAMIID.Malformed", 'Invalid id: "ami-x"', "image not found in us-east-1 (InvalidAMIID.Malformed: "),
    ("UnauthorizedOperation", "You are not authorized to perform this operation",
     "AWS denied RunInstances in us-east-1; give your AWS identity the EC2 permissions dockyard uses"),
])
def test_what_aws_says_becomes_one_line_with_its_fix(declare, endpoint, code, message, expected):
    error = ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")
    line = str(refusal(error, declare().inventory, "us-east-1"))
    assert line.startswith(expected) and "\n" not in line


def test_an_unreachable_endpoint_is_named(declare):
    error = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")
    line = str(refusal(error, declare().inventory, "us-east-1"))
    assert line.startswith("cannot reach AWS at http://127.0.0.1:1/; check aws.endpoint_url in ")


# -- images ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_the_current_ubuntu_is_named_by_canonical_in_ssm(cloud, declare, arch):
    fake_aws.publish_ubuntu("20250301", arch=arch, current=False)  # newer, but not the one SSM names
    current = fake_aws.publish_ubuntu("20250201", arch=arch)
    env = declare(aws={"arch": arch, "instance_type": "t4g.small" if arch == "arm64" else "t3.small"})
    assert Aws(env).find_image().id == current


def test_without_the_ssm_parameter_the_newest_canonical_image_is_used(cloud, declare, endpoint):
    newest = fake_aws.publish_ubuntu("20250301", arch="arm64", current=False)
    fake_aws.publish_ubuntu("20250201", arch="arm64", current=False)
    env = declare(aws={"arch": "arm64"})
    assert Aws(env).find_image() == Image(
        newest, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20250301", "/dev/sda1"
    )


def test_no_ubuntu_image_at_all_asks_for_aws_ami(cloud, declare):
    env = declare(aws={"arch": "arm64"})
    with pytest.raises(ProviderError, match=r"^no Ubuntu 24.04 arm64 image found in us-east-1; set aws.ami in "):
        Aws(env).find_image()


def test_an_explicit_ami_wins(cloud, declare):
    chosen = fake_aws.publish_ubuntu("20240601", current=False)
    env = declare(aws={"ami": chosen})
    Aws(env).ensure_hosts()
    (instance,) = fake_aws.tagged(cloud, ENV)["instances"]
    assert instance["ImageId"] == chosen


# -- reading state and waiting --------------------------------------------------------------------------------
def test_hosts_come_from_state_and_say_when_provision_is_due(cloud, declare):
    with pytest.raises(ProviderError, match=r"^aws host web1 is not provisioned; run `invoke provision`$"):
        Aws(declare()).hosts()
    Aws(declare()).ensure_hosts()
    changed = r"^aws host web1: its roles, open ports or cluster changed since it was provisioned; run `invoke pro"
    with pytest.raises(ProviderError, match=changed):
        Aws(declare({"web1": {"roles": ["registry"]}})).hosts()
    swarm = {"web1": {"roles": ["manager", *WEB1["web1"]["roles"]]}}
    with pytest.raises(ProviderError, match=changed):  # its ports are not open yet
        Aws(declare(swarm, cluster="swarm")).hosts()
    Aws(declare(swarm, cluster="swarm")).ensure_hosts()
    assert Aws(declare(swarm, cluster="swarm")).hosts()[0].provider["cluster"] == "swarm"


def test_waiting_shows_what_it_waits_for_when_that_changes(declare, monkeypatch):
    monkeypatch.setattr(provider, "POLL_SECONDS", 0)
    answers = iter(["web1 pending", "web1 pending", "web1 running, status checks initializing/ok", None])
    env = declare()
    assert Aws(env)._poll(60, lambda: next(answers)) is None
    assert output(env) == (
        "           waiting for web1 pending (0s)\n"
        "           waiting for web1 running, status checks initializing/ok (0s)\n"
    )
    assert Aws(env)._poll(0, lambda: "web1 pending") == "web1 pending"



def test_a_rule_from_the_group_itself_and_not_tcp_goes_through_ec2_and_back(cloud, declare):
    (record,) = Aws(declare()).ensure_hosts()
    group = record.provider["security_group"]
    overlay = Rule("udp", 4789, 4789, Group(group), "swarm overlay network (VXLAN)")
    ec2 = Aws(declare()).cloud
    ec2.change_rules(group, RuleChanges(add=(overlay,)))
    assert overlay in ec2.inbound_rules(group).values()
    # What a rule says is read back too (moto keeps it only for network sources; AWS for all of them).
    described = {str(rule): rule.description for rule in ec2.inbound_rules(group).values()}
    assert described[f"22 to {fake_aws.SSH_CIDR}"] == "SSH for dockyard, from aws.ssh_cidr"
    env = declare()  # not declared: the next run revokes it
    Aws(env).ensure_hosts()
    assert f"closed udp 4789 to {group}" in output(env)
    assert overlay not in ec2.inbound_rules(group).values()


def test_each_kind_of_source_becomes_its_own_part_of_an_ec2_permission():
    sources = [Network.of("10.0.0.0/8"), Network.of("::/0"), Group("sg-0abc"), PrefixList("pl-0123")]
    assert [permission(Rule("udp", 4789, 4789, source)) for source in sources] == [
        {"IpProtocol": "udp", "FromPort": 4789, "ToPort": 4789, **source}
        for source in (
            {"IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, {"Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
            {"UserIdGroupPairs": [{"GroupId": "sg-0abc"}]}, {"PrefixListIds": [{"PrefixListId": "pl-0123"}]},
        )
    ]
    assert permission(Rule("tcp", 2377, 2377, Group("sg-0abc"), "swarm cluster management")) == {
        "IpProtocol": "tcp", "FromPort": 2377, "ToPort": 2377,
        "UserIdGroupPairs": [{"GroupId": "sg-0abc", "Description": "swarm cluster management"}],
    }
