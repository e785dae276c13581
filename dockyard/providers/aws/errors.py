"""What AWS refuses, as one ProviderError line that names the cause and the fix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from dockyard.errors import ProviderError
from dockyard.inventory import Inventory

AWS_ERRORS = (BotoCoreError, ClientError)  # whatever a boto3 call raises
CREDENTIAL_CODES = {
    "AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
    "RequestExpired", "SignatureDoesNotMatch",
}
QUOTA_CODES = {"InstanceLimitExceeded", "VcpuLimitExceeded"}


@contextmanager
def translated(inv: Inventory, region: str) -> Iterator[None]:
    """botocore errors leave as one ProviderError line."""
    try:
        yield
    except AWS_ERRORS as e:
        raise refusal(e, inv, region) from None


def refusal(error: BotoCoreError | ClientError, inv: Inventory, region: str) -> ProviderError:
    """What AWS said, and what to change."""
    aws = inv.aws
    where = inv.path
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
    code = error_code(error)
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


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")
