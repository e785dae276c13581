"""The host lock's records, read from what a real host printed (tests/fixtures/facts/lock-busy.txt)."""

import getpass
import os
import socket
from contextlib import contextmanager
from types import SimpleNamespace

from dockyard import lock
from dockyard.commands import lock as commands
from dockyard.commands.lock import BUSY, WAITING
from dockyard.report import Reporter
from tests.conftest import REPO

BUSY_OUTPUT = (REPO / "tests/fixtures/facts/lock-busy.txt").read_text()


def test_a_second_run_sees_the_holder_once_when_it_starts_waiting_and_once_when_it_gives_up():
    waiting, busy = BUSY_OUTPUT.splitlines()
    assert waiting.startswith(WAITING) and busy.startswith(BUSY)
    holder = lock.parse_holder(busy.removeprefix(BUSY))
    assert holder == lock.parse_holder(waiting.removeprefix(WAITING))
    assert (holder.who, holder.task, holder.pid) == ("ops@laptop", "deploy", 4242)
    assert holder.origin.count(".") == 3  # the address the holder's SSH session comes from
    assert holder.since.endswith("Z") and len(holder.since) == len("2026-11-28T04:17:02Z")
    assert str(holder) == f"ops@laptop from {holder.origin} (deploy, pid 4242, since {holder.since})"


def test_a_missing_or_foreign_record_is_described_as_such():
    for text in ("", "not json", '{"who": "x"}', '{"who": 1, "from": "", "task": "", "since": "", "pid": 1}', "[]"):
        assert lock.parse_holder(text) is None
        assert lock.describe(text) == "a holder that left no record"
    unknown_origin = '{"who": "a@b", "from": "", "task": "deploy", "since": "t", "pid": 1}'
    assert lock.describe(unknown_origin) == "a@b from an unknown address (deploy, pid 1, since t)"


def test_a_claim_names_this_user_machine_and_process():
    claim = lock.Claim("deploy", 300)
    assert (claim.who, claim.pid) == (f"{getpass.getuser()}@{socket.gethostname()}", os.getpid())


def test_what_runs_first_under_the_lock_is_worked_out_after_the_host_was_asked_for_the_lock():
    sent = []

    class Host:
        record = SimpleNamespace(name="web1")

        @contextmanager
        def held(self, script, what, ready, on_line):
            sent.extend(script)
            yield "::locked\nfacts"

    def facts() -> str:
        sent.append("worked out")
        return "echo facts"

    claim = lock.Claim("deploy", 300)
    with lock.held(Host(), Reporter(), claim, facts, "read facts") as printed:
        assert printed == "facts"
    assert sent == [commands.take(claim.who, "deploy", claim.pid, 300), "worked out", "echo facts", commands.hold()]
