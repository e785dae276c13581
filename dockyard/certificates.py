"""dockyard's own CAs, kept in the state folder: a swarm's, for the registry's TLS twin (every node trusts it through
Docker's `certs.d`), and the proxy's, for its internal certificates (clients trust it through `invoke proxy.ca`)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dockyard.spec import Authority, ServerTls

CA_DAYS = 3650
REGISTRY_DAYS = 3650  # Docker accepts any length
# Apple's clients refuse server certificates valid for more than 825 days; a deploy renews it in its last month
PROXY_DAYS = 397
RENEW_DAYS = 30


def new_authority(title: str) -> Authority:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, title)])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(_pem(certificate), _key_pem(key))


def sign(authority: Authority, names: Sequence[str], days: int) -> ServerTls:
    """A server certificate for `names` (host names or IP addresses), signed by `authority`."""
    ca = x509.load_pem_x509_certificate(authority.certificate.encode())
    ca_key = serialization.load_pem_private_key(authority.key.encode(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ServerTls(authority.certificate, _pem(certificate), _key_pem(key))


def issue(env: str, address: str) -> ServerTls:
    """A new CA for a swarm of `env`, and a server certificate for the IP address `address` signed by it."""
    return sign(new_authority(f"dockyard {env} cluster CA"), [address], REGISTRY_DAYS)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()
