"""The layer cache: a `docker save` read once, each layer gzipped once and named by its digests, an image's manifest
and a `docker load` archive made from the cache; and how the local `docker` command's answers are read. The engine
is stood in for by a save stream built here."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import threading

import pytest

from dockyard import images, layers
from dockyard.errors import ImageError


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


class FakeEngine:
    """Images as the engine describes and saves them (the legacy `docker save` layout), counting the saves."""

    def __init__(self, monkeypatch):
        self.images: dict[str, tuple[bytes, list[bytes]]] = {}
        self.saves: list[list[str]] = []
        self.unread: list[int] = []  # of each save, the bytes its reader left when it stopped
        monkeypatch.setattr(images, "describe", self.describe)
        monkeypatch.setattr(images, "save", self.save)

    def add(self, ref: str, layer_bodies: list[bytes]) -> str:
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha(b) for b in layer_bodies]}}).encode()
        self.images[ref] = (config, layer_bodies)
        return sha(config)

    def describe(self, refs) -> dict[str, dict]:
        return {
            ref: {"Id": sha(config), "RootFS": {"Layers": [sha(b) for b in bodies]}}
            for ref, (config, bodies) in ((ref, self.images[ref]) for ref in refs)
        }

    def save(self, refs):
        self.saves.append(list(refs))
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as archive:
            members = {"manifest.json": b"[]", "repositories": b"{}"}
            for config, bodies in (self.images[ref] for ref in refs):  # config, then the layers from the top
                members |= {f"{sha(config)[7:]}.json": config} | {f"{sha(b)[7:19]}/layer.tar": b for b in bodies[::-1]}
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        data = out.getvalue()
        self.unread.append(len(data))
        for i in range(0, len(data), 7000):  # chunks that cut members anywhere
            self.unread[-1] -= len(data[i:i + 7000])
            yield data[i:i + 7000]


def layer(seed: str) -> bytes:
    """A layer's bytes: a tar of one file, compressible as real layers are."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        data = (seed * 5000).encode()
        info = tarfile.TarInfo(f"{seed}.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def engine(monkeypatch):
    return FakeEngine(monkeypatch)


def test_an_image_is_packed_into_gzipped_layers_named_by_both_digests(engine, tmp_path):
    base, top = layer("base"), layer("top")
    image_id = engine.add("app:1", [base, top])
    packed = layers.LayerCache(tmp_path).packed("app:1")

    assert packed.config.digest == image_id and packed.config.path.read_bytes() == engine.images["app:1"][0]
    assert packed.diff_ids == (sha(base), sha(top))
    for blob, body in zip(packed.layers, (base, top), strict=True):
        compressed = blob.path.read_bytes()
        assert gzip.decompress(compressed) == body
        assert blob.digest == sha(compressed) and blob.size == len(compressed) < len(body)
    manifest = json.loads(packed.manifest())
    assert manifest["mediaType"] == layers.MANIFEST_TYPE
    assert manifest["config"] == {"mediaType": layers.CONFIG_TYPE, "size": packed.config.size, "digest": image_id}
    assert [entry["digest"] for entry in manifest["layers"]] == [blob.digest for blob in packed.layers]
    assert packed.size == packed.config.size + sum(blob.size for blob in packed.layers)


def test_the_load_archive_names_its_layers_by_their_uncompressed_digests_and_keeps_them_gzipped(engine, tmp_path):
    base = layer("base")
    engine.add("app:1", [base, base])  # one layer twice: one member, named twice
    packed = layers.LayerCache(tmp_path).packed("app:1")

    with tarfile.open(fileobj=io.BytesIO(b"".join(packed.archive()))) as archive:
        (entry,) = json.loads(archive.extractfile("manifest.json").read())
        assert entry["RepoTags"] == ["app:1"]
        assert entry["Layers"] == [f"{sha(base)[7:]}/layer.tar"] * 2
        assert archive.extractfile(entry["Config"]).read() == engine.images["app:1"][0]
        assert gzip.decompress(archive.extractfile(entry["Layers"][0]).read()) == base
        assert len(archive.getnames()) == 3


def test_a_layer_is_compressed_once_and_a_cached_image_is_not_saved_again(engine, tmp_path):
    base = layer("base")
    engine.add("ui:1", [base, layer("ui")])
    engine.add("app:1", [base, layer("app")])
    engine.add("hook:1", [base, layer("hook")])
    cache = layers.LayerCache(tmp_path)
    shared = cache.packed("ui:1").layers[0]
    first_write = shared.path.stat().st_mtime_ns

    cache.prepare(["app:1", "hook:1", "ui:1"])  # one save for the two images not packed yet
    app = cache.packed("app:1")
    assert app.layers[0] == cache.packed("hook:1").layers[0] == shared
    assert shared.path.stat().st_mtime_ns == first_write
    assert engine.saves == [["ui:1"], ["app:1", "hook:1"]]
    # another run of dockyard, on the same state folder: everything is there already
    assert layers.LayerCache(tmp_path).packed("app:1") == app
    assert len(engine.saves) == 2
    assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == sorted(
        {b.path.name for ref in ("ui:1", "app:1", "hook:1") for b in cache.packed(ref).layers})


def test_hosts_asking_at_once_share_one_save(engine, tmp_path):
    engine.add("app:1", [layer("base")])
    cache = layers.LayerCache(tmp_path)
    cache.prepare(["app:1"])
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.packed("app:1"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.saves == [["app:1"]] and len(set(results)) == 1


def test_a_release_stops_reading_the_save_once_its_new_layer_and_config_are_in(engine, tmp_path):
    base = layer("base" * 20)  # spans many chunks of the stream
    engine.add("app:1", [base, layer("v1")])
    cache = layers.LayerCache(tmp_path)
    cache.packed("app:1")
    engine.add("app:2", [base, layer("v2")])
    released = cache.packed("app:2")

    first, release = engine.unread
    assert first < 10240 and release > len(base) - 10240  # app:2's save stopped as its base layer began
    assert gzip.decompress(released.layers[1].path.read_bytes()) == layer("v2")
    assert released.layers[0] == cache.packed("app:1").layers[0]


def test_an_engine_that_does_not_answer_or_lacks_the_image_is_one_line(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    with pytest.raises(ImageError, match=r"^cannot reach the local Docker engine \(.*nonexistent.*\); start dockerd"):
        images.describe(["app:1"])
    with pytest.raises(ImageError, match=r"^cannot reach the local Docker engine .*; start dockerd"):
        list(images.save(["app:1"]))


def test_auto_asks_for_the_pull_source_once_an_hour_and_an_explicit_source_is_never_asked(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(images, "_probe_pull", lambda: asked.append(1) or "offline")
    memory = tmp_path / "images-source"
    assert images.resolve_source("auto", memory) == "offline" and len(asked) == 1
    assert images.resolve_source("auto", memory) == "offline" and len(asked) == 1
    hour_ago = memory.stat().st_mtime - images.SOURCE_MEMORY_SECONDS
    os.utime(memory, (hour_ago, hour_ago))
    assert images.resolve_source("auto", memory) == "offline" and len(asked) == 2
    assert images.resolve_source("online", memory) == "online" and len(asked) == 2
