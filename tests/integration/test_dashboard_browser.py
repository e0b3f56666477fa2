"""``redbatch dashboard`` in a real headless browser: Debian's Chromium driven by Playwright
(``executable_path`` at the system browser; Playwright's own download is never used), a real
redis-server, a real worker and the dashboard as its own uvicorn process.

The screenshot of the writable page is the one docs/observability.md shows: it is saved in
the test's tmp dir, and copied to ``$SCREENSHOT_DIR/dashboard.png`` when that is set
(``SCREENSHOT_DIR=docs/images python3 -m pytest tests/integration/test_dashboard_browser.py``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers.dashboard import DashboardProcess, http, start_dashboard
from helpers.entries import queue_keys, wait_results
from helpers.workers import WorkerProcess, wait_serving
from redbatch import Producer

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
SEEN_MS = 30_000  # bound of each wait for the page to show something (refreshes every 0.5 s)
TOKEN = "browser-test-token-0123456789"

pytestmark = pytest.mark.timeout(300)


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        return "playwright is not installed (pip install 'redbatch[dev]')"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def dashboards() -> Iterator[Callable[..., DashboardProcess]]:
    started: list[DashboardProcess] = []

    def start(*args: str) -> DashboardProcess:
        started.append(start_dashboard(*args))
        return started[-1]

    yield start
    codes = [d.stop() for d in started]
    assert codes == [0] * len(started), [d.lines for d in started]


def test_the_page_lives_replays_by_click_and_refuses_writes_read_only(
    browser: Any,
    dashboards: Callable[..., DashboardProcess],
    worker_factory: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    # Plain names (the namespace is the test's own): the screenshot goes into the docs.
    queue, other_queue = "embed", "backlog"
    marker = tmp_path / "fail-now"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    worker = worker_factory(
        [queue], "helpers.handlers:retry_while_file", "--handler-option", f"marker={marker}",
        "--max-attempts", "1",
    )  # fmt: skip
    wait_serving(worker)
    conn = ("--redis-url", redis_url, "--namespace", namespace, "--interval", "0.5")
    writable = dashboards(*conn, "--allow-writes", "--token-file", str(token_file))
    keys = queue_keys(redis_client, namespace, queue)
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        for handle in [producer.submit(queue, {"n": i}) for i in range(40)]:
            handle.result(30)  # some traffic for the charts

        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(writable.url)
        row = page.locator(f'tr[data-queue="{queue}"]')
        expect(row).to_be_visible(timeout=SEEN_MS)
        expect(page.locator(f'tr[data-worker="{worker.name}"] [data-col="state"]')).to_have_text(
            "idle", timeout=SEEN_MS
        )
        page.evaluate("window.__sameDocument = true")

        # 50 requests to a queue nobody serves: the page counts them without a reload.
        for i in range(50):
            producer.submit(other_queue, {"n": i})
        waiting = page.locator(f'tr[data-queue="{other_queue}"] [data-col="waiting"]')
        expect(waiting).to_have_text("50", timeout=SEEN_MS)
        assert page.evaluate("window.__sameDocument") is True

        # A request that dies (its handler asks for a retry, 1 attempt allowed) ...
        marker.touch()
        producer.submit(queue, {"n": "doomed"}, id="doomed")
        assert wait_results(redis_client, keys, ["doomed"])["doomed"][b"status"] == b"dead"
        marker.unlink()
        expect(row.locator('[data-col="dead"]')).to_have_text("1", timeout=SEEN_MS)

        # ... is replayed by a click once logged in with the token, and is seen to finish.
        replay_by_click(page, queue)
        assert redis_client.hget(keys.result("doomed"), "status") == b"ok"
        expect(row.locator('[data-col="dead"]')).to_have_text("0", timeout=SEEN_MS)

        page.select_option("#chart-queue", queue)
        expect(page.locator("#chart-throughput polyline")).to_have_count(1, timeout=SEEN_MS)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("SCREENSHOT_DIR"):
            shutil.copy(shot, Path(os.environ["SCREENSHOT_DIR"]) / "dashboard.png")
        assert errors == []

        # Read-only: no way to write on the page, and the API refuses even with the token.
        marker.touch()
        producer.submit(queue, {"n": "doomed-2"}, id="doomed-2")
        assert wait_results(redis_client, keys, ["doomed-2"])["doomed-2"][b"status"] == b"dead"
        read_only_refuses(page, dashboards(*conn), queue)
        assert redis_client.xlen(keys.dead) == 1  # nothing was written
        page.close()


def replay_by_click(page: Any, queue: str) -> None:
    """Log in with the token, open the dead letter "doomed", replay it with its button and
    watch it finish (the page looks the request up until it has finished)."""
    from playwright.sync_api import expect  # noqa: PLC0415

    page.select_option("#dead-queue", queue)
    letter = page.locator('#dead tr[data-request="doomed"]')
    expect(letter).to_be_visible(timeout=SEEN_MS)
    assert letter.locator("button.replay").count() == 0  # not logged in yet
    page.click("#login-link")
    page.fill("#token", TOKEN)
    page.click("#login")
    expect(page.locator("#mode")).to_have_text("writes allowed", timeout=SEEN_MS)
    page.select_option("#dead-queue", queue)
    letter.click()
    expect(page.locator("#dead-detail")).to_contain_text('{"n": "doomed"}', timeout=SEEN_MS)
    letter.locator("button.replay").click()
    expect(page.locator("#write-result")).to_contain_text("replayed doomed", timeout=SEEN_MS)
    expect(page.locator("#search-result")).to_contain_text("finished ok", timeout=SEEN_MS)


def read_only_refuses(page: Any, read_only: DashboardProcess, queue: str) -> None:
    """A dashboard without --allow-writes shows the dead letter "doomed-2" with no button,
    and refuses a replay even with a token, and a purge."""
    from playwright.sync_api import expect  # noqa: PLC0415

    page.goto(read_only.url)
    expect(page.locator("#mode")).to_have_text("read-only", timeout=SEEN_MS)
    page.select_option("#dead-queue", queue)
    expect(page.locator('#dead tr[data-request="doomed-2"]')).to_be_visible(timeout=SEEN_MS)
    expect(page.locator("#read-only-note")).to_be_visible()
    assert page.locator("#dead button").count() == 0
    refused = page.evaluate(
        """async ([queue, token]) => {
            const r = await fetch(`/api/queues/${queue}/dead/replay`, {method: "POST",
              headers: {"Content-Type": "application/json", "Authorization": `Bearer ${token}`},
              body: JSON.stringify({ids: ["doomed-2"]})});
            return [r.status, (await r.json()).error];
        }""",
        [queue, TOKEN],
    )
    assert refused[0] == 403 and refused[1].startswith("read-only"), refused
    assert http(f"{read_only.url}api/queues/{queue}/dead/purge", body={}).status == 403


def test_past_twenty_queues_the_page_shows_the_summary_and_finds_the_rest(
    browser: Any,
    dashboards: Callable[..., DashboardProcess],
    redis_client: redis.Redis,
    redis_url: str,
    namespace: str,
) -> None:
    """25 idle queues, one holding a request: the page lists that one with the totals; the
    name search and "show all" ask the server for the others, whose lanes open as before."""
    from playwright.sync_api import expect  # noqa: PLC0415

    for i in range(25):
        keys = queue_keys(redis_client, namespace, f"idle-{i:02d}")
        if i == 3:
            redis_client.xadd(keys.streams[1], {"id": "r3", "ct": "json", "payload": "1"})
    site = dashboards("--redis-url", redis_url, "--namespace", namespace, "--interval", "0.5")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(site.url)
    rows = page.locator("#queues tbody tr[data-queue]:not([data-queue=''])")
    summary = page.locator("#queue-summary")
    expect(summary).to_contain_text("25 queues hold 1 entries", timeout=SEEN_MS)
    expect(rows).to_have_count(1, timeout=SEEN_MS)
    assert rows.first.get_attribute("data-queue") == "idle-03"

    page.fill("#queue-match", "idle-1")
    page.press("#queue-match", "Enter")
    expect(rows).to_have_count(10, timeout=SEEN_MS)
    expect(summary).to_contain_text("10 queues named *idle-1*", timeout=SEEN_MS)
    page.locator('tr[data-queue="idle-12"] button.toggle').click()
    expect(page.locator("#queues tbody tr.sub")).to_have_count(3, timeout=SEEN_MS)

    page.click("#show-all")
    expect(rows).to_have_count(25, timeout=SEEN_MS)
    expect(page.locator("#show-all")).to_have_text("show the summary")
    page.click("#show-all")
    expect(rows).to_have_count(1, timeout=SEEN_MS)

    # All idle: the summary lists no queue, and the page does not call the namespace empty.
    redis_client.xtrim(queue_keys(redis_client, namespace, "idle-03").streams[1], 0)
    expect(summary).to_contain_text("25 queues hold 0 entries", timeout=SEEN_MS)
    expect(rows).to_have_count(0)
    expect(page.locator("#no-queues")).to_be_hidden()
    assert errors == []
    page.close()
