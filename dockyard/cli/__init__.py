"""The bodies of the Invoke tasks, one module per namespace: parse arguments, call the library, print.

Expected failures (DockyardError) end as one `error:` line; DOCKYARD_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import invoke
from invoke import Executor, Exit
from invoke.parser import ParserContext

from dockyard.environment import Env
from dockyard.errors import DockyardError
from dockyard.lock import Claim
from dockyard.report import masked

ENV_HELP = {"env": "environment: inventory/<env>.yml, for every task on the command line (default: config "
                   "dockyard.env, else sandbox)"}
DEFAULT_LOCK_TIMEOUT = 300
LOCK_HELP = {"lock_timeout": f"seconds to wait for another run's host lock (default: config dockyard.lock_timeout, "
                             f"else {DEFAULT_LOCK_TIMEOUT})"}


def task(*args, **kwargs):
    """An Invoke task that turns expected failures into one line and exit code 1."""

    def wrap(body):
        @functools.wraps(body)
        def run(c, *a, **kw):
            try:
                return body(c, *a, **kw)
            except DockyardError as e:
                if os.environ.get("DOCKYARD_DEBUG"):
                    raise
                raise Exit(masked(f"error: {e}"), code=1) from None
            except KeyboardInterrupt:
                raise Exit("interrupted; rerun the same command to converge", code=130) from None

        return invoke.task(run, help={**ENV_HELP, **kwargs.pop("help", {})}, **kwargs)

    return wrap(args[0]) if args and callable(args[0]) else wrap


class OneEnvironment(Executor):
    """Runs a command line against one environment: `-e` given to any of its tasks holds for all of them
    (`invoke provision deploy -e prod` provisions prod too), and two different ones are refused before anything
    runs. The project's invoke.yaml makes it Invoke's `tasks.executor_class`."""

    def execute(self, *tasks):
        contexts = [t for t in tasks if isinstance(t, ParserContext) and "env" in t.args]
        chosen = sorted({t.args["env"].value for t in contexts if t.args["env"].value})
        if len(chosen) > 1:
            raise Exit(f"error: -e {' and -e '.join(chosen)} on one command line; give one environment, it holds "
                       f"for every task", code=1)
        if chosen:
            for context in contexts:
                context.args["env"].value = chosen[0]
        return super().execute(*tasks)


def open_env(c, env: str | None) -> Env:
    config = c.config.dockyard
    return Env.open(Path(config.root), env or config.env, config.inventory_dir, config.state_dir)




def claim(c, task: str, lock_timeout: str | None) -> Claim:
    """The host lock a changing task takes: `task` as the operator types it, the wait from --lock-timeout or config."""
    seconds = c.config.dockyard.lock_timeout if lock_timeout is None else lock_timeout
    try:
        return Claim(task, int(seconds))
    except ValueError:
        raise DockyardError(f"--lock-timeout {seconds!r} is not a whole number of seconds; e.g. --lock-timeout 600"
                            ) from None
