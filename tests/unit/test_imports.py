"""A deploy with nothing to do loads no heavy library it does not use: the Docker SDK, boto3 and the registry client
cost a tenth of a second or more each to import, and the no-op's whole time is the target (issue 14).

Each case runs, in a fresh interpreter, what a no-op deploy runs before and after its one SSH round trip: the command
line as `invoke` loads it, the hosts, the declaration (roles, templates, the image digests) and the plan from a
recorded facts read. The local engine's image ids are stood in for: unit tests run without an engine.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, SANDBOX_STACK

HEAVY = ("docker", "boto3", "botocore", "requests", "urllib3", "dockyard.registry_api", "dockyard.providers.aws")
NO_OP = """
import json, sys
from pathlib import Path
import tasks  # the command line, as `invoke` loads it
from dockyard import deploy, facts, images
from dockyard.environment import Env
from dockyard.state import HostRecord

root, env_name, inventory_dir, state_dir, fixture, *heavy_names = sys.argv[1:]
# no engine in unit tests
images.local_images = lambda *refs: {ref: images.Built(ref, "sha256:" + "1" * 64, cached=True) for ref in refs}
env = Env.open(Path(root), env_name, inventory_dir, state_dir)
if env.inventory.provider == "sandbox":  # what provision recorded
    (host,) = env.inventory.hosts
    published = {role: "127.0.0.1:20001" for role in env.inventory.open_ports(host)}
    env.state.save_hosts([HostRecord("web1", "127.0.0.1", 20000, "ubuntu", host.roles, published)])
records = env.hosts()
desired = deploy.declare(env, records)
seen = facts.parse(Path(fixture).read_text(), "web1")
plans = [deploy._plan(env, record, desired[record.name], seen) for record in records]
heavy = sorted({name for name in sys.modules for prefix in heavy_names if (name + ".").startswith(prefix + ".")})
print(json.dumps({"loaded": heavy, "roles": [role.role for plan in plans for role in plan.roles]}))
"""


@pytest.mark.parametrize("inventory", [
    SANDBOX_STACK + "images: offline\n",
    "provider: static\nimages: offline\nhosts: {web1: {address: 198.51.100.10}}\n"
    "services: {mirror: {remote_url: 'http://dockyard-registry:5000'}}\n",
], ids=["sandbox", "static"])
def test_a_no_op_deploy_loads_no_heavy_library(project, inventory):
    project.inventory("t", inventory)
    fixture = REPO / "tests" / "fixtures" / "facts" / "stack.txt"
    ran = subprocess.run(
        [sys.executable, "-c", NO_OP, str(REPO), "t", str(project.inventory_dir), str(project.state_dir), str(fixture),
         *HEAVY],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    result = json.loads(ran.stdout.splitlines()[-1])
    assert result["roles"] == ["docker", "registry", "mirror", "registry_ui", "proxy", "app", "webhook"]
    assert result["loaded"] == []
