"""deploy, deploy.<role>, plan, docker.install: converge hosts to the inventory."""

from dockyard import deploy as deployment
from dockyard import front_door
from dockyard.cli import open_env, task
from dockyard.inventory import ROLES


@task(name="all", default=True, help={"dry_run": "print what would change, change nothing"})
def deploy(c, env=None, dry_run=False):
    """Converge the whole stack on every host: registry, mirror, UI, proxy, app, webhook."""
    env = open_env(c, env)
    deployment.converge(env, dry_run=dry_run)
    if not dry_run:
        print_services(env)


@task
def plan(c, env=None):
    """Print what `deploy` would change, without changing it."""
    deployment.converge(open_env(c, env), dry_run=True)


@task(name="install")
def docker_install(c, env=None):
    """Install Docker on every host, start it now and at boot; one round trip when it is there."""
    deployment.converge(open_env(c, env), only=())


def role_task(role: str):
    @task(name=role, help={"dry_run": "print what would change, change nothing"})
    def deploy_role(c, env=None, dry_run=False):
        deployment.converge(open_env(c, env), only=(role,), dry_run=dry_run)

    deploy_role.__doc__ = f"Converge only the {role} service."
    return deploy_role


ROLE_TASKS = [role_task(role) for role in ROLES]


def print_services(env) -> None:
    rows = []
    for record in env.hosts():
        door = front_door.url(env.inventory, record)
        rows += [(record.name, role, service_url(env, record, role, door)) for role in record.roles]
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
