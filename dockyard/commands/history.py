"""The webhook listener's audit log on the host: one JSON object a line, read over SSH."""

from __future__ import annotations

import json
import shlex

from roles.webhook import HISTORY_FILE

HISTORY_DIR = HISTORY_FILE.rpartition("/")[0]

POLL_SECONDS = 0.1  # on the host: polling there costs no round trip


def count() -> str:
    """How many entries the log holds (0 while there is none)."""
    return f"cat {HISTORY_FILE} 2>/dev/null | wc -l"


def read(since: int = 0, last: int | None = None, until_tag: str | None = None, timeout: float = 0) -> str:
    """Entries after the first `since`, or the `last` ones; with `until_tag`, first wait on the host, up to
    `timeout` seconds, until an entry names that tag (tags hold no quotes, so a plain grep finds the JSON)."""
    lines = f"+{since + 1}" if last is None else str(last)
    tail = f"tail -n {lines} {HISTORY_FILE} 2>/dev/null"
    if until_tag is None:
        return f"{tail} || true"
    needle = shlex.quote(json.dumps({"tag": until_tag})[1:-1])  # '"tag": "v2"', as the listener writes it
    polls = int(timeout / POLL_SECONDS)
    return (
        f"i=0; until {tail} | grep -qF {needle} || [ $i -ge {polls} ]; do "
        f"i=$((i+1)); sleep {POLL_SECONDS}; done; {tail} || true"
    )


# Filled in on the host when the line is written: what only the host knows then.
ON_HOST = {
    "@started@": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
    "@serving@": "${serving:-}",
    "@before_id@": "${before_id:-}",
    "@before_image@": "${before_image:-}",
    "@slot@": "${slot:-}",
    "@after_id@": "${after_id:-}",
}


def append(source: str, image: str, result: str, reason: str) -> str:
    """Append one entry to the audit log, as the listener writes them (`app.history` and `status` read both):
    `before` is the container that served ($serving, $before_id, $before_image), `after` the one that serves now
    ($slot, $after_id), both set by the switch script; a failure has no `after`."""
    tag = image.rpartition(":")[2]
    before = {"id": "@before_id@", "image": "@before_image@", "name": "@serving@"}
    entry = {
        "started": "@started@", "trigger": {"source": source, "tag": tag}, "image": image, "result": result,
        "reason": reason, "before": before,
        "after": {"id": "@after_id@", "image": image, "name": "@slot@"} if result == "success" else before,
    }
    text = json.dumps(entry)
    for char in ("\\", '"', "$", "`"):  # inside the shell's double quotes, the JSON as it is
        text = text.replace(char, "\\" + char)
    for placeholder, word in ON_HOST.items():
        text = text.replace(placeholder, word)
    return f'mkdir -p {shlex.quote(HISTORY_DIR)} && printf \'%s\\n\' "{text}" >> {HISTORY_FILE}'
