"""Trivy reports read and gated: real recorded reports (tests/fixtures/trivy/README.md says where from),
and the offline path run for real on this machine, where Trivy's image cannot be pulled."""

from __future__ import annotations

import io
import json

import pytest

from dockyard import report as reports
from dockyard import scan
from dockyard.commands.scan import host_script
from dockyard.errors import DockyardError
from dockyard.report import Reporter
from tests.conftest import REPO

FIXTURES = REPO / "tests/fixtures/trivy"


def report(name: str) -> scan.ScanReport:
    return scan.parse_report((FIXTURES / f"{name}.json").read_text())


def test_a_recorded_report_is_read_finding_by_finding():
    alpine = report("alpine-39")
    assert alpine.artifact == "testdata/fixtures/images/alpine-39.tar.gz"
    assert alpine.counts() == {"CRITICAL": 2, "HIGH": 0, "MEDIUM": 4, "LOW": 0, "UNKNOWN": 0}
    assert alpine.top(1) == [scan.Finding(
        id="CVE-2019-14697", severity="CRITICAL", package="musl", installed="1.1.20-r4", fixed="1.1.20-r5",
        title="", target="testdata/fixtures/images/alpine-39.tar.gz (alpine 3.9.4)",
    )]
    distroless = report("distroless-base")
    assert distroless.counts() == {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 2, "LOW": 2, "UNKNOWN": 0}
    assert sum(1 for f in distroless.findings if not f.fixed) == 2  # Debian had no fix for CVE-2019-1551 yet


def test_top_findings_put_the_most_severe_first_and_fixable_before_unfixed():
    top = report("distroless-base").top()
    assert [(f.severity, f.id, f.package, f.fixed) for f in top] == [
        ("MEDIUM", "CVE-2019-1551", "libssl1.1", ""),
        ("MEDIUM", "CVE-2019-1551", "openssl", ""),
        ("LOW", "CVE-2019-1563", "libssl1.1", "1.1.0l-1~deb9u1"),
        ("LOW", "CVE-2019-1563", "openssl", "1.1.0l-1~deb9u1"),
    ]


@pytest.mark.parametrize("name, fail_on, failing", [
    ("alpine-39", "CRITICAL", 2),
    ("alpine-39", "HIGH", 2),  # CRITICAL is above HIGH
    ("alpine-39", "MEDIUM", 6),
    ("distroless-base", "CRITICAL", 0),
    ("distroless-base", "HIGH", 0),
    ("distroless-base", "MEDIUM", 2),
    ("distroless-base", "LOW", 4),
    ("distroless-base", "UNKNOWN", 4),
])
def test_the_gate_counts_findings_at_or_above_the_threshold(name, fail_on, failing):
    assert len(report(name).at_or_above(scan.threshold(fail_on))) == failing


def test_a_threshold_is_a_trivy_severity_in_any_case():
    assert scan.threshold("high") == "HIGH"
    with pytest.raises(DockyardError, match=r"^--fail-on severe: choose one of CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN$"):
        scan.threshold("severe")


def test_what_is_not_a_schema_2_report_is_refused():
    with pytest.raises(scan.ScanError, match="not JSON"):
        scan.parse_report("2024-10-15T14:30:18Z INFO [vulndb] Need to update DB")
    with pytest.raises(scan.ScanError, match="SchemaVersion 2"):
        scan.parse_report(json.dumps([{"Target": "old (debian 10.1)", "Vulnerabilities": []}]))  # Trivy < 0.20
    empty = scan.parse_report('{"SchemaVersion": 2, "ArtifactName": "x", "Results": [{"Vulnerabilities": null}]}')
    assert empty.counts()["CRITICAL"] == 0 and empty.top() == []


def test_the_printed_report_has_the_severity_table_and_the_top_findings():
    out = Reporter(io.StringIO())
    reports.scan(out, report("alpine-39"))
    lines = out.stream.getvalue().splitlines()
    assert [line.split() for line in lines[:6]] == [
        ["severity", "findings"], ["CRITICAL", "2"], ["HIGH", "0"], ["MEDIUM", "4"], ["LOW", "0"], ["UNKNOWN", "0"],
    ]
    assert lines[6] == "top 6 of 6:"
    assert lines[8].split()[:5] == ["CRITICAL", "CVE-2019-14697", "musl", "1.1.20-r4", "1.1.20-r5"]
    assert lines[10].split()[:2] == ["MEDIUM", "CVE-2019-1549"]


# Trivy's stderr when its database cannot be fetched, as users reported it:
# aquasecurity/trivy#1717 (0.23), GSA-TTS/FAC#4384 (2024), sighupio/trivy-offline#7 (2021).
@pytest.mark.parametrize("stderr", [
    '2022-02-22T10:00:00.000Z\tFATAL\tDB error: failed to download vulnerability DB: OCI artifact error: OCI artifact '
    'error: OCI repository error: Get "https://ghcr.io/v2/": dial tcp 20.205.243.164:443: i/o timeout',
    "2024-10-15T14:30:18Z\tINFO\t[vulndb] Need to update DB\n"
    "2024-10-15T14:30:19Z\tFATAL\tFatal error\tinit error: DB error: failed to download vulnerability DB: OCI artifact "
    "error: failed to download vulnerability DB: failed to download artifact from any source",
    '2021-01-19T12:14:08.151Z\tFATAL\tfailed to download vulnerability DB: failed to download vulnerability DB: '
    'failed to list releases: Get "https://api.github.com/repos/aquasecurity/trivy-db/releases": dial tcp '
    "140.x.y.z:443: i/o timeout",
])
def test_an_unreachable_vulnerability_database_is_reported_as_unavailable(stderr):
    error = scan.failure(stderr, 1, "web1")
    assert isinstance(error, scan.ScanUnavailable)
    message = str(error)
    assert message.startswith("web1: Trivy cannot fetch its vulnerability database (offline?): ")
    assert "FATAL" not in message and "\n" not in message


def test_any_other_trivy_failure_is_an_error_naming_its_cause():
    stderr = ("2024-10-15T14:30:19Z\tFATAL\tFatal error\timage scan error: scan error: unable to initialize a scanner: "
              "unable to find the specified image \"127.0.0.1:5000/nope:1\"")
    error = scan.failure(stderr, 1, "web1")
    assert type(error) is scan.ScanError
    assert str(error).startswith("web1: Trivy failed: Fatal error image scan error: scan error:")


def test_the_host_script_pulls_trivy_once_and_scans_on_the_host_network():
    lines = host_script("127.0.0.1:5000/flask-hello:latest").splitlines()
    assert lines == [
        "set -eu",
        "docker image inspect aquasec/trivy:0.57.1 >/dev/null 2>&1 || docker pull --quiet aquasec/trivy:0.57.1 "
        ">/dev/null 2>&1 || { echo 'dockyard-scan: cannot pull aquasec/trivy:0.57.1 on this host' >&2; exit 3; }",
        "docker run --rm --network host --volume dockyard-trivy-cache:/root/.cache/trivy aquasec/trivy:0.57.1 image "
        "--format json --scanners vuln --image-src remote --insecure 127.0.0.1:5000/flask-hello:latest",
    ]
