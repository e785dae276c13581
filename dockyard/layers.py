"""Local images as a registry stores them, compressed once: each layer gzipped into a cache keyed by its
uncompressed digest, the image's config beside them, and the manifest that names them.

Every host of a deploy, every later deploy and every release then sends these files as they are: nothing is
compressed twice, and a layer several images share is one file. `prepare` starts the work in the background, so a
deploy compresses while a fresh host installs Docker. The cache is the state folder's `layers/`, shared by the
project's environments; removing it costs only the time to compress again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dockyard import images
from dockyard.errors import ImageError

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GZIP_LEVEL = 3  # under half the time of level 6 (what docker push uses), for 5% more bytes
CHUNK = 1024 * 1024
TAR_BLOCK = 512


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:<hex> of the file's bytes, as the registry names it
    size: int
    path: Path


@dataclass(frozen=True)
class Packed:
    """One local image, ready to send: its config and its layers, gzipped, in the image's order."""

    ref: str
    config: Blob
    layers: tuple[Blob, ...]
    diff_ids: tuple[str, ...]  # each layer's uncompressed digest, which `docker load` names its files by

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    def manifest(self) -> bytes:
        """The registry's manifest of the image (schema 2), whose digest the registry reports."""
        def entry(blob: Blob, media_type: str) -> dict:
            return {"mediaType": media_type, "size": blob.size, "digest": blob.digest}

        return json.dumps({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": entry(self.config, CONFIG_TYPE),
            "layers": [entry(layer, LAYER_TYPE) for layer in self.layers],
        }, indent=3).encode()

    def archive(self) -> Iterator[bytes]:
        """The image as `docker load` reads it, tagged `ref`, each layer still gzipped (load inflates it)."""
        hexes = [diff_id.split(":", 1)[1] for diff_id in self.diff_ids]
        config_name = self.config.digest.split(":", 1)[1] + ".json"
        manifest = json.dumps(
            [{"Config": config_name, "RepoTags": [self.ref], "Layers": [f"{h}/layer.tar" for h in hexes]}]
        ).encode()
        yield from _member("manifest.json", io.BytesIO(manifest), len(manifest))
        with self.config.path.open("rb") as config:
            yield from _member(config_name, config, self.config.size)
        for hex_digest, layer in dict(zip(hexes, self.layers, strict=True)).items():
            with layer.path.open("rb") as data:
                yield from _member(f"{hex_digest}/layer.tar", data, layer.size)
        yield b"\0" * (2 * TAR_BLOCK)


def _member(name: str, data: io.RawIOBase | io.BufferedIOBase, size: int) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    yield info.tobuf(tarfile.USTAR_FORMAT)
    while chunk := data.read(CHUNK):
        yield chunk
    yield b"\0" * (-size % TAR_BLOCK)


class LayerCache:
    def __init__(self, folder: Path):
        self.folder = folder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layers")
        self._jobs: dict[str, Future[dict[str, Packed]]] = {}
        self._lock = threading.Lock()

    def prepare(self, refs: Iterable[str]) -> None:
        """Start packing `refs` in the background, all from one `docker save`; `packed` waits for what is under way."""
        with self._lock:
            new = [ref for ref in dict.fromkeys(refs) if ref not in self._jobs]
            if new:
                job = self._pool.submit(self._pack, new)
                self._jobs |= dict.fromkeys(new, job)

    def packed(self, ref: str) -> Packed:
        """`ref` packed: from the cache where it holds the image, else saved from the local engine and compressed."""
        self.prepare([ref])
        return self._jobs[ref].result()[ref]

    def stop(self) -> None:
        """Drop what has not started: a deploy that failed does not wait for images it will not send."""
        with self._lock:
            for ref, job in list(self._jobs.items()):
                if job.cancel():
                    del self._jobs[ref]

    def _pack(self, refs: list[str]) -> dict[str, Packed]:
        described = images.describe(refs)
        configs = self.folder / "configs"
        layers = {d for image in described.values() for d in image["RootFS"]["Layers"] if self._layer(d) is None}
        configs_missing = {image["Id"] for image in described.values() if not (configs / _hex(image["Id"])).exists()}
        if layers or configs_missing:
            self._save_and_compress(
                [ref for ref, image in described.items() if {image["Id"], *image["RootFS"]["Layers"]} & (
                    layers | configs_missing)],
                layers, configs_missing,
            )
        packed = {}
        for ref, image in described.items():
            config, diff_ids = configs / _hex(image["Id"]), tuple(image["RootFS"]["Layers"])
            packed[ref] = Packed(ref, Blob(image["Id"], config.stat().st_size, config),
                                 tuple(self._layer(d) for d in diff_ids), diff_ids)
        return packed

    def _layer(self, diff_id: str) -> Blob | None:
        """The gzipped layer whose uncompressed digest is `diff_id`, if the cache holds it."""
        try:
            known = json.loads((self.folder / "diffs" / _hex(diff_id)).read_text())
        except (OSError, ValueError):
            return None
        path = self.folder / "blobs" / _hex(known["digest"])
        return Blob(known["digest"], known["size"], path) if path.exists() else None

    def _save_and_compress(self, refs: list[str], layers: set[str], configs: set[str]) -> None:
        """One `docker save` of `refs`, read once: the `configs` kept, the `layers` (by uncompressed digest) spooled,
        then gzipped on every core while the next one is read."""
        for sub in ("configs", "diffs", "blobs"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        with (tempfile.TemporaryDirectory(dir=self.folder) as spool,
              ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as compressors):
            compressing = []
            saved = images.save(refs)
            with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(saved), CHUNK), mode="r|") as archive:
                for n, entry in enumerate(archive):
                    if not layers and not configs:  # all found (a release's new layer): the rest is known already
                        break
                    if not entry.isfile():
                        continue
                    spooled = Path(spool) / str(n)
                    digest = _spool(archive.extractfile(entry), spooled)
                    if digest in configs:
                        configs.discard(digest)
                        os.replace(spooled, self.folder / "configs" / _hex(digest))
                    elif digest in layers:
                        layers.discard(digest)  # an image may hold a layer twice; once is enough
                        compressing.append(compressors.submit(self._compress, spooled, digest))
                    else:  # a layer the cache holds, or the archive's own bookkeeping
                        spooled.unlink()
            if layers or configs:
                for _ in saved:  # to its end: a save that failed raises with the engine's own words
                    pass
                raise ImageError(f"`docker save {' '.join(refs)}` lacked {len(layers | configs)} of the layers and "
                                 f"configs `docker image inspect` lists for them; run it again")
            saved.close()
            for job in compressing:
                job.result()

    def _compress(self, spooled: Path, diff_id: str) -> None:
        gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container, as registries serve
        digest, size = hashlib.sha256(), 0
        with spooled.open("rb") as source, tempfile.NamedTemporaryFile(dir=self.folder / "blobs", delete=False) as out:
            for data in _chunks(source, gzip):
                digest.update(data)
                out.write(data)
                size += len(data)
        blob = f"sha256:{digest.hexdigest()}"
        os.replace(out.name, self.folder / "blobs" / _hex(blob))
        _write_atomically(self.folder / "diffs" / _hex(diff_id), json.dumps({"digest": blob, "size": size}).encode())
        spooled.unlink()


def _chunks(source, gzip) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield gzip.compress(chunk)
    yield gzip.flush()


def _spool(source, into: Path) -> str:
    """The sha256 of a member's bytes, copied into `into` on the way."""
    digest = hashlib.sha256()
    with into.open("wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return f"sha256:{digest.hexdigest()}"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of byte chunks: what `tarfile` reads a `docker save` stream through."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
