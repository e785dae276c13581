"""What an image build is given: its base, and the CA certificates the operator trusts when its Dockerfile asks."""

from pathlib import Path

import certifi
import pytest

from dockyard import images
from dockyard.errors import ImageError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def context(tmp_path):
    """A build context whose Dockerfile declares EXTRA_CA_CERTS, and a CA file."""
    (tmp_path / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nARG EXTRA_CA_CERTS=\"\"\nRUN true\n")
    (tmp_path / "proxy-ca.pem").write_text(PEM)
    return {"Dockerfile": tmp_path / "Dockerfile"}


@pytest.fixture(autouse=True)
def no_ca_settings(monkeypatch):
    monkeypatch.delenv("DOCKYARD_EXTRA_CA_CERTS", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)


def test_a_build_gets_its_base(context):
    assert images.build_args("debian:bookworm-slim", context) == {"BASE": "debian:bookworm-slim"}


def test_a_build_gets_the_extra_ca_certificates_named(monkeypatch, context, tmp_path):
    monkeypatch.setenv("DOCKYARD_EXTRA_CA_CERTS", str(tmp_path / "proxy-ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "absent.pem"))  # the explicit setting wins
    assert images.build_args("b", context) == {"BASE": "b", "EXTRA_CA_CERTS": PEM}


def test_without_the_setting_a_build_trusts_what_openssl_tools_trust(monkeypatch, context, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "proxy-ca.pem"))
    assert images.build_args("b", context) == {"BASE": "b", "EXTRA_CA_CERTS": PEM}


def test_a_dockerfile_that_does_not_declare_the_argument_gets_no_certificates(monkeypatch, tmp_path):
    (tmp_path / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    monkeypatch.setenv("DOCKYARD_EXTRA_CA_CERTS", str(tmp_path / "absent.pem"))  # not even read
    assert images.build_args("b", {"Dockerfile": tmp_path / "Dockerfile"}) == {"BASE": "b"}


def test_an_unreadable_ca_file_is_one_line(monkeypatch, context, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "absent.pem"))
    with pytest.raises(ImageError) as caught:
        images.build_args("b", context)
    assert str(caught.value) == (
        f"SSL_CERT_FILE: cannot read {tmp_path}/absent.pem (No such file or directory); name a PEM file of "
        "CA certificates, or unset it"
    )


def test_certificates_pip_trusts_already_are_left_out(monkeypatch, context, tmp_path):
    public = images.PEM_CERTIFICATE.findall(Path(certifi.where()).read_text())[:3]
    (tmp_path / "bundle.pem").write_text("\n".join([*public, PEM]))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))
    assert images.build_args("b", context) == {"BASE": "b", "EXTRA_CA_CERTS": PEM}
