"""A shaped uplink into a sandbox host, bytes on its wire, and what a deploy should send.

A sandbox host is a container: the link into it is its veth pair. On the machine's side, that veth's egress is
everything sent to the host, so a `tbf` qdisc there limits the uplink (the kernel here has tbf and htb, not netem),
and the veth's tx/rx counters are the bytes on the wire, SSH and TCP included. The host's answers are not shaped.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dockyard import images

SYS_NET = Path("/sys/class/net")


def veth(container: str) -> str:
    """The machine's end of the container's veth: the interface whose ifindex is the container's eth0 iflink."""
    iflink = subprocess.run(
        ["docker", "exec", container, "cat", "/sys/class/net/eth0/iflink"], capture_output=True, text=True,
        check=True,
    ).stdout.strip()
    for device in SYS_NET.iterdir():
        if (device / "ifindex").read_text().strip() == iflink:
            return device.name
    raise SystemExit(f"error: no interface with ifindex {iflink} (the veth of {container}) in this network namespace")


@dataclass(frozen=True)
class Counters:
    sent: int  # machine -> host: the veth's tx
    received: int  # host -> machine: the veth's rx

    @classmethod
    def read(cls, device: str) -> Counters:
        stats = SYS_NET / device / "statistics"
        return cls(int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text()))

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.sent - other.sent, self.received - other.received)


@contextmanager
def shaped(device: str, rate: str) -> Iterator[None]:
    """Limit what the machine sends through `device` to `rate`; the qdisc goes whatever happens."""
    tc = ["tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", rate, "burst", "64kb", "latency", "50ms"]
    result = subprocess.run(tc, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: `{' '.join(tc)}` failed: {result.stderr.strip()}; the bench needs CAP_NET_ADMIN")
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", device, "root"], capture_output=True)


def compressed_unique_layers(refs: list[str]) -> tuple[int, int]:
    """Bytes of the images' unique layers, gzipped (level 6, as a registry stores them), and uncompressed."""
    wanted = {layer for ref in refs for layer in images.engine().images.get(ref).attrs["RootFS"]["Layers"]}
    compressed = raw = 0
    save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=save.stdout, mode="r|") as archive:
        for entry in archive:
            if not entry.isfile() or not entry.name.endswith("layer.tar"):
                continue
            digest, gzip, size, stream = hashlib.sha256(), zlib.compressobj(6, zlib.DEFLATED, 31), 0, 0
            source = archive.extractfile(entry)
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                stream += len(gzip.compress(chunk))
            stream += len(gzip.flush())
            if f"sha256:{digest.hexdigest()}" in wanted:
                wanted.discard(f"sha256:{digest.hexdigest()}")
                compressed, raw = compressed + stream, raw + size
    if save.wait() != 0:
        raise SystemExit(f"error: docker save {' '.join(refs)} failed")
    return compressed, raw
