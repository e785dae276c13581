"""The deploy-webhook contract: deploy writes what the listener's table accepts, and the listener's image
carries the contract itself."""

from __future__ import annotations

import subprocess
import sys
import tarfile

import pytest

from dockyard import contract, images, release
from dockyard.commands import containers
from dockyard.errors import DockyardError
from dockyard.spec import ContainerSpec, Health
from roles import webhook
from tests.conftest import REPO

EVERY_FIELD = ContainerSpec(
    name="dockyard-app", image="img:1", ports=("127.0.0.1:8000:8000",), volumes=("/srv:/data:ro",),
    env=(("A", "1"),), command=("gunicorn", "app:app"), restart="on-failure:3", network="net",
    health=Health(8000, "/healthz"), labels=(("team", "web"),),
)


@pytest.mark.parametrize("spec", [EVERY_FIELD, ContainerSpec(name="dockyard-app")])
def test_deploy_writes_exactly_the_fields_the_listener_reads(spec):
    doc = containers.container_document(spec, "app")
    assert set(doc) == set(contract.CONTAINER_FIELDS)
    if doc["health"] is not None:
        assert set(doc["health"]) == set(contract.HEALTH_FIELDS)
    assert contract.document_problem(doc) is None


@pytest.mark.parametrize("change, problem", [
    ({"ports": "8000:8000"}, "ports missing or not list[str]"),
    ({"volumes": ["/a:/b", 7]}, "volumes missing or not list[str]"),
    ({"labels": {"team": None}}, "labels missing or not dict[str, str]"),
    ({"restart": None}, "restart missing or not str"),
    ({"health": {"command": "true", "interval_s": 2, "timeout_s": 3}}, "health.retries missing or not int"),
    ({"health": []}, "health is not a JSON object"),
])
def test_the_table_names_the_wrong_key(change, problem):
    doc = {**containers.container_document(EVERY_FIELD, "app"), **change}
    assert contract.document_problem(doc) == problem


def test_a_release_refuses_the_tags_the_listener_ignores(tmp_path):
    assert release.release_tag("v2", tmp_path) == "v2"
    with pytest.raises(DockyardError, match=f"not starting with {contract.PUSHED_TAG_PREFIX}"):
        release.release_tag(f"{contract.PUSHED_TAG_PREFIX}v2", tmp_path)


def webhook_context() -> dict:
    """The listener's build context, as deploy assembles it."""
    return images.context_files(REPO / webhook.IMAGE.build, images.module_files(webhook.IMAGE.modules))


def test_the_webhook_context_carries_the_contract():
    files = webhook_context()
    assert files["dockyard/contract.py"] == REPO / "dockyard/contract.py"
    assert not (REPO / webhook.IMAGE.build / "dockyard").exists()  # added at build time, never copied in git


def test_a_contract_change_changes_the_image_digest(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    shared = tmp_path / "shared.py"
    shared.write_text("A = 1\n")
    files = images.context_files(tmp_path, {"lib/shared.py": shared})
    before = images.context_digest(files, "sha256:base")
    shared.write_text("A = 2\n")
    assert images.context_digest(files, "sha256:base") != before


def test_the_tar_holds_what_the_digest_covers(tmp_path):
    files = webhook_context()
    with (tmp_path / "context.tar").open("w+b") as into:
        images.context_tar(files, into)
        names = tarfile.open(fileobj=into).getnames()
    assert names == list(files)


def test_the_listener_imports_the_contract_from_its_build_context(tmp_path):
    """Laid out as the Dockerfile copies it (the listener's folder first on the path, as for a script), the
    listener finds `dockyard.contract` in its own context, not in this checkout."""
    image = tmp_path / "image"
    with (tmp_path / "context.tar").open("w+b") as into:
        images.context_tar(webhook_context(), into)
        tarfile.open(fileobj=into).extractall(image, filter="data")
    code = f"import sys; sys.path.insert(0, {str(image)!r}); import listener, dockyard.contract; " \
           "print(dockyard.contract.__file__)"
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(image / "dockyard" / "contract.py")
