"""app.* and webhook.*: releases, their audit trail, and the listener that performs them."""

import shlex

from dockyard import front_door
from dockyard import release as releases
from dockyard.cli import open_env, task
from dockyard.errors import DockyardError


@task(help={"version": "tag for the release (default: the git sha)", "timeout": "seconds to wait for it to serve"})
def release(c, env=None, version=None, timeout=120):
    """Build the app, push it to the private registry, and wait until the new version serves."""
    releases.release(open_env(c, env), version, float(timeout))


@task(help={"last": "how many entries to show"})
def history(c, env=None, last=20):
    """Show the webhook's redeploys: when, what triggered them, images before and after, result."""
    e = open_env(c, env)
    for record in e.hosts_with("webhook"):
        with e.connect(record) as conn:
            entries = releases.history(conn, last=int(last))
        rows = [
            (
                entry.get("started", ""), entry.get("trigger", {}).get("source", ""),
                entry.get("trigger", {}).get("tag", ""), _short(entry.get("before")), _short(entry.get("after")),
                entry.get("result", ""), f"{entry.get('duration_s', 0):.1f}s", entry.get("reason") or "",
            )
            for entry in entries
        ]
        e.out.say(f"{record.name}: {len(rows)} redeploy(s)")
        e.out.table(("when", "trigger", "tag", "before", "after", "result", "took", "why"), rows)


@task(help={"tail": "how many lines to show"})
def logs(c, env=None, tail=50):
    """Show the webhook listener's log."""
    e = open_env(c, env)
    for record in e.hosts_with("webhook"):
        with e.connect(record) as conn:
            e.out.say(conn.run(f"docker logs --tail {shlex.quote(str(int(tail)))} dockyard-webhook 2>&1").rstrip())


@task
def url(c, env=None):
    """Where to point a Docker Hub webhook (through the proxy); the token itself stays in the state folder."""
    e = open_env(c, env)
    for record in e.hosts_with("webhook"):
        base = front_door.url(e.inventory, record)
        if base is None:
            raise DockyardError(
                f"{record.name}: the proxy is open to no network (services.proxy.open_to is empty), so Docker Hub "
                f"cannot reach /hooks/; open it"
            )
        secrets = e.state.dir / "secrets.json"
        e.out.say(f"{record.name}: {base}/hooks/<token>  (token: webhook_token in {secrets})")



def _short(image) -> str:
    if isinstance(image, dict):
        image = image.get("id") or image.get("image") or ""
    return str(image or "").removeprefix("sha256:")[:12]
