"""The private registry's HTTP API (distribution v2): list, describe, delete, and receive blobs and manifests.

In real use the base URL is one end of an SSH tunnel (`HostConnection.tunnel`), so the registry never
needs a public port. Only the standard library is used: this runs wherever dockyard runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING, BinaryIO

from dockyard.errors import RegistryError

if TYPE_CHECKING:
    from dockyard.environment import Env
    from dockyard.ssh import HostConnection
    from dockyard.state import HostRecord

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
IMAGE_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
# Without every type in Accept the registry may convert the manifest, and then report another digest.
MANIFEST_ACCEPT = ", ".join(INDEX_TYPES + IMAGE_TYPES)
PAGE_SIZE = 100
PARALLEL_REQUESTS = 8  # through a tunnel each request is one more channel on the same SSH connection
ATTESTATION = "attestation-manifest"  # BuildKit's provenance entries in an index: not a platform image
_LINK = re.compile(r"<([^>]*)>\s*((?:;[^,]*)*)")


@dataclass(frozen=True)
class TagInfo:
    tag: str
    digest: str
    size: int  # config + layers, summed over the platform images of an index
    created: str | None  # the image config's `created`, as the registry stores it


@dataclass(frozen=True)
class Deletion:
    """A tag resolved to its manifest: deleting the manifest deletes every tag that points at it."""

    repository: str
    tag: str
    digest: str
    shared_with: tuple[str, ...]  # the other tags on the same digest


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Message
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body or b"{}")


def next_page(link_header: str | None) -> str | None:
    """The path and query of the `rel="next"` entry of a Link header, kept relative to the registry.

    `</v2/_catalog?last=web&n=100>; rel="next"` gives `/v2/_catalog?last=web&n=100`. An absolute URL keeps
    only its path and query: behind a tunnel, the host name the registry believes in is unreachable.
    """
    for target, params in _LINK.findall(link_header or ""):
        rels = re.findall(r';\s*rel\s*=\s*"?([^";]+)"?', params)
        if any("next" in rel.split() for rel in rels):
            return _relative(target)
    return None


def _relative(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))


class RegistryClient:
    def __init__(self, base_url: str, where: str | None = None, auth: tuple[str, str] | None = None,
                 timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.where = where or self.base_url  # what errors name: a host, not the tunnel's local port
        self.timeout = timeout
        self._headers = {}
        self._holders: dict[str, str] = {}  # blob digest -> a repository seen holding it, to link it from
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def catalog(self, page_size: int = PAGE_SIZE) -> list[str]:
        """Every repository, following the Link header page after page."""
        return self._all_pages(f"/v2/_catalog?n={page_size}", "repositories")

    def tags(self, repository: str, page_size: int = PAGE_SIZE, missing_ok: bool = False) -> list[str]:
        """The repository's tags, sorted. A repository whose tags were all deleted still shows in the
        catalog; with `missing_ok` it has no tags rather than being unknown."""
        try:
            return sorted(self._all_pages(f"/v2/{repository}/tags/list?n={page_size}", "tags", repository))
        except _NameUnknown:
            if missing_ok:
                return []
            raise

    def tag_counts(self, parallel: int = PARALLEL_REQUESTS) -> dict[str, int]:
        """Every repository with how many tags it has, in catalog order."""
        names = self.catalog()
        with ThreadPoolExecutor(parallel) as pool:
            counts = pool.map(lambda name: len(self.tags(name, missing_ok=True)), names)
            return dict(zip(names, counts, strict=True))

    def describe_all(self, repository: str, parallel: int = PARALLEL_REQUESTS) -> list[TagInfo]:
        """Every tag of the repository, described."""
        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(lambda tag: self.describe(repository, tag), self.tags(repository)))

    def digest(self, repository: str, tag: str) -> str:
        """HEAD suffices where the registry sends Docker-Content-Digest, as distribution does."""
        try:
            response = self._call("HEAD", f"/v2/{repository}/manifests/{tag}", repository, tag,
                                  accept=MANIFEST_ACCEPT)
        except _ManifestUnknown:
            return self._manifest(repository, tag)[0]  # a HEAD's 404 has no body; GET's names the cause
        return response.headers.get("Docker-Content-Digest") or self._manifest(repository, tag)[0]

    def find_index(self, parallel: int = PARALLEL_REQUESTS) -> str | None:
        """Some REPOSITORY:TAG that is a multi-platform index (manifest list), or None if there is none."""

        def index_in(repository: str) -> str | None:
            for tag in self.tags(repository, missing_ok=True):
                response = self._call("HEAD", f"/v2/{repository}/manifests/{tag}", repository, tag,
                                      accept=MANIFEST_ACCEPT)
                if response.headers.get_content_type() in INDEX_TYPES:
                    return f"{repository}:{tag}"
            return None

        with ThreadPoolExecutor(parallel) as pool:
            return next((found for found in pool.map(index_in, self.catalog()) if found), None)

    def describe(self, repository: str, tag: str) -> TagInfo:
        digest, media_type, manifest = self._manifest(repository, tag)
        if media_type in INDEX_TYPES:
            platforms = [
                entry["digest"] for entry in manifest.get("manifests", [])
                if entry.get("annotations", {}).get("vnd.docker.reference.type") != ATTESTATION
            ]
            images = [self._image(repository, self._manifest(repository, d)[2]) for d in platforms]
            return TagInfo(tag, digest, sum(size for size, _ in images), images[0][1] if images else None)
        size, created = self._image(repository, manifest)
        return TagInfo(tag, digest, size, created)

    def plan_delete(self, repository: str, tag: str) -> Deletion:
        """Resolve the tag and find every other tag that the same delete removes."""
        digest = self.digest(repository, tag)
        shared = []
        for other in self.tags(repository):
            if other == tag:
                continue
            try:
                if self.digest(repository, other) == digest:
                    shared.append(other)
            except _ManifestUnknown:
                continue  # deleted meanwhile
        return Deletion(repository, tag, digest, tuple(shared))

    def delete(self, deletion: Deletion) -> None:
        self._call("DELETE", f"/v2/{deletion.repository}/manifests/{deletion.digest}",
                   deletion.repository, deletion.tag)

    def put_blob(self, repository: str, digest: str, size: int, data: Callable[[], BinaryIO]) -> None:
        """Make `repository` hold the blob: there already, linked from a repository seen holding it (no bytes
        travel), or uploaded in one request from the file `data` opens."""
        path = f"/v2/{repository}/blobs/{digest}"
        if self._call("HEAD", path, repository, absent_ok=True).status != 200:
            source = self._holders.get(digest)
            query = f"?mount={digest}&from={source}" if source else ""
            started = self._call("POST", f"/v2/{repository}/blobs/uploads/{query}", repository)
            if started.status != 201:  # 201: mounted
                location = _relative(started.headers["Location"])
                with data() as body:
                    self._call("PUT", f"{location}{'&' if '?' in location else '?'}digest={digest}", repository,
                               body=body, content_type="application/octet-stream", length=size)
        self._holders[digest] = repository

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> None:
        self._call("PUT", f"/v2/{repository}/manifests/{tag}", repository, tag, body=manifest,
                   content_type=media_type, length=len(manifest))

    def _manifest(self, repository: str, reference: str) -> tuple[str, str, dict]:
        try:
            response = self._call("GET", f"/v2/{repository}/manifests/{reference}", repository, reference,
                                  accept=MANIFEST_ACCEPT)
        except _ManifestUnknown:
            self.tags(repository)  # an unknown repository answers MANIFEST_UNKNOWN too: this names it instead
            raise
        manifest = response.json()
        media_type = manifest.get("mediaType") or response.headers.get_content_type()
        if media_type not in INDEX_TYPES + IMAGE_TYPES:
            raise RegistryError(
                f"{self.where}: {repository}:{reference} is a {media_type} manifest, which dockyard does not "
                f"read; push it again with a current Docker"
            )
        digest = response.headers.get("Docker-Content-Digest") or f"sha256:{hashlib.sha256(response.body).hexdigest()}"
        return digest, media_type, manifest

    def _image(self, repository: str, manifest: dict) -> tuple[int, str | None]:
        config = manifest["config"]
        size = config["size"] + sum(layer["size"] for layer in manifest.get("layers", []))
        blob = self._call("GET", f"/v2/{repository}/blobs/{config['digest']}", repository).json()
        return size, blob.get("created")

    def _all_pages(self, path: str, key: str, repository: str | None = None) -> list[str]:
        items: list[str] = []
        seen = set()
        while path and path not in seen:  # a registry repeating a page would otherwise loop forever
            seen.add(path)
            response = self._call("GET", path, repository)
            items += response.json().get(key) or []
            path = next_page(response.headers.get("Link"))
        return items

    def _call(self, method: str, path: str, repository: str | None = None, reference: str | None = None,
              accept: str | None = None, absent_ok: bool = False, body: bytes | BinaryIO | None = None,
              content_type: str | None = None, length: int | None = None) -> _Response:
        """One request; an error answer raises, but with `absent_ok` a 404 is returned."""
        headers = {**self._headers, **({"Accept": accept} if accept else {})}
        if body is not None:
            headers |= {"Content-Type": content_type, "Content-Length": str(length)}
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                return _Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            response = _Response(e.code, e.headers, e.read())
            if absent_ok and e.code == 404:
                return response
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise RegistryError(
                f"{self.where}: registry unreachable ({reason}); check that dockyard-registry runs "
                f"(`invoke deploy.registry`)"
            ) from None
        raise self._refusal(method, path, response, repository, reference)

    def _refusal(self, method: str, path: str, response: _Response, repository: str | None,
                 reference: str | None) -> RegistryError:
        try:
            error = response.json()["errors"][0]
            code, message = error.get("code", ""), error.get("message", "")
        except (ValueError, KeyError, IndexError, TypeError):
            code, message = "", response.body.decode(errors="replace").strip()[:200]
        if code == "NAME_UNKNOWN" or (response.status == 404 and path.endswith("/tags/list")):
            return _NameUnknown(
                f"{self.where}: no repository {repository} in the registry; `invoke registry.ls` lists them")
        if code == "MANIFEST_UNKNOWN" or (response.status == 404 and "/manifests/" in path):
            return _ManifestUnknown(
                f"{self.where}: {repository} has no tag {reference}; `invoke registry.tags {repository}` lists them")
        if method == "DELETE" and (code == "UNSUPPORTED" or response.status == 405):
            return RegistryError(
                f"{self.where}: the registry refuses deletes; set storage.delete.enabled: true in its config "
                f"(templates/registry/config.yml.j2) and redeploy it"
            )
        if response.status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            fix = ("set DOCKYARD_REGISTRY_USER and DOCKYARD_REGISTRY_PASSWORD" if challenge.lower().startswith("basic")
                   else f"dockyard speaks basic auth only, and the registry asks for: {challenge or 'unknown'}")
            state = "refused the credentials" if "Authorization" in self._headers else "asks for credentials"
            return RegistryError(f"{self.where}: the registry {state}; {fix}")
        detail = f"{code}: {message}" if code else message
        return RegistryError(f"{self.where}: {method} {path} answered {response.status} ({detail})")


class _NameUnknown(RegistryError):
    pass


class _ManifestUnknown(RegistryError):
    pass


@contextmanager
def open_registry(env: Env, record: HostRecord) -> Iterator[tuple[HostConnection, RegistryClient]]:
    """A connection to the host and a client of its registry, through an SSH tunnel on that connection."""
    with env.connect(record) as conn, conn.tunnel(env.inventory.services.registry.port) as port:
        yield conn, through_tunnel(env, record.name, port)


def through_tunnel(env: Env, host: str, port: int) -> RegistryClient:
    """A client of `host`'s registry at the local end of a tunnel; basic auth, where the registry has it, from
    DOCKYARD_REGISTRY_USER and DOCKYARD_REGISTRY_PASSWORD."""
    user, password = os.environ.get("DOCKYARD_REGISTRY_USER"), os.environ.get("DOCKYARD_REGISTRY_PASSWORD", "")
    env.out.hide(password)
    return RegistryClient(f"http://127.0.0.1:{port}", f"{host} registry", (user, password) if user else None)
