"""app.* and webhook.*: releases, their audit trail, and the listener that performs them."""

from dockyard import front_door, report
from dockyard import release as releases
from dockyard.cli import LOCK_HELP, claim, open_env, task
from dockyard.errors import DockyardError


@task(help={"version": "tag for the release (default: the git sha)", "timeout": "seconds to wait for it to serve",
            **LOCK_HELP})
def release(c, env=None, version=None, timeout=120, lock_timeout=None):
    """Build the app, push it to the private registry, and wait until the new version serves."""
    releases.release(open_env(c, env), version, float(timeout), claim(c, "app.release", lock_timeout))


@task(help={"last": "how many entries to show"})
def history(c, env=None, last=20):
    """Show the webhook's redeploys: when, what triggered them, images before and after, result."""
    env = open_env(c, env)
    for record in env.hosts_with("webhook"):
        with env.connect(record) as conn:
            entries = releases.recent(conn, int(last))
        report.history(env.out, record.name, entries)


@task(help={"tail": "how many lines to show"})
def logs(c, env=None, tail=50):
    """Show the webhook listener's log."""
    env = open_env(c, env)
    for record in env.hosts_with("webhook"):
        with env.connect(record) as conn:
            env.out.say(releases.webhook_log(conn, int(tail)))


@task
def url(c, env=None):
    """Where to point a Docker Hub webhook (through the proxy); the token itself stays in the state folder."""
    env = open_env(c, env)
    for record in env.hosts_with("webhook"):
        base = front_door.url(env.inventory, record)
        if base is None:
            raise DockyardError(
                f"{record.name}: the proxy is open to no network (services.proxy.open_to is empty), so Docker Hub "
                f"cannot reach /hooks/; open it"
            )
        secrets = env.state.dir / "secrets.json"
        env.out.say(f"{record.name}: {base}/hooks/<token>  (token: webhook_token in {secrets})")
