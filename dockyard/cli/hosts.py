"""provision, teardown, lock, hosts.*: where the environment's hosts come from, how to reach them, who changes them."""

from dockyard import lock as host_lock
from dockyard.cli import open_env, task
from dockyard.report import confirm


@task(help={"yes": "do not ask before terminating hosts that are no longer declared"})
def provision(c, env=None, yes=False):
    """Create the environment's hosts, or start them; a second run changes nothing."""
    env = open_env(c, env)
    records = env.provider.provision(yes=yes)
    if not env.out.counts["changed"]:
        env.out.say("no changes: every host exists and runs")
    print_hosts(env, records)


@task(help={"yes": "do not ask for confirmation"})
def teardown(c, env=None, yes=False):
    """Remove the environment's hosts and everything dockyard made for them, state included."""
    env = open_env(c, env)
    confirm(f"tear down environment {env.name} ({env.inventory.provider})?", yes)
    env.provider.teardown(yes=True)
    env.state.clear()
    env.out.say(f"environment {env.name} is gone; state {env.state.dir} removed")


@task
def lock(c, env=None):
    """Show each host's lock: free, or who holds it, from where, for which task and since when."""
    env = open_env(c, env)
    rows = []
    for record in env.hosts():
        with env.connect(record) as conn:
            rows.append((record.name, host_lock.holder(conn) or "free"))
    env.out.table(("host", "lock"), rows)


@task(name="list", default=True)
def list_(c, env=None):
    """Show how to reach each host over SSH."""
    env = open_env(c, env)
    print_hosts(env, env.hosts())


@task(help={"host": "the host whose pinned key to drop"})
def forget(c, host, env=None):
    """Forget a host's pinned SSH key, after rebuilding it on purpose."""
    env = open_env(c, env)
    env.state.forget_host_key(host)
    env.out.say(f"{host}: pinned host key removed; the next connection records the new one")


def print_hosts(env, records) -> None:
    rows = [
        (r.name, f"ssh -i {env.key_path(r)} -p {r.port} -o UserKnownHostsFile={env.state.known_hosts} "
                 f"-o HostKeyAlias={r.alias} {r.user}@{r.address}")
        for r in records
    ]
    env.out.table(("host", "reach it with"), rows)
