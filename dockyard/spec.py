"""What roles declare: plain frozen data, no I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from dockyard import contract
from dockyard.contract import DOCKER_STOP_TIMEOUT

if TYPE_CHECKING:
    from dockyard.inventory import Inventory
    from dockyard.state import HostRecord

NETWORK = "dockyard"


@dataclass(frozen=True)
class File:
    """A file on the host, rendered from `templates/<template>` or given as `content`."""

    dest: str
    template: str | None = None
    content: str | None = None
    mode: int = 0o644
    secret: bool = False  # never printed; written 0600
    values: tuple[tuple[str, str], ...] = ()  # extra template values the role computes
    create_only: bool = False  # written only while missing: its content is someone else's afterwards
    image_user: bool = False  # belongs to the user the role's image runs as (a secret the container reads)


@dataclass(frozen=True)
class Image:
    """Where a role's image comes from: pulled where images come online, otherwise built from `build`."""

    name: str
    pull: str | None = None
    build: str | None = None  # build context, relative to the project
    modules: tuple[str, ...] = ()  # dockyard's own Python modules added to the build context, as <package>/<name>.py
    repository: str | None = None  # its name in the host's registry; default dockyard/<name>
    via_registry: bool = True  # False for the registry's own image, which must arrive before it runs


@dataclass(frozen=True)
class Health:
    """An HTTP check run inside the container, which deploy and the webhook both wait on."""

    port: int
    path: str = "/"

    def command(self) -> str:
        return f"wget -q -O /dev/null http://127.0.0.1:{self.port}{self.path}"


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str = ""  # the reference the host runs; filled in once the image is resolved
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    restart: str = "always"
    network: str = NETWORK
    health: Health | None = None
    stop_timeout: int = DOCKER_STOP_TIMEOUT  # seconds `docker stop` waits before killing
    labels: tuple[tuple[str, str], ...] = ()
    env_file: str | None = None  # a host file of NAME=value lines (`docker run --env-file`): secrets stay off the line
    sysctls: tuple[tuple[str, str], ...] = ()  # its own kernel settings, set where the host's kernel has them

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class Slots:
    """A container replaced without downtime: it runs as `<name>-blue` or `<name>-green`, and the proxy serves the
    one the upstream file names. A change starts the other slot, waits until it is healthy, switches the proxy to
    it, then stops the old one with its grace period."""

    port: int  # where the proxy reaches the container
    upstream: str = contract.HOST_UPSTREAM_FILE
    proxy: str = contract.PROXY_CONTAINER
    reload: tuple[str, ...] = contract.PROXY_RELOAD  # run in the proxy: it reads the upstream file again
    # run once per switch, before it, in a one-off container of the new image with the service's settings: a
    # failure stops the switch, and the container that serves keeps serving
    release: tuple[str, ...] = ()

    def names(self, name: str) -> tuple[str, ...]:
        """Every container the service may be found as: its slots, and its plain name from before slots."""
        return (*contract.slot_names(name), name)


@dataclass(frozen=True)
class Stack:
    """A service the swarm runs from a compose file (`templates/stack/`), instead of one container on its host.
    The file on the host is what the swarm last accepted: it is replaced only once `docker stack deploy` has
    converged, so a failed change is tried again by the next deploy."""

    file: str  # where it lives on the host
    template: str
    replicas: int
    release: tuple[str, ...] = ()  # as `Slots.release`: run before each change, a failure changes nothing


@dataclass(frozen=True)
class RoleSpec:
    role: str
    image: Image
    container: ContainerSpec
    files: tuple[File, ...] = ()
    reload: tuple[str, ...] = ()  # run in the container to apply changed files; none: changed files recreate it
    slots: Slots | None = None
    stack: Stack | None = None


@dataclass(frozen=True)
class ResolvedImage:
    """An image as the host will run it."""

    ref: str  # what the host runs
    image_id: str | None  # known when built locally; pulled images are known only on the host
    delivery: str  # pull | ship | push
    local_ref: str | None = None  # the local engine's tag, for ship and push
    repository: str | None = None  # push: name:tag inside the host's registry, reached as `ref`


@dataclass(frozen=True)
class Rendered:
    dest: str
    content: bytes
    mode: int
    secret: bool
    create_only: bool = False
    owner: int = 0  # the user id the file belongs to

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Desired:
    """A role made concrete for one host: rendered files, resolved image, final container spec."""

    role: str
    container: ContainerSpec
    image: ResolvedImage
    files: tuple[Rendered, ...] = field(default=())
    reload: tuple[str, ...] = ()
    slots: Slots | None = None
    stack: Stack | None = None
    stack_file: Rendered | None = None  # the stack's compose file, rendered

    @property
    def container_names(self) -> tuple[str, ...]:
        """The containers the role may be found as on the host."""
        return self.slots.names(self.container.name) if self.slots else (self.container.name,)

    @property
    def digest(self) -> str:
        # files a reload applies, and files written only once, leave the container as it is
        recreating = () if self.reload else tuple(f for f in self.files if not f.create_only)
        return spec_digest(self.container, recreating)


def spec_digest(container: ContainerSpec, files: tuple[Rendered, ...]) -> str:
    """One string that changes when anything but the image changes: the spec and the contents of the files the
    container must be recreated for."""
    declared = replace(container, image="", labels=()).as_dict()
    # settings added since digests were first taken count only when set: upgrading dockyard replaces nothing
    for added in ("env_file", "sysctls"):
        if declared[added] in (None, []):
            del declared[added]
    payload = {
        "container": declared,
        "files": sorted((f.dest, f.sha256, f.mode, *((f.owner,) if f.owner else ())) for f in files),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Authority:
    """A CA dockyard made (`dockyard.certificates`)."""

    certificate: str  # PEM: what clients trust
    key: str  # PEM

    def as_dict(self) -> dict[str, str]:
        return {"certificate": self.certificate, "key": self.key}


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate and key, and the CA that signed it (`dockyard.certificates`)."""

    ca: str  # PEM: what clients trust
    certificate: str  # PEM, for the server's names, signed by `ca`
    key: str  # PEM, the certificate's private key

    def as_dict(self) -> dict[str, str]:
        return {"ca": self.ca, "certificate": self.certificate, "key": self.key}


@dataclass(frozen=True)
class Cluster:
    """What a host of a swarm (`cluster: swarm`) declares with."""

    registry: str  # `<address>:<port>` of the registry's TLS twin, where every node pulls the app's image
    replicas: int  # the app's tasks
    tls: ServerTls = field(repr=False)  # the twin's certificate, and the CA every node trusts it by


@dataclass(frozen=True)
class Target:
    """What a role declares for: one host of one environment."""

    inventory: Inventory
    host: HostRecord
    online: bool  # images come from a registry (True) or are built from Debian packages (False)
    app_secrets: dict[str, str] = field(default_factory=dict, repr=False)  # the app's secrets, resolved: name -> value
    cluster: Cluster | None = None  # on a swarm
    proxy_tls: ServerTls | None = field(default=None, repr=False)  # the proxy's certificate, with its internal CA

    def publish(self, role: str, inside: dict[str, int]) -> tuple[str, ...]:
        """`--publish` values: each port the inventory gives `role` (by key), to its port `inside` the container.
        Open services listen on every interface; the rest only on the host's loopback."""
        service = self.inventory.service(role)
        address = "0.0.0.0" if service.open_to else "127.0.0.1"
        return tuple(f"{address}:{port}:{inside[key]}" for key, port in service.ports().items())
