"""One SSH connection per host (a Fabric Connection), pinned host keys, and counted traffic.

Host keys are pinned per environment under the host's name, so a sandbox host whose published port
moves keeps its pin. Fabric's default of auto-adding keys is replaced: a new host is recorded on first
contact, a known host must present the same key, or the connection is refused.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection

from dockyard.errors import ConnectError, RemoteFailed
from dockyard.state import HostRecord


@dataclass
class Stats:
    """What crossed SSH in this process, counted where it happens."""

    connections: int = 0
    commands: int = 0
    bytes_sent: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


STATS = Stats()
_known_hosts_lock = threading.Lock()


class HostKeyChanged(ConnectError):
    pass


class PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Trust on first use, then refuse any other key for the same host name."""

    def __init__(self, known_hosts: Path, alias: str):
        self.known_hosts = known_hosts
        self.alias = alias

    def missing_host_key(self, client, hostname, key):
        line = f"{self.alias} {key.get_name()} {key.get_base64()}"
        with _known_hosts_lock:
            pinned = [
                entry for entry in _read_lines(self.known_hosts) if entry.split(" ", 1)[0] == self.alias
            ]
            if not pinned:
                self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                with self.known_hosts.open("a") as f:
                    f.write(line + "\n")
                return
        if line not in pinned:
            raise HostKeyChanged(
                f"{self.alias} ({hostname}): host key changed to {key.get_name()} "
                f"{key.fingerprint}; if the host was rebuilt on purpose, run `invoke hosts.forget {self.alias}`,"
                f" otherwise treat it as a possible man-in-the-middle and check the host's console"
            )


def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


class HostConnection:
    """A host's one connection: scripts, streamed uploads and tunnels all ride on it."""

    def __init__(self, record: HostRecord, key_path: Path, known_hosts: Path, connect_timeout: int = 10):
        self.record = record
        self.where = f"{record.name} ({record.user}@{record.address}:{record.port})"
        self.bytes_sent = 0  # this host's share of STATS.bytes_sent, for its own transfer progress
        self.connect_timeout = connect_timeout
        self.connection = Connection(
            host=record.address,
            port=record.port,
            user=record.user,
            config=Config(overrides={"load_ssh_configs": False}),
            connect_kwargs={
                "key_filename": str(key_path),
                "look_for_keys": False,
                "allow_agent": False,
                "banner_timeout": connect_timeout,
                "auth_timeout": connect_timeout,
            },
        )
        self.connection.client.set_missing_host_key_policy(PinnedHostKey(known_hosts, record.alias))

    def open(self) -> None:
        if self.connection.is_connected:
            return
        try:
            self.connection.connect_kwargs["sock"] = self._socket()
            self.connection.open()
        except HostKeyChanged:
            raise
        except paramiko.AuthenticationException:
            raise ConnectError(
                f"{self.where}: key refused; check that the host's authorized_keys holds this environment's "
                f"public key"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            cause = _describe(e)
            raise ConnectError(f"{self.where}: {cause}; check the host is running (`invoke provision`)") from None
        STATS.add(connections=1)

    def _socket(self) -> socket.socket:
        """The TCP connection SSH rides on, without Nagle's algorithm: it holds each small packet (a channel opened,
        a command sent) until the last one is acknowledged, which costs 40 ms or more per command."""
        sock = socket.create_connection((self.record.address, self.record.port), timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def sent(self, n: int) -> None:
        self.bytes_sent += n
        STATS.add(bytes_sent=n)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> HostConnection:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _privileged(self, command: str, keep: str = "") -> str:
        """`command` as root; `keep` names environment variables sudo passes on."""
        if self.record.user == "root":
            return command
        return f"sudo -n --preserve-env={keep} {command}" if keep else f"sudo -n {command}"

    def run(self, script: str, what: str | None = None, shell: str = "sh -s") -> str:
        """Run a shell script as root in one round trip and return its stdout; `what` names it in a failure
        (by default its first line); `shell` reads it from stdin.

        The script travels on stdin, not on the command line, so sudo's log never holds the files it writes.
        """
        status, out, err = self._exec(shell, [script.encode()], lambda _: None)
        if status != 0:
            first_line = script.strip().partition("\n")[0][:80]
            raise RemoteFailed(self.where, what or f"`{first_line}`", status, out, err)
        return out

    def follow(self, script: str, line: Callable[[str], None]) -> int:
        """Run a shell script as root, as `run` does, handing each line it prints (stdout and stderr, as they come)
        to `line`; its exit status, which is the caller's to judge."""
        self.open()
        STATS.add(commands=1)
        try:
            channel = self.connection.client.get_transport().open_session()
            try:
                channel.set_combine_stderr(True)
                channel.exec_command(self._privileged("sh -s"))
                channel.sendall(script.encode())
                channel.shutdown_write()
                for raw in channel.makefile("rb"):
                    line(raw.decode(errors="replace").rstrip("\n"))
                return channel.recv_exit_status()
            finally:
                channel.close()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ConnectError(f"{self.where}: connection lost ({_describe(e)})") from None

    @contextmanager
    def held(self, script: Iterable[str], what: str, ready: str, on_line: Callable[[str], None]) -> Iterator[str]:
        """Run a shell script as root and keep it running while the block runs: yields what it printed before the
        line `ready` (each line also goes to `on_line` as it arrives); leaving the block closes its stdin, which the
        script waits for, then waits until it has ended. A script that ends before `ready` raises RemoteFailed.

        The script comes in parts, lines each, and each part is sent as soon as it is known: the host runs the first
        ones while the caller still works out the next."""
        self.open()
        STATS.add(commands=1)
        lines = []
        try:
            channel = self.connection.client.get_transport().open_session()
            # SSH_CLIENT: where the session comes from, which the host lock records
            channel.exec_command(self._privileged("sh -s", keep="SSH_CLIENT"))
            for part in script:
                channel.sendall(f"{part}\n".encode())
            for raw in channel.makefile("rb"):
                line = raw.decode(errors="replace").rstrip("\n")
                if line == ready:
                    break
                lines.append(line)
                on_line(line)
            else:
                err = channel.makefile_stderr("rb").read().decode(errors="replace")
                status = channel.recv_exit_status()
                channel.close()
                raise RemoteFailed(self.where, what, status, "\n".join(lines), err)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ConnectError(f"{self.where}: connection lost ({_describe(e)})") from None
        try:
            yield "\n".join(lines)
        finally:
            try:
                channel.shutdown_write()
                channel.recv_exit_status()
            except (paramiko.SSHException, OSError, EOFError):
                pass  # the connection is gone, and the host's end of the script with it
            channel.close()

    def stream(self, command: str, chunks: Iterable[bytes], progress: Callable[[int], None]) -> str:
        """Run `command` as root with `chunks` as its stdin, without a temporary file on either side."""
        status, out, err = self._exec(command, chunks, progress)
        if status != 0:
            raise RemoteFailed(self.where, f"`{command}`", status, out, err)
        return out

    def _exec(self, command: str, chunks: Iterable[bytes], progress: Callable[[int], None]) -> tuple[int, str, str]:
        self.open()
        STATS.add(commands=1)
        try:
            channel = self.connection.client.get_transport().open_session()
            try:
                channel.exec_command(self._privileged(command))
                sent = 0
                for chunk in chunks:
                    channel.sendall(chunk)
                    sent += len(chunk)
                    self.sent(len(chunk))
                    progress(sent)
                channel.shutdown_write()
                out = channel.makefile("rb").read()
                err = channel.makefile_stderr("rb").read()
                status = channel.recv_exit_status()
            finally:
                channel.close()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ConnectError(f"{self.where}: connection lost ({_describe(e)})") from None
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    @contextmanager
    def tunnel(self, remote_port: int, local_port: int = 0) -> Iterator[int]:
        """Forward 127.0.0.1:<local port> to the host's 127.0.0.1:<remote port>; yields the local port."""
        self.open()
        transport = self.connection.client.get_transport()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", local_port))
        except OSError as e:
            listener.close()
            raise ConnectError(f"local port {local_port} is taken ({e.strerror}); choose another") from None
        listener.listen(16)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                ready, _, _ = select.select([listener], [], [], 0.2)
                if not ready:
                    continue
                client, peer = listener.accept()
                try:
                    channel = transport.open_channel("direct-tcpip", ("127.0.0.1", remote_port), peer)
                except (paramiko.SSHException, OSError):
                    client.close()
                    continue
                threading.Thread(target=_pump, args=(client, channel, stop, self.sent), daemon=True).start()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()
            thread.join()
            listener.close()


def _pump(client: socket.socket, channel: paramiko.Channel, stop: threading.Event,
          sent: Callable[[int], None]) -> None:
    """Copy bytes both ways between a local socket and an SSH channel, counting what is sent."""
    try:
        while not stop.is_set():
            ready, _, _ = select.select([client, channel], [], [], 0.2)
            if client in ready:
                data = client.recv(65536)
                if not data:
                    break
                channel.sendall(data)
                sent(len(data))
            if channel in ready:
                data = channel.recv(65536)
                if not data:
                    break
                client.sendall(data)
    except OSError:
        pass
    finally:
        channel.close()
        client.close()


def _describe(e: BaseException) -> str:
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return f"address does not resolve ({e.strerror})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__
