"""dockyard's offline registry console, in its own image next to a real registry, driven in headless
Chromium: it lists repositories and tags, and deletes a tag only after an explicit confirmation."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dockyard.registry_api import MANIFEST_ACCEPT, RegistryClient
from tests.e2e.local_registry import (
    HEALTH,
    PREFIX,
    console_image,
    engine,
    local_registry,
    network,
    published_address,
    push_all,
    tiny_images,
    wait_healthy,
)

CHROMIUM = Path("/usr/bin/chromium")
# Without the last flag Chromium keeps dialling out (and is refused on an offline machine).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TITLE = "t-regmgmt <console>"
BULK = 103  # with t-web and team/api: more than the page's catalog page of 100


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    payloads = {"one": b"web 1.0\n", "two": b"web 1.1\n", "api": b"api v1\n"}
    with network("console") as net, local_registry(tmp, "console-registry", network=net) as registry, \
            tiny_images(tmp, payloads) as refs:
        pushed = push_all(registry, [
            (refs["one"], "t-web:1.0"), (refs["one"], "t-web:latest"), (refs["two"], "t-web:1.1"),
            (refs["api"], "team/api:v1"), *[(refs["api"], f"bulk/c{i:03d}:1") for i in range(BULK)],
        ])
        console = engine().containers.run(
            console_image(), name=f"{PREFIX}-console", detach=True, network=net,
            environment={"REGISTRY_URL": f"http://{registry.container}:5000", "TITLE": TITLE},
            ports={"8080/tcp": ("127.0.0.1", None)},
            healthcheck={**HEALTH, "test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/healthz"]},
        )
        try:
            wait_healthy(console.name)
            ports = engine().containers.get(console.name).attrs["NetworkSettings"]["Ports"]
            url = f"http://127.0.0.1:{ports['8080/tcp'][0]['HostPort']}"
            yield url, registry, pushed
        finally:
            console.remove(force=True)


@pytest.fixture(scope="session")
def expect():
    from playwright.sync_api import expect  # here, not at the top: unit runs need no Playwright

    return expect


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; install it with `apt-get install -y chromium`")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, stack, expect):
    url, _, _ = stack
    context = browser.new_context()
    page = context.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url + "/")
    expect(page.locator("#status")).to_have_text(f"{BULK + 2} repositories", timeout=30_000)
    yield page
    assert all(u.startswith(url + "/") for u in requested), "the page fetched something off its own origin"
    context.close()


def http(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_health_page_and_a_read_and_delete_only_proxy(stack):
    url, _, pushed = stack
    assert http(url + "/healthz")[::2] == (200, b"ok\n")
    status, headers, body = http(url + "/")
    assert status == 200 and b"<title>t-regmgmt &lt;console&gt;</title>" in body
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    status, headers, _ = http(url + "/v2/t-web/manifests/1.0", "HEAD", {"Accept": MANIFEST_ACCEPT})
    assert status == 200 and headers["Docker-Content-Digest"] == pushed["t-web:1.0"]
    status, _, body = http(url + "/v2/t-web/manifests/9.9", headers={"Accept": MANIFEST_ACCEPT})
    assert status == 404 and b"MANIFEST_UNKNOWN" in body
    assert http(url + "/v2/t-web/blobs/uploads/", "POST")[0] == 405


def tag_rows(page):
    return page.locator("#tags tbody tr")


def test_the_page_lists_repositories_with_tag_counts_and_each_tag_in_detail(page, stack, expect):
    _, _, pushed = stack
    web = page.locator('#repositories tr[data-repository="t-web"]')
    expect(web.locator(".tag-count")).to_have_text("3")
    expect(page.locator('#repositories tr[data-repository="team/api"] .tag-count')).to_have_text("1")
    expect(page.locator(f'#repositories tr[data-repository="bulk/c{BULK - 1:03d}"]')).to_have_count(1)

    web.click()
    expect(tag_rows(page)).to_have_count(3)
    expect(page.locator("#tags-title")).to_have_text("t-web: 3 tag(s)")
    for tag in ("1.0", "1.1", "latest"):
        row = page.locator(f'#tags tr[data-tag="{tag}"]')
        assert row.get_attribute("data-digest") == pushed[f"t-web:{tag}"]
        assert row.locator(".digest").inner_text() == pushed[f"t-web:{tag}"][:19]  # sha256: and 12 hex digits
        assert re.fullmatch(r"\d+ B|\d+\.\d KB", row.locator(".size").inner_text())  # tiny images
        assert row.locator(".created").inner_text().endswith(" UTC")


def test_delete_asks_first_names_shared_tags_and_then_removes_the_tag_everywhere(page, stack, expect):
    _, registry, _ = stack
    api = RegistryClient(f"http://{published_address(registry.container)}")
    page.locator('#repositories tr[data-repository="t-web"]').click()
    expect(tag_rows(page)).to_have_count(3)

    # Cancelling changes nothing.
    page.locator('#tags tr[data-tag="1.1"] button.delete').click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-question")).to_contain_text("Delete t-web:1.1 (sha256:")
    expect(page.locator("#confirm-shared")).to_have_text("No other tag shares this digest.")
    page.locator("#confirm-cancel").click()
    expect(page.locator("#confirm")).to_be_hidden()
    assert api.tags("t-web") == ["1.0", "1.1", "latest"]

    # Confirming deletes, and the table refreshes.
    page.locator('#tags tr[data-tag="1.1"] button.delete').click()
    page.locator("#confirm-delete").click()
    expect(tag_rows(page)).to_have_count(2)
    expect(page.locator("#status")).to_contain_text("deleted t-web:1.1 (sha256:")
    assert api.tags("t-web") == ["1.0", "latest"]

    # A tag sharing its digest goes too, and the page says so before.
    page.locator('#tags tr[data-tag="1.0"] button.delete').click()
    expect(page.locator("#confirm-shared")).to_have_text("Tags sharing this digest are deleted too: latest.")
    page.locator("#confirm-delete").click()
    expect(tag_rows(page)).to_have_count(0)
    expect(page.locator('#repositories tr[data-repository="t-web"] .tag-count')).to_have_text("0")
    assert api.tags("t-web", missing_ok=True) == []
