"""All remote shell, as data: each function returns the text of a command and runs nothing.

One module per subject, as Kamal keeps `lib/kamal/commands/`: the engine (`engine`), containers, files, the one
facts read (`facts`), registry garbage collection (`registry_gc`), scans (`scan`) and the webhook's audit log
(`history`). `HostConnection` runs them; the tests compare them with exact strings.
"""

from __future__ import annotations

import shlex


def docker(*args: str) -> str:
    return shlex.join(("docker", *args))
