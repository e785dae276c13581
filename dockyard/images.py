"""Images on the local Docker engine: the base image, builds, and streams toward hosts.

Where no registry can be reached (air-gapped networks), the base image comes from Debian's packages
through debootstrap and `docker import`; everything else is built on top of it.

Which images the engine holds is read with one `docker image inspect`, and images are saved by `docker save`. The
Docker SDK, which takes a tenth of a second to import, is imported by the functions that build alone: a deploy with
nothing to build never loads it.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import certifi

from dockyard.errors import ImageError

ONLINE_BASE = "debian:bookworm-slim"
BASE_REPOSITORY = "dockyard/base"
# The offline base image's recipe: change it and the image is rebuilt.
BASE_RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["ca-certificates", "wget"],
    "policy-rc.d": "#!/bin/sh\nexit 101\n",  # as in Debian's own images: packages never start services
    # as in Debian's slim images: no manuals, docs or translations, in the base or in what images add to it
    "dpkg-excludes": ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*"],
    "dpkg-includes": ["/usr/share/doc/*/copyright"],
    # as in Debian's own images: apt keeps no binary caches of its lists, 80 MB in each layer that runs apt
    "apt.conf": 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n',
}
APT_SOURCES = Path("/etc/apt")
SOURCE_MEMORY_SECONDS = 3600  # how long `images: auto` trusts its last look at the pull source


@dataclass(frozen=True)
class Built:
    ref: str
    image_id: str
    cached: bool
    user: str = ""  # the user its containers run as (its USER; "" for root)


@functools.cache
def engine():
    """The local engine through the Docker SDK."""
    import docker

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as e:
        raise ImageError(
            f"cannot reach the local Docker engine ({_first_line(e)}); start dockerd or set DOCKER_HOST"
        ) from None
    return client


def with_tag(ref: str) -> str:
    """`ref` as Docker reads it: `:latest` when it names no tag (a registry's port is no tag)."""
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


def resolve_source(images: str, memory: Path | None = None) -> str:
    """`online` when the pull source answers, `offline` when it does not or the inventory says so. `auto` asks at
    most once an hour where `memory` (a file) keeps the answer: a failed pull costs every command a tenth of a
    second or more, and a deploy that changes nothing must decide as the one that built the images."""
    if images != "auto":
        return images
    try:
        if memory and time.time() - memory.stat().st_mtime < SOURCE_MEMORY_SECONDS:
            if (remembered := memory.read_text().strip()) in ("online", "offline"):
                return remembered
    except OSError:
        pass  # nothing remembered yet
    source = _probe_pull()
    if memory:
        memory.parent.mkdir(parents=True, exist_ok=True)
        memory.write_text(source + "\n")
    return source


@functools.cache
def _probe_pull() -> str:
    if ONLINE_BASE in local_images(ONLINE_BASE):
        return "online"
    pulled = subprocess.run(["docker", "pull", "--quiet", ONLINE_BASE], capture_output=True)
    return "online" if pulled.returncode == 0 else "offline"


def local_images(*refs: str) -> dict[str, Built]:
    """Each of `refs` the local engine holds, by ref, as a cached build: one `docker image inspect`."""
    found = _docker("image", "inspect", "--format", "{{.Id}}\t{{json .Config.User}}\t{{json .RepoTags}}", *refs)
    # a ref it lacks makes it exit 1, after printing the ones it has
    refused = [line for line in found.stderr.splitlines() if line.strip() and "no such image" not in line.lower()]
    if found.returncode != 0 and (refused or not found.stderr.strip()):
        raise _refused("\n".join(refused) or f"exit {found.returncode}")
    images = {}
    for line in filter(None, found.stdout.splitlines()):  # a missing ref leaves an empty line
        image_id, user, tags = line.split("\t")
        images.update(dict.fromkeys(json.loads(tags) or [], (image_id, json.loads(user) or "")))
    return {
        ref: Built(ref, images[with_tag(ref)][0], cached=True, user=images[with_tag(ref)][1])
        for ref in refs if with_tag(ref) in images
    }


def base_image(source: str, say: Callable[[str], None]) -> Built:
    """The image every dockyard image starts from: pulled online, debootstrapped offline."""
    if source == "online":
        found = local_images(ONLINE_BASE)
        if ONLINE_BASE not in found:
            raise ImageError(f"base image {ONLINE_BASE} is missing; pull it, or set images: offline")
        return found[ONLINE_BASE]
    return build_base(say)


def base_tag() -> str:
    recipe = json.dumps(BASE_RECIPE, sort_keys=True).encode()
    return f"{BASE_REPOSITORY}:{BASE_RECIPE['suite']}-{hashlib.sha256(recipe).hexdigest()[:12]}"


def build_base(say: Callable[[str], None]) -> Built:
    """Build the base image from Debian packages unless one from the same recipe exists."""
    ref = base_tag()
    if ref in (found := local_images(ref)):
        say(f"base image {ref}: cached (recipe unchanged)")
        return found[ref]
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed; install it with `apt-get install debootstrap`")
    if os.geteuid() != 0:
        raise ImageError("building the base image with debootstrap needs root; run as root or with sudo")
    mirror = apt_mirror()
    say(f"base image {ref}: building from {mirror} with debootstrap (recipe new or changed)")
    with tempfile.TemporaryDirectory(prefix="dockyard-base-") as tmp:
        root = Path(tmp) / "root"
        cmd = [
            "debootstrap", f"--variant={BASE_RECIPE['variant']}", f"--include={','.join(BASE_RECIPE['include'])}",
            BASE_RECIPE["suite"], str(root), mirror,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise ImageError(f"debootstrap from {mirror} failed: {' | '.join(tail)}")
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text(BASE_RECIPE["policy-rc.d"])
        policy.chmod(0o755)
        _exclude_paths(root, BASE_RECIPE["dpkg-excludes"], BASE_RECIPE["dpkg-includes"])
        (root / "etc/apt/apt.conf.d/dockyard-slim").write_text(BASE_RECIPE["apt.conf"])
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        repository, tag = ref.split(":")
        try:
            engine().api.import_image(
                src=tar.stdout, repository=repository, tag=tag, stream_src=True, changes=['CMD ["/bin/bash"]']
            )
        finally:
            tar.stdout.close()
            tar.wait()
    return replace(local_images(ref)[ref], cached=False)


def _exclude_paths(root: Path, excludes: list[str], includes: list[str]) -> None:
    """Tell dpkg to skip `excludes` (but `includes`) from now on, and drop what debootstrap put there."""
    rules = [f"path-exclude {p}" for p in excludes] + [f"path-include {p}" for p in includes]
    (root / "etc/dpkg/dpkg.cfg.d/dockyard-slim").write_text("\n".join(rules) + "\n")
    for path in sorted((root / "usr/share").rglob("*")):
        name = "/" + str(path.relative_to(root))
        if not path.is_dir() and any(fnmatch.fnmatch(name, p) for p in excludes) and not any(
            fnmatch.fnmatch(name, p) for p in includes
        ):
            path.unlink()


def apt_mirror() -> str:
    """The Debian mirror this machine's apt already uses."""
    override = os.environ.get("DOCKYARD_APT_MIRROR")
    if override:
        return override
    suite = BASE_RECIPE["suite"]
    for uri, suites in _apt_sources(APT_SOURCES):
        if suite in suites and "security" not in uri:
            return uri
    raise ImageError(
        f"no Debian {suite} mirror found in {APT_SOURCES}/sources.list*; set DOCKYARD_APT_MIRROR to one"
    )


def _apt_sources(root: Path) -> Iterator[tuple[str, list[str]]]:
    files = [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line.startswith((" ", "#")):
                        fields[key.strip().lower()] = value.split()
                for uri in fields.get("uris", []):
                    yield uri, fields.get("suites", [])
        else:
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) >= 3 and words[0] == "deb":
                    words = [w for w in words if not w.startswith("[")]
                    yield words[1], words[2:3]


def context_files(context: Path, include: Mapping[str, Path]) -> dict[str, Path]:
    """Each file of a build context by its name there: the folder's, then the `include`d ones."""
    folder = sorted(p for p in context.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return {**{str(p.relative_to(context)): p for p in folder}, **dict(sorted(include.items()))}


def module_files(modules: Iterable[str]) -> dict[str, Path]:
    """Python modules by their path in a build context: `dockyard.contract` as dockyard/contract.py."""
    return {name.replace(".", "/") + ".py": Path(importlib.import_module(name).__file__) for name in modules}


def context_digest(files: Mapping[str, Path], base_id: str) -> str:
    """Changes when any file of the build context or the base image changes."""
    h = hashlib.sha256(base_id.encode())
    for name, path in files.items():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def context_tar(files: Mapping[str, Path], into: BinaryIO) -> None:
    """The build context as Docker receives it: exactly the files the digest covers."""
    with tarfile.open(fileobj=into, mode="w") as tar:
        for name, path in files.items():
            tar.add(path, arcname=name, recursive=False)
    into.seek(0)


def build(name: str, context: Path, base: Built, say: Callable[[str], None],
          include: Mapping[str, Path] = MappingProxyType({})) -> Built:
    """Build `context`, plus the files `include` adds by their name in the context, on `base` as
    dockyard/<name>:<digest>, reusing an identical earlier build."""
    return build_all({name: (context, include)}, base, say)[name]


def build_all(contexts: Mapping[str, tuple[Path, Mapping[str, Path]]], base: Built, say: Callable[[str], None]
              ) -> dict[str, Built]:
    """`build` for each name's (context, include), looking up every earlier build at once."""
    files = {name: context_files(context, include) for name, (context, include) in contexts.items()}
    refs = {name: f"dockyard/{name}:{context_digest(files[name], base.image_id)}" for name in contexts}
    found = local_images(*refs.values())
    return {
        name: found[ref] if ref in found
        else _build(name, ref, contexts[name][0], files[name], base.ref, say)
        for name, ref in refs.items()
    }


def _build(name: str, ref: str, context: Path, files: Mapping[str, Path], base: str, say: Callable[[str], None]
           ) -> Built:
    import docker.errors

    say(f"building {ref} from {context}")
    log = []
    try:
        with tempfile.TemporaryFile() as tar:
            context_tar(files, tar)
            for event in engine().api.build(
                fileobj=tar, custom_context=True, tag=ref, buildargs=build_args(base, files), rm=True, forcerm=True,
                decode=True,
            ):
                if "error" in event:
                    last = " | ".join(log[-3:])
                    raise ImageError(f"building {name} failed: {event['error'].strip()} (last output: {last})")
                line = event.get("stream", "").strip()
                if line:
                    log.append(line)
    except docker.errors.APIError as e:
        raise ImageError(f"building {name} failed: {_first_line(e)}") from None
    return replace(local_images(ref)[ref], cached=False)


# A Dockerfile that fetches over HTTPS declares `ARG EXTRA_CA_CERTS` (see apps/flask-pip) to receive them.
CA_CERTS_ARG = "EXTRA_CA_CERTS"
CA_CERTS_DECLARED = re.compile(rf"^\s*ARG\s+{CA_CERTS_ARG}\b", re.MULTILINE | re.IGNORECASE)
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
# A build argument reaches the build as one environment variable, which Linux caps at 128 KiB.
MAX_BUILD_ARG = 128 * 1024 - 1


def build_args(base: str, files: Mapping[str, Path]) -> dict[str, str]:
    """Every build gets its base image. A Dockerfile that declares EXTRA_CA_CERTS also gets the CA certificates
    the operator trusts, so a build behind a TLS-inspecting proxy trusts it too: the PEM file
    DOCKYARD_EXTRA_CA_CERTS names, else SSL_CERT_FILE (what OpenSSL tools already trust), else none. Only the
    certificates pip does not trust already are passed: a system's whole bundle is too large for an argument."""
    args = {"BASE": base}
    dockerfile = files.get("Dockerfile")
    if dockerfile is None or not CA_CERTS_DECLARED.search(dockerfile.read_text(errors="replace")):
        return args
    variable = next((v for v in ("DOCKYARD_EXTRA_CA_CERTS", "SSL_CERT_FILE") if os.environ.get(v)), None)
    if variable is None:
        return args
    ca_file = os.environ[variable]
    try:
        certificates = PEM_CERTIFICATE.findall(Path(ca_file).read_text())
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not PEM text"
        raise ImageError(
            f"{variable}: cannot read {ca_file} ({reason}); name a PEM file of CA certificates, or unset it"
        ) from None
    known = {"".join(c.split()) for c in PEM_CERTIFICATE.findall(Path(certifi.where()).read_text())}
    extra = "".join(f"{c}\n" for c in certificates if "".join(c.split()) not in known)
    if len(extra.encode()) > MAX_BUILD_ARG:
        raise ImageError(
            f"{variable}: {ca_file} holds {len(extra) // 1024} KiB of certificates pip does not already trust, more "
            f"than a build argument carries; set DOCKYARD_EXTRA_CA_CERTS to a file of just your proxy's CA"
        )
    if extra:
        args[CA_CERTS_ARG] = extra
    return args


def describe(refs: Iterable[str]) -> dict[str, dict]:
    """The local engine's description of each image, by ref: its id, and its layers' digests under RootFS."""
    refs = list(refs)
    found = _docker("image", "inspect", *refs)
    if found.returncode != 0:
        raise _refused(found.stderr)
    return dict(zip(refs, json.loads(found.stdout), strict=True))


def save(refs: Iterable[str]) -> Iterator[bytes]:
    """One `docker save` of all `refs`, as a stream: a layer they share comes once, nothing lands in a file. A reader
    that closes the stream early stops the save."""
    process = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield from iter(lambda: process.stdout.read(1024 * 1024), b"")
        if process.wait() != 0:
            raise _refused(process.stderr.read().decode(errors="replace"))
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def _docker(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise ImageError("the docker command is not installed; install Docker (`./run` does)") from None


def _refused(stderr: str) -> ImageError:
    """What the `docker` command's error means for the operator."""
    cause = next((line.strip() for line in stderr.splitlines() if line.strip()), "no output")
    if "no such image" in cause.lower():
        return ImageError(f"{cause}; build or pull it first (docker image ls lists them)")
    return ImageError(f"cannot reach the local Docker engine ({cause}); start dockerd or set DOCKER_HOST")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
