"""Creating, starting and removing sandbox hosts on the local engine, through the Docker SDK."""

from __future__ import annotations

import ipaddress
import random
import socket
import time

import docker.errors
import docker.types

from dockyard import images
from dockyard.environment import Env
from dockyard.errors import ProviderError
from dockyard.inventory import Host
from dockyard.providers.sandbox import Sandbox, unpublished, wrong_init
from dockyard.state import HostRecord

# Enough privilege for dockerd inside, without --privileged (which needs CAP_SYS_RESOURCE).
HOST_PRIVILEGES = dict(
    cap_add=["ALL"],
    cap_drop=["SYS_RESOURCE"],
    security_opt=["seccomp=unconfined", "apparmor=unconfined"],
    cgroupns="host",
)
# systemd as PID 1, as on a VM: SIGRTMIN+3 asks it to shut down cleanly, and its runtime state lives on tmpfs.
SYSTEMD_CONTAINER = {"command": "/sbin/init", "stop_signal": "SIGRTMIN+3"}
SYSTEMD_TMPFS = {"/run": "", "/run/lock": ""}
SSH_WAIT_SECONDS = 60
# Below Linux's ephemeral range (32768-60999), where the kernel picks the ports of outgoing connections and the
# engine the ports it publishes by itself: a port chosen here stays free while its host is stopped.
HOST_PORTS = range(20000, 32768)
START_ATTEMPTS = 3  # another run may take a chosen port between the choice and the start
# A swarm's hosts get fixed addresses, since a manager's advertise address must not change: its network gets a
# subnet of its own from this range, and the hosts the first free addresses from FIRST_HOST_ADDRESS on.
SWARM_SUBNETS = ipaddress.ip_network("10.213.0.0/16")
FIRST_HOST_ADDRESS = 10


class Engine:
    """The sandbox provider's provision and teardown."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.env = sandbox.env

    def provision(self) -> list[HostRecord]:
        env = self.env
        client = images.engine()
        public_key = env.state.public_key(env.env_key())
        source = env.images_source()
        base = images.base_image(source, env.out.say)
        host_image = images.build("sandbox-host", env.root / "images" / "sandbox-host", base, env.out.say)
        network = self._ensure_network(client)
        records = []
        for host in env.inventory.hosts:
            started = time.monotonic()
            name = self.sandbox.container_name(host.name)
            try:
                container = client.containers.get(name)
            except docker.errors.NotFound:
                container = None
            if container is None:
                container = self._create(client, host, host_image.ref, network, public_key)
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
            records.append(record)
        env.state.save_hosts(records)
        return records

    def teardown(self) -> None:
        env = self.env
        client = images.engine()
        selector = {"label": [f"{key}={value}" for key, value in self.sandbox.labels().items()]}
        for container in client.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
            env.out.step(container.labels.get("dockyard.host", "-"), "sandbox", "changed", f"removed {container.name}")
        for volume in client.volumes.list(filters=selector):
            volume.remove(force=True)
            env.out.step("-", "sandbox", "changed", f"removed volume {volume.name}")
        for network in client.networks.list(filters=selector):
            network.remove()
            env.out.step("-", "sandbox", "changed", f"removed network {network.name}")

    def _create(self, client, host: Host, image: str, network: str, public_key: str):
        """Create and start the host, on local ports chosen now and kept for its lifetime."""
        ports = [22, *sorted(self.env.inventory.open_ports(host).values())]
        for attempt in range(1, START_ATTEMPTS + 1):
            published = dict(zip(ports, _free_ports(client, len(ports)), strict=True))
            address = self._free_address(client, network) if self.env.inventory.swarm else None
            created = self._create_container(client, host, image, network, public_key, published, address)
            try:
                client.api.start(created)
                return client.containers.get(created)
            except docker.errors.APIError as e:
                client.api.remove_container(created, force=True)
                taken = any(words in str(e.explanation) for words in ("already allocated", "already in use"))
                if not taken or attempt == START_ATTEMPTS:
                    raise ProviderError(
                        f"sandbox host {host.name}: the Docker engine could not start it: {e.explanation}"
                    ) from None

    def _create_container(self, client, host: Host, image: str, network: str, public_key: str,
                          published: dict[int, int], address: str | None) -> str:
        init = self.env.inventory.sandbox.init
        host_config = client.api.create_host_config(
            port_bindings={f"{port}/tcp": ("127.0.0.1", local) for port, local in published.items()},
            binds={
                self._ensure_volume(client, host.name): {"bind": "/var/lib/docker", "mode": "rw"},
                "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            },
            tmpfs=SYSTEMD_TMPFS if init == "systemd" else None,
            network_mode=network,
            restart_policy={"Name": "unless-stopped"},
            **HOST_PRIVILEGES,
        )
        # `--security-opt systempaths=unconfined`, which the API spells as empty path lists.
        host_config.update(MaskedPaths=[], ReadonlyPaths=[])
        try:
            return client.api.create_container(
                image,
                name=self.sandbox.container_name(host.name),
                hostname=host.name,
                labels={**self.sandbox.labels(host.name), "dockyard.init": init},
                environment={"SSH_AUTHORIZED_KEY": public_key},
                ports=list(published),
                host_config=host_config,
                networking_config=address and client.api.create_networking_config(
                    {network: client.api.create_endpoint_config(ipv4_address=address)}
                ),
                **(SYSTEMD_CONTAINER if init == "systemd" else {}),
            )["Id"]
        except docker.errors.APIError as e:
            raise ProviderError(f"sandbox host {host.name}: the Docker engine refused it: {e.explanation}") from None

    def _ensure_network(self, client) -> str:
        name = f"dockyard-{self.sandbox.project}-{self.env.name}"
        # the engine's name filter matches substrings: dockyard-t-rel would find dockyard-t-release
        if not any(n.name == name for n in client.networks.list(names=[name])):
            ipam = None
            if self.env.inventory.swarm:
                subnet = str(_free_subnet(client))
                ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
            client.networks.create(name, labels=self.sandbox.labels(), ipam=ipam)
        return name

    def _free_address(self, client, network: str) -> str:
        """The first address of the network's subnet that no host of the environment holds, running or not."""
        config = client.networks.get(network).attrs["IPAM"]["Config"] or [{}]
        if "Subnet" not in config[0]:
            raise ProviderError(
                f"sandbox network {network} was made without a subnet of its own, before `cluster: swarm`: run "
                f"`invoke teardown` then `invoke provision` to give the hosts fixed addresses"
            )
        selector = {"label": [f"{key}={value}" for key, value in self.sandbox.labels().items()]}
        held = {
            (settings.get("IPAMConfig") or {}).get("IPv4Address")
            for container in client.containers.list(all=True, filters=selector)
            for settings in (container.attrs["NetworkSettings"]["Networks"] or {}).values()
        }
        hosts = list(ipaddress.ip_network(config[0]["Subnet"]).hosts())[FIRST_HOST_ADDRESS - 1:]
        return str(next(a for a in hosts if str(a) not in held))

    def _ensure_volume(self, client, host: str) -> str:
        name = f"{self.sandbox.container_name(host)}-docker"
        try:
            client.volumes.get(name)
        except docker.errors.NotFound:
            client.volumes.create(name, labels=self.sandbox.labels(host))
        return name


def _free_ports(client, count: int) -> list[int]:
    """`count` ports that no sandbox host holds, running or stopped, and nothing listens on."""
    held = {
        int(binding["HostPort"])
        for container in client.containers.list(all=True, filters={"label": "managed-by=dockyard"}, ignore_removed=True)
        for bindings in (container.attrs["HostConfig"]["PortBindings"] or {}).values()
        for binding in bindings or []
        if binding.get("HostPort")
    }
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.choice(HOST_PORTS)
        if port not in held and port not in chosen and _bindable(port):
            chosen.append(port)
    return chosen


def _free_subnet(client) -> ipaddress.IPv4Network:
    """A /24 of SWARM_SUBNETS that no network of the engine overlaps."""
    taken = [
        ipaddress.ip_network(pool["Subnet"])
        for network in client.networks.list(greedy=True)
        for pool in (network.attrs.get("IPAM") or {}).get("Config") or []
        if "Subnet" in pool and ":" not in pool["Subnet"]
    ]
    for subnet in SWARM_SUBNETS.subnets(new_prefix=24):
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise ProviderError(f"no /24 of {SWARM_SUBNETS} is free on this Docker engine for a swarm's sandbox network")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _record(env: Env, host: Host, container) -> HostRecord:
    init = container.labels["dockyard.init"]
    if init != env.inventory.sandbox.init:
        raise wrong_init(host.name, init, env.inventory.sandbox.init)
    ports = container.attrs["NetworkSettings"]["Ports"] or {}

    def published(port: int) -> str:
        bindings = ports.get(f"{port}/tcp") or []
        if not bindings:
            raise unpublished(host.name, port)
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
        provider={"container": container.name, "ip": _container_ip(container), "init": init},
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
