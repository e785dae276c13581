"""The webhook listener's audit log on the host: one JSON object a line, read over SSH."""

from __future__ import annotations

import json
import shlex

from roles.webhook import HISTORY_FILE

POLL_SECONDS = 0.2  # on the host: polling there costs no round trip


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
