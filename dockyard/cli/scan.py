"""images.scan: Trivy's vulnerability scan of an image in the private registry, with a severity gate.

Exit codes: 0 clean enough, 1 error, 2 findings at or above --fail-on, 3 Trivy or its database cannot
be fetched (offline). See dockyard/scan.py.
"""

from pathlib import Path

from invoke import Exit

from dockyard import report
from dockyard import scan as scanning
from dockyard.cli import open_env, task
from dockyard.cli.registry import HOST_HELP
from dockyard.images import with_tag


@task(help={
    "image": "REPOSITORY[:TAG] in the private registry, e.g. flask-hello:latest",
    "fail_on": f"exit {scanning.EXIT_FINDINGS} if a finding is this severe or worse: {', '.join(scanning.SEVERITIES)}",
    "json": "also write Trivy's JSON report to this file",
    **HOST_HELP,
})
def scan(c, image, env=None, host=None, fail_on=None, json=None):
    """Scan an image of the private registry with Trivy: local binary if installed, else on the host."""
    env = open_env(c, env)
    gate = scanning.threshold(fail_on) if fail_on else None  # a typo fails before any connection
    reference = with_tag(image)
    try:
        raw = scanning.scan(env, reference, host)
    except scanning.ScanUnavailable as unavailable:
        raise Exit(f"scan unavailable: {unavailable}", code=scanning.EXIT_UNAVAILABLE) from None
    found = scanning.parse_report(raw)
    if json:
        Path(json).write_text(raw)
        env.out.say(f"Trivy's report: {json}")
    report.scan(env.out, found)
    if gate and (over := found.at_or_above(gate)):
        raise Exit(f"{len(over)} finding(s) at {gate} or above in {reference}", code=scanning.EXIT_FINDINGS)
