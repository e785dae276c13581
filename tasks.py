"""dockyard's command line: Invoke collections only; `invoke --list` is the table of contents."""

from pathlib import Path

from invoke import Collection

from dockyard import cli

ns = Collection()
ns.add_task(cli.provision)
ns.add_task(cli.plan)
ns.add_task(cli.teardown)

deploy = Collection("deploy")
deploy.add_task(cli.deploy, name="all", default=True)
for role, role_task in cli.ROLE_TASKS.items():
    deploy.add_task(role_task, name=role)
ns.add_collection(deploy)

hosts = Collection("hosts")
hosts.add_task(cli.hosts_list, name="list", default=True)
hosts.add_task(cli.hosts_forget, name="forget")
ns.add_collection(hosts)

docker = Collection("docker")
docker.add_task(cli.docker_install, name="install")
ns.add_collection(docker)

images = Collection("images")
images.add_task(cli.images_base, name="base")
images.add_task(cli.images_ship, name="ship")
ns.add_collection(images)

ns.configure({
    "dockyard": {
        "root": str(Path(__file__).resolve().parent),
        "env": "sandbox",
        "inventory_dir": "inventory",
        "state_dir": ".dockyard",
    }
})
