"""The server's dashboard in a real browser (Chromium, driven by Playwright): it asks for
the token, plots a burst of inputs live, lists a failure with its traceback, and follows
a container's log lines."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.harness import ServerProcess

#: Where the screenshot the README shows is written, when SHOAL_SCREENSHOT names a file.
SCREENSHOT = os.environ.get("SHOAL_SCREENSHOT", "")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (Debian's, as .ci/run installs it): the
    only module that uses one. Not session-scoped: Playwright's sync API keeps an event
    loop running on the main thread while it is open, and later tests run their own."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own for each test (each test leaves no container behind)."""
    started = ServerProcess(tmp_path).start()
    try:
        started.deploy()
        yield started
    finally:
        started.stop()


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def signed_in(browser: Any, server: ServerProcess) -> Any:
    """A new page of the dashboard, signed in through its login form."""
    # The page's CSP forbids eval; Playwright's polling reads the plots back with it.
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
    page.goto(f"{server.http}/_shoal/")
    page.fill("#token", server.token)
    page.click("button[type=submit]")
    page.wait_for_function("window.shoal && window.shoal.ready === '/'")
    return page


def test_the_dashboard_needs_the_token(browser: Any, server: ServerProcess) -> None:
    status, body = get(f"{server.http}/_shoal/api/apps")
    assert status == 401
    status, body = get(f"{server.http}/_shoal/api/apps", token="not-the-token")
    assert status == 401
    status, body = get(f"{server.http}/_shoal/api/apps", token=server.token)
    assert status == 200 and "svc" in {row["name"] for row in json.loads(body)}
    page = browser.new_page()
    try:
        page.goto(f"{server.http}/_shoal/")
        assert page.locator("#token").is_visible()  # the login form, not the dashboard
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        assert "not the server's token" in page.content()
        cookies = page.context.cookies()
        assert not any(c["name"] == "shoal_session" for c in cookies)
        page.fill("#token", server.token)
        page.click("button[type=submit]")
        page.wait_for_selector("#apps")
        cookie = next(c for c in page.context.cookies() if c["name"] == "shoal_session")
        assert cookie["httpOnly"] and cookie["value"] != server.token
        assert page.locator("#apps").inner_text().count("svc") >= 1
    finally:
        page.context.close()


BURST = """
import shoal
slow = shoal.Function.from_name("svc", "slow")
print(len(list(slow.map([1.5] * 150))))
"""


def test_a_burst_shows_in_the_containers_plot(browser: Any, server: ServerProcess) -> None:
    page = signed_in(browser, server)
    try:
        key = _key(server, "slow")
        page.goto(f"{server.http}/_shoal/#/f/{key}")
        page.wait_for_function(f"window.shoal.live === {key!r}")  # the stream is open
        done = server.client(BURST)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "150"
        # 150 inputs at 100 per container: two containers, plotted as busy at some second.
        page.wait_for_function(
            "Math.max(...window.shoal.charts.containers.data[3].map(v => v || 0)) >= 2",
            timeout=20_000,
        )
        # Inputs a second, summed over the seconds: every input, once its second is sent.
        summed = "window.shoal.charts.rate.data[1].reduce((a, v) => a + (v || 0), 0)"
        page.wait_for_function(f"{summed} >= 150", timeout=10_000)
        assert page.evaluate(summed) == 150
        # The table is refreshed from the function's API every few seconds: wait for it.
        page.wait_for_function(
            "document.querySelectorAll('#containers tbody tr').length >= 1", timeout=10_000
        )
        if SCREENSHOT:
            page.screenshot(path=SCREENSHOT, full_page=True)
    finally:
        page.context.close()


def test_a_failure_shows_with_its_traceback(browser: Any, server: ServerProcess) -> None:
    done = server.client(
        "import shoal\n"
        "try:\n"
        "    shoal.Function.from_name('svc', 'refuse').remote('no thanks')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    assert done.returncode == 0, done.stderr
    page = signed_in(browser, server)
    try:
        page.goto(f"{server.http}/_shoal/#/f/{_key(server, 'refuse')}")
        page.wait_for_selector("#failures .failure")
        text = page.locator("#failures").inner_text()
        assert "Refused" in text and "no thanks" in text
        assert "Traceback" in text and "raise Refused(reason)" in text
    finally:
        page.context.close()


def test_a_container_s_log_lines_appear_and_follow(browser: Any, server: ServerProcess) -> None:
    first = server.client(
        "import shoal\nprint(shoal.Function.from_name('svc', 'square').remote(3))"
    )
    assert first.returncode == 0, first.stderr
    containers = json.loads(server.cli("container", "list", "--json").stdout)
    container = next(c["id"] for c in containers if c["pool"].endswith(".square"))
    page = signed_in(browser, server)
    try:
        page.goto(f"{server.http}/_shoal/#/c/{container}")
        page.wait_for_function("document.getElementById('log')?.textContent.includes('squaring 3')")
        more = server.client(
            "import shoal\nprint(shoal.Function.from_name('svc', 'square').remote(41))"
        )
        assert more.returncode == 0, more.stderr
        page.wait_for_function(
            "document.getElementById('log').textContent.includes('squaring 41')", timeout=15_000
        )
    finally:
        page.context.close()


def _key(server: ServerProcess, function: str) -> str:
    """The pool key of ``function`` in the current version of svc."""
    status, body = get(f"{server.http}/_shoal/api/apps", token=server.token)
    assert status == 200
    row = next(r for r in json.loads(body) if r["name"] == "svc")
    key: str = row["pools"][function]
    return key


def test_the_screenshot_file_is_where_the_readme_says(tmp_path: Path) -> None:
    """docs/dashboard.png, which the README shows, is a real PNG taken from a run."""
    shot = Path(__file__).parents[2] / "docs" / "dashboard.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_what_if_replays_the_recorded_traffic(browser: Any, server: ServerProcess) -> None:
    done = server.client(
        "import shoal\nprint(len(list(shoal.Function.from_name('svc', 'slow').map([0.5] * 150))))"
    )
    assert done.returncode == 0, done.stderr
    time.sleep(1.5)  # the recorder writes once a second
    page = signed_in(browser, server)
    try:
        page.goto(f"{server.http}/_shoal/#/f/{_key(server, 'slow')}")
        page.wait_for_selector("#what-if input[name=max_inputs]")
        page.fill("#what-if input[name=max_inputs]", "50")
        page.click("#what-if button[type=submit]")
        page.wait_for_selector("#what-if-table, #what-if-result .error")
        assert page.locator("#what-if-table").count(), page.locator("#what-if-result").inner_text()
        replayed = page.locator("#what-if-table tbody tr").nth(1).inner_text().split()
        assert replayed[0] == "replayed" and replayed[-1] == "3"  # 150 inputs at 50 each
        peak = "Math.max(...window.shoal.charts.whatIf.data[2])"
        assert page.evaluate(peak) == 3  # the replay's containers over time, plotted
        page.fill("#what-if input[name=max_inputs]", "many")
        page.click("#what-if button[type=submit]")
        page.wait_for_selector("#what-if-result .error")
    finally:
        page.context.close()
