"""The bench's peer workload with pyinfra's own operations: `pyinfra inventory.py pyinfra_deploy.py -y`.

It runs inside pyinfra's virtualenv, not dockyard's. The bench writes the workload next to the inventory
(`workload.json`: five containers and their files, rendered by dockyard's roles). As pyinfra's docker.container
never compares a container with its spec, a changed file restarts its container, the way pyinfra users do.
"""

import json
from pathlib import Path

from pyinfra import host
from pyinfra.operations import docker, files, server
from pyinfra.operations.util import any_changed

workload = json.loads(Path(host.data.workload).read_text())
docker.network(name=f"network {workload['network']}", network=workload["network"], present=True)
for service in workload["services"]:
    written = [
        files.template(name=f"write {f['dest']}", src=f["src"], dest=f["dest"], mode=f["mode"])
        for f in service["files"]
    ]
    docker.container(
        name=f"container {service['name']}",
        container=service["name"],
        image=service["image"],
        ports=service["ports"],
        networks=[workload["network"]],
        volumes=service["volumes"],
        env_vars=service["env"],
        labels=service["labels"],
        restart_policy=service["restart"],
        extra_args=service["extra_args"],
        command=service["command"] or None,
    )
    if written:
        server.shell(
            name=f"restart {service['name']}", commands=[f"docker restart {service['name']}"],
            _if=any_changed(*written),
        )
