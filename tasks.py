"""dockyard's command line: Invoke collections only; `invoke --list` is the table of contents."""

from pathlib import Path

from invoke import Collection

from dockyard.cli import DEFAULT_LOCK_TIMEOUT, app, deploy, hosts, images, proxy, registry, scan

ns = Collection(hosts.provision, deploy.plan, hosts.teardown, hosts.lock, app.status)
ns.add_collection(Collection("deploy", deploy.deploy, *deploy.ROLE_TASKS))
ns.add_collection(Collection("hosts", hosts.list_, hosts.forget))
ns.add_collection(Collection("docker", deploy.docker_install))
ns.add_collection(Collection("images", images.base, images.ship, images.push, scan.scan))
ns.add_collection(Collection("registry", registry.ls, registry.tags, registry.rm, registry.gc, registry.tunnel))
ns.add_collection(Collection("app", app.release, app.history, app.rollback, app.app_logs, app.exec_))
ns.add_collection(Collection("webhook", app.webhook_logs, app.url))
ns.add_collection(Collection("proxy", proxy.ca))
ns.configure({
    "dockyard": {
        "root": str(Path(__file__).resolve().parent),
        "env": "sandbox",
        "inventory_dir": "inventory",
        "state_dir": ".dockyard",
        "lock_timeout": DEFAULT_LOCK_TIMEOUT,
    }
})
