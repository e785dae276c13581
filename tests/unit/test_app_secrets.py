"""The app's secrets read from every source, against moto in server mode for SSM and Secrets Manager.

Each failure is one line naming the secret, its source and the fix; no value can reach the output.
"""

import json
import subprocess
import sys

import boto3
import pytest
import requests
import yaml
from botocore.exceptions import ClientError

from dockyard import app_secrets
from dockyard.errors import SecretError
from tests import fake_aws
from tests.conftest import REPO, output

ENV = "t-secrets"
ACCOUNT = "123456789012"  # moto's account


@pytest.fixture(scope="module")
def endpoint():
    with fake_aws.moto_server() as url:
        yield url


@pytest.fixture
def cloud(endpoint, monkeypatch, tmp_path):
    fake_aws.fresh_cloud(endpoint, monkeypatch, tmp_path)
    return endpoint


@pytest.fixture
def declare(project, cloud):
    """Write an environment whose app has `secrets`, reaching the fake cloud, and open it."""

    def write(secrets: dict, aws: dict | None = None):
        settings = {"provider": "sandbox", "hosts": {"web1": {}}, "services": {"app": {"secrets": secrets}},
                    "aws": {"region": fake_aws.REGION, "endpoint_url": cloud, **(aws or {})}}
        project.inventory(ENV, yaml.safe_dump(settings))
        return project.env(ENV)

    return write


def client(endpoint: str, service: str, **keys):
    return boto3.Session(region_name=fake_aws.REGION, **keys).client(service, endpoint_url=endpoint)


def failure(env) -> str:
    with pytest.raises(SecretError) as caught:
        app_secrets.resolve(env)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- every source ---------------------------------------------------------------------------------------------
def test_every_source_is_read_and_no_output_line_can_show_a_value(project, declare, cloud, monkeypatch):
    monkeypatch.setenv("ACME_API_TOKEN", "tok-from-the-environment")
    (project.root / "secrets").mkdir()
    (project.root / "secrets" / "tls.key").write_text("key-from-a-file\n")
    client(cloud, "ssm").put_parameter(Name="/acme/db-password", Value="pw-from-ssm", Type="SecureString")
    client(cloud, "secretsmanager").create_secret(Name="acme/stripe", SecretString="sk-from-secrets-manager")
    env = declare({
        "SECRET_KEY": "generate",
        "API_TOKEN": "env:ACME_API_TOKEN",
        "TLS_KEY": "file:secrets/tls.key",
        "DATABASE_PASSWORD": {"source": "ssm:/acme/db-password", "env": True},
        "STRIPE_KEY": "secretsmanager:acme/stripe",
    })

    values = app_secrets.resolve(env)

    generated = values.pop("SECRET_KEY")
    assert len(generated) >= 40
    assert values == {
        "API_TOKEN": "tok-from-the-environment",
        "TLS_KEY": "key-from-a-file",  # the file's trailing line break is not part of the secret
        "DATABASE_PASSWORD": "pw-from-ssm",
        "STRIPE_KEY": "sk-from-secrets-manager",
    }
    env.out.say(f"settings: {generated} {' '.join(values.values())}")
    assert output(env) == "settings: " + " ".join(["********"] * 5) + "\n"


def test_a_generated_secret_is_made_once_and_kept_in_the_state_folder_0600(project, declare):
    first = app_secrets.resolve(declare({"SECRET_KEY": "generate"}))["SECRET_KEY"]
    again = app_secrets.resolve(declare({"SECRET_KEY": "generate", "OTHER": "generate"}))

    assert again["SECRET_KEY"] == first
    assert again["OTHER"] != first
    stored = project.state_dir / ENV / "secrets.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert json.loads(stored.read_text())["app.SECRET_KEY"] == first


def test_aws_is_not_imported_when_no_secret_comes_from_it(project):
    project.inventory(ENV, "provider: sandbox\nhosts: {web1: {}}\nservices: {app: {secrets: {KEY: generate}}}\n")
    code = (
        "import sys, io\n"
        "from dockyard.environment import Env\nfrom dockyard.report import Reporter\nfrom dockyard import app_secrets\n"
        f"env = Env.open({str(project.root)!r}, {ENV!r}, 'inventory', 'state', Reporter(io.StringIO()))\n"
        "assert list(app_secrets.resolve(env)) == ['KEY']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


# -- local sources --------------------------------------------------------------------------------------------
def test_a_missing_environment_variable(declare, monkeypatch):
    monkeypatch.delenv("ACME_API_TOKEN", raising=False)
    env = declare({"API_TOKEN": "env:ACME_API_TOKEN"})
    assert failure(env) == (
        "secret API_TOKEN (env:ACME_API_TOKEN): ACME_API_TOKEN is not set in your environment; export it, or change "
        f"services.app.secrets.API_TOKEN in {env.inventory.path}"
    )


def test_an_empty_value_is_refused(declare, monkeypatch):
    monkeypatch.setenv("ACME_API_TOKEN", "")
    assert "secret API_TOKEN (env:ACME_API_TOKEN): its value is empty; give it one, or change" in failure(
        declare({"API_TOKEN": "env:ACME_API_TOKEN"}))


def test_local_sources_are_read_before_aws_is_asked(declare, monkeypatch):
    monkeypatch.delenv("ACME_API_TOKEN", raising=False)
    # the AWS source sorts first by name and its endpoint answers nothing: the environment variable still wins
    env = declare({"ADMIN_PASSWORD": "ssm:/acme/admin", "API_TOKEN": "env:ACME_API_TOKEN"},
                  aws={"endpoint_url": "http://127.0.0.1:9"})
    assert failure(env).startswith("secret API_TOKEN (env:ACME_API_TOKEN): ACME_API_TOKEN is not set")


def test_a_missing_file(project, declare):
    env = declare({"TLS_KEY": "file:secrets/tls.key"})
    assert failure(env) == (
        f"secret TLS_KEY (file:secrets/tls.key): {project.root}/secrets/tls.key does not exist; create it, or change "
        f"services.app.secrets.TLS_KEY in {env.inventory.path}"
    )


def test_a_file_that_cannot_be_read(project, declare):
    (project.root / "secrets").write_text("a file where a folder should be")
    message = failure(declare({"TLS_KEY": "file:secrets/tls.key"}))
    assert f"secret TLS_KEY (file:secrets/tls.key): cannot read {project.root}/secrets/tls.key (Not a directory)" in (
        message)


def test_a_file_that_is_not_text(project, declare):
    (project.root / "key.der").write_bytes(b"\x30\x82\xff\xfe")
    assert f"secret TLS_KEY (file:key.der): {project.root}/key.der is not UTF-8 text; store the secret as text" in (
        failure(declare({"TLS_KEY": "file:key.der"})))


def test_a_secret_with_a_line_break_cannot_be_an_environment_variable(project, declare):
    (project.root / "tls.key").write_text("-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
    env = declare({"TLS_KEY": {"source": "file:tls.key", "env": True}})
    assert failure(env) == (
        "secret TLS_KEY (file:tls.key): holds a line break or NUL, which an environment variable cannot; drop "
        f"`env: true` for it in {env.inventory.path} and read /run/secrets/TLS_KEY instead"
    )
    assert "BEGIN KEY" not in output(env)


# -- AWS sources ----------------------------------------------------------------------------------------------
def test_a_missing_ssm_parameter(declare):
    env = declare({"DATABASE_PASSWORD": "ssm:/acme/db-password"})
    assert failure(env) == (
        "secret DATABASE_PASSWORD (ssm:/acme/db-password): it does not exist in us-east-1; create it (`aws ssm "
        "put-parameter --type SecureString --name /acme/db-password --value ...`), or change "
        f"services.app.secrets.DATABASE_PASSWORD in {env.inventory.path}"
    )


def test_a_missing_secrets_manager_secret(declare):
    assert (
        "secret STRIPE_KEY (secretsmanager:acme/stripe): it does not exist in us-east-1; create it (`aws "
        "secretsmanager create-secret --name acme/stripe --secret-string ...`), or change"
    ) in failure(declare({"STRIPE_KEY": "secretsmanager:acme/stripe"}))


def test_a_binary_secrets_manager_secret_is_refused(declare, cloud):
    client(cloud, "secretsmanager").create_secret(Name="acme/cert", SecretBinary=b"\x00\x01")
    assert "secret CERT (secretsmanager:acme/cert): holds binary data (SecretBinary); store the secret as a string" in (
        failure(declare({"CERT": "secretsmanager:acme/cert"})))


@pytest.fixture
def enforced_iam(cloud, monkeypatch):
    """An IAM user who may read Secrets Manager but not SSM, whose keys are the ones in use, with moto checking every
    request against IAM from then on (it checks none by default)."""
    iam = client(cloud, "iam")
    iam.create_user(UserName="deployer")
    iam.put_user_policy(UserName="deployer", PolicyName="secrets-manager-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
    }))
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    client(cloud, "ssm").put_parameter(Name="/acme/token", Value="from-ssm", Type="SecureString")
    client(cloud, "secretsmanager").create_secret(Name="acme/token", SecretString="from-secrets-manager")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    requests.post(f"{cloud}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    yield
    requests.post(f"{cloud}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


def test_a_denial_by_iam_ends_in_one_line(declare, enforced_iam):
    # moto enforces IAM when asked, but answers a JSON-protocol service's denial in XML, which botocore reads as
    # code 403 and the raw body: the translation of AWS's own shape is tested below; this proves the line holds
    assert app_secrets.resolve(declare({"TOKEN": "secretsmanager:acme/token"})) == {"TOKEN": "from-secrets-manager"}

    message = failure(declare({"TOKEN": "ssm:/acme/token"}))
    assert message.startswith("secret TOKEN (ssm:/acme/token): AWS refused ssm:GetParameter (403: <?xml")
    assert "<Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/deployer is not authorized" in (
        message)


def refusal(env, source: str, code: str, message: str) -> str:
    """Our line for an error of AWS's own shape, as botocore raises it from the JSON AWS sends."""
    operation = "GetParameter" if source.startswith("ssm:") else "GetSecretValue"
    error = ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                        operation)
    name = next(iter(env.inventory.services.app.secrets))
    secret = env.inventory.services.app.secrets[name]
    return str(app_secrets.AwsSecrets(env, name, secret).refusal(error, name, secret))


def test_a_parameter_the_identity_may_not_read(declare):
    env = declare({"TOKEN": "ssm:/acme/token"})
    said = (f"User: arn:aws:iam::{ACCOUNT}:user/deployer is not authorized to perform: ssm:GetParameter on resource: "
            f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/acme/token because no identity-based policy allows the "
            "ssm:GetParameter action")
    assert refusal(env, "ssm:/acme/token", "AccessDeniedException", said) == (
        f"secret TOKEN (ssm:/acme/token): AWS denied ssm:GetParameter in us-east-1 (AccessDeniedException: {said}); "
        "allow ssm:GetParameter on /acme/token (and kms:Decrypt on its key) to that identity, or choose another AWS "
        f"identity with AWS_PROFILE or aws.profile in {env.inventory.path}"
    )


def test_a_secret_the_identity_may_not_read(declare):
    env = declare({"TOKEN": "secretsmanager:acme/token"})
    assert refusal(env, "secretsmanager:acme/token", "AccessDeniedException", "not authorized").startswith(
        "secret TOKEN (secretsmanager:acme/token): AWS denied secretsmanager:GetSecretValue in us-east-1 "
        "(AccessDeniedException: not authorized); allow secretsmanager:GetSecretValue on acme/token")


def test_credentials_aws_refuses(declare):
    env = declare({"TOKEN": "ssm:/acme/token"})
    assert refusal(env, "ssm:/acme/token", "UnrecognizedClientException",
                   "The security token included in the request is invalid.") == (
        "secret TOKEN (ssm:/acme/token): AWS refused the credentials (UnrecognizedClientException: The security "
        "token included in the request is invalid); refresh them (`aws sso login`, `aws configure`) or choose "
        f"another AWS identity with AWS_PROFILE or aws.profile in {env.inventory.path}"
    )


def test_a_long_answer_is_cut(declare):
    env = declare({"TOKEN": "ssm:/acme/token"})
    message = refusal(env, "ssm:/acme/token", "ThrottlingException", "slow down\n" * 100)
    assert "(ThrottlingException: slow down slow down" in message and "...); fix it in AWS, or change" in message
    assert "\n" not in message


def test_no_credentials(declare, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    env = declare({"TOKEN": "ssm:/acme/token"})
    assert failure(env) == (
        "secret TOKEN (ssm:/acme/token): no AWS credentials found; run `aws configure` or `aws sso login`, choose a "
        f"profile with AWS_PROFILE or aws.profile in {env.inventory.path}, or export AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY"
    )


def test_no_region(declare):
    env = declare({"TOKEN": "secretsmanager:acme/token"}, aws={"region": None})
    assert failure(env).startswith(
        f"secret TOKEN (secretsmanager:acme/token): no AWS region chosen; set aws.region in {env.inventory.path}")
