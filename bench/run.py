"""dockyard's benchmarks: run with `./run python bench/run.py`; prints a table and writes JSON.

Everything is measured on real sandbox hosts in a throwaway project (inventory, state and a copy of
templates/, images/, apps/), which is torn down at the end. SSH connections and remote commands are
counted by dockyard where they happen, and the connections are checked against sshd's own log.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import ssl
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dockyard import contract, deploy, front_door, release  # noqa: E402
from dockyard.environment import Env  # noqa: E402
from dockyard.lock import Claim  # noqa: E402
from dockyard.report import Reporter  # noqa: E402
from dockyard.ssh import STATS  # noqa: E402

CLAIM = Claim("bench", 300)  # the host lock each measured run takes, as the tasks do

TARGETS = {
    "noop_seconds": 2.0,
    "noop_connections_per_host": 1,
    "release_seconds": 10.0,
    "release_bytes_ratio": 2.0,
    "fanout_ratio": 1.5,
}


@dataclass
class Results:
    figures: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)

    def add(self, measure: str, value, target: str = "", unit: str = ""):
        self.figures[measure] = value
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        self.rows.append((measure, f"{shown} {unit}".strip(), target))
        print(f"  {measure}: {shown} {unit}", flush=True)


class Bench:
    def __init__(self, root: Path):
        self.root = root
        self.sources = root / "sources"
        for folder in ("templates", "images", "apps"):
            shutil.copytree(REPO / folder, self.sources / folder, ignore=shutil.ignore_patterns("__pycache__"))

    def inventory(self, env: str, hosts: int) -> None:
        folder = self.root / "inventory"
        folder.mkdir(exist_ok=True)
        names = "\n".join(f"  h{i}: {{}}" for i in range(1, hosts + 1))
        (folder / f"{env}.yml").write_text(
            f"provider: sandbox\nhosts:\n{names}\nservices:\n  mirror: {{remote_url: 'http://dockyard-registry:5000'}}\n"
        )

    def env(self, name: str) -> Env:
        return Env.open(self.sources, name, self.root / "inventory", self.root / "state", Reporter(io.StringIO()))


@contextmanager
def counted():
    """SSH connections, remote commands and bytes sent inside the block."""
    before = (STATS.connections, STATS.commands, STATS.bytes_sent)
    counts = {}
    started = time.monotonic()
    yield counts
    counts["seconds"] = time.monotonic() - started
    counts["connections"] = STATS.connections - before[0]
    counts["commands"] = STATS.commands - before[1]
    counts["bytes_sent"] = STATS.bytes_sent - before[2]


def accepted_logins(env: Env) -> int:
    """sshd's own count of logins on every host of the environment."""
    client = docker.from_env()
    return sum(
        client.containers.get(host.provider["container"]).logs().decode().count("Accepted publickey")
        for host in env.hosts()
    )


def phases(env: Env) -> dict[str, float]:
    """Seconds per step line the run reported (`host role status seconds ...`)."""
    out = {}
    for line in env.out.stream.getvalue().splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] in ("ok", "changed") and words[3].endswith("s"):
            out[words[1]] = out.get(words[1], 0.0) + float(words[3][:-1])
    return out


def cold_and_noop(bench: Bench, results: Results) -> None:
    env = bench.env("bench")
    started = time.monotonic()
    env.provider.provision()
    provisioned = time.monotonic()
    deploy.converge(env, CLAIM)
    finished = time.monotonic()
    results.add("cold_provision_seconds", provisioned - started, unit="s")
    results.add("cold_deploy_seconds", finished - provisioned, unit="s")
    for phase, seconds in phases(env).items():
        results.add(f"cold_phase_{phase}_seconds", seconds, unit="s")

    env = bench.env("bench")
    logins = accepted_logins(env)
    with counted() as noop:
        deploy.converge(env, CLAIM)
    results.add("noop_seconds", noop["seconds"], f"<= {TARGETS['noop_seconds']} s", "s")
    results.add("noop_connections", noop["connections"], "1 per host")
    results.add("noop_connections_seen_by_sshd", accepted_logins(env) - logins, "1 per host")
    results.add("noop_remote_commands", noop["commands"])


def release_change(bench: Bench, results: Results) -> None:
    env = bench.env("bench")
    app = bench.sources / "apps" / "flask-hello" / "app.py"
    app.write_text(app.read_text().replace("VERSION = 1", "VERSION = 2"))
    with counted() as pushed:
        outcomes = release.release(env, "bench-v2", 120, CLAIM)
    (record,) = env.hosts()
    trusted = ssl.create_default_context(cafile=front_door.export_ca(env, None))
    answer = urllib.request.urlopen(f"{front_door.url(env.inventory, record)}/", timeout=5, context=trusted)
    body = answer.read().decode()
    layers, config = changed_blobs(env, record, "bench-v2")
    results.add("release_seconds", pushed["seconds"], f"<= {TARGETS['release_seconds']} s", "s")
    results.add("release_push_seconds", outcomes[0].push_seconds, unit="s")
    results.add("release_redeploy_seconds", outcomes[0].redeploy_seconds, unit="s")
    results.add("release_serving", body.strip())
    results.add("release_bytes_sent_over_ssh", pushed["bytes_sent"], unit="B")
    results.add("release_changed_layer_bytes", layers, unit="B (compressed, as pushed)")
    results.add("release_new_config_bytes", config, unit="B")
    results.add("release_bytes_ratio", pushed["bytes_sent"] / max(layers, 1), f"<= {TARGETS['release_bytes_ratio']}")


MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def changed_blobs(env: Env, record, tag: str) -> tuple[int, int]:
    """Compressed bytes of the layers `tag` has that deploy's image lacks, and of its new config blob."""
    with env.connect(record) as conn, conn.tunnel(env.inventory.services.registry.port) as port:
        base = f"http://127.0.0.1:{port}/v2/flask-hello"

        def manifest(reference: str) -> dict:
            request = urllib.request.Request(f"{base}/manifests/{reference}", headers={"Accept": MANIFEST})
            return json.load(urllib.request.urlopen(request, timeout=10))

        tags = json.load(urllib.request.urlopen(f"{base}/tags/list", timeout=10))["tags"]
        deployed = next(t for t in tags if t.startswith(contract.PUSHED_TAG_PREFIX))
        old, new = manifest(deployed), manifest(tag)
    known = {layer["digest"] for layer in old["layers"]}
    return sum(layer["size"] for layer in new["layers"] if layer["digest"] not in known), new["config"]["size"]


def fan_out(bench: Bench, results: Results) -> None:
    timings = {}
    for hosts in (1, 3):
        name = f"fan{hosts}"
        bench.inventory(name, hosts)
        env = bench.env(name)
        env.provider.provision()
        started = time.monotonic()
        deploy.converge(env, CLAIM)
        timings[hosts] = time.monotonic() - started
        results.add(f"fanout_deploy_{hosts}_hosts_seconds", timings[hosts], unit="s")
        teardown(env)
    results.add("fanout_ratio", timings[3] / timings[1], f"<= {TARGETS['fanout_ratio']}")


def teardown(env: Env) -> None:
    env.provider.teardown()
    env.state.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "latest.json"))
    parser.add_argument("--skip-fanout", action="store_true", help="skip the one-vs-three hosts measure")
    args = parser.parse_args()
    results = Results()
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        bench = Bench(Path(tmp))
        bench.inventory("bench", 1)
        try:
            print("cold provision + deploy, then a no-op deploy", flush=True)
            cold_and_noop(bench, results)
            print("release of a one-line change", flush=True)
            release_change(bench, results)
        finally:
            teardown(bench.env("bench"))
        if not args.skip_fanout:
            print("fan-out: one host, then three", flush=True)
            fan_out(bench, results)
    print()
    widths = [max(len(r[i]) for r in [("measure", "value", "target"), *results.rows]) for i in range(3)]
    for row in [("measure", "value", "target"), *results.rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"figures": results.figures, "targets": TARGETS}, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
