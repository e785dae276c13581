"""What every image build is given: its base, and a TLS-inspecting proxy's CA certificates when named."""

import pytest

from dockyard import images
from dockyard.errors import ImageError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_a_build_gets_its_base(monkeypatch):
    monkeypatch.delenv("DOCKYARD_EXTRA_CA_CERTS", raising=False)
    assert images.build_args("debian:bookworm-slim") == {"BASE": "debian:bookworm-slim"}


def test_a_build_gets_the_extra_ca_certificates_named(monkeypatch, tmp_path):
    (tmp_path / "proxy-ca.pem").write_text(PEM)
    monkeypatch.setenv("DOCKYARD_EXTRA_CA_CERTS", str(tmp_path / "proxy-ca.pem"))
    assert images.build_args("b") == {"BASE": "b", "EXTRA_CA_CERTS": PEM}


def test_an_unreadable_ca_file_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKYARD_EXTRA_CA_CERTS", str(tmp_path / "absent.pem"))
    with pytest.raises(ImageError) as caught:
        images.build_args("b")
    assert str(caught.value) == (
        f"DOCKYARD_EXTRA_CA_CERTS: cannot read {tmp_path}/absent.pem (No such file or directory); name a PEM file of "
        "CA certificates, or unset it"
    )
