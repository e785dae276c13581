"""A swarm (`cluster: swarm`): a node's membership, the stack of the app's service, and the wait for its updates.

A join token is a shell word in the command, never an argument printed: the reporter hides its value.
"""

from __future__ import annotations

import shlex

from dockyard.commands import docker, history
from dockyard.commands.containers import ensure_network
from dockyard.commands.files import write_file
from dockyard.commands.switch import run_release
from dockyard.contract import APP_SERVICE, CLUSTER_NETWORK, STACK
from dockyard.spec import ContainerSpec, Rendered

SWARM_PORT = 2377
UPDATE_POLL_S = 0.5
UPDATE_TIMEOUT = 180  # seconds a stack change may take to converge, each task's health check and monitor included
DRAIN_WAIT = 60  # seconds a drained node's tasks get to move before it is removed anyway
# `docker service inspect` of the app's service: its rolling update's state, and when that update started
UPDATE_STATE = "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}"
UPDATE_STARTED = "{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}}{{end}}"


def init(address: str) -> str:
    """Make this host the swarm's first manager, advertising `address` to the others."""
    return f"{docker('swarm', 'init', '--advertise-addr', address)} >/dev/null"


def join_tokens() -> str:
    """The worker's token, then the manager's, one per line."""
    return f"{docker('swarm', 'join-token', '-q', 'worker')}\n{docker('swarm', 'join-token', '-q', 'manager')}"


def join(token: str, manager: str, address: str) -> str:
    """Join the swarm of the manager at `manager`; a node that left it, or was removed, first leaves its old one."""
    return "\n".join([
        f"{docker('swarm', 'leave', '--force')} >/dev/null 2>&1 || true",
        f"{docker('swarm', 'join', '--token', token, '--advertise-addr', address, f'{manager}:{SWARM_PORT}')}"
        " >/dev/null",
    ])


def remove_node(node: str, drain: bool) -> str:
    """Take `node` out of the swarm: drained first when it still runs tasks, so they start elsewhere."""
    lines = []
    if drain:
        lines.append(f"{docker('node', 'update', '--availability', 'drain', node)} >/dev/null")
        # its tasks are scheduled elsewhere before the node goes; a node that does not answer has none to stop
        running = docker("node", "ps", "--filter", "desired-state=running", "-q", node)
        lines.append(f'i=0; until [ -z "$({running})" ] || [ $i -ge {DRAIN_WAIT} ]; do i=$((i+1)); sleep 1; done')
    lines.append(f"{docker('node', 'demote', node)} >/dev/null 2>&1 || true")
    lines.append(f"{docker('node', 'rm', '--force', node)} >/dev/null")
    return "\n".join(lines)


def deploy(spec: ContainerSpec, stack: Rendered, release: tuple[str, ...], timeout: int = UPDATE_TIMEOUT) -> str:
    """Change the app's service to `stack`: the release command first, if any (a failure changes nothing), then
    `deploy_stack`. The file takes its place on the host only once the swarm has converged on it."""
    candidate = Rendered(f"{stack.dest}.next", stack.content, stack.mode, stack.secret)
    failed = f"release command failed (exit $rc): {APP_SERVICE} was not changed"
    return "\n".join([
        ensure_network(CLUSTER_NETWORK),
        write_file(candidate),
        *([run_release(spec, release, "deploy", failed)] if release else []),
        deploy_stack(candidate.dest, spec.image, timeout),
        f"mv {shlex.quote(candidate.dest)} {shlex.quote(stack.dest)}",
    ])


def deploy_stack(stack_file: str, image: str, timeout: int, source: str = "deploy") -> str:
    """Apply the stack file, then wait until the app's service has converged (`converge`). The outcome goes to the
    audit log as from `source`."""
    apply = docker("stack", "deploy", "--resolve-image", "never", "--prune", "--compose-file", stack_file, STACK)
    return converge(f"{apply} >/dev/null", image, timeout, source)


def update_image(image: str, timeout: int, source: str) -> str:
    """Run the app's service on `image` (a rollback), waiting as `converge` does."""
    update = docker("service", "update", "--detach", "--no-resolve-image", "--image", image, APP_SERVICE)
    return converge(f"{update} >/dev/null", image, timeout, source)


def converge(change: str, image: str, timeout: int, source: str) -> str:
    """Run `change`, then wait at most `timeout` seconds until the app's service has converged. When its tasks'
    spec changed, that is its rolling update completed: one Swarm rolled back, or paused, fails with the last task
    errors (`docker service update` returns before its update ends, and exits 0 even after a rollback). Otherwise
    (a new service, a scale), it is every task running: Swarm marks a task running once its health check passes."""
    service = shlex.quote(APP_SERVICE)

    def inspect(template: str) -> str:
        return f"{docker('service', 'inspect', '--format', template)} {service} 2>/dev/null"

    running = (f"{docker('service', 'ps', '--filter', 'desired-state=running', '--format', '{{.CurrentState}}')} "
               f"{service} | grep -c '^Running' || true")
    errors = (f"{docker('service', 'ps', '--no-trunc', '--format', '{{.Name}} {{.Error}}')} {service} "
              "| awk 'NF > 1' | head -n 3 | tr '\\n' ';'")
    failed = f"{APP_SERVICE}: swarm rolled the update back ($state): $({errors})"
    late = f"{APP_SERVICE} did not converge within {timeout}s (${{state:-starting}}): $({errors})"
    return f"""since=$(date +%s); tasks=$({inspect('{{json .Spec.TaskTemplate}}')} || true)
serving={service}; slot={service}; before_image=$({inspect('{{.Spec.TaskTemplate.ContainerSpec.Image}}')} || true)
{change}
rolling=; if [ -n "$tasks" ] && [ "$({inspect('{{json .Spec.TaskTemplate}}')})" != "$tasks" ]; then rolling=yes; fi
outcome=; why=
while [ -z "$outcome" ]; do
  state=
  if [ -n "$rolling" ]; then
    at=$({inspect(UPDATE_STARTED)} || true); at=$(date -d "${{at%.*}}Z" +%s 2>/dev/null || echo 0)
    [ "$at" -lt "$since" ] || state=$({inspect(UPDATE_STATE)} || true)
    case $state in
      completed) outcome=success ;;
      rollback_completed|rollback_paused|paused) outcome=failure; why="{failed}" ;;
    esac
  elif [ "$({running})" -ge "$({inspect('{{.Spec.Mode.Replicated.Replicas}}')})" ]; then
    outcome=success
  fi
  if [ -z "$outcome" ] && [ $(($(date +%s) - since)) -ge {timeout} ]; then outcome=failure; why="{late}"; fi
  [ -n "$outcome" ] || sleep {UPDATE_POLL_S}
done
if [ "$outcome" != success ]; then {history.append(source, image, "failure", "service did not converge")}
  echo "$why" >&2; exit 1; fi
{history.append(source, image, "success", "service converged")}"""
