"""Vulnerability scans with Trivy of an image in the host's private registry, and its JSON report read.

Trivy runs as a local `trivy` binary through an SSH tunnel when one is installed, otherwise as Trivy's
own image on the host. Either way it downloads its vulnerability database first (mirror.gcr.io,
ghcr.io), so where those cannot be reached the scan cannot run. Exit codes of `invoke images.scan`:

    0  scanned; nothing at or above --fail-on
    1  any other error (unknown image, unreachable host...)
    2  findings at or above --fail-on
    3  Trivy or its vulnerability database cannot be fetched (offline)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass

from dockyard.commands.scan import CANNOT_PULL, CANNOT_PULL_EXIT, TRIVY_IMAGE, host_script, trivy_arguments
from dockyard.environment import Env
from dockyard.errors import DockyardError, RemoteFailed
from dockyard.ssh import HostConnection

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")  # most severe first, as Trivy lists them
EXIT_FINDINGS = 2
EXIT_UNAVAILABLE = 3
TOP_FINDINGS = 10
# What Trivy prints when its database cannot be fetched, across versions.
DB_UNREACHABLE = re.compile(r"failed to download vulnerability DB|DB error|download artifact from any source", re.I)


class ScanError(DockyardError):
    """Trivy ran and failed, or its report cannot be read."""


class ScanUnavailable(DockyardError):
    """Trivy, or its vulnerability database, cannot be fetched from here."""


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    package: str
    installed: str
    fixed: str  # empty while no fixed version exists
    title: str
    target: str


@dataclass(frozen=True)
class ScanReport:
    artifact: str
    findings: tuple[Finding, ...]

    def counts(self) -> dict[str, int]:
        seen = Counter(f.severity for f in self.findings)
        return {severity: seen[severity] for severity in SEVERITIES}

    def at_or_above(self, threshold: str) -> list[Finding]:
        limit = SEVERITIES.index(threshold)
        return [f for f in self.findings if SEVERITIES.index(f.severity) <= limit]

    def top(self, n: int = TOP_FINDINGS) -> list[Finding]:
        """The most severe first and, among equals, those with a fix to apply."""
        return sorted(self.findings, key=lambda f: (SEVERITIES.index(f.severity), not f.fixed, f.id, f.package))[:n]


def parse_report(text: str) -> ScanReport:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ScanError(f"Trivy's output is not JSON ({e}); rerun with DOCKYARD_DEBUG=1") from None
    if not isinstance(data, dict) or data.get("SchemaVersion") != 2:
        raise ScanError("not a Trivy JSON report of SchemaVersion 2; use Trivy 0.20 or later")
    findings = []
    for result in data.get("Results") or []:
        for v in result.get("Vulnerabilities") or []:
            severity = str(v.get("Severity", "UNKNOWN")).upper()
            findings.append(Finding(
                id=v["VulnerabilityID"], severity=severity if severity in SEVERITIES else "UNKNOWN",
                package=v.get("PkgName", ""), installed=v.get("InstalledVersion", ""),
                fixed=v.get("FixedVersion", ""), title=v.get("Title", ""), target=result.get("Target", ""),
            ))
    return ScanReport(data.get("ArtifactName", ""), tuple(findings))


def threshold(name: str) -> str:
    chosen = name.upper()
    if chosen not in SEVERITIES:
        raise DockyardError(f"--fail-on {name}: choose one of {', '.join(SEVERITIES)}")
    return chosen


def scan(env: Env, reference: str, host: str | None = None) -> str:
    """Trivy's JSON report, as text, of REPOSITORY:TAG in the private registry of `host` (default: the first
    registry host): by a local `trivy` through a tunnel, else by Trivy's image on the host."""
    record = env.hosts_with("registry", host)[0]
    registry_port = env.inventory.services.registry.port
    trivy = shutil.which("trivy")
    with env.connect(record) as conn:
        if trivy:
            with conn.tunnel(registry_port) as port:
                env.out.say(f"scanning {reference} with {trivy}, through a tunnel to {record.name}")
                return scan_locally(trivy, f"127.0.0.1:{port}/{reference}")
        env.out.say(f"scanning {reference} on {record.name} with {TRIVY_IMAGE} (no local trivy)")
        return scan_on_host(conn, f"127.0.0.1:{registry_port}/{reference}")


def scan_on_host(conn: HostConnection, image_ref: str) -> str:
    """Trivy's JSON report, as text, from a scan run on the host; a failure says whether Trivy is out of reach."""
    try:
        return conn.run(host_script(image_ref), what=f"Trivy's scan of {image_ref}")
    except RemoteFailed as e:
        raise failure(e.stderr, e.exited, e.where) from e


def scan_locally(trivy: str, image_ref: str) -> str:
    ran = subprocess.run([trivy, *trivy_arguments(image_ref)], capture_output=True, text=True)
    if ran.returncode != 0:
        raise failure(ran.stderr, ran.returncode, "this machine")
    return ran.stdout


def failure(stderr: str, exited: int, where: str) -> DockyardError:
    """Turn Trivy's failure into one line: offline (exit code 3) or anything else."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "FATAL" in line), lines[-1] if lines else f"exit {exited}")
    cause = re.sub(r"\s+", " ", re.sub(r"^.*?\bFATAL\s+", "", cause))[:300]
    if exited == CANNOT_PULL_EXIT and CANNOT_PULL in cause:
        return ScanUnavailable(
            f"{where}: {cause.removeprefix('dockyard-scan: ')} (offline?); install trivy here, or ship the image "
            f"from a machine that has it (`invoke images.ship --image {TRIVY_IMAGE}`)"
        )
    if DB_UNREACHABLE.search(stderr):
        return ScanUnavailable(
            f"{where}: Trivy cannot fetch its vulnerability database (offline?): {cause}; "
            f"scan where mirror.gcr.io or ghcr.io is reachable"
        )
    return ScanError(f"{where}: Trivy failed: {cause}")
