"""dockyard's benchmarks: run with `./run python bench/run.py`; prints a table and writes JSON.

Everything is measured on real sandbox hosts in a throwaway project (inventory, state and a copy of
templates/, images/, apps/), which is torn down at the end. SSH connections and remote commands are
counted by dockyard where they happen, and the connections are checked against sshd's own log. pyinfra,
the peer, deploys an equivalent workload in the same run (bench/peers.py); a 50 Mbit/s uplink is shaped
with tc into one host (bench/uplink.py).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import peers, uplink  # noqa: E402
from dockyard import contract, deploy, front_door, release  # noqa: E402
from dockyard.environment import Env  # noqa: E402
from dockyard.lock import Claim  # noqa: E402
from dockyard.report import Reporter  # noqa: E402
from dockyard.spec import NETWORK  # noqa: E402
from dockyard.ssh import STATS  # noqa: E402
from roles import proxy  # noqa: E402

CLAIM = Claim("bench", 300)  # the host lock each measured run takes, as the tasks do

TARGETS = {
    "cold_deploy_seconds": 40.0,
    "noop_seconds": 2.0,
    "noop_connections_per_host": 1,
    "proxy_added_median_ms": 1.0,
    "release_to_serving_seconds": 5.0,
    "release_seconds": 10.0,
    "release_bytes_ratio": 2.0,
    "fanout_ratio": 1.3,
    "swarm_deploy_ratio": 1.3,  # 3 hosts / 1 host, as the fan-out's
    "noop_ratio": 0.4,  # dockyard / pyinfra, whole process
    "template_ratio": 0.5,
    "recreate_ratio": 1.0,
    "uplink_cold_bytes_ratio": 1.1,  # bytes into the host / gzipped unique layers
    "uplink_release_seconds": 5.0,
    "uplink_release_extra_bytes": 16 * 1024,  # over the changed layers and config
}
LATENCY_REQUESTS = 500  # each way, on one kept-alive connection, after as many to warm up
# Run in a throwaway container of the app's image on the host's docker network: the medians (ms) of GET / sent
# straight to the app's container, and sent through Caddy over https, verified against its internal CA.
LATENCY_CLIENT = """
import http.client, json, socket, ssl, statistics, sys, time
root, app, proxy, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
class ThroughProxy(http.client.HTTPSConnection):
    def connect(self):  # to the proxy's container, asking for the site `localhost` its CA signed
        self.sock = self._context.wrap_socket(socket.create_connection((proxy, 443)), server_hostname="localhost")
def median_ms(connection):
    times = []
    for _ in range(2 * n):
        started = time.perf_counter()
        connection.request("GET", "/")
        connection.getresponse().read()
        times.append(time.perf_counter() - started)
    return statistics.median(times[n:]) * 1000
direct = median_ms(http.client.HTTPConnection(app, 8000))
proxied = median_ms(ThroughProxy("localhost", 443, context=ssl.create_default_context(cadata=root)))
print(json.dumps({"direct": direct, "proxied": proxied}))
"""
UPLINK_RATE = "50mbit"
# A swarm's first host is its one manager and runs the services; the others only run the app's tasks, one per host.
SWARM_MANAGER_ROLES = "[manager, registry, proxy, app, webhook]"
# How many requests in a row must answer with the new version: 3 per task of a 3-host swarm
SWARM_PROBE_REQUESTS = 9
PARTS = ("cold", "latency", "release", "peers", "uplink", "fanout", "swarm")


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

    def inventory(self, env: str, hosts: int, swarm: bool = False) -> None:
        """`hosts` sandbox hosts with the whole stack each; with `swarm`, one swarm of them (SWARM_MANAGER_ROLES)."""
        folder = self.root / "inventory"
        folder.mkdir(exist_ok=True)
        if swarm:
            roles = [SWARM_MANAGER_ROLES, *["[]"] * (hosts - 1)]
            names = "\n".join(f"  h{i}: {{roles: {r}}}" for i, r in enumerate(roles, start=1))
            text = f"provider: sandbox\ncluster: swarm\nhosts:\n{names}\nservices:\n  app: {{replicas: {hosts}}}\n"
        else:
            names = "\n".join(f"  h{i}: {{}}" for i in range(1, hosts + 1))
            text = (f"provider: sandbox\nhosts:\n{names}\n"
                    f"services:\n  mirror: {{remote_url: 'http://dockyard-registry:5000'}}\n")
        (folder / f"{env}.yml").write_text(text)

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


def unpacked(env: Env) -> Env:
    """`env` with the project's layer cache emptied: a cold deploy packs its images as a first one does."""
    shutil.rmtree(env.layers.folder, ignore_errors=True)
    return env


def cold(env: Env, built_first: bool = False) -> tuple[float, float]:
    """A cold `provision`, then `deploy`: the seconds of each; with `built_first`, the images the deploy ships are
    built in between, untimed."""
    unpacked(env)
    started = time.monotonic()
    env.provider.provision()
    provisioned = time.monotonic()
    if built_first:
        deploy.declare(env, env.hosts())
        provisioned = time.monotonic()
    deploy.converge(env, CLAIM)
    return provisioned - started, time.monotonic() - provisioned


def noop(bench: Bench, name: str, results: Results, prefix: str = "") -> None:
    """A rerun of `deploy` on environment `name`, converged: its time, SSH connections and remote commands."""
    env = bench.env(name)
    per_host = f"1 per host ({len(env.hosts())})"
    logins = accepted_logins(env)
    with counted() as rerun:
        deploy.converge(env, CLAIM)
    results.add(f"{prefix}noop_seconds", rerun["seconds"], f"<= {TARGETS['noop_seconds']} s", "s")
    results.add(f"{prefix}noop_connections", rerun["connections"], per_host)
    results.add(f"{prefix}noop_connections_seen_by_sshd", accepted_logins(env) - logins, per_host)
    results.add(f"{prefix}noop_remote_commands", rerun["commands"])


def cold_and_noop(bench: Bench, results: Results) -> None:
    env = bench.env("bench")
    provision_seconds, deploy_seconds = cold(env)
    results.add("cold_provision_seconds", provision_seconds, unit="s")
    results.add("cold_deploy_seconds", deploy_seconds, f"<= {TARGETS['cold_deploy_seconds']} s", "s")
    for phase, seconds in phases(env).items():
        results.add(f"cold_phase_{phase}_seconds", seconds, unit="s")
    noop(bench, "bench", results)


def proxy_latency(bench: Bench, results: Results) -> None:
    env = deployed(bench)
    (record,) = env.hosts()
    root = front_door.export_ca(env, None).read_text()
    with env.connect(record) as conn:
        serving = conn.run(f"sed -n 's/^to \\(.*\\):[0-9]*$/\\1/p' {contract.HOST_UPSTREAM_FILE}").strip()
        image = conn.run(f"docker inspect --format '{{{{.Config.Image}}}}' {serving}").strip()
        client = shlex.join(["docker", "run", "--rm", "--network", NETWORK, image, "python3", "-c", LATENCY_CLIENT,
                             root, serving, proxy.NAME, str(LATENCY_REQUESTS)])
        medians = json.loads(conn.run(client))
    results.add("app_direct_median_ms", medians["direct"], unit="ms (plain http to the app's container)")
    results.add("proxy_median_ms", medians["proxied"], unit="ms (https through Caddy)")
    results.add("proxy_added_median_ms", medians["proxied"] - medians["direct"],
                f"<= {TARGETS['proxy_added_median_ms']} ms", "ms")


@dataclass
class Released:
    seconds: float  # until the old version has stopped
    serving_seconds: float | None  # until the new version answers through the proxy (not watched on a shaped link)
    push_seconds: float
    redeploy_seconds: float
    serving: str
    bytes_sent: int  # over SSH, as dockyard counts it
    changed_layer_bytes: int  # compressed, as pushed
    new_config_bytes: int
    wire: uplink.Counters | None  # what crossed the shaped link during the release command alone


def release_next_version(bench: Bench, env: Env, probe: int = 1, device: str | None = None) -> Released:
    """Change one line of the app (its version), release it and ask the proxy what serves: serving once the new
    version answers `probe` requests in a row. With `device`, the host's shaped veth, the bytes on it during the
    release instead: no watcher then, whose requests would cross the same link."""
    app = bench.sources / "apps" / "flask-hello" / "app.py"
    version = int(re.search(r"^VERSION = (\d+)$", app.read_text(), re.MULTILINE)[1]) + 1
    app.write_text(re.sub(r"^VERSION = \d+$", f"VERSION = {version}", app.read_text(), flags=re.MULTILINE))
    tag = f"bench-v{version}"
    (record,) = env.hosts_with("app")
    url = f"{front_door.url(env.inventory, record)}/"
    trusted = ssl.create_default_context(cafile=front_door.export_ca(env, None))
    serving = None if device else ServingWatch(url, trusted, f"Version {version}", probe)
    before = uplink.Counters.read(device) if device else None
    with counted() as pushed:
        (outcome,) = release.release(env, tag, 120, CLAIM)
    wire = uplink.Counters.read(device) - before if device else None
    answer = urllib.request.urlopen(url, timeout=5, context=trusted)
    layers, config = changed_blobs(env, record, tag)
    return Released(pushed["seconds"], serving.seconds() if serving else None, outcome.push_seconds,
                    outcome.redeploy_seconds, answer.read().decode().strip(), pushed["bytes_sent"], layers, config,
                    wire)


def deployed(bench: Bench) -> Env:
    """The bench's own environment, provisioned and converged: nothing to do when an earlier part stood it up."""
    env = bench.env("bench")
    env.provider.provision()
    deploy.converge(env, CLAIM)
    return bench.env("bench")


def release_change(bench: Bench, results: Results) -> None:
    done = release_next_version(bench, deployed(bench))
    results.add("release_to_serving_seconds", done.serving_seconds, f"<= {TARGETS['release_to_serving_seconds']} s",
                "s (from `app.release` to the new version answering through the proxy)")
    results.add("release_seconds", done.seconds, f"<= {TARGETS['release_seconds']} s",
                "s (until the old version has stopped)")
    results.add("release_push_seconds", done.push_seconds, unit="s")
    results.add("release_redeploy_seconds", done.redeploy_seconds, unit="s")
    results.add("release_serving", done.serving)
    results.add("release_bytes_sent_over_ssh", done.bytes_sent, unit="B")
    results.add("release_changed_layer_bytes", done.changed_layer_bytes, unit="B (compressed, as pushed)")
    results.add("release_new_config_bytes", done.new_config_bytes, unit="B")
    results.add("release_bytes_ratio", done.bytes_sent / max(done.changed_layer_bytes, 1),
                f"<= {TARGETS['release_bytes_ratio']}")


def peers_side_by_side(bench: Bench, results: Results, runs: int) -> None:
    """pyinfra's five containers on one host, dockyard's stack on another: no-op, template change, recreate."""
    ours = deployed(bench)
    bench.inventory("peer", 1)
    theirs = bench.env("peer")
    theirs.provider.provision()
    deploy.converge(theirs, CLAIM, only=())  # Docker alone: pyinfra deploys the rest
    folder = bench.root / "pyinfra"
    folder.mkdir()
    tools = [
        peers.pyinfra_tool(theirs, folder),
        peers.dockyard_tool(ours, bench.root / "state", bench.root / "inventory"),
    ]
    for tool in tools:
        tool.run()  # pyinfra's first deploy; for both, whatever a fresh process warms
    measures = {
        "noop": peers.median_runs(tools, runs),
        "template": peers.median_runs(tools, runs, lambda tool: tool.toggle_template()),
        "recreate": peers.median_runs(tools, runs, lambda tool: tool.remove_containers()),
    }
    for measure, seconds in measures.items():
        for name, value in seconds.items():
            results.add(f"{measure}_{name}_seconds", value, unit=f"s (median of {runs})")
        results.add(f"{measure}_ratio", seconds["dockyard"] / seconds["pyinfra"],
                    f"<= {TARGETS[f'{measure}_ratio']} x pyinfra")
    for tool in tools:
        results.add(f"restart_policy_repaired_{tool.name}", peers.repairs_restart_policy(tool), "yes (dockyard)")
    teardown(theirs)


def shipped_refs(env: Env) -> list[str]:
    """The local images a deploy of `env` ships or pushes to its hosts."""
    declared = deploy.declare(env, env.hosts())
    return sorted({want.image.local_ref for wants in declared.values() for want in wants if want.image.local_ref})


def shaped_uplink(bench: Bench, results: Results) -> None:
    """A cold deploy, then a one-line release, into a fresh host through a 50 Mbit/s uplink."""
    bench.inventory("uplink", 1)
    env = unpacked(bench.env("uplink"))
    env.provider.provision()
    (record,) = env.hosts()
    device = uplink.veth(record.provider["container"])
    with uplink.shaped(device, UPLINK_RATE):
        start, started = uplink.Counters.read(device), time.monotonic()
        deploy.converge(env, CLAIM, only=())
        docker, installed = uplink.Counters.read(device), time.monotonic()
        deploy.converge(env, CLAIM)
        deployed, finished = uplink.Counters.read(device), time.monotonic()
        done = release_next_version(bench, env, device=device)
    compressed, raw = uplink.compressed_unique_layers(shipped_refs(env))
    results.add("uplink_rate", UPLINK_RATE)
    results.add("uplink_cold_seconds", finished - started, unit=f"s (docker install {installed - started:.1f} s)")
    results.add("uplink_docker_install_bytes_in", (docker - start).sent, unit="B (apt, through the same link)")
    results.add("uplink_deploy_bytes_in", (deployed - docker).sent, unit="B")
    results.add("uplink_deploy_bytes_out", (deployed - docker).received, unit="B")
    results.add("uplink_unique_layers_gzip_bytes", compressed, unit=f"B ({raw} B uncompressed)")
    results.add("uplink_cold_bytes_ratio", (deployed - docker).sent / compressed,
                f"<= {TARGETS['uplink_cold_bytes_ratio']}")
    results.add("uplink_release_seconds", done.seconds, f"<= {TARGETS['uplink_release_seconds']} s",
                f"s (push {done.push_seconds:.1f} s, redeploy {done.redeploy_seconds:.1f} s)")
    results.add("uplink_release_serving", done.serving)
    changed = done.changed_layer_bytes + done.new_config_bytes
    results.add("uplink_release_bytes_in", done.wire.sent,
                f"<= {changed + TARGETS['uplink_release_extra_bytes']} B (changed {changed} B + 16 KB)", "B")
    results.add("uplink_release_bytes_out", done.wire.received, unit="B")
    teardown(env)


class ServingWatch:
    """Asks `url` every 50 ms, from now on, until `probe` answers in a row hold `text`; seen from the first of them."""

    def __init__(self, url: str, context: ssl.SSLContext, text: str, probe: int = 1):
        self.started = time.monotonic()
        self.seen: float | None = None
        self._thread = threading.Thread(target=self._watch, args=(url, context, text, probe), daemon=True)
        self._thread.start()

    def _watch(self, url: str, context: ssl.SSLContext, text: str, probe: int) -> None:
        in_a_row, first = 0, 0.0
        while time.monotonic() - self.started < 300:
            asked = time.monotonic()
            try:
                answered = text in urllib.request.urlopen(url, timeout=5, context=context).read().decode()
            except OSError:
                answered = False
            in_a_row = in_a_row + 1 if answered else 0
            if in_a_row == 1:
                first = asked
            if in_a_row == probe:
                self.seen = first
                return
            time.sleep(0.05)

    def seconds(self) -> float:
        self._thread.join()
        if self.seen is None:
            raise RuntimeError("the new version never answered")
        return self.seen - self.started


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
        env = unpacked(bench.env(name))
        env.provider.provision()
        started = time.monotonic()
        deploy.converge(env, CLAIM)
        timings[hosts] = time.monotonic() - started
        results.add(f"fanout_deploy_{hosts}_hosts_seconds", timings[hosts], unit="s")
        teardown(env)
    results.add("fanout_ratio", timings[3] / timings[1], f"<= {TARGETS['fanout_ratio']}")


def swarm_scaling(bench: Bench, results: Results) -> None:
    """A cold deploy of a 1-host swarm against a 3-host one, their no-op reruns, then a release on the 3 hosts."""
    deploys = {}
    for hosts in (1, 3):
        name = f"swarm{hosts}"
        bench.inventory(name, hosts, swarm=True)
        env = bench.env(name)
        provision_seconds, deploys[hosts] = cold(env, built_first=True)
        compared = f"1 host: {deploys[1]:.1f} s" if hosts == 3 else f"<= {TARGETS['cold_deploy_seconds']} s"
        results.add(f"swarm_{hosts}_hosts_provision_seconds", provision_seconds, unit="s")
        results.add(f"swarm_{hosts}_hosts_deploy_seconds", deploys[hosts], compared, "s (images built)")
        noop(bench, name, results, f"swarm_{hosts}_hosts_")
        if hosts == 1:
            teardown(env)
    results.add("swarm_deploy_ratio", deploys[3] / deploys[1], f"<= {TARGETS['swarm_deploy_ratio']}",
                "(3 hosts / 1 host)")

    done = release_next_version(bench, bench.env("swarm3"), probe=SWARM_PROBE_REQUESTS)
    results.add("swarm_release_to_serving_seconds", done.serving_seconds,
                f"<= {TARGETS['release_to_serving_seconds']} s",
                f"s (from `app.release` to the new version answering {SWARM_PROBE_REQUESTS} requests in a row)")
    results.add("swarm_release_seconds", done.seconds, f"<= {TARGETS['release_seconds']} s",
                "s (until `app.release` ends: the service update completed)")
    results.add("swarm_release_push_seconds", done.push_seconds, unit="s")
    results.add("swarm_release_redeploy_seconds", done.redeploy_seconds, unit="s")
    results.add("swarm_release_serving", done.serving)
    teardown(bench.env("swarm3"))


def teardown(env: Env) -> None:
    env.provider.teardown()
    env.state.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "latest.json"))
    parser.add_argument("--only", nargs="+", choices=PARTS, default=PARTS, metavar="PART",
                        help=f"run only these parts, in this order: {' '.join(PARTS)}")
    parser.add_argument("--runs", type=int, default=5, help="runs of each tool per side-by-side measure")
    args = parser.parse_args()
    results = Results()
    parts = {
        "cold": ("cold provision + deploy, then a no-op deploy", lambda: cold_and_noop(bench, results)),
        "latency": ("the proxy's added latency", lambda: proxy_latency(bench, results)),
        "release": ("release of a one-line change", lambda: release_change(bench, results)),
        "peers": (f"dockyard and {peers.PYINFRA}, side by side", lambda: peers_side_by_side(bench, results, args.runs)),
        "uplink": (f"cold deploy and release through a {UPLINK_RATE} uplink", lambda: shaped_uplink(bench, results)),
        "fanout": ("fan-out: one host, then three", lambda: fan_out(bench, results)),
        "swarm": ("a swarm of one host, then of three: deploy, no-op, release", lambda: swarm_scaling(bench, results)),
    }
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        bench = Bench(Path(tmp))
        bench.inventory("bench", 1)
        try:
            for part in (p for p in PARTS if p in args.only):
                title, run = parts[part]
                print(title, flush=True)
                run()
        finally:
            for inventory in sorted((bench.root / "inventory").glob("*.yml")):
                teardown(bench.env(inventory.stem))
    # the machine is shared: a busy one stretches every time above, the peer's as much as dockyard's
    results.add("load_average_1min_at_end", round(os.getloadavg()[0], 1), unit=f"on {os.cpu_count()} cores")
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
