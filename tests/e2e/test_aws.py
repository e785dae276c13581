"""provider: aws end to end: `invoke provision` against moto, then Docker installed over SSH on the host.

How the fake cloud gets a machine: moto's instances have nothing behind them, so the test first creates a
sandbox host under a second environment (t-aws-box) in the same test project, then has moto hand out that
container's address on its Docker bridge network as the public IP of every instance it launches (moto draws
public IPs from one function, `random_public_ip`, replaced here in the moto server, which runs in the test
process). The aws environment names the sandbox environment's key as `ssh.key`, so the key pair it imports is
the one the sandbox host accepts. The rest is the real path: boto3 over HTTP, the wait for running and status
checks, the wait for SSH on port 22 with the host key pinned, and `docker.install` through the recorded state.
"""

import pytest
from moto.ec2.models import elastic_network_interfaces

from tests import fake_aws

BOX = "t-aws-box"
ENV = "t-aws"
SWARM = "t-aws-swarm"
# The ports a swarm's hosts open to each other: (protocol, port).
SWARM_PORTS = {("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789), ("tcp", 5443)}


@pytest.fixture(scope="module")
def cloud(module_project, tmp_path_factory):
    """The project with a sandbox host posing as the EC2 instance; yields a client of the fake cloud."""
    with fake_aws.moto_server() as endpoint, pytest.MonkeyPatch.context() as monkeypatch:
        fake_aws.fresh_cloud(endpoint, monkeypatch, tmp_path_factory.mktemp("aws-home"))
        fake_aws.publish_ubuntu("20250115")
        module_project.inventory(BOX, "provider: sandbox\nhosts: {web1: {roles: []}}\n")
        try:
            module_project.invoke(BOX, "provision")
            (machine,) = module_project.env(BOX).hosts()
            monkeypatch.setattr(elastic_network_interfaces, "random_public_ip", lambda: machine.provider["ip"])
            fake_aws.aws_inventory(
                module_project, ENV, {"web1": {"roles": ["proxy", "app"]}},
                aws={"endpoint_url": endpoint}, ssh={"key": str(module_project.state_dir / BOX / "id_ed25519")},
            )
            yield fake_aws.ec2(endpoint)
        finally:
            module_project.invoke(SWARM, "teardown", "--yes", check=False)
            module_project.invoke(ENV, "teardown", "--yes", check=False)
            module_project.invoke(BOX, "teardown", "--yes", check=False)


@pytest.fixture
def project(module_project, cloud):
    return module_project


def test_provision_launches_an_instance_and_waits_until_ssh_lets_us_in(project, cloud):
    result = project.invoke(ENV, "provision")
    (instance,) = fake_aws.tagged(cloud, ENV)["instances"]
    address = instance["PublicIpAddress"]
    assert f"launched {instance['InstanceId']} (t3.small, ami-20250115a0000000) at {address}" in result.stdout
    assert "imported the public key of " in result.stdout and "security group dockyard-t-aws (sg-" in result.stdout
    assert f"ubuntu@{address}" in result.stdout
    assert (project.state_dir / ENV / "known_hosts").read_text().startswith("web1 ssh-ed25519 ")
    (record,) = project.env(ENV).hosts()
    assert record.endpoints == {"proxy.http_port": f"{address}:80", "proxy.https_port": f"{address}:443"}


def test_docker_install_reaches_the_recorded_host(project):
    result = project.invoke(ENV, "docker.install")
    assert "web1       docker       changed" in result.stdout
    env = project.env(ENV)
    (record,) = env.hosts()
    with env.connect(record) as conn:
        info = conn.connection.run("docker info --format '{{.ServerVersion}}'", hide=True, in_stream=False)
    assert info.stdout.strip()


def test_a_second_provision_changes_nothing(project):
    result = project.invoke(ENV, "provision")
    assert "web1       aws          ok" in result.stdout
    assert "no changes: every host exists and runs" in result.stdout


def test_teardown_leaves_nothing_in_the_cloud(project, cloud):
    result = project.invoke(ENV, "teardown", "--yes")
    assert "terminated i-" in result.stdout and "deleted key pair dockyard-t-aws" in result.stdout
    assert fake_aws.tagged(cloud, ENV) == {"instances": [], "security_groups": [], "key_pairs": []}
    assert not (project.state_dir / ENV).exists()


def test_a_swarm_opens_its_ports_between_its_hosts_only_and_leaves_nothing(project, cloud):
    """Three instances (all of them the one sandbox host): the group lets its own members, and no network, reach
    each other on the swarm's ports; each host's record gives its private address, which the swarm advertises."""
    fake_aws.aws_inventory(
        project, SWARM,
        {"web1": {"roles": ["manager", "registry", "proxy", "app"]}, "web2": {"roles": []}, "web3": {"roles": []}},
        cluster="swarm", aws={"endpoint_url": cloud.meta.endpoint_url},
        ssh={"key": str(project.state_dir / BOX / "id_ed25519")},
    )
    project.invoke(SWARM, "provision")
    (group,) = fake_aws.tagged(cloud, SWARM)["security_groups"]
    swarm = {
        (p["IpProtocol"], p["FromPort"]): p for p in group["IpPermissions"] if (p["IpProtocol"], p["FromPort"]) in
        SWARM_PORTS
    }
    assert set(swarm) == SWARM_PORTS
    for permission in swarm.values():
        assert permission["ToPort"] == permission["FromPort"]
        assert [pair["GroupId"] for pair in permission["UserIdGroupPairs"]] == [group["GroupId"]]
        assert permission["IpRanges"] == permission["Ipv6Ranges"] == permission["PrefixListIds"] == []
        assert permission["UserIdGroupPairs"][0]["Description"].startswith(("swarm ", "cluster registry "))

    instances = {host_name(i): i for i in fake_aws.tagged(cloud, SWARM)["instances"]}
    records = project.env(SWARM).hosts()
    assert {r.name: r.private_address for r in records} == {
        name: instance["PrivateIpAddress"] for name, instance in instances.items()
    }
    assert len({r.private_address for r in records}) == 3
    assert all(r.private_address != r.address for r in records)

    rule_ids = inbound_rule_ids(cloud, group["GroupId"])
    again = project.invoke(SWARM, "provision")
    assert f"aws          ok        security group dockyard-{SWARM} ({group['GroupId']}) opens " in again.stdout
    assert "no changes: every host exists and runs" in again.stdout
    assert inbound_rule_ids(cloud, group["GroupId"]) == rule_ids

    project.invoke(SWARM, "teardown", "--yes")
    assert fake_aws.tagged(cloud, SWARM) == {"instances": [], "security_groups": [], "key_pairs": []}


def inbound_rule_ids(client, group_id: str) -> set[str]:
    found = client.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    return {r["SecurityGroupRuleId"] for r in found["SecurityGroupRules"] if not r["IsEgress"]}


def host_name(instance: dict) -> str:
    return next(tag["Value"] for tag in instance["Tags"] if tag["Key"] == "dockyard:host")
