"""The one round trip that reads everything a plan needs: sections marked `::name`, closed by `::end`.

Add a fact by adding a section here (and to `dockyard.facts.parse`), never a second command.

The engine is `absent` (no dockerd), `stopped` (installed, not answering) or `running`. A read that may
start it (deploy's, under the host lock) brings a stopped engine up first, waits for it, and only then reads the
containers; it fails with one line naming dockerd's log if the engine does not answer in time. Half-configured
packages (an interrupted install) are left alone: the plan finishes the install first.
"""

from __future__ import annotations

import shlex

from dockyard.commands.engine import DOCKERD_MARK, GUARD_MARK, GUARD_UNIT, LOOPBACK_GUARD, START_DOCKERD
from dockyard.commands.lock import LOCK_FD
from dockyard.contract import APP_SERVICE, HOST_UPSTREAM_FILE, ROLE_LABEL

SECTIONS = (
    "docker", "dpkg", "init", "boot", "guard", "guard_boot", "groups", "containers", "images", "files",
    "owners", "upstream",
)
# On a swarm (`script(swarm=True)`), also: the node's state and id, whether it manages, its host name; a manager's
# view of the nodes, and the app's service.
SWARM_SECTIONS = ("swarm", "nodes", "service")
NODE_STATE = "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}} {{.Swarm.ControlAvailable}}"
NODE_LINE = "{{.ID}} {{.Hostname}} {{.Status}}"
ABSENT, STOPPED, RUNNING = "absent", "stopped", "running"
DAEMON_WAIT = 60  # seconds a read that starts the engine waits for it to answer
# Sets `state`, and `ids`, dockyard's containers: listing them is how the engine is asked whether it answers.
ENGINE_STATE = (
    f"docker_state() {{ ids=; if ! command -v dockerd >/dev/null; then state={ABSENT}; "
    f"elif ids=$(docker ps -aq --filter label={ROLE_LABEL} 2>/dev/null); then state={RUNNING}; "
    f"else state={STOPPED}; fi; }}"
)


def script(user: str, paths: list[str], names: list[str], images: list[str] = (), start: bool = False,
           swarm: bool = False) -> str:
    """`paths`: the files whose hashes to read; `names`: containers to inspect even without dockyard's labels;
    `images`: the image refs and ids to look for; `start`: bring a stopped engine up before reading (deploy), or only
    look (plan). The images are looked for in the background meanwhile: each `docker` command starts a client."""
    files = " ".join(shlex.quote(p) for p in sorted(paths)) or "/dev/null"
    by_name = "".join(" " + shlex.quote(n) for n in sorted(names))
    tags = "{{range .RepoTags}}{{println . $.Id}}{{end}}"
    look, show = "", ""
    if images:
        wanted = " ".join(shlex.quote(i) for i in sorted(images))
        look = (f"images=$(mktemp); docker image inspect --format '{tags}' {wanted} >\"$images\" 2>/dev/null & "
                "looking=$!\n")
        show = ' wait $looking || true; cat "$images"; rm -f "$images"'
    return f"""{ENGINE_STATE}
docker_state; woke=; audit=
case $state in {RUNNING}) ;; *) audit=$(dpkg --audit 2>/dev/null) ;; esac
{_start() if start else ""}{look}echo ::docker; echo "$state"; [ -z "$woke" ] || echo "$woke"
echo ::dpkg; [ -z "$audit" ] || echo "$audit"
echo ::init; [ -d /run/systemd/system ] && echo systemd || true
echo ::boot; {_enabled_at_boot("docker", DOCKERD_MARK)}
echo ::guard; iptables -t raw -C {LOOPBACK_GUARD} 2>/dev/null && echo present || true
echo ::guard_boot; {_enabled_at_boot(GUARD_UNIT, GUARD_MARK)}
echo ::groups; id -nG {shlex.quote(user)} 2>/dev/null || true
echo ::containers; [ -z "$ids{by_name}" ] || docker inspect --type container $ids{by_name} 2>/dev/null || true
echo ::images;{show}
echo ::files; sha256sum {files} 2>/dev/null || true
echo ::owners; stat -c '%u %n' {files} 2>/dev/null || true
echo ::upstream; cat {HOST_UPSTREAM_FILE} 2>/dev/null || true
{_swarm() if swarm else ""}echo ::end"""


def _swarm() -> str:
    """The node's `state id manages` and host name; on a manager, the nodes and the app's service."""
    return f"""node=$(docker info --format '{NODE_STATE}' 2>/dev/null || true)
echo ::swarm; echo "$node"; hostname
echo ::nodes; case $node in *' true') docker node ls --format '{NODE_LINE}' ;; esac
echo ::service; case $node in *' true') docker service inspect {APP_SERVICE} 2>/dev/null || true ;; esac
"""


def _start() -> str:
    """Bring a stopped engine up, unless dpkg is mid-install: systemd starts it (or joins the start under way);
    without systemd, dockyard starts dockerd unless a dockerd is already starting (at boot, from rc.local). Then wait,
    bounded. `woke` says how it came up and after how many seconds. dockerd must not inherit the host lock."""
    return f"""if [ "$state" = {STOPPED} ] && [ -z "$audit" ]; then
  if [ -d /run/systemd/system ]; then
    log='`journalctl -u docker`'; how=started; [ "$(systemctl is-active docker)" != activating ] || how=waited
    systemctl start --no-block docker
  else
    log=/var/log/dockerd.log; how=waited
    pgrep -x dockerd >/dev/null || {{ how=started; {START_DOCKERD} {LOCK_FD}>&-; }}
  fi
  t0=$(date +%s); until docker_state; [ "$state" != {STOPPED} ]; do
    [ $(($(date +%s) - t0)) -lt {DAEMON_WAIT} ] ||
      {{ echo "dockerd did not answer within {DAEMON_WAIT}s; see $log" >&2; exit 1; }}
    sleep 1
  done
  woke="$how $(($(date +%s) - t0))"
fi
"""


def _enabled_at_boot(unit: str, rc_local_mark: str) -> str:
    """`enabled` when systemd starts `unit` at boot or, without systemd, /etc/rc.local holds the marked line."""
    return (
        f"if [ -d /run/systemd/system ]; then systemctl is-enabled {unit} 2>/dev/null || true; "
        f"else grep -qs {shlex.quote(rc_local_mark)} /etc/rc.local && echo enabled || true; fi"
    )
