"""Files on the host: written atomically, whatever their content."""

from __future__ import annotations

import base64
import shlex
from pathlib import PurePosixPath

from dockyard.spec import Rendered


def write_file(file: Rendered) -> str:
    """Write a file atomically from base64, so any content survives the shell."""
    dest = PurePosixPath(file.dest)
    tmp = f"{dest}.dockyard-new"
    data = base64.b64encode(file.content).decode()
    mode = 0o600 if file.secret else file.mode
    return (
        f"mkdir -p {shlex.quote(str(dest.parent))} && "
        f"printf %s {data} | base64 -d > {shlex.quote(tmp)} && chmod {mode:o} {shlex.quote(tmp)} && "
        f"mv {shlex.quote(tmp)} {shlex.quote(str(dest))}"
    )
