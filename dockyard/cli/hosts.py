"""provision, teardown, hosts.*: where the environment's hosts come from and how to reach them."""

from dockyard.cli import open_env, task
from dockyard.report import confirm


@task(help={"yes": "do not ask before terminating hosts that are no longer declared"})
def provision(c, env=None, yes=False):
    """Create the environment's hosts, or start them; a second run changes nothing."""
    e = open_env(c, env)
    records = e.provider.provision(yes=yes)
    if not e.out.counts["changed"]:
        e.out.say("no changes: every host exists and runs")
    print_hosts(e, records)


@task(help={"yes": "do not ask for confirmation"})
def teardown(c, env=None, yes=False):
    """Remove the environment's hosts and everything dockyard made for them, state included."""
    e = open_env(c, env)
    confirm(f"tear down environment {e.name} ({e.inventory.provider})?", yes)
    e.provider.teardown(yes=True)
    e.state.clear()
    e.out.say(f"environment {e.name} is gone; state {e.state.dir} removed")


@task(name="list", default=True)
def list_(c, env=None):
    """Show how to reach each host over SSH."""
    e = open_env(c, env)
    print_hosts(e, e.hosts())


@task(help={"host": "the host whose pinned key to drop"})
def forget(c, host, env=None):
    """Forget a host's pinned SSH key, after rebuilding it on purpose."""
    e = open_env(c, env)
    e.state.forget_host_key(host)
    e.out.say(f"{host}: pinned host key removed; the next connection records the new one")


def print_hosts(e, records) -> None:
    rows = [
        (r.name, f"ssh -i {e.key_path(r)} -p {r.port} -o UserKnownHostsFile={e.state.known_hosts} "
                 f"-o HostKeyAlias={r.alias} {r.user}@{r.address}")
        for r in records
    ]
    e.out.table(("host", "reach it with"), rows)
