"""Trivy reports read and gated: real recorded reports (tests/fixtures/trivy/README.md says where from),
and the offline path run for real on this machine, where Trivy's image cannot be pulled."""

from __future__ import annotations

import subprocess

import pytest

from dockyard import scan
from dockyard.errors import RemoteFailed
from tests.conftest import REPO

FIXTURES = REPO / "tests/fixtures/trivy"


class ThisMachine:
    """Runs a host script here as HostConnection.run does on a host: sh as root, RemoteFailed on failure."""

    where = "this machine"

    def run(self, script: str, what: str) -> str:
        ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120)
        if ran.returncode != 0:
            raise RemoteFailed(self.where, what, ran.returncode, ran.stdout, ran.stderr)
        return ran.stdout


def test_offline_the_scan_says_so_in_one_line_with_its_own_exit_code():
    """This machine cannot reach Docker Hub: Trivy's image cannot be pulled, and the scan says so."""
    with pytest.raises(scan.ScanUnavailable) as raised:
        scan.scan_on_host(ThisMachine(), "127.0.0.1:5000/flask-hello:latest")
    message = str(raised.value)
    assert message.startswith("this machine: cannot pull aquasec/trivy:0.57.1 on this host (offline?); ")
    assert "\n" not in message
    assert scan.EXIT_UNAVAILABLE == 3 and scan.EXIT_FINDINGS == 2  # both apart from 1, any other error
