"""app.*, webhook.* and status: releases and their audit trail, the app's day-two tasks, the listener that performs
releases, and what runs where."""

import json

from invoke import Exit

from dockyard import day_two, front_door, report
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
    """Show the app's releases (deploys, webhook redeploys, rollbacks): when, trigger, images, result."""
    env = open_env(c, env)
    for record in env.hosts_with("app"):
        with env.connect(record) as conn:
            entries = releases.recent(conn, int(last))
        report.history(env.out, record.name, entries)


@task(help={"to": "the tag to go back to (default: the image that served before the current one)", **LOCK_HELP})
def rollback(c, env=None, to=None, lock_timeout=None):
    """Switch the app back to the previous image (or --to TAG) without downtime; recorded in app.history."""
    day_two.rollback(open_env(c, env), to, claim(c, "app.rollback", lock_timeout))


@task(name="logs", help={"follow": "keep printing new lines until interrupted", "since": "only lines since then "
                         "(e.g. 10m, 2h, or a timestamp)", "lines": "how many of the last lines to show"})
def app_logs(c, env=None, follow=False, since=None, lines=100):
    """Show the app's log from every app host, each line prefixed with the host's name."""
    day_two.logs(open_env(c, env), int(lines), since, follow)


@task(name="exec", help={"host": "the app host to run it on (default: the first)"})
def exec_(c, command, env=None, host=None):
    """Run COMMAND in a new container of the app's current image, with its settings; exits with its exit code."""
    exited = day_two.run(open_env(c, env), command, host)
    if exited:
        raise Exit(code=exited)


@task(help={"json": "print JSON for scripts"})
def status(c, env=None, json_=False):
    """Per host: every service with its image, version, health, uptime and restarts; the proxy's upstream; the
    last release and its result. On a swarm, the app's service: its tasks running and declared, each task's node,
    state, image and health."""
    env = open_env(c, env)
    state = day_two.status(env)
    if json_:
        env.out.say(json.dumps({"env": env.name, **state.as_dict()}, indent=2))
    else:
        report.status(env.out, state)


@task(name="logs", help={"tail": "how many lines to show"})
def webhook_logs(c, env=None, tail=50):
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
