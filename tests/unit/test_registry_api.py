"""The registry client and `registry.*` output against a real registry (dockyard's offline image), and
garbage collection run for real: a deleted tag's blobs leave the disk."""

from __future__ import annotations

import pytest

from dockyard import registry_gc
from dockyard.cli.registry import split_reference
from dockyard.commands import containers
from dockyard.commands.registry_gc import gc_script
from dockyard.errors import DockyardError, RegistryError, StepFailed
from dockyard.registry_api import RegistryClient, next_page
from dockyard.report import short_date
from roles import registry

BULK = 105  # more repositories than one default page of the catalog
BIG = 2_000_000  # random bytes, so compression cannot shrink what gc must free


# Link headers and the gc script: no registry needed.

@pytest.mark.parametrize("header, expected", [
    ('</v2/_catalog?last=bulk%2Fr004&n=5>; rel="next"', "/v2/_catalog?last=bulk%2Fr004&n=5"),
    ("<http://registry.internal:5000/v2/_catalog?last=b&n=2>; rel=next", "/v2/_catalog?last=b&n=2"),
    ('</v2/x/tags/list?n=1&last=a>; rel="prev", </v2/x/tags/list?n=1&last=c>; rel="next"',
     "/v2/x/tags/list?n=1&last=c"),
    ('</v2/_catalog?last=z&n=5>; type="text/html"; rel="next"', "/v2/_catalog?last=z&n=5"),
    ('</v2/_catalog?last=a&n=5>; rel="prev"', None),
    ("", None),
    (None, None),
])
def test_next_page_follows_only_rel_next_and_stays_on_the_registry(header, expected):
    assert next_page(header) == expected


def test_gc_script_stops_collects_with_the_same_image_and_mounts_then_restarts_and_waits():
    script = gc_script()
    lines = script.splitlines()
    assert lines[0] == "set -eu"
    assert "image=$(docker inspect --format '{{.Image}}' dockyard-registry)" in lines
    assert "data=$(docker volume inspect --format '{{.Mountpoint}}' dockyard-registry-data)" in lines
    assert lines.index("docker stop dockyard-registry >/dev/null") < lines.index(
        "trap 'rm -f \"$log\"' EXIT")
    # the restart is armed before the stop, so a failed collection still brings the registry back
    assert lines.index("trap 'docker start dockyard-registry >/dev/null; rm -f \"$log\"' EXIT") < lines.index(
        "docker stop dockyard-registry >/dev/null")
    assert (
        "if ! docker run --rm --entrypoint /bin/sh --volumes-from dockyard-registry \"$image\" -c "
        "'for b in registry docker-registry; do if command -v \"$b\" >/dev/null 2>&1; then exec \"$b\" "
        "garbage-collect --delete-untagged /etc/docker/registry/config.yml; fi; done; "
    ) in script
    assert "docker start dockyard-registry >/dev/null" in lines
    assert containers.wait_healthy("dockyard-registry", registry.HEALTH) in lines
    assert lines[-1] == 'echo "dockyard-gc before=$before after=$after deleted=$deleted stopped=$stopped"'
    kept = gc_script(delete_untagged=False)
    assert "exec \"$b\" garbage-collect /etc/docker/registry/config.yml; fi" in kept
    assert "--delete-untagged" not in kept


def test_gc_summary_parses_and_a_missing_one_is_an_error():
    result = registry_gc.parse_summary("noise\ndockyard-gc before=5000 after=1200 deleted=3 stopped=2\n", "web1")
    assert result == registry_gc.GcResult(5000, 1200, 3, 2) and result.bytes_freed == 3800
    with pytest.raises(StepFailed, match="^web1: registry gc printed no summary"):
        registry_gc.parse_summary("Error response from daemon\n", "web1")


def test_references_and_dates_read_as_the_operator_types_them():
    assert split_reference("team/tool:v1") == ("team/tool", "v1")
    assert split_reference("127.0.0.1:5000/app:1") == ("127.0.0.1:5000/app", "1")
    for bad in ("app", "app:", ":1", "127.0.0.1:5000/app"):
        with pytest.raises(DockyardError, match="is not REPOSITORY:TAG"):
            split_reference(bad)
    assert short_date("2026-11-28T01:54:59.850703019Z") == "2026-11-28 01:54:59Z"
    assert short_date(None) == "-"


def test_an_unreachable_registry_is_named():
    client = RegistryClient("http://127.0.0.1:9", where="web1 registry", timeout=3)
    with pytest.raises(RegistryError, match=r"^web1 registry: registry unreachable \(.*refused.*\); check"):
        client.catalog()


