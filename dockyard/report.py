"""What the operator reads: one line per step, transfer progress in bytes, closing tables."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, TextIO

from dockyard.errors import Aborted

if TYPE_CHECKING:
    from dockyard.day_two import ServiceStatus, Status
    from dockyard.registry_api import TagInfo
    from dockyard.scan import ScanReport

STATUS_WIDTH = 8
# Every value any reporter of this process hides; `masked` applies them to the final `error:` line too.
_HIDDEN: set[str] = set()


def masked(text: str) -> str:
    """`text` with every hidden value replaced, longest first (a secret may contain another)."""
    for secret in sorted(_HIDDEN, key=len, reverse=True):
        text = text.replace(secret, "********")
    return text


class Reporter:
    def __init__(self, stream: TextIO | None = None, secrets: tuple[str, ...] = ()):
        self.stream = stream or sys.stdout
        self.hide(*secrets)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # steps reported, by status

    def hide(self, *secrets: str) -> None:
        """Never print these values, whatever line they turn up in, the final `error:` line included."""
        _HIDDEN.update(s for s in secrets if s)

    def say(self, text: str) -> None:
        text = masked(text)
        with self._lock:
            print(text, file=self.stream, flush=True)

    def step(self, host: str, role: str, status: str, detail: str = "", seconds: float | None = None) -> None:
        self.counts[status] += 1
        took = f"  {seconds:5.1f}s" if seconds is not None else ""
        self.say(f"{host:<10} {role:<12} {status:<{STATUS_WIDTH}}{took}  {detail}".rstrip())

    def table(self, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
        for row in (header, *rows):
            self.say("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def progress(self, label: str, total: int | None = None) -> Progress:
        return Progress(self, label, total)


class Progress:
    """Bytes moved so far, printed now and then, and a final line."""

    def __init__(self, reporter: Reporter, label: str, total: int | None):
        self.reporter, self.label, self.total = reporter, label, total
        self.done = 0
        self._last = time.monotonic()
        # a terminal gets frequent updates; a log file a line every few seconds
        self._interval = 0.5 if getattr(reporter.stream, "isatty", lambda: False)() else 5.0

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._print()

    def finish(self) -> None:
        self._print()

    def _print(self) -> None:
        of = f" of ~{human_bytes(self.total)}" if self.total else ""
        self.reporter.say(f"           {self.label}: {human_bytes(self.done)}{of}")


def confirm(question: str, yes: bool) -> None:
    """Ask before destroying; without a terminal, only --yes may answer."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise Aborted(f"{question} needs confirmation; pass --yes to proceed without a terminal")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise Aborted("nothing was changed")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def history(out: Reporter, host: str, entries: list[dict]) -> None:
    """The webhook's audit log: one row a redeploy."""
    rows = [
        (
            entry.get("started", ""), entry.get("trigger", {}).get("source", ""),
            entry.get("trigger", {}).get("tag", ""), _short_image(entry.get("before")),
            _short_image(entry.get("after")), entry.get("result", ""), f"{entry.get('duration_s', 0):.1f}s",
            entry.get("reason") or "",
        )
        for entry in entries
    ]
    out.say(f"{host}: {len(rows)} redeploy(s)")
    out.table(("when", "trigger", "tag", "before", "after", "result", "took", "why"), rows)


def status(out: Reporter, state: Status) -> None:
    """Per host: its services, the proxy's upstream (one host's app), the last release; then a swarm's app
    service with its tasks."""
    for host in state.hosts:
        out.say(f"{host.host}:")
        out.table(
            ("service", "container", "image", "version", "health", "up", "restarts"),
            [(s.role, s.name, s.image, s.version, s.health, human_seconds(s.uptime_s), str(s.restarts))
             for s in host.services],
        )
        if not state.swarm:  # a swarm's proxy finds the app's tasks by name
            out.say(f"  proxy upstream: {host.upstream or 'none'}")
        last = host.last_release
        if last:
            trigger = last.get("trigger", {})
            why = f": {last['reason']}" if last.get("reason") else ""
            out.say(f"  last release: {last.get('started', '')} {trigger.get('source', '')} "
                    f"{trigger.get('tag', '')} {last.get('result', '')}{why}")
        else:
            out.say("  last release: none recorded")
    if state.swarm:
        _service(out, state.service)


def _service(out: Reporter, app: ServiceStatus | None) -> None:
    """A swarm's app service: replicas running of declared, its image, its last update; each task."""
    if app is None:
        out.say("app service: none; run `invoke deploy`")
        return
    update = f", last update {app.update}" if app.update else ""
    out.say(f"app service {app.name}: {app.running}/{app.declared} running, image {app.image}{update}")
    out.table(("task", "node", "state", "image", "health", "error"),
              [(t.name, t.node, t.state, t.image, t.health or "-", t.error or "-") for t in app.tasks])


def human_seconds(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def repositories(out: Reporter, tag_counts: dict[str, int]) -> None:
    out.table(("repository", "tags"), [(name, str(count)) for name, count in tag_counts.items()])
    out.say(f"{len(tag_counts)} repositories, {sum(tag_counts.values())} tags")


def tags(out: Reporter, repository: str, infos: list[TagInfo]) -> None:
    rows = [(i.tag, short_digest(i.digest), human_bytes(i.size), short_date(i.created)) for i in infos]
    out.table(("tag", "digest", "size", "created"), rows)
    out.say(f"{repository}: {len(infos)} tags")


def scan(out: Reporter, report: ScanReport) -> None:
    """Findings by severity, then the most severe ones."""
    out.table(("severity", "findings"), [(severity, str(n)) for severity, n in report.counts().items()])
    if report.findings:
        top = report.top()
        out.say(f"top {len(top)} of {len(report.findings)}:")
        out.table(
            ("severity", "id", "package", "installed", "fixed", "title"),
            [(f.severity, f.id, f.package, f.installed, f.fixed or "-", f.title[:60]) for f in top],
        )


def short_digest(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}"


def short_date(created: str | None) -> str:
    """`2026-11-28T01:48:03.123456789Z` as `2026-11-28 01:48:03Z`."""
    if not created:
        return "-"
    day, _, clock = created.partition("T")
    return f"{day} {clock[:8]}Z" if clock else day


def _short_image(image) -> str:
    """An audit log's image (an id, or a dict holding one) as 12 hex digits."""
    if isinstance(image, dict):
        image = image.get("id") or image.get("image") or ""
    return str(image or "").removeprefix("sha256:")[:12]

