"""The app's secrets, read from their sources on the operator's machine before any host is touched.

The sources (`services.app.secrets` in the inventory, see `inventory.Secret`):
- `generate`: a long random value, made on first use and kept in the state folder (mode 0600);
- `env:NAME`: the operator's environment variable NAME;
- `file:PATH`: a file, relative to the project; a trailing line break is dropped, as `$(cat PATH)` does;
- `ssm:/path`: an SSM parameter, decrypted; `secretsmanager:name`: a Secrets Manager secret's string. Both are read
  through boto3 with the environment's AWS settings, and boto3 is imported only when one of them is used.

Every value is handed to the Reporter's `hide()` as soon as it is read, so no output line can show it.
(Named app_secrets: `secrets` is the standard library's.)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dockyard.app_settings import CONTAINER_SECRETS
from dockyard.errors import DockyardError, SecretError
from dockyard.inventory import Secret, resolve_path

if TYPE_CHECKING:
    from dockyard.environment import Env

# Generated app secrets share the state's secrets file with dockyard's own: a prefix keeps the names apart.
GENERATED_PREFIX = "app."
LOCAL_SOURCES = ("generate", "env", "file")
# What an environment variable cannot carry: `docker run --env-file` reads one line per variable.
NOT_IN_ENV = ("\n", "\r", "\0")
MAX_SAID = 300  # characters of an AWS error message repeated in ours


def resolve(env: Env) -> dict[str, str]:
    """Every secret of the app, name -> value. Local sources are read first, so that a missing one stops the
    run before AWS is asked for anything."""
    secrets = env.inventory.services.app.secrets
    aws: AwsSecrets | None = None
    values = {}
    for name in sorted(secrets, key=lambda n: (secrets[n].kind not in LOCAL_SOURCES, n)):
        secret = secrets[name]
        if secret.kind in LOCAL_SOURCES:
            value = _read_local(env, name, secret)
        else:
            aws = aws or AwsSecrets(env, name, secret)
            value = aws.read(name, secret)
        env.out.hide(value)
        if not value:
            raise _failure(env, name, secret, "its value is empty; give it one")
        if secret.env and any(c in value for c in NOT_IN_ENV):
            raise SecretError(
                f"secret {name} ({secret.source}): holds a line break or NUL, which an environment variable cannot; "
                f"drop `env: true` for it in {env.inventory.path} and read {CONTAINER_SECRETS}/{name} instead"
            )
        values[name] = value
    return values


def _read_local(env: Env, name: str, secret: Secret) -> str:
    match secret.kind:
        case "generate":
            return env.state.secret(GENERATED_PREFIX + name)
        case "env":
            return _read_env(env, name, secret)
        case "file":
            return _read_file(env, name, secret)
    raise AssertionError(f"{secret.kind} is not a local source")


def _read_env(env: Env, name: str, secret: Secret) -> str:
    if secret.ref not in os.environ:
        raise _failure(env, name, secret, f"{secret.ref} is not set in your environment; export it")
    return os.environ[secret.ref]


def _read_file(env: Env, name: str, secret: Secret) -> str:
    path = resolve_path(secret.ref, env.inventory.path)
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except FileNotFoundError:
        raise _failure(env, name, secret, f"{path} does not exist; create it") from None
    except UnicodeDecodeError:
        raise _failure(env, name, secret, f"{path} is not UTF-8 text; store the secret as text") from None
    except OSError as e:
        raise _failure(env, name, secret, f"cannot read {path} ({e.strerror}); make it a file you can read") from None


def _failure(env: Env, name: str, secret: Secret, problem: str) -> SecretError:
    """`problem` says what is wrong and the fix on the source's side; the other fix is the inventory."""
    return SecretError(
        f"secret {name} ({secret.source}): {problem}, or change services.app.secrets.{name} in {env.inventory.path}"
    )


class AwsSecrets:
    """SSM parameters and Secrets Manager secrets, read through one session with the environment's AWS settings."""

    def __init__(self, env: Env, name: str, secret: Secret):
        from dockyard.providers.aws import ec2  # boto3 comes with it, only when an AWS source is used

        self.env, self.ec2 = env, ec2
        try:
            self.session = ec2.session(env.inventory)
        except DockyardError as e:
            raise SecretError(f"secret {name} ({secret.source}): {e}") from None
        self.region = self.session.region_name
        self.clients: dict[str, object] = {}

    def client(self, service: str):
        if service not in self.clients:
            self.clients[service] = self.ec2.client(self.env.inventory, self.session, service)
        return self.clients[service]

    def read(self, name: str, secret: Secret) -> str:
        from botocore import exceptions

        try:
            if secret.kind == "ssm":
                found = self.client("ssm").get_parameter(Name=secret.ref, WithDecryption=True)
                return found["Parameter"]["Value"]
            found = self.client("secretsmanager").get_secret_value(SecretId=secret.ref)
        except (exceptions.BotoCoreError, exceptions.ClientError) as e:
            raise self.refusal(e, name, secret) from None
        if "SecretString" not in found:
            raise _failure(self.env, name, secret, "holds binary data (SecretBinary); store the secret as a string")
        return found["SecretString"]

    def refusal(self, error: Exception, name: str, secret: Secret) -> SecretError:
        """What AWS said about one secret, and what to change."""
        from botocore import exceptions

        from dockyard.providers.aws.errors import CREDENTIAL_CODES

        where = self.env.inventory.path
        said = f"secret {name} ({secret.source})"
        other_identity = f"or choose another AWS identity with AWS_PROFILE or aws.profile in {where}"
        if isinstance(error, (exceptions.NoCredentialsError, exceptions.PartialCredentialsError)):
            return SecretError(
                f"{said}: no AWS credentials found; run `aws configure` or `aws sso login`, choose a profile with "
                f"AWS_PROFILE or aws.profile in {where}, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(error, exceptions.EndpointConnectionError):
            fix = f"check aws.endpoint_url in {where}" if self.env.inventory.aws.endpoint_url else "check the network"
            return SecretError(f"{said}: cannot reach AWS at {error.kwargs['endpoint_url']}; {fix}")
        if not isinstance(error, exceptions.ClientError):
            return SecretError(f"{said}: reading it from AWS failed ({error}); check the network, then rerun")
        code = error.response["Error"].get("Code", "")
        # one line, however the answer is shaped (a proxy's error page, or moto's XML where AWS sends JSON)
        aws_said = " ".join(f"{code}: {error.response['Error'].get('Message', '').rstrip('.')}".split())
        if len(aws_said) > MAX_SAID:
            aws_said = aws_said[:MAX_SAID] + "..."
        if code in CREDENTIAL_CODES:
            return SecretError(
                f"{said}: AWS refused the credentials ({aws_said}); refresh them (`aws sso login`, `aws configure`) "
                f"{other_identity}"
            )
        action = "ssm:GetParameter" if secret.kind == "ssm" else "secretsmanager:GetSecretValue"
        if code.startswith("AccessDenied"):
            return SecretError(
                f"{said}: AWS denied {action} in {self.region} ({aws_said}); allow {action} on {secret.ref} "
                f"(and kms:Decrypt on its key) to that identity, {other_identity}"
            )
        if code in ("ParameterNotFound", "ResourceNotFoundException"):
            create = (
                f"aws ssm put-parameter --type SecureString --name {secret.ref} --value ..." if secret.kind == "ssm"
                else f"aws secretsmanager create-secret --name {secret.ref} --secret-string ..."
            )
            return _failure(self.env, name, secret, f"it does not exist in {self.region}; create it (`{create}`)")
        return _failure(self.env, name, secret, f"AWS refused {action} ({aws_said}); fix it in AWS")

