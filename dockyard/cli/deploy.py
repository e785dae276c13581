"""deploy, deploy.<role>, plan, docker.install: converge hosts to the inventory."""

from dockyard import deploy as deployment
from dockyard import front_door
from dockyard.cli import LOCK_HELP, claim, open_env, task
from dockyard.inventory import ROLES

DRY_RUN_HELP = {"dry_run": "print what would change, change nothing (takes no lock)"}


@task(name="all", default=True, help={
    **DRY_RUN_HELP, **LOCK_HELP, "yes": "on a swarm, remove nodes no longer in the inventory without asking",
})
def deploy(c, env=None, dry_run=False, lock_timeout=None, yes=False):
    """Converge the whole stack on every host: registry, mirror, UI, proxy, app, webhook."""
    env = open_env(c, env)
    deployment.converge(env, None if dry_run else claim(c, "deploy", lock_timeout), yes=yes)
    if not dry_run:
        print_services(env)


@task
def plan(c, env=None):
    """Print what `deploy` would change, without changing it."""
    deployment.converge(open_env(c, env), None)


@task(name="install", help=LOCK_HELP)
def docker_install(c, env=None, lock_timeout=None):
    """Install Docker on every host, start it now and at boot; one round trip when it is there."""
    deployment.converge(open_env(c, env), claim(c, "docker.install", lock_timeout), only=())


def role_task(role: str):
    typed = f"deploy.{role.replace('_', '-')}"  # as Invoke spells the task

    @task(name=role, help={**DRY_RUN_HELP, **LOCK_HELP})
    def deploy_role(c, env=None, dry_run=False, lock_timeout=None):
        deployment.converge(open_env(c, env), None if dry_run else claim(c, typed, lock_timeout), only=(role,))

    deploy_role.__doc__ = f"Converge only the {role} service."
    return deploy_role


ROLE_TASKS = [role_task(role) for role in ROLES]


def print_services(env) -> None:
    rows = []
    for record in env.hosts():
        door = front_door.url(env.inventory, record)
        rows += [(record.name, role, service_url(env, record, role, door)) for role in record.roles if role in ROLES]
    env.out.table(("host", "service", "url"), rows)


# reached through the proxy, at its URL
FRONTED = {"proxy": "/", "app": "/", "webhook": "/hooks/<token>"}
TRUST = {
    "internal": "its internal CA: trust it with `invoke proxy.ca`",
    "acme": "certificates by ACME",
    "off": "plain HTTP: services.proxy.tls is off",
}


def service_url(env, record, role: str, door: str | None) -> str:
    if role in FRONTED:
        if door is None:
            return "on the host only: services.proxy.open_to is empty"
        trust = f"  ({TRUST[env.inventory.proxy_certificates()]})" if role == "proxy" else ""
        return f"{door}{FRONTED[role]}{trust}"
    if role in record.endpoints:
        return f"http://{record.endpoints[role]}/"
    return f"127.0.0.1:{env.inventory.service(role).port} on the host (invoke registry.tunnel)"
