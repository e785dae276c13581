"""Fixtures: a throwaway project (inventory + state in a temp folder) using this repo's roles and images."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard import certificates
from dockyard.environment import Env
from dockyard.report import Reporter

REPO = Path(__file__).resolve().parents[1]
# What deploy gives a proxy with internal certificates (`State.proxy_tls`), for roles declared in tests
PROXY_TLS = certificates.sign(certificates.new_authority("dockyard t proxy CA"), ["localhost", "127.0.0.1"], 30)
# One sandbox host with the whole stack. Docker Hub cannot be reached from here: the mirror mirrors the
# private registry instead.
SANDBOX_STACK = """\
provider: sandbox
hosts:
  web1: {}
services:
  mirror: {remote_url: "http://dockyard-registry:5000"}
"""


@dataclass
class Project:
    root: Path
    sources: Path = REPO  # templates/, images/ and apps/; copy_sources() gives the test its own to edit

    def copy_sources(self) -> Path:
        self.sources = self.root / "sources"
        for folder in ("templates", "images", "apps"):
            shutil.copytree(REPO / folder, self.sources / folder, ignore=shutil.ignore_patterns("__pycache__"))
        return self.sources

    @property
    def inventory_dir(self) -> Path:
        return self.root / "inventory"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def inventory(self, env: str, text: str) -> Path:
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        path = self.inventory_dir / f"{env}.yml"
        path.write_text(textwrap.dedent(text))
        return path

    def env(self, name: str) -> Env:
        """An Env whose output is captured in `env.out.stream`."""
        return Env.open(self.sources, name, self.inventory_dir, self.state_dir, Reporter(io.StringIO()))

    def invoke(self, env: str, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
        """Run the real command line, as an operator would."""
        environ = {
            **os.environ,
            "INVOKE_DOCKYARD_ENV": env,
            "INVOKE_DOCKYARD_INVENTORY_DIR": str(self.inventory_dir),
            "INVOKE_DOCKYARD_STATE_DIR": str(self.state_dir),
            "INVOKE_DOCKYARD_ROOT": str(self.sources),
        }
        result = subprocess.run(
            [sys.executable, "-m", "invoke", *args], cwd=REPO, env=environ, capture_output=True, text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            command = " ".join(args)
            raise AssertionError(f"invoke {command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="module")
def module_project(tmp_path_factory) -> Project:
    return Project(tmp_path_factory.mktemp("project"))


def output(env: Env) -> str:
    return env.out.stream.getvalue()


E2E = REPO / "tests" / "e2e"


def pytest_collection_modifyitems(items):
    """Tests under tests/e2e/ run against real sandbox hosts: the folder sets their marker."""
    for item in items:
        if E2E in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
