"""Security on a real sandbox host: what can be reached from outside, secrets that never leak, and the webhook
under fuzzing.

A changed host key is refused: tests/test_foundation_e2e.py's test_a_changed_host_key_is_refused_until_forgotten.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import stat
import string
import struct
import subprocess
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import quote

import docker
import paramiko
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.e2e.helpers import (
    can_connect,
    door,
    host_run,
    http,
    inspect,
    record,
    serving,
    set_app_version,
    wait_for,
)

ENV = "t-sec"
INVENTORY = """\
    provider: sandbox
    hosts:
      web1: {}
    services:
      mirror: {remote_url: "http://dockyard-registry:5000"}
      webhook:
        tags: ["v*"]
        hub_repository: acme/flask-hello
        hub_pull: 127.0.0.1:5000/flask-hello
    """
REGISTRY_OPEN = "  registry: {open_to: [0.0.0.0/0]}"
PUBLIC_PORTS = {22, 80, 443}  # SSH is how the provider reaches a host; the proxy fronts the app and /hooks/
LOOPBACK_PORTS = {"registry": 5000, "mirror": 5001, "registry_ui": 8080}
HISTORY = "/var/lib/dockyard/webhook/history.jsonl"


class Sec:
    """The environment, every command line output it printed, and every secret it ever held."""

    def __init__(self, project):
        self.project = project
        self.outputs: list[tuple[str, str]] = []
        self.secrets: dict[str, str] = {}  # what -> value
        self.key_lines: dict[str, str] = {}  # what -> a line of a private key's body

    def invoke(self, *args: str, check: bool = True):
        result = self.project.invoke(ENV, *args, check=check)
        self.outputs.append((" ".join(args), result.stdout + result.stderr))
        self.remember()
        return result

    def remember(self) -> None:
        state = self.project.state_dir / ENV
        if (state / "secrets.json").is_file():
            for name, value in json.loads((state / "secrets.json").read_text()).items():
                self.secrets[f"{name} {value[:4]}"] = value
        if (state / "id_ed25519").is_file():
            body = (state / "id_ed25519").read_text().splitlines()[1:-1]
            # OpenSSH's fixed header and the public key come first; the lines after hold the private part
            for i, line in enumerate(body[2:], start=3):
                if len(line) >= 16:
                    self.key_lines[f"private key {body[1][-6:]} line {i}"] = line

    def needles(self) -> dict[str, bytes]:
        """Each secret and each 16-character piece of it (a near miss of a token leaks most of it), and each
        private line of a key (its pieces would match any public key of the same type)."""
        found = {what: line.encode() for what, line in self.key_lines.items()}
        for what, value in self.secrets.items():
            found[what] = value.encode()
            for start in range(0, len(value) - 16 + 1, 8):
                found[f"{what} [{start}:{start + 16}]"] = value[start:start + 16].encode()
        return found

    def leaks(self, where: str, data: bytes) -> list[str]:
        return [f"{what} in {where}" for what, needle in self.needles().items() if needle in data]

    def hub_token(self) -> str:
        return self.project.env(ENV).state.secret("webhook_token")

    def notify_token(self) -> str:
        return self.project.env(ENV).state.secret("notify_token")

    @contextmanager
    def listener(self) -> Iterator[Callable[[], paramiko.Channel]]:
        """Connections to the webhook listener as the registry makes them, on the host's docker network (it
        publishes no port): each one a channel of one SSH connection to the host."""
        e = self.project.env(ENV)
        (host,) = e.hosts()
        with e.connect(host) as conn:
            networks = json.loads(conn.run("docker inspect --format '{{json .NetworkSettings.Networks}}' "
                                           "dockyard-webhook"))
            address = (networks["dockyard"]["IPAddress"], 9000)
            transport = conn.connection.client.get_transport()

            def connect() -> paramiko.Channel:
                channel = transport.open_channel("direct-tcpip", address, ("127.0.0.1", 0))
                channel.settimeout(15)
                return channel

            yield connect


@pytest.fixture(scope="module")
def sec(module_project):
    module_project.copy_sources()
    module_project.inventory(ENV, INVENTORY)
    state = Sec(module_project)
    try:
        state.invoke("provision", "deploy")
        yield state
    finally:
        module_project.invoke(ENV, "teardown", "--yes", check=False)


# -- exposure --------------------------------------------------------------------------------------------------
def open_ports(address: str) -> set[int]:
    """Every TCP port of `address` that accepts a connection."""
    def answers(port: int) -> int | None:
        with socket.socket() as sock:
            sock.settimeout(1)
            return port if sock.connect_ex((address, port)) == 0 else None

    with ThreadPoolExecutor(64) as pool:
        return {port for port in pool.map(answers, range(1, 65536)) if port}


def host_container(project):
    """The sandbox host's container on this machine."""
    return docker.from_env().containers.get(record(project, ENV).provider["container"])


def published(project) -> dict[int, set[str]]:
    """Ports the sandbox host's container publishes on this machine: container port -> host addresses."""
    bindings = host_container(project).attrs["HostConfig"]["PortBindings"] or {}
    return {int(port.split("/")[0]): {b["HostIp"] for b in bs} for port, bs in bindings.items()}


def listening(project) -> dict[int, set[str]]:
    """Inside the host: port -> addresses something listens on (`ss`)."""
    found: dict[int, set[str]] = {}
    for line in host_run(project, ENV, "ss -Hltn").splitlines():
        address, _, port = line.split()[3].rpartition(":")
        found.setdefault(int(port), set()).add(address)
    return found


def serves(url: str) -> bool:
    try:
        return http(url, timeout=5)[0] == 200
    except OSError:
        return False


def test_only_ssh_and_the_proxy_are_reachable_from_outside_the_host(sec):
    host = record(sec.project, ENV)
    ip = host.provider["ip"]
    assert open_ports(ip) == PUBLIC_PORTS
    redirect = requests.get(f"http://{ip}/", allow_redirects=False, timeout=5)
    assert (redirect.status_code, redirect.headers["Location"]) == (301, f"https://{ip}/")
    # the engine publishes SSH and the proxy, on this machine's loopback only
    assert published(sec.project) == {port: {"127.0.0.1"} for port in PUBLIC_PORTS}
    url, ca = door(sec.project, ENV)
    assert http(f"{url}/", ca=ca) == (200, "Flask Hello world! Version 1\n")

    inside = listening(sec.project)
    for role, port in LOOPBACK_PORTS.items():
        assert inside[port] == {"127.0.0.1"}, f"{role} listens on {inside[port]}"
    assert inside[80] == inside[443] == {"0.0.0.0"}
    assert 8000 not in inside and 9000 not in inside  # the app and the listener: on the docker network only
    bindings = {name: item["HostConfig"]["PortBindings"] for name, item in inspect(
        sec.project, ENV, "dockyard-registry", "dockyard-mirror", "dockyard-registry-ui").items()}
    assert {b["HostIp"] for ports in bindings.values() for bs in ports.values() for b in bs} == {"127.0.0.1"}
    # ... where the host itself reaches them
    assert "200" in host_run(sec.project, ENV, "wget -q -S -O /dev/null http://127.0.0.1:5000/v2/ 2>&1 | head -1")


def test_a_neighbour_cannot_reach_the_loopback_ports_by_sending_to_127_0_0_1(sec):
    """Docker's DNAT for ports published on 127.0.0.1 also takes packets that arrive from the network addressed
    to 127.0.0.1 (moby/moby#45610): a neighbour on the host's network (here this machine, on the sandbox bridge)
    would reach the registry with a hand-made packet."""
    for role, port in LOOPBACK_PORTS.items():
        assert loopback_syn(sec.project, port) == "silent", (
            f"{role}: a SYN to 127.0.0.1:{port} from the network was answered")
    assert loopback_syn(sec.project, 443, to=record(sec.project, ENV).provider["ip"]) == "answered"  # the probe works


def loopback_syn(project, port: int, to: str = "127.0.0.1") -> str:
    """Send one TCP SYN for <to>:<port> to the host's MAC address from this machine's side of the bridge;
    `answered` (SYN-ACK), `reset` or `silent`. Needs root, like the rest of the e2e tests."""
    client = docker.from_env()
    (attachment,) = host_container(project).attrs["NetworkSettings"]["Networks"].values()
    network = client.networks.get(attachment["NetworkID"])
    bridge = network.attrs["Options"].get("com.docker.network.bridge.name") or f"br-{network.id[:12]}"
    src, dst = socket.inet_aton(attachment["Gateway"]), socket.inet_aton(to)
    sport = 20000 + port % 1000 + int(time.time()) % 20000
    tcp = struct.pack("!HHIIBBHHH", sport, port, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", _checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800)) as sock:
        sock.bind((bridge, 0))
        sock.settimeout(0.2)
        mac = bytes.fromhex(attachment["MacAddress"].replace(":", ""))
        sock.send(mac + sock.getsockname()[4] + b"\x08\x00" + ip + tcp)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                reply = sock.recv(4096)[14:]
            except TimeoutError:
                continue
            if reply[9] == 6 and reply[12:16] == dst:
                their_port, our_port, _, _, _, flags = struct.unpack("!HHIIBB", reply[20:34])
                if (their_port, our_port) == (port, sport):
                    return "answered" if flags & 0x12 == 0x12 else "reset"
    return "silent"


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def test_opening_the_registry_in_the_inventory_opens_it_and_closing_it_closes_it(sec):
    inventory = sec.project.inventory_dir / f"{ENV}.yml"
    inventory.write_text(inventory.read_text() + REGISTRY_OPEN + "\n")
    # A sandbox publishes on this machine only the ports open when it was created: it says so, before any change.
    refused = sec.invoke("deploy", check=False)
    assert refused.returncode == 1
    assert "does not publish port 5000" in refused.stderr and "invoke teardown" in refused.stderr

    sec.invoke("teardown", "--yes")
    sec.invoke("provision", "deploy")
    host = record(sec.project, ENV)
    ip = host.provider["ip"]
    assert open_ports(ip) == PUBLIC_PORTS | {5000}
    assert http(f"http://{ip}:5000/v2/")[0] == 200
    assert serves(f"http://{host.endpoints['registry']}/v2/")
    assert listening(sec.project)[5000] == {"0.0.0.0"}

    inventory.write_text(inventory.read_text().replace(REGISTRY_OPEN + "\n", ""))
    result = sec.invoke("deploy")
    assert "recreate dockyard-registry" in result.stdout
    assert not can_connect(ip, 5000)
    assert listening(sec.project)[5000] == {"127.0.0.1"}
    assert open_ports(ip) == PUBLIC_PORTS
    # the engine still publishes the port it was created with; nothing answers behind it
    assert not serves(f"http://127.0.0.1:{published_port(sec.project, 5000)}/v2/")


def published_port(project, port: int) -> int:
    return int(host_container(project).attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"])


# -- the webhook under fuzzing ---------------------------------------------------------------------------------
KNOWN_METHODS = {"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "other"}
TOKEN_CHARS = string.ascii_letters + string.digits + "-_"
PATH_CHARS = "".join(chr(c) for c in range(0x21, 0x100) if chr(c) not in "\x7f")  # no space, no CR/LF
HEADER_CHARS = "".join(chr(c) for c in range(0x20, 0x100) if chr(c) not in "\x7f")
APP_REPOSITORY, HUB_REPOSITORY = "flask-hello", "acme/flask-hello"
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # Docker's tag grammar
REGISTRY_MEDIA_TYPES = ("application/json", "application/vnd.docker.distribution.events.v1+json",
                        "application/vnd.docker.distribution.events.v2+json")
FUZZ_EXAMPLES = 600


def near_misses(token: str) -> st.SearchStrategy[str]:
    """Tokens that are almost right: one character off, too short, too long, another case, encoded."""
    index = st.integers(0, len(token) - 1)
    return st.one_of(
        index.map(lambda i: token[:i] + token[i + 1:]),
        st.tuples(index, st.sampled_from(TOKEN_CHARS)).filter(lambda t: token[t[0]] != t[1]).map(
            lambda t: token[:t[0]] + t[1] + token[t[0] + 1:]),
        st.text(TOKEN_CHARS, min_size=1, max_size=3).map(lambda s: token + s),
        st.text(TOKEN_CHARS, min_size=1, max_size=3).map(lambda s: s + token),
        st.sampled_from([token.swapcase(), token[: len(token) // 2], token + "/", token + "%00", token + "#",
                         quote(token[0], safe="").replace(token[0], f"%{ord(token[0]):02X}") + token[1:],
                         f"{token}/../{token}", token.encode().hex()]),
    )


def wrong_pushes(repository: str, well_formed: bool = True) -> st.SearchStrategy[tuple[str, str]]:
    """(repository, tag) pairs the allowlist refuses: another repository, or a tag outside `v*`, or deploy's own;
    in Docker's grammar, or now and then not."""
    repositories = st.one_of(st.just(repository), st.from_regex(r"[a-z0-9]{1,12}(/[a-z0-9]{1,12})?", fullmatch=True))
    tags = st.one_of(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True), st.just("deploy-v1"))
    if not well_formed:
        repositories, tags = repositories | st.text(max_size=20), tags | st.text(max_size=20)
    return st.tuples(repositories, tags).filter(
        lambda p: not (p[0] == repository and p[1].startswith("v") and TAG.fullmatch(p[1])))


def some_wrong_pushes(repository: str) -> st.SearchStrategy[tuple[str, str]]:
    return st.one_of(*[wrong_pushes(repository)] * 3, wrong_pushes(repository, well_formed=False))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def hub_payloads(draw) -> bytes:
    repository, tag = draw(some_wrong_pushes(HUB_REPOSITORY))
    namespace = draw(st.one_of(st.just(repository.partition("/")[0]), st.sampled_from(["acme", "evil", ""])))
    body = {"push_data": {"tag": tag, "pusher": "someone"},
            "repository": {"repo_name": repository, "namespace": namespace, "name": repository}}
    if (callback := draw(st.one_of(st.none(), st.just("http://127.0.0.1:9/cb"), st.text(max_size=30)))) is not None:
        body["callback_url"] = callback
    return json.dumps(body).encode()


def registry_envelopes() -> st.SearchStrategy[bytes]:
    event = st.builds(
        lambda action, push, media: {"action": action, "target": {
            "mediaType": media, "repository": push[0], "tag": push[1], "digest": "sha256:" + "0" * 64}},
        st.sampled_from(["push", "push", "pull", "delete", "mount"]), some_wrong_pushes(APP_REPOSITORY),
        st.sampled_from(["application/vnd.docker.distribution.manifest.v2+json", "application/octet-stream"]),
    )
    # a right repository and tag are fine as long as the action is not a push
    not_a_push = st.builds(lambda action: {"action": action, "target": {"repository": APP_REPOSITORY, "tag": "v1"}},
                           st.sampled_from(["pull", "delete"]))
    envelopes = st.lists(st.one_of(event, event, not_a_push), max_size=3)
    return envelopes.map(lambda events: json.dumps({"events": events}).encode())


BODIES = st.one_of(
    st.just(b""), st.binary(max_size=2000), JSON.map(lambda v: json.dumps(v).encode()), hub_payloads(),
    registry_envelopes(), st.just(b"{" * 5000), st.just(b"x" * 70_000),
)
CONTENT_TYPES = st.one_of(st.none(), st.sampled_from([
    "application/json", "application/json; charset=utf-8", "application/vnd.docker.distribution.events.v1+json",
    "text/plain", "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded", "APPLICATION/JSON"]), st.text(HEADER_CHARS, max_size=40))


@st.composite
def webhook_requests(draw, hub: str, notify: str):
    """A third each: Docker Hub-like, registry-like, and anything at all."""
    kind = draw(st.sampled_from(["hub", "registry", "anything"]))
    often = st.integers(0, 4).map(bool)  # True four times in five
    if kind == "hub":
        method = "POST" if draw(often) else draw(st.sampled_from(sorted(KNOWN_METHODS)))
        token = hub if draw(often) else draw(near_misses(hub))
        path = f"/hooks/{token}{draw(st.sampled_from(['', '', '?x=1']))}"
        content_type = "application/json" if draw(often) else draw(CONTENT_TYPES)
        authorization = None
        body = draw(hub_payloads()) if draw(often) else draw(BODIES)
    elif kind == "registry":
        method = "POST" if draw(often) else draw(st.sampled_from(sorted(KNOWN_METHODS)))
        path = draw(st.sampled_from(["/registry/events", "/registry/events", "/registry/events?x=1",
                                     "/registry/events/", "/registry/event"]))
        content_type = draw(st.sampled_from(sorted(REGISTRY_MEDIA_TYPES))) if draw(often) else draw(CONTENT_TYPES)
        authorization = draw(st.one_of(
            st.just(f"Bearer {notify}"), st.just(f"bearer   {notify} "),
            near_misses(notify).map(lambda t: f"Bearer {t}"), st.just(f"Basic {notify}"), st.just("Bearer"),
            st.none(), st.text(HEADER_CHARS, max_size=60),
        ))
        body = draw(registry_envelopes()) if draw(often) else draw(BODIES)
    else:
        made_up = st.from_regex(r"[A-Za-z_-]{1,10}", fullmatch=True)
        method = draw(st.one_of(st.sampled_from(sorted(KNOWN_METHODS)), made_up))
        path = draw(st.one_of(
            st.sampled_from(["/", "/hooks/", "/hooks", "/hooks//", "/registry", "/healthz", "/healthz/", "//hooks/x",
                             "/HOOKS/x", "/v2/", "*"]),
            st.text(PATH_CHARS, max_size=60).map(lambda s: "/hooks/" + s),
            st.text(PATH_CHARS, max_size=60).map(lambda s: "/" + s),
            st.text(PATH_CHARS, max_size=20).map(lambda s: "/healthz?" + s),
        ))
        content_type = draw(CONTENT_TYPES)
        authorization = draw(st.one_of(st.none(), st.text(HEADER_CHARS, max_size=60)))
        body = draw(BODIES)
    headers = {"Host": "fuzz"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if authorization is not None:
        headers["Authorization"] = authorization
    for name, value in draw(st.dictionaries(st.from_regex(r"X-[A-Za-z-]{1,12}", fullmatch=True),
                                            st.text(HEADER_CHARS, max_size=40), max_size=3)).items():
        headers[name] = value
    chunked = not draw(often) and draw(st.booleans())  # now and then, a body with no Content-Length
    return method, path, headers, body, chunked


def send(connect: Callable[[], paramiko.Channel], method: str, path: str, headers: dict, body: bytes,
         chunked: bool) -> tuple[int, bytes]:
    """One request on its own connection, byte for byte as given; (status, response). Status 0: no answer."""
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    with connect() as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + payload)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    while answer.startswith(b"HTTP/1.1 100"):  # an interim answer to Expect: 100-continue
        answer = answer.partition(b"\r\n\r\n")[2]
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b"0"
    return int(status), answer


def authenticated_registry_post(method: str, path: str, headers: dict, notify: str) -> bool:
    """What the listener lets in: the registry's bearer token on POST /registry/events."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return (method == "POST" and path.partition("?")[0] == "/registry/events" and scheme.lower() == "bearer"
            and token.strip() == notify)


def webhook_state(sec) -> dict:
    app = serving(sec.project, ENV)
    items = inspect(sec.project, ENV, "dockyard-webhook", app)
    lines = host_run(sec.project, ENV, f"cat {HISTORY} 2>/dev/null | wc -l").strip()
    return {
        "webhook": (items["dockyard-webhook"]["State"]["StartedAt"], items["dockyard-webhook"]["RestartCount"]),
        "app": (app, items[app]["Id"], items[app]["State"]["StartedAt"]),
        "history lines": int(lines),
    }


def test_the_webhook_survives_fuzzing_and_redeploys_nothing(sec):
    hub, notify = sec.hub_token(), sec.notify_token()
    before = webhook_state(sec)
    since = host_run(sec.project, ENV, "date -u +%Y-%m-%dT%H:%M:%SZ").strip()
    answers: dict[int, int] = {}
    routes: Counter[str] = Counter()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(request=webhook_requests(hub, notify))
    def fuzz(request):
        method, path, headers, body, chunked = request
        status, answer = send(connect, method, path, headers, body, chunked)
        answers[status] = answers.get(status, 0) + 1
        routes[path.partition("?")[0].lstrip("/").split("/")[0][:8] or "/"] += 1
        route = path.partition("?")[0]
        if method == "GET" and route == "/healthz":
            assert status == 200, answer[:300]
        elif authenticated_registry_post(method, path, headers, notify) and status == 200:
            assert b'"status": "ignored"' in answer, answer[:300]
        elif method not in KNOWN_METHODS:
            # what http.server answers to a method it does not know, as RFC 9110 says
            assert status in (400, 501), answer[:300]
        else:
            assert 400 <= status < 500, answer[:300]

    started = time.monotonic()
    with sec.listener() as connect:
        fuzz()
        assert send(connect, "GET", "/healthz", {"Host": "fuzz"}, b"", False)[0] == 200
    print(f"\nfuzzed the webhook with {sum(answers.values())} requests in {time.monotonic() - started:.1f}s; "
          f"answers: {dict(sorted(answers.items()))}; first path segments: {dict(routes.most_common(5))}")
    assert webhook_state(sec) == before
    log = host_run(sec.project, ENV, f"docker logs --since {since} dockyard-webhook 2>&1")
    assert "Traceback" not in log
    assert " -> 202 " not in log


# -- secrets ---------------------------------------------------------------------------------------------------
def test_no_secret_in_any_output_log_or_tracked_file(sec):
    """A full run, then every secret the environment ever held is looked for wherever text ends up."""
    set_app_version(sec.project, 2)
    sec.invoke("app.release", "--version", "v2")
    hub, notify = sec.hub_token(), sec.notify_token()
    url, ca = door(sec.project, ENV)
    seen = webhook_state(sec)["history lines"]
    hub_push = json.dumps({
        "push_data": {"tag": "v2"}, "repository": {"repo_name": HUB_REPOSITORY, "namespace": "acme"},
        "callback_url": "http://127.0.0.1:9/callback",
    }).encode()
    as_json = {"Content-Type": "application/json"}
    assert http(f"{url}/hooks/{hub[:-1]}", "POST", hub_push, as_json, ca=ca)[0] == 404  # a near miss
    assert http(f"{url}/hooks/{hub}x", "POST", hub_push, as_json, ca=ca)[0] == 404
    assert http(f"{url}/hooks/{hub}", "POST", hub_push, as_json, ca=ca)[0] == 202
    events = json.dumps({"events": [{"action": "push", "target": {"repository": "other", "tag": "v2"}}]}).encode()
    with sec.listener() as connect:
        headers = {"Host": "dockyard-webhook:9000", **as_json}
        assert send(connect, "POST", "/registry/events", {**headers, "Authorization": f"Bearer {notify[:-1]}"},
                    events, False)[0] == 401
        assert send(connect, "POST", "/registry/events", {**headers, "Authorization": f"Bearer {notify}"},
                    events, False)[0] == 200
    wait_for("the Docker Hub redeploy's history line", lambda: webhook_state(sec)["history lines"] > seen, 90)
    for command in (("registry.ls",), ("registry.tags", "flask-hello"), ("app.history",), ("webhook.logs",),
                    ("webhook.url",), ("hosts",), ("plan",), ("deploy",)):
        sec.invoke(*command)

    state = sec.project.state_dir / ENV
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    holding = {path.name for path in state.iterdir() if sec.leaks(path.name, path.read_bytes())}
    assert holding >= {"secrets.json", "id_ed25519"}
    assert {name: oct(stat.S_IMODE((state / name).stat().st_mode)) for name in holding} == dict.fromkeys(
        holding, "0o600")
    modes = host_run(sec.project, ENV, "stat -c '%a %n' /etc/dockyard/*/config.*").split("\n")
    assert {line.split()[0] for line in modes if line} == {"600"}, modes

    leaks = []
    dumps = {
        "container logs": "for c in $(docker ps -aq); do docker logs $c 2>&1; done",
        "container metadata": "docker inspect $(docker ps -aq)",
        HISTORY: f"cat {HISTORY}",
    }
    for where, script in dumps.items():
        leaks += sec.leaks(f"the host's {where}", host_run(sec.project, ENV, script).encode())
    logs = base64.b64decode(host_run(sec.project, ENV, "tar -C / -czf - var/log 2>/dev/null | base64 -w0"))
    with tarfile.open(fileobj=io.BytesIO(logs)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                leaks += sec.leaks(f"the host's /{member.name}", tar.extractfile(member).read())

    sec.invoke("teardown", "--yes")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    tracked = [name for name in listed.decode().split("\0") if name]
    for name in tracked:
        if (REPO / name).is_file():
            leaks += sec.leaks(f"tracked file {name}", (REPO / name).read_bytes())
    for command, output in sec.outputs:
        leaks += sec.leaks(f"the output of `invoke {command}`", output.encode())
    print(f"\nlooked for {len(sec.secrets)} secrets ({len(sec.needles())} needles) in {len(sec.outputs)} command "
          f"outputs, {len(tracked)} tracked files, the host's logs, metadata, history and /var/log")
    assert leaks == []
