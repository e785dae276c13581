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
    # a file given to a container's user sits in a folder of root's alone: the container reads it through a mount
    # of the file itself
    folder = f"mkdir -p{' -m 700' if file.owner else ''} {shlex.quote(str(dest.parent))}"
    owner = f" && chown {file.owner}:{file.owner} {shlex.quote(tmp)}" if file.owner else ""
    return (
        f"{folder} && "
        f"printf %s {data} | base64 -d > {shlex.quote(tmp)} && chmod {mode:o} {shlex.quote(tmp)}{owner} && "
        f"mv {shlex.quote(tmp)} {shlex.quote(str(dest))}"
    )
