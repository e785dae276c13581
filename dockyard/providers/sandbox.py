"""Sandbox hosts: containers on the local Docker engine that behave like fresh cloud VMs.

Each runs Debian with OpenSSH, a user `ubuntu` with passwordless sudo, and `/var/lib/docker` on a
volume so Docker can run inside. Its SSH port and the environment's open ports are published on
127.0.0.1 only, on ports the engine picks; they are read back from the engine on every run.
"""

from __future__ import annotations

import socket
import time

import docker.errors

from dockyard import images
from dockyard.environment import Env
from dockyard.errors import ProviderError
from dockyard.inventory import Host
from dockyard.state import HostRecord

MANAGED = {"managed-by": "dockyard"}
# Enough privilege for dockerd inside, without --privileged (which needs CAP_SYS_RESOURCE).
HOST_PRIVILEGES = dict(
    cap_add=["ALL"],
    cap_drop=["SYS_RESOURCE"],
    security_opt=["seccomp=unconfined", "apparmor=unconfined"],
    cgroupns="host",
)
SSH_WAIT_SECONDS = 60


def container_name(env: str, host: str) -> str:
    return f"dockyard-{env}-{host}"


def network_name(env: str) -> str:
    return f"dockyard-{env}"


def labels(env: str, host: str | None = None) -> dict[str, str]:
    return {**MANAGED, "dockyard.env": env, **({"dockyard.host": host} if host else {})}


class Sandbox:
    def __init__(self, env: Env):
        self.env = env

    def provision(self, yes: bool = False) -> list[HostRecord]:
        env = self.env
        client = images.engine()
        public_key = env.state.public_key(env.env_key())
        source = images.resolve_source(env.inventory.images)
        base = images.base_image(source, env.out.say)
        host_image = images.build("sandbox-host", env.root / "images" / "sandbox-host", base, env.out.say)
        network = _ensure_network(client, env.name)
        for host in env.inventory.hosts:
            started = time.monotonic()
            name = container_name(env.name, host.name)
            try:
                container = client.containers.get(name)
            except docker.errors.NotFound:
                container = None
            if container is None:
                container = _create(client, env, host, name, host_image.ref, network, public_key)
                status, detail = "changed", f"created {name} from {host_image.ref}"
            elif container.status != "running":
                container.start()
                status, detail = "changed", f"started {name} (was {container.status})"
            else:
                status, detail = "ok", f"{name} running"
            container.reload()
            record = _record(env, host, container)
            _wait_for_ssh(record)
            env.check_ssh(record)
            env.out.step(host.name, "sandbox", status, detail, time.monotonic() - started)
        records = self.hosts()
        env.state.save_hosts(records)
        return records

    def hosts(self) -> list[HostRecord]:
        env = self.env
        client = images.engine()
        records = []
        for host in env.inventory.hosts:
            name = container_name(env.name, host.name)
            try:
                container = client.containers.get(name)
            except docker.errors.NotFound:
                raise ProviderError(
                    f"sandbox host {host.name} ({name}) does not exist; run `invoke provision`"
                ) from None
            if container.status != "running":
                raise ProviderError(
                    f"sandbox host {host.name} is {container.status}; run `invoke provision` to start it"
                )
            records.append(_record(env, host, container))
        return records

    def teardown(self, yes: bool = False) -> None:
        env = self.env
        client = images.engine()
        selector = {"label": [f"dockyard.env={env.name}", "managed-by=dockyard"]}
        for container in client.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
            env.out.step(container.labels.get("dockyard.host", "-"), "sandbox", "changed", f"removed {container.name}")
        for volume in client.volumes.list(filters=selector):
            volume.remove(force=True)
            env.out.step("-", "sandbox", "changed", f"removed volume {volume.name}")
        for network in client.networks.list(filters=selector):
            network.remove()
            env.out.step("-", "sandbox", "changed", f"removed network {network.name}")


def _create(client, env: Env, host: Host, name: str, image: str, network: str, public_key: str):
    ports = [22, *sorted(env.inventory.open_ports(host).values())]
    host_config = client.api.create_host_config(
        port_bindings={f"{p}/tcp": ("127.0.0.1",) for p in ports},
        binds={
            _ensure_volume(client, env.name, host.name): {"bind": "/var/lib/docker", "mode": "rw"},
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
        },
        network_mode=network,
        restart_policy={"Name": "unless-stopped"},
        **HOST_PRIVILEGES,
    )
    # `--security-opt systempaths=unconfined`, which the API spells as empty path lists.
    host_config.update(MaskedPaths=[], ReadonlyPaths=[])
    try:
        created = client.api.create_container(
            image,
            name=name,
            hostname=host.name,
            labels=labels(env.name, host.name),
            environment={"SSH_AUTHORIZED_KEY": public_key},
            ports=ports,
            host_config=host_config,
        )
        client.api.start(created["Id"])
    except docker.errors.APIError as e:
        raise ProviderError(f"sandbox host {host.name}: the Docker engine refused it: {e.explanation}") from None
    return client.containers.get(created["Id"])


def _ensure_network(client, env: str) -> str:
    name = network_name(env)
    # the engine's name filter matches substrings: dockyard-t-rel would find dockyard-t-release
    if not any(n.name == name for n in client.networks.list(names=[name])):
        client.networks.create(name, labels=labels(env))
    return name


def _ensure_volume(client, env: str, host: str) -> str:
    name = f"{container_name(env, host)}-docker"
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        client.volumes.create(name, labels=labels(env, host))
    return name


def _record(env: Env, host: Host, container) -> HostRecord:
    ports = container.attrs["NetworkSettings"]["Ports"] or {}

    def published(port: int) -> str:
        bindings = ports.get(f"{port}/tcp") or []
        if not bindings:
            raise ProviderError(
                f"sandbox host {host.name} does not publish port {port}; the inventory's open ports changed "
                f"since it was created: run `invoke teardown` then `invoke provision`"
            )
        return f"{bindings[0]['HostIp']}:{bindings[0]['HostPort']}"

    ssh_address, ssh_port = published(22).rsplit(":", 1)
    endpoints = {role: published(port) for role, port in env.inventory.open_ports(host).items()}
    return HostRecord(
        name=host.name,
        address=ssh_address,
        port=int(ssh_port),
        user=env.inventory.ssh.user,
        roles=host.roles,
        endpoints=endpoints,
        provider={"container": container.name, "ip": _container_ip(container)},
    )


def _container_ip(container) -> str:
    networks = container.attrs["NetworkSettings"]["Networks"] or {}
    return next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), "")


def _wait_for_ssh(record: HostRecord) -> None:
    """Until sshd sends its banner: a listening port alone does not mean it is ready."""
    deadline = time.monotonic() + SSH_WAIT_SECONDS
    while True:
        try:
            with socket.create_connection((record.address, record.port), timeout=2) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ProviderError(
                f"sandbox host {record.name}: SSH on {record.address}:{record.port} did not answer within "
                f"{SSH_WAIT_SECONDS}s; see `docker logs {record.provider.get('container', '')}`"
            )
        time.sleep(0.3)
