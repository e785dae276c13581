"""Every remote failure ends in one `error:` line naming the host, what ran and why, through the real tasks.

The hosts are scripted: `ScriptedHost` is a HostConnection whose remote end is a table of answers, so everything
above the SSH channel, the translation of a failed command included, is the real code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import invoke
import pytest

from dockyard import cli, lock
from dockyard.cli import DEFAULT_LOCK_TIMEOUT, app, deploy, registry, scan
from dockyard.commands.lock import BUSY
from dockyard.environment import Env
from dockyard.errors import DockyardError, RemoteFailed
from dockyard.report import Reporter
from dockyard.ssh import HostConnection
from dockyard.state import HostRecord
from tests.conftest import REPO

FACTS = REPO / "tests/fixtures/facts"
NO_SUDO = (1, "", "sudo: a password is required\n")
LOCKED = ("flock -w", (0, "::locked\n::held\n", ""))  # the host lock, taken at once


class ScriptedHost(HostConnection):
    """Answers each script with the first (needle, (exit status, stdout, stderr)) whose needle it contains."""

    def __init__(self, record: HostRecord, *answers: tuple[str, tuple[int, str, str]], registry_port: int = 0):
        super().__init__(record, Path("unused-key"), Path("unused-known-hosts"))
        self.answers, self.registry_port, self.ran = answers, registry_port, []

    def open(self) -> None:
        pass

    def _exec(self, command, chunks, progress):
        script = b"".join(chunks).decode()
        self.ran.append(script)
        return next(answer for needle, answer in self.answers if needle in script)

    def follow(self, script, line):
        status, out, err = self._exec("sh -s", [script.encode()], lambda _: None)
        for text in (out + err).splitlines():
            line(text)
        return status

    @contextmanager
    def held(self, script, what, ready, on_line):
        status, out, err = self._exec("sh -s", [f"{part}\n".encode() for part in script], None)
        printed = []
        for line in out.splitlines():
            if line == ready:
                break
            printed.append(line)
            on_line(line)
        else:
            raise RemoteFailed(self.where, what, status, out, err)
        yield "\n".join(printed)

    @contextmanager
    def tunnel(self, remote_port: int, local_port: int = 0) -> Iterator[int]:
        yield self.registry_port


@pytest.fixture
def static(project, tmp_path, monkeypatch):
    """A static environment `t-remote` of hosts that answer as scripted: static(web1=(roles, answers), ...)."""
    key = tmp_path / "key"
    key.write_text("unused: the hosts are scripted\n")

    def make(**hosts: tuple[list[str], list]) -> None:
        lines = [f"  {name}: {{address: 127.0.0.1, key: {key}, roles: {json.dumps(roles)}}}"
                 for name, (roles, _) in hosts.items()]
        project.inventory("t-remote", "provider: static\nhosts:\n" + "\n".join(lines) + "\n")
        scripted = {name: answers for name, (_, answers) in hosts.items()}
        monkeypatch.setattr(Env, "connect", lambda env, record: ScriptedHost(record, *scripted[record.name]))

    return make


def task_context(project) -> invoke.Context:
    """The context `invoke` runs a task body with, with this project's config."""
    return invoke.Context(invoke.Config(overrides={"dockyard": {
        "root": str(REPO), "env": "t-remote", "inventory_dir": str(project.inventory_dir),
        "state_dir": str(project.state_dir), "lock_timeout": DEFAULT_LOCK_TIMEOUT,
    }}))


def run_task(project, task, *args, **kwargs) -> invoke.Exit:
    """A task body as `invoke` runs it; the Exit it ends with."""
    with pytest.raises(invoke.Exit) as caught:
        task(task_context(project), *args, **kwargs)
    return caught.value


def one_error_line(ended: invoke.Exit) -> str:
    assert ended.code == 1
    (line,) = ended.message.splitlines()
    assert line.startswith("error: ")
    return line


def facts_answer(name: str) -> tuple[str, tuple[int, str, str]]:
    """Deploy's read: the host lock taken, then the recorded facts, then the lock held."""
    return "echo ::docker", (0, f"::locked\n{(FACTS / name).read_text()}::held\n", "")


WHERE = "web1 (ubuntu@127.0.0.1:22)"


def test_a_facts_read_that_fails_names_the_host_and_the_cause(static, project):
    static(web1=([], [("echo ::docker", NO_SUDO)]))
    assert one_error_line(run_task(project, deploy.deploy)) == (
        f"error: {WHERE}: read facts failed (exit 1): sudo: a password is required")


def test_truncated_facts_are_one_line_too(static, project):
    text = (FACTS / "stack.txt").read_text()
    static(web1=([], [("echo ::docker", (0, f"::locked\n{text[: text.index('::images')]}::held\n", ""))]))
    assert one_error_line(run_task(project, deploy.docker_install)) == (
        f"error: {WHERE}: the facts read ended early, in its containers section; rerun, and if it persists run "
        f"with DOCKYARD_DEBUG=1")


def test_a_failing_step_is_named_and_the_other_hosts_still_report(static, project, capsys):
    fails_at_boot = (100, "::step 0\n::step 1\n", "E: Could not open lock file\nE: Unable to lock\n")
    static(
        web1=([], [facts_answer("fresh-host.txt"), ("set -eu", fails_at_boot)]),
        web2=([], [facts_answer("stack.txt")]),
    )
    line = one_error_line(run_task(project, deploy.docker_install))
    assert line == ("error: web1 (ubuntu@127.0.0.1:22): docker: enable dockerd at boot (/etc/rc.local) failed "
                    "(exit 100): E: Could not open lock file | E: Unable to lock")
    printed = capsys.readouterr().out.splitlines()
    assert "web2       docker       ok" in printed
    assert any(p.startswith("web1       docker       failed") for p in printed)


def test_a_step_that_fails_without_a_word_says_so(static, project):
    static(web1=([], [facts_answer("fresh-host.txt"), ("set -eu", (1, "::step 0\n", ""))]))
    assert one_error_line(run_task(project, deploy.docker_install)) == (
        f"error: {WHERE}: docker: install docker.io failed (exit 1): no output")


def test_two_failed_hosts_are_one_error_listing_both(static, project):
    truncated = (0, "::locked\n::docker\n::held\n", "")
    static(web1=([], [("echo ::docker", NO_SUDO)]), web2=([], [("echo ::docker", truncated)]))
    ended = run_task(project, deploy.docker_install)
    assert ended.code == 1
    assert ended.message.splitlines() == [
        "error: 2 of 2 hosts failed:",
        f"  web1: {WHERE}: read facts failed (exit 1): sudo: a password is required",
        "  web2: web2 (ubuntu@127.0.0.1:22): the facts read ended early, in its docker section; rerun, and if it "
        "persists run with DOCKYARD_DEBUG=1",
    ]


def test_a_run_that_waited_for_the_lock_in_vain_names_the_holder_in_one_line(static, project, capsys):
    busy = (FACTS / "lock-busy.txt").read_text()  # what the lock command printed while another run held the lock
    holder = lock.describe(busy.splitlines()[-1].removeprefix(BUSY))
    assert holder.startswith("ops@laptop from ")
    static(web1=([], [("flock -w", (75, busy, ""))]))
    assert one_error_line(run_task(project, deploy.docker_install, lock_timeout="1")) == (
        f"error: web1: the host lock is held by {holder}; gave up after waiting 0s; run again once it is done, or "
        f"wait longer with --lock-timeout")
    assert capsys.readouterr().out.splitlines() == [f"web1: waiting up to 1s for the host lock, held by {holder}"]


def test_a_lock_timeout_that_is_not_a_number_is_one_line(static, project):
    static(web1=([], []))
    assert one_error_line(run_task(project, deploy.deploy, lock_timeout="5m")) == (
        "error: --lock-timeout '5m' is not a whole number of seconds; e.g. --lock-timeout 600")


def test_a_daemon_that_does_not_come_up_is_one_line_naming_its_log(static, project):
    static(web1=([], [("echo ::docker", (1, "::locked\n", "dockerd did not answer within 60s; see "
                                                          "/var/log/dockerd.log\n"))]))
    assert one_error_line(run_task(project, deploy.docker_install)) == (
        f"error: {WHERE}: read facts failed (exit 1): dockerd did not answer within 60s; see /var/log/dockerd.log")


def test_a_release_fails_on_its_first_remote_read_before_building_anything(static, project):
    static(web1=(["registry", "proxy", "app", "webhook"], [("history.jsonl", NO_SUDO)]))
    assert one_error_line(run_task(project, app.release, version="v9")) == (
        f"error: {WHERE}: count the webhook's audit log failed (exit 1): sudo: a password is required")


def test_history_and_logs_fail_in_one_line(static, project):
    static(web1=(["proxy", "app", "webhook"], [("history.jsonl", NO_SUDO), ("docker logs", NO_SUDO)]))
    assert one_error_line(run_task(project, app.history)) == (
        f"error: {WHERE}: read the webhook's audit log failed (exit 1): sudo: a password is required")
    assert one_error_line(run_task(project, app.webhook_logs)) == (
        f"error: {WHERE}: read the webhook's log failed (exit 1): sudo: a password is required")


def test_a_broken_audit_log_line_is_one_error_line(static, project):
    broken = '{"result": "success"}\n{"result": "succ\n'
    static(web1=(["proxy", "app", "webhook"], [("history.jsonl", (0, broken, ""))]))
    assert one_error_line(run_task(project, app.history)) == (
        f"error: {WHERE}: /var/lib/dockyard/webhook/history.jsonl holds a line that is not a JSON object "
        "('{\"result\": \"succ'); move the file aside to start a new log")


@pytest.fixture
def empty_registry() -> Iterator[int]:
    """The registry API with nothing in it, enough for gc to look for a multi-platform index."""

    class Catalog(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"repositories": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Catalog)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_failed_garbage_collection_is_one_line(static, project, monkeypatch, empty_registry):
    failed = (1, "", "garbage-collect failed; its last lines:\nfailed to mark: filesystem: read-only file system\n")
    static(web1=(["registry"], [LOCKED, ("garbage-collect", failed)]))
    monkeypatch.setattr(ScriptedHost, "tunnel", _tunnel_to(empty_registry))
    assert one_error_line(run_task(project, registry.gc)) == (
        f"error: {WHERE}: registry gc failed (exit 1): garbage-collect failed; its last lines: | failed to mark: "
        "filesystem: read-only file system")


def _tunnel_to(port: int):
    @contextmanager
    def tunnel(conn, remote_port: int, local_port: int = 0) -> Iterator[int]:
        yield port

    return tunnel


def test_a_failed_scan_is_one_line_and_an_offline_one_its_own_exit_code(static, project, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no local trivy: the scan runs on the host
    fatal = (1, "", '2024-10-15T14:30:19Z\tFATAL\tFatal error\timage scan error: unable to find "nope"\n')
    static(web1=(["registry"], [("aquasec/trivy", fatal)]))
    assert one_error_line(run_task(project, scan.scan, "nope:1")) == (
        f"error: {WHERE}: Trivy failed: Fatal error image scan error: unable to find \"nope\"")
    static(web1=(["registry"], [("aquasec/trivy", (3, "", "dockyard-scan: cannot pull aquasec/trivy:0.57.1 on "
                                                     "this host\n"))]))
    ended = run_task(project, scan.scan, "nope")
    assert ended.code == 3
    assert ended.message.startswith(f"scan unavailable: {WHERE}: cannot pull aquasec/trivy:0.57.1 on this host")


def test_the_error_line_hides_what_the_run_hides():
    @cli.task
    def leaky(c):
        Reporter().hide("s3cr3t-4e1b")
        raise DockyardError("web1: release command failed (exit 1): token s3cr3t-4e1b refused")

    with pytest.raises(invoke.Exit) as caught:
        leaky(invoke.Context())
    assert caught.value.message == "error: web1: release command failed (exit 1): token ******** refused"
