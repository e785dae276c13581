"""dockyard's CAs in the state folder: the proxy's certificate, kept, and issued again when it must be."""

import datetime
import ipaddress
import json
import stat

from cryptography import x509

from dockyard.state import PROXY_AUTHORITY, State

NAMES = ["app.example.com", "localhost", "127.0.0.1", "198.51.100.10"]


def parsed(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_the_proxy_certificate_is_for_its_names_and_signed_by_the_environments_ca(tmp_path):
    state = State(tmp_path, "t")
    tls = state.proxy_tls("web1", NAMES)
    leaf, ca = parsed(tls.certificate), parsed(tls.ca)
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    alternatives = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alternatives.get_values_for_type(x509.DNSName) == ["app.example.com", "localhost"]
    assert alternatives.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                                ipaddress.ip_address("198.51.100.10")]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == datetime.timedelta(days=397)
    for name in (PROXY_AUTHORITY, "proxy-tls-web1.json"):
        assert stat.S_IMODE((tmp_path / "t" / name).stat().st_mode) == 0o600


def test_it_is_kept_until_its_names_change_or_its_last_month_and_the_ca_stays(tmp_path):
    state = State(tmp_path, "t")
    first = state.proxy_tls("web1", NAMES)
    assert state.proxy_tls("web1", NAMES) == first

    renamed = state.proxy_tls("web1", NAMES[1:])
    assert renamed.certificate != first.certificate and renamed.ca == first.ca

    stored = tmp_path / "t" / "proxy-tls-web1.json"
    data = json.loads(stored.read_text())
    stored.write_text(json.dumps({**data, "renew_after": "2020-01-01T00:00:00+00:00"}))
    renewed = state.proxy_tls("web1", NAMES[1:])
    assert renewed.certificate != renamed.certificate and renewed.ca == first.ca
    assert state.proxy_authority().certificate == first.ca


def test_each_host_has_its_own_certificate_from_the_one_ca(tmp_path):
    state = State(tmp_path, "t")
    one, two = state.proxy_tls("web1", ["localhost"]), state.proxy_tls("web2", ["localhost"])
    assert one.certificate != two.certificate and one.ca == two.ca


def test_a_new_ca_gets_a_new_certificate_signed_by_it(tmp_path):
    state = State(tmp_path, "t")
    old = state.proxy_tls("web1", NAMES)
    (tmp_path / "t" / PROXY_AUTHORITY).unlink()
    new = state.proxy_tls("web1", NAMES)
    assert new.ca != old.ca and new.ca == state.proxy_authority().certificate
    parsed(new.certificate).verify_directly_issued_by(parsed(new.ca))


def test_a_certificate_file_that_is_not_what_dockyard_wrote_is_issued_again(tmp_path):
    state = State(tmp_path, "t")
    first = state.proxy_tls("web1", NAMES)
    stored = tmp_path / "t" / "proxy-tls-web1.json"
    written = json.loads(stored.read_text())
    for broken in ("{not json", "[]", json.dumps({"certificate": first.certificate}),
                   json.dumps({**written, "renew_after": "soon"})):
        stored.write_text(broken)
        again = state.proxy_tls("web1", NAMES)
        assert again.ca == first.ca and again.certificate != first.certificate
        parsed(again.certificate).verify_directly_issued_by(parsed(again.ca))
        assert json.loads(stored.read_text())["names"] == NAMES
