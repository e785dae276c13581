"""The registry client and `registry.*` output against a real registry (dockyard's offline image), and
garbage collection run for real: a deleted tag's blobs leave the disk."""

from __future__ import annotations

import io
import json
import os
import subprocess
import urllib.request

import pytest

from dockyard import registry_gc, report
from dockyard.cli.registry import remove_tag
from dockyard.commands.registry_gc import gc_script
from dockyard.errors import Aborted, RegistryError
from dockyard.layers import MANIFEST_TYPE, LayerCache
from dockyard.registry_api import MANIFEST_ACCEPT, RegistryClient
from dockyard.report import Reporter
from tests.e2e.helpers import wait_for
from tests.e2e.local_registry import PREFIX, engine, local_registry, published_address, push_all, tiny_images

BULK = 105  # more repositories than one default page of the catalog
BIG = 2_000_000  # random bytes, so compression cannot shrink what gc must free



@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    payloads = {"small": b"dockyard registry test\n", "other": b"another image\n", "big": os.urandom(BIG)}
    with local_registry(tmp, "api") as reg, tiny_images(tmp, payloads) as refs:
        digests = push_all(reg, [
            (refs["small"], "t-app:1.0"), (refs["small"], "t-app:latest"), (refs["big"], "t-app:2.0"),
            (refs["other"], "team/tool:v1"), (refs["other"], "t-src:amd64"), (refs["small"], "t-src:provenance"),
            *[(refs["small"], f"bulk/r{i:03d}:1") for i in range(BULK)],
        ])
        digests["t-multi:1"] = put_index(reg, "t-src", "t-multi:1", digests["t-src:amd64"], digests["t-src:provenance"])
        yield reg, digests


def http(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers, response.read()


def put_index(reg, source: str, target: str, image: str, attestation: str) -> str:
    """A multi-platform tag as BuildKit pushes one: a manifest list of an image and its provenance
    attestation, both untagged in the target repository. Both are copied from `source` by digest."""
    repository, tag = target.split(":")
    children = []
    for digest, platform, notes in (
        (image, {"architecture": "amd64", "os": "linux"}, {}),
        (attestation, {"architecture": "unknown", "os": "unknown"},
         {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": image}),
    ):
        headers, manifest = http(f"{reg.url}/v2/{source}/manifests/{digest}", headers={"Accept": MANIFEST_ACCEPT})
        media_type = headers.get_content_type()
        parsed = json.loads(manifest)
        for blob in (parsed["config"], *parsed["layers"]):
            http(f"{reg.url}/v2/{repository}/blobs/uploads/?mount={blob['digest']}&from={source}", "POST")
        http(f"{reg.url}/v2/{repository}/manifests/{digest}", "PUT", manifest, {"Content-Type": media_type})
        children.append({
            "mediaType": media_type, "digest": digest, "size": len(manifest), "platform": platform,
            **({"annotations": notes} if notes else {}),
        })
    index_type = "application/vnd.docker.distribution.manifest.list.v2+json"
    body = json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": children}).encode()
    headers, _ = http(f"{reg.url}/v2/{repository}/manifests/{tag}", "PUT", body, {"Content-Type": index_type})
    return headers["Docker-Content-Digest"]


@pytest.fixture
def client(registry):
    return RegistryClient(registry[0].url, where="web1 registry")


def test_catalog_follows_the_link_header_across_pages(client):
    paged = client.catalog(page_size=7)
    assert len(paged) == BULK + 4 == len(set(paged))
    assert paged == client.catalog(page_size=1000)
    assert {"t-app", "team/tool", "bulk/r000", f"bulk/r{BULK - 1:03d}"} <= set(paged)


def test_tags_carry_the_pushed_digest_the_summed_size_and_the_config_date(client, registry):
    _, pushed = registry
    assert client.tags("t-app") == ["1.0", "2.0", "latest"]
    small, big, latest = (client.describe("t-app", t) for t in ("1.0", "2.0", "latest"))
    assert small.digest == latest.digest == pushed["t-app:1.0"] == pushed["t-app:latest"]
    assert big.digest == pushed["t-app:2.0"] != small.digest
    assert BIG < big.size < BIG + 10_000  # one gzipped layer of random bytes, plus the config
    assert 0 < small.size < 2_000
    created = engine().images.get(f"{PREFIX}-tiny:big").attrs["Created"]
    assert big.created[:19] == created[:19]


def test_a_multi_platform_tag_counts_its_platform_images_but_not_their_attestations(client, registry):
    _, pushed = registry
    index = client.describe("t-multi", "1")
    image = client.describe("t-src", "amd64")
    assert index.digest == pushed["t-multi:1"] != image.digest
    assert (index.size, index.created) == (image.size, image.created)
    assert client.tags("t-multi") == ["1"]
    assert client.find_index() == "t-multi:1"


def test_unknown_repository_and_unknown_tag_are_named_with_their_fix(client):
    unknown = r"^web1 registry: no repository nope in the registry; `invoke registry.ls` lists them$"
    with pytest.raises(RegistryError, match=unknown):
        client.tags("nope")
    with pytest.raises(RegistryError, match=unknown):
        client.plan_delete("nope", "1.0")
    with pytest.raises(RegistryError, match=r"^web1 registry: t-app has no tag 9.9; `invoke registry.tags t-app`"):
        client.describe("t-app", "9.9")


def test_a_registry_with_deletes_disabled_says_how_to_enable_them(registry, tmp_path):
    reg, _ = registry
    with local_registry(tmp_path, "nodelete", delete=False, volume=reg.volume) as read_only:
        client = RegistryClient(read_only.url, where="web1 registry")
        deletion = client.plan_delete("team/tool", "v1")
        with pytest.raises(RegistryError, match=r"refuses deletes; set storage.delete.enabled: true"):
            client.delete(deletion)
    assert RegistryClient(reg.url).tags("team/tool") == ["v1"]


def test_ls_and_tags_print_tables(client):
    out = Reporter(io.StringIO())
    report.repositories(out, client.tag_counts())
    listing = out.stream.getvalue().splitlines()
    assert listing[0].split() == ["repository", "tags"]
    counts = dict(line.split() for line in listing[1:-1])
    assert counts["t-app"] == "3" and counts["team/tool"] == "1" and counts["bulk/r000"] == "1"
    assert listing[-1] == f"{BULK + 4} repositories, {BULK + 7} tags"

    out = Reporter(io.StringIO())
    report.tags(out, "t-app", client.describe_all("t-app"))
    lines = out.stream.getvalue().splitlines()
    assert lines[0].split() == ["tag", "digest", "size", "created"]
    assert [line.split()[0] for line in lines[1:4]] == ["1.0", "2.0", "latest"]
    assert lines[1].split()[1] == lines[3].split()[1]  # 1.0 and latest: one digest
    assert lines[2].split()[2:4] == ["2.0", "MB"]
    assert lines[-1] == "t-app: 3 tags"
    print("\n".join(listing[:3] + ["..."] + listing[-3:] + [""] + lines))


def test_rm_without_yes_and_without_a_terminal_changes_nothing(client):
    out = Reporter(io.StringIO())
    with pytest.raises(Aborted, match="needs confirmation; pass --yes"):
        remove_tag(out, client, "t-app", "1.0", yes=False)
    assert out.stream.getvalue().startswith("warning: sha256:")
    assert out.stream.getvalue().endswith(" is also tagged latest; it goes too\n")
    assert client.tags("t-app") == ["1.0", "2.0", "latest"]


def test_rm_then_gc_frees_the_space_and_the_registry_comes_back_with_its_index_whole(client, registry):
    reg, _ = registry
    out = Reporter(io.StringIO())
    remove_tag(out, client, "t-app", "2.0", yes=True)
    printed = out.stream.getvalue()
    assert printed.startswith("deleted t-app:2.0 (sha256:") and "`invoke registry.gc` frees the space" in printed
    assert client.tags("t-app") == ["1.0", "latest"]

    # As `invoke registry.gc` decides: an index here, so untagged images stay.
    assert client.find_index() == "t-multi:1"
    result = run_gc(reg, delete_untagged=False)
    print(f"gc: {result}, freed {result.bytes_freed} bytes")
    assert result.bytes_freed > BIG  # a deleted manifest is gone whatever the flag: its blobs are collected
    assert result.blobs_deleted >= 2  # the big layer and its config
    # gc waited for the registry's own probe; Docker's health check, kept for later, agrees on its next tick
    wait_for("Docker to call the registry healthy", lambda: engine().containers.get(reg.container).attrs["State"][
        "Health"]["Status"] == "healthy", timeout=30)
    # what is still tagged survived, and is still served (on a new port: the test publishes an ephemeral one)
    client = RegistryClient(f"http://{published_address(reg.container)}")
    assert client.describe("t-app", "1.0").digest == client.describe("t-app", "latest").digest
    assert client.describe("t-multi", "1").size == client.describe("t-src", "amd64").size
    assert len(client.catalog()) == BULK + 4


def test_gc_with_delete_untagged_collects_an_image_whose_tag_moved_on(tmp_path):
    payloads = {"old": os.urandom(BIG), "new": b"the new latest\n"}
    with local_registry(tmp_path, "untagged") as reg, tiny_images(tmp_path, payloads) as refs:
        push_all(reg, [(refs["old"], "t-app:latest")])
        push_all(reg, [(refs["new"], "t-app:latest")])  # the old image stays, untagged
        assert RegistryClient(reg.url).find_index() is None
        result = run_gc(reg, delete_untagged=True)
        assert result.bytes_freed > BIG
        client = RegistryClient(f"http://{published_address(reg.container)}")
        assert client.tags("t-app") == ["latest"] and client.describe("t-app", "latest").size < 2_000


def run_gc(reg, delete_untagged: bool) -> registry_gc.GcResult:
    """The gc script, run here as `invoke registry.gc` runs it on the host."""
    script = gc_script(reg.container, reg.volume, delete_untagged=delete_untagged, health_timeout=60)
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stderr
    return registry_gc.parse_summary(ran.stdout, "this machine")


def test_a_packed_image_is_uploaded_once_linked_into_a_second_repository_and_pulls_back_whole(tmp_path):
    """dockyard's own push: blobs from the layer cache, the manifest it writes; the engine pulls the same image."""
    with (local_registry(tmp_path, "packed") as reg,
          tiny_images(tmp_path, {"packed": os.urandom(50_000) + b"\0" * 200_000}) as refs):
        packed = LayerCache(tmp_path / "layers").packed(refs["packed"])
        client = RegistryClient(reg.url, where="web1 registry")
        opened = []

        def push(repository: str) -> None:
            for blob in (packed.config, *packed.layers):
                client.put_blob(repository, blob.digest, blob.size,
                                lambda blob=blob: (opened.append(repository), blob.path.open("rb"))[1])
            client.put_manifest(repository, "1", packed.manifest(), MANIFEST_TYPE)

        push(f"{PREFIX}-packed/first")
        assert opened == [f"{PREFIX}-packed/first"] * 2  # the config and the one layer
        push(f"{PREFIX}-packed/second")
        assert opened == [f"{PREFIX}-packed/first"] * 2  # linked from the first: no byte uploaded again
        for repository in ("first", "second"):
            pulled = engine().images.pull(f"{reg.address}/{PREFIX}-packed/{repository}", tag="1")
            try:
                assert pulled.id == packed.config.digest
            finally:
                engine().images.remove(pulled.tags[0], noprune=True)
