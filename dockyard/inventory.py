"""Load and validate `inventory/<env>.yml` into frozen dataclasses.

Validation happens before anything touches a host: every error names the file, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dockyard.errors import InventoryError

PROVIDERS = ("sandbox", "aws", "static")
CLUSTERS = ("none", "swarm")
IMAGE_SOURCES = ("auto", "online", "offline")
# The deploy order: each service waits for the one before it to be healthy.
ROLES = ("registry", "mirror", "registry_ui", "proxy", "app", "webhook")
# A host's place in a swarm rather than a service: `cluster: swarm` makes every host a node, these ones managers.
MANAGER = "manager"
UI_KINDS = ("auto", "joxit", "console")
TLS_CHOICES = ("auto", "internal", "off")
DOCKER_INSTALL_METHODS = ("apt", "script")
SANDBOX_INITS = ("classic", "systemd")
ENV_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
HOST_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PUBLIC = ("0.0.0.0/0",)
# Marks the fields the loader fills in, which a file never sets.
SUPPLIED = {"supplied": True}
# What a POSIX shell and `docker run --env` accept; a secret's name is also its file name under /run/secrets.
ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_SOURCES = "generate, env:NAME, file:PATH, ssm:/path or secretsmanager:name"


@dataclass(frozen=True)
class Ssh:
    user: str = "ubuntu"
    key: str | None = None  # private key path; by default one is generated in the state folder
    connect_timeout: int = 10


@dataclass(frozen=True)
class Docker:
    install: str = "apt"  # apt: the distribution's docker.io; script: Docker's convenience script
    script_url: str = "https://get.docker.com"


@dataclass(frozen=True)
class Host:
    name: str = field(metadata=SUPPLIED)
    roles: tuple[str, ...] = ROLES
    # Used by `provider: static` only: where the server already is.
    address: str | None = None
    port: int = 22
    user: str | None = None
    key: str | None = None


class Service:
    """What every service's settings answer: the host ports it takes, and who may reach them."""

    open_to: tuple[str, ...] = ()  # a service without the key is open to no one

    def ports(self) -> dict[str, int]:
        """The ports the service publishes on its host, by inventory key."""
        return {"port": self.port}


class BehindProxy(Service):
    """A service the proxy fronts: unless it is opened, it publishes no port at all, not even on 127.0.0.1."""

    def ports(self) -> dict[str, int]:
        return {"port": self.port} if self.open_to else {}


@dataclass(frozen=True)
class Registry(Service):
    port: int = 5000
    open_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mirror(Service):
    port: int = 5001
    open_to: tuple[str, ...] = ()
    remote_url: str | None = None  # default: Docker Hub, as the Docker engine names it


@dataclass(frozen=True)
class RegistryUi(Service):
    port: int = 8080
    open_to: tuple[str, ...] = ()
    title: str = "dockyard registry"
    kind: str = "auto"  # auto: joxit where images come online, dockyard's console offline


@dataclass(frozen=True)
class Secret:
    """Where one of the app's secrets comes from; `NAME: SOURCE` in the inventory is short for `{source: SOURCE}`."""

    SHORTHAND: typing.ClassVar[str] = "source"
    source: str  # generate | env:NAME | file:PATH | ssm:/path | secretsmanager:name
    env: bool = False  # also an environment variable of the app; the file under /run/secrets is always there

    @property
    def kind(self) -> str:
        return self.source.partition(":")[0]

    @property
    def ref(self) -> str:
        """What the source names: the variable, the path, the parameter or the secret."""
        return self.source.partition(":")[2]


@dataclass(frozen=True)
class Proxy(Service):
    """The front door: Caddy, with TLS, in front of the app and the webhook's /hooks/."""

    domain: str | None = None  # the site's name; without one, the host's address
    tls: str = "auto"  # auto: ACME for a domain on a real host, else the environment's own CA; internal; off
    email: str | None = None  # the ACME account's contact
    http_port: int = 80
    https_port: int = 443
    open_to: tuple[str, ...] = PUBLIC

    def ports(self) -> dict[str, int]:
        if self.tls == "off":
            return {"http_port": self.http_port}
        return {"http_port": self.http_port, "https_port": self.https_port}


@dataclass(frozen=True)
class App(Service):
    """No host port: the proxy reaches it on the docker network, and during a switch two of its containers run
    side by side."""

    repository: str = "flask-hello"  # repository in the private registry
    source: str = "apps/flask-hello"  # build context, relative to the project
    health_path: str = "/healthz"
    env: dict[str, str] = field(default_factory=dict)  # plain settings: name -> value
    secrets: dict[str, Secret] = field(default_factory=dict)  # name -> where its value comes from
    release_command: str | None = None  # run once per release in a one-off container of the new image
    volumes: tuple[str, ...] = ()  # `volume:/path` or `/host/path:/path[:ro]`, in each of its containers
    replicas: int | None = None  # `cluster: swarm` only: how many tasks run; default one per host

    def ports(self) -> dict[str, int]:
        return {}


@dataclass(frozen=True)
class Webhook(BehindProxy):
    port: int = 9000
    open_to: tuple[str, ...] = ()
    tags: tuple[str, ...] = ("*",)  # fnmatch patterns of tags allowed to trigger a redeploy
    hub_repository: str | None = None  # Docker Hub `repository.repo_name` allowed to trigger
    hub_pull: str | None = None  # what to pull for a Docker Hub trigger; default: hub_repository
    health_timeout: int = 60


@dataclass(frozen=True)
class Services:
    registry: Registry = field(default_factory=Registry)
    mirror: Mirror = field(default_factory=Mirror)
    registry_ui: RegistryUi = field(default_factory=RegistryUi)
    proxy: Proxy = field(default_factory=Proxy)
    app: App = field(default_factory=App)
    webhook: Webhook = field(default_factory=Webhook)


@dataclass(frozen=True)
class Aws:
    region: str | None = None  # default: the standard AWS configuration
    profile: str | None = None
    endpoint_url: str | None = None
    instance_type: str = "t3.small"
    root_volume_gb: int = 20
    arch: str = "amd64"
    ami: str | None = None  # default: the current Ubuntu LTS for `arch`
    key_name: str | None = None  # an existing key pair; default: dockyard imports its own
    vpc_id: str | None = None
    subnet_id: str | None = None
    ssh_cidr: str | None = None


@dataclass(frozen=True)
class Sandbox:
    # classic: a shell script sets the host up and serves SSH; systemd: systemd is PID 1, as on a cloud VM
    init: str = "classic"


@dataclass(frozen=True)
class Inventory:
    env: str = field(metadata=SUPPLIED)
    path: Path = field(metadata=SUPPLIED)
    provider: str
    hosts: tuple[Host, ...]
    images: str = "auto"
    cluster: str = "none"  # swarm: the hosts form one Docker Swarm, and the app runs as a replicated service
    ssh: Ssh = field(default_factory=Ssh)
    docker: Docker = field(default_factory=Docker)
    services: Services = field(default_factory=Services)
    aws: Aws = field(default_factory=Aws)
    sandbox: Sandbox = field(default_factory=Sandbox)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def swarm(self) -> bool:
        return self.cluster == "swarm"

    def managers(self) -> list[Host]:
        """The swarm's managers, in inventory order: the first one inits the swarm and deploys the stack."""
        return [h for h in self.hosts if MANAGER in h.roles]

    def replicas(self) -> int:
        return self.services.app.replicas or len(self.hosts)

    def service(self, role: str) -> Service:
        return getattr(self.services, role)

    def ports(self, host: Host) -> list[tuple[str, str, int]]:
        """Every port the host's services publish: (role, inventory key, port)."""
        return [(role, key, port) for role in services_of(host) for key, port in self.service(role).ports().items()]

    def open_ports(self, host: Host) -> dict[str, int]:
        """The host's ports the world may reach (those of services with an `open_to` list): name -> port."""
        return {port_name(role, key): port for role, key, port in self.ports(host) if self.service(role).open_to}

    def proxy_certificates(self) -> str:
        """Where the proxy's certificates come from: `acme` (a public CA, for a domain on a real host),
        `internal` (the environment's own CA, which clients must be told to trust) or `off` (plain HTTP)."""
        proxy = self.services.proxy
        if proxy.tls == "auto":
            return "acme" if proxy.domain and self.provider != "sandbox" else "internal"
        return proxy.tls


def services_of(host: Host) -> tuple[str, ...]:
    """The host's roles that are services, in deploy order."""
    return tuple(role for role in ROLES if role in host.roles)


def port_name(role: str, key: str) -> str:
    """A published port's name: the role for its `port`, `role.key` for the others (proxy.https_port)."""
    return role if key == "port" else f"{role}.{key}"


def inventory_path(inventory_dir: Path, env: str) -> Path:
    return Path(inventory_dir) / f"{env}.yml"


def load(inventory_dir: Path, env: str) -> Inventory:
    if not ENV_NAME.match(env):
        raise InventoryError(f"environment name {env!r} is invalid: use lowercase letters, digits and dashes")
    path = inventory_path(inventory_dir, env)
    if not path.is_file():
        known = sorted(p.stem for p in Path(inventory_dir).glob("*.yml"))
        raise InventoryError(
            f"{path}: no such inventory; known environments: {', '.join(known) or 'none'} "
            f"(create {path.name} or pass -e/--env)"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise InventoryError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    return parse(data, env=env, path=path)


def parse(data: object, env: str, path: Path) -> Inventory:
    def fail(key: str, problem: str) -> typing.NoReturn:
        raise InventoryError(f"{path}: {key}: {problem}")

    if not isinstance(data, dict):
        fail("(top level)", "expected a mapping of settings")
    data = dict(data)
    hosts_data = data.pop("hosts", None)
    if not isinstance(hosts_data, dict) or not hosts_data:
        fail("hosts", "missing or empty; declare at least one host, e.g. `hosts: {web1: {roles: [app]}}`")
    hosts = []
    for name, host_data in hosts_data.items():
        if not isinstance(name, str) or not HOST_NAME.match(name):
            fail(f"hosts.{name}", "host names use lowercase letters, digits and dashes")
        hosts.append(_build(Host, {"name": name, **(host_data or {})}, f"hosts.{name}", fail))
    inventory = _build(Inventory, {"env": env, "path": path, **data, "hosts": tuple(hosts)}, "", fail)
    _check(inventory, fail)
    return inventory


def _build(cls, data: object, where: str, fail):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        fail(where or "(top level)", f"expected a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            known = ", ".join(n for n, f in fields.items() if not f.metadata.get("supplied"))
            fail(name, f"unknown key; known keys here: {known}")
        values[key] = _coerce(value, hints[key], name, fail)
    missing = [
        n for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        fail(f"{where}.{missing[0]}" if where else missing[0], "missing")
    return cls(**values)


def _coerce(value, hint, where: str, fail):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(value, options[0], where, fail)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, str) and hasattr(hint, "SHORTHAND"):
            value = {hint.SHORTHAND: value}
        return _build(hint, value or {}, where, fail)
    if origin is dict:
        if not isinstance(value, dict):
            fail(where, f"expected a mapping of names to values, got {_kind(value)}")
        item = typing.get_args(hint)[1]
        return {str(k): _coerce(v, item, f"{where}.{k}", fail) for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, tuple):
            return value
        if not isinstance(value, list):
            fail(where, f"expected a list, got {_kind(value)}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, f"{where}[{i}]", fail) for i, v in enumerate(value))
    if hint is Path:
        return Path(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        fail(where, f"expected a whole number, got {_kind(value)}")
    if hint is str and not isinstance(value, str):
        fail(where, f"expected text, got {_kind(value)}; quote it, e.g. \"{value}\"")
    if hint is bool and not isinstance(value, bool):
        fail(where, f"expected true or false, got {_kind(value)}")
    return value


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false", type(None): "nothing"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def _check(inv: Inventory, fail) -> None:
    """Cross-field rules the types alone cannot express."""
    _choose(inv.provider, PROVIDERS, "provider", fail)
    _choose(inv.images, IMAGE_SOURCES, "images", fail)
    _choose(inv.docker.install, DOCKER_INSTALL_METHODS, "docker.install", fail)
    _choose(inv.services.registry_ui.kind, UI_KINDS, "services.registry_ui.kind", fail)
    _choose(inv.sandbox.init, SANDBOX_INITS, "sandbox.init", fail)
    _choose(inv.cluster, CLUSTERS, "cluster", fail)
    _check_cluster(inv, fail)
    for role in ROLES:
        service = inv.service(role)
        key = f"services.{role}"
        for name in (f.name for f in dataclasses.fields(service) if f.name.endswith("port")):
            if not 1 <= getattr(service, name) <= 65535:
                fail(f"{key}.{name}", f"{getattr(service, name)} is not a TCP port (1-65535)")
        for i, cidr in enumerate(service.open_to):
            _cidr(cidr, f"{key}.open_to[{i}]", fail)
    _check_proxy(inv, fail)
    _app_settings(inv.services.app, inv.path, fail)
    if inv.ssh.key:
        _key_file(inv.ssh.key, inv.path, "ssh.key", fail)
    for host in inv.hosts:
        where = f"hosts.{host.name}"
        for role in host.roles:
            if role not in (*ROLES, MANAGER):
                fail(f"{where}.roles", f"unknown role {role!r}; roles are: {', '.join((*ROLES, MANAGER))}")
        if len(set(host.roles)) != len(host.roles):
            fail(f"{where}.roles", "lists a role twice")
        seen: dict[int, str] = {}
        for role, key, port in inv.ports(host):
            if port in seen:
                fail(f"services.{role}.{key}", f"{port} is already used by {seen[port]} on {host.name}; pick another")
            seen[port] = port_name(role, key)
        if "webhook" in host.roles and "app" not in host.roles:
            fail(f"{where}.roles", "webhook redeploys the app on its own host; add app to this host")
        if "app" in host.roles and "proxy" not in host.roles:
            fail(f"{where}.roles", "the app is served through the proxy on its own host; add proxy to this host")
        if "proxy" in host.roles and "app" not in host.roles:
            fail(f"{where}.roles", "the proxy fronts the app on its own host; add app to this host")
        if inv.provider == "static":
            if not host.address:
                fail(f"{where}.address", "missing; a static host needs the address of your server")
            if host.key:
                _key_file(host.key, inv.path, f"{where}.key", fail)
        elif host.address or host.user or host.key or host.port != 22:
            fail(where, f"address, port, user and key are for provider: static; {inv.provider} provides them")
    if inv.provider == "aws":
        if not inv.aws.ssh_cidr:
            fail("aws.ssh_cidr", "missing; name the network SSH may come from, e.g. your address/32")
        _cidr(inv.aws.ssh_cidr, "aws.ssh_cidr", fail)
        _choose(inv.aws.arch, ("amd64", "arm64"), "aws.arch", fail)
        if inv.aws.ami and not re.match(r"^ami-[0-9a-f]+$", inv.aws.ami):
            fail("aws.ami", f"{inv.aws.ami!r} is not an image id like ami-0123456789abcdef0")
        if inv.aws.root_volume_gb < 8:
            fail("aws.root_volume_gb", f"{inv.aws.root_volume_gb} is smaller than Ubuntu's 8 GB image; use 8 or more")
        if inv.aws.vpc_id and not inv.aws.subnet_id:
            fail("aws.vpc_id", "set aws.subnet_id too: the subnet of that VPC the hosts go in")
        if inv.aws.key_name and not inv.ssh.key:
            fail("aws.key_name", "set ssh.key to that key pair's private key, or drop aws.key_name to use dockyard's")
        for host in inv.hosts:
            for role, key, port in inv.ports(host):
                if port == 22:
                    fail(f"services.{role}.{key}", "22 is SSH's port on aws hosts; pick another")


def _check_cluster(inv: Inventory, fail) -> None:
    """A swarm: an odd number of managers, and one manager that runs the app's stack with its registry and proxy."""
    replicas = inv.services.app.replicas
    if not inv.swarm:
        if inv.managers():
            fail(f"hosts.{inv.managers()[0].name}.roles", "manager is a swarm role; set `cluster: swarm` or drop it")
        if replicas is not None:
            fail("services.app.replicas", "replicas are for `cluster: swarm`, and without it each app host runs one "
                                          "app; drop it, or set `cluster: swarm`")
        return
    if replicas is not None and not 1 <= replicas <= 100:
        fail("services.app.replicas", f"{replicas} is out of range; run 1 to 100 app tasks")
    managers = inv.managers()
    if len(managers) not in (1, 3):
        fail("hosts", f"a swarm has 1 or 3 managers, not {len(managers)}: the managers act only while a majority of "
                      f"them (a quorum) is up, so 3 survive the loss of one, and an even number survives no more "
                      f"losses than one fewer; give `manager` to 1 or 3 hosts")
    app_hosts = [h for h in inv.hosts if "app" in h.roles]
    if len(app_hosts) != 1 or MANAGER not in app_hosts[0].roles or "registry" not in app_hosts[0].roles:
        fail("hosts", "on a swarm the app is one service, deployed from one manager that also runs the registry its "
                      "nodes pull from: give exactly one manager the roles app, proxy and registry")
    for host in inv.hosts:
        if "webhook" in host.roles and host is not app_hosts[0]:
            fail(f"hosts.{host.name}.roles", f"the webhook updates the app's service: put it on {app_hosts[0].name}")
    for i, volume in enumerate(inv.services.app.volumes):
        if volume.startswith("/"):
            fail(f"services.app.volumes[{i}]", f"{volume!r} is a host path, which exists on one node of a swarm; use "
                                               f"a named volume (NAME:/path)")


def _check_proxy(inv: Inventory, fail) -> None:
    proxy = inv.services.proxy
    _choose(proxy.tls, TLS_CHOICES, "services.proxy.tls", fail)
    if proxy.domain is not None and not DOMAIN.match(proxy.domain):
        fail("services.proxy.domain", f"{proxy.domain!r} is not a domain name like app.example.com (no scheme, "
                                      f"no port, lowercase)")
    if proxy.email is not None:
        if not EMAIL.match(proxy.email):
            fail("services.proxy.email", f"{proxy.email!r} is not an email address like ops@example.com")
        if inv.proxy_certificates() != "acme":
            fail("services.proxy.email", "only ACME uses it (tls: auto with a domain, on a host that is not a "
                                         "sandbox); drop it, or set services.proxy.domain")
    if inv.proxy_certificates() == "acme" and proxy.http_port != 80 and proxy.https_port != 443:
        fail("services.proxy", f"ACME proves the domain on port 80 or 443, and the proxy takes "
                               f"{proxy.http_port} and {proxy.https_port}; use http_port: 80 or https_port: 443")


def _app_settings(app: App, inventory_file: Path, fail) -> None:
    """Names the app's environment takes, sources that can be read, and a release command that splits."""
    for name in app.env:
        _env_var_name(name, f"services.app.env.{name}", fail)
    for name, secret in app.secrets.items():
        key = f"services.app.secrets.{name}"
        _env_var_name(name, key, fail)
        if name in app.env:
            fail(key, f"{name} is also in services.app.env; a name is either a plain setting or a secret")
        if secret.source == "generate":
            continue
        if secret.kind not in ("env", "file", "ssm", "secretsmanager"):
            fail(key, f"{secret.source!r} is not a secret source; use {SECRET_SOURCES}")
        if not secret.ref:
            fail(key, f"{secret.source!r} names nothing; write {secret.kind}:<what to read>")
        if secret.kind == "env" and not ENV_VAR_NAME.match(secret.ref):
            fail(key, f"env:{secret.ref} is not an environment variable name; use letters, digits and _")
        if secret.kind == "file" and resolve_path(secret.ref, inventory_file).is_dir():
            fail(key, f"file:{secret.ref} is a folder; name the file that holds the secret")
    for i, volume in enumerate(app.volumes):
        source, _, inside = volume.partition(":")
        if not source or not inside.startswith("/"):
            fail(f"services.app.volumes[{i}]", f"{volume!r} is not a mount; write NAME:/path/in/container (a named "
                                                f"volume) or /path/on/host:/path/in/container")
    if app.release_command is not None:
        try:
            words = shlex.split(app.release_command)
        except ValueError as e:
            fail("services.app.release_command", f"cannot be split into words ({e}); check its quotes")
        if not words:
            fail("services.app.release_command", "is empty; give a command, e.g. flask --app app db-upgrade")


def _env_var_name(name: str, key: str, fail) -> None:
    if not ENV_VAR_NAME.match(name):
        fail(key, f"{name!r} is not an environment variable name; use letters, digits and _, not a digit first")


def _choose(value: str, allowed: tuple[str, ...], key: str, fail) -> None:
    if value not in allowed:
        fail(key, f"{value!r} is not one of: {', '.join(allowed)}")


def _cidr(value: str, key: str, fail) -> None:
    try:
        ipaddress.ip_network(value)
    except ValueError:
        fail(key, f"{value!r} is not a network like 203.0.113.7/32 or 0.0.0.0/0")


def _key_file(value: str, inventory_file: Path, key: str, fail) -> None:
    path = resolve_path(value, inventory_file)
    if not path.is_file():
        fail(key, f"key file {path} does not exist; fix the path or create the key with ssh-keygen")


def resolve_path(value: str, inventory_file: Path) -> Path:
    """Relative paths in an inventory are relative to the project, i.e. the inventory folder's parent."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else inventory_file.parent.parent / path
