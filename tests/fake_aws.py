"""A fake AWS for the tests: moto in server mode on 127.0.0.1, reached by boto3 over HTTP like the real one.

Nothing in boto3 is patched. What moto lacks is put into it, as AWS itself would have it:
- Canonical's Ubuntu 24.04 images and the public SSM parameter naming the current one (`publish_ubuntu`): moto
  has neither, and no customer API can publish an image as Canonical's or write an /aws/service parameter, so
  they go straight into moto's backend (the server runs in the test process);
- EC2's refusal of unknown instance types, which moto applies only when its setting says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import boto3
import moto.settings
import pytest
import requests
import yaml
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.server import ThreadedMotoServer
from moto.ssm.models import Parameter, ssm_backends

from dockyard.providers.aws.ec2 import CANONICAL, UBUNTU_PARAMETER

REGION = "us-east-1"
SSH_CIDR = "203.0.113.7/32"


@contextmanager
def moto_server() -> Iterator[str]:
    """Yields the endpoint URL of a moto server on a free local port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def fresh_cloud(endpoint: str, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """An empty moto, fake credentials, and no trace of the machine's own AWS configuration."""
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setattr(moto.settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_SSM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups for credentials


def publish_ubuntu(serial: str, arch: str = "amd64", current: bool = True, region: str = REGION) -> str:
    """Add a Canonical Ubuntu 24.04 image built on `serial` (YYYYMMDD); `current` also points SSM at it."""
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    ami = f"ami-{serial}{'a' if arch == 'amd64' else 'b'}0000000"
    backend.amis[ami] = Ami(
        backend, ami,
        name=f"ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-{serial}",
        owner_id=CANONICAL, public=True, architecture="x86_64" if arch == "amd64" else "arm64",
        virtualization_type="hvm", root_device_type="ebs", root_device_name="/dev/sda1",
        creation_date=datetime.strptime(serial, "%Y%m%d").replace(tzinfo=UTC),
    )
    if current:
        name = UBUNTU_PARAMETER.format(arch=arch)
        parameters = ssm_backends[DEFAULT_ACCOUNT_ID][region]._parameters[name]
        parameters.append(Parameter(
            account_id=DEFAULT_ACCOUNT_ID, name=name, value=ami, parameter_type="String", description=None,
            allowed_pattern=None, keyid=None, last_modified_date=datetime.now(UTC), version=len(parameters) + 1,
            data_type="aws:ec2:image",
        ))
    return ami


def ec2(endpoint: str, region: str = REGION):
    """A client for the test's own look at the fake cloud."""
    return boto3.Session(region_name=region).client("ec2", endpoint_url=endpoint)


def aws_inventory(project, env: str, hosts: dict, **sections) -> None:
    """Write an aws environment into `project`: `aws` settings go over the defaults, a None drops one."""
    settings = {"region": REGION, "ssh_cidr": SSH_CIDR, **sections.pop("aws", {})}
    aws = {key: value for key, value in settings.items() if value is not None}
    project.inventory(env, yaml.safe_dump({"provider": "aws", "aws": aws, "hosts": hosts, **sections}, sort_keys=False))


def tagged(client, env: str) -> dict[str, list]:
    """Everything in the fake cloud carrying the environment's dockyard tags, instances not yet terminated."""
    filters = [{"Name": "tag:managed-by", "Values": ["dockyard"]}, {"Name": "tag:dockyard:env", "Values": [env]}]
    reservations = client.describe_instances(Filters=[
        *filters, {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ])["Reservations"]
    return {
        "instances": [i for r in reservations for i in r["Instances"]],
        "security_groups": client.describe_security_groups(Filters=filters)["SecurityGroups"],
        "key_pairs": client.describe_key_pairs(Filters=filters)["KeyPairs"],
    }
