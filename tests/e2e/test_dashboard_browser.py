"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

A real worker runs with -E on the embedded SQLite broker; the dashboard serves the same
project from this process (uvicorn in a thread) behind basic auth, and the page is
asserted on as a user sees it. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, Worker, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is not installed (apt-get install -y chromium)", allow_module_level=True
    )

SHOTS = ROOT / "artifacts" / "screenshots"
USER, PASSWORD = "admin", "s3cret"
TIMEOUT_MS = 15_000
REBOUND = "rebound.test"
ATTACKER = "http://attacker.test"

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(project: Path, workers: list[Worker]) -> Iterator[dict[str, Any]]:
    """A worker with -E, the dashboard behind basic auth, and a logged-in browser page."""
    from proj.caraway import app  # type: ignore[import-not-found]

    from caraway.dashboard.auth import Auth
    from caraway.dashboard.server import DashboardServer, create_dashboard

    workers.append(Worker(project, "-E", "-c", "2").wait_ready())
    web = create_dashboard(app, auth=Auth(basic=(USER, PASSWORD)), poll_interval=1.0)
    server = DashboardServer(web).start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        assert web.monitor is not None
        wait_until(lambda: web.monitor.connected, timeout=10, message="event receiver")
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--headless",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--no-first-run",
                    # a hostile name that resolves to the dashboard: DNS rebinding
                    f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1",
                ],
            )
            try:
                context = browser.new_context(
                    http_credentials={"username": USER, "password": PASSWORD},
                    viewport={"width": 1400, "height": 900},
                )
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                yield {"app": app, "page": page, "url": server.url, "browser": browser}
            finally:
                browser.close()
    finally:
        server.stop()
        app.control.close()


def row_state(page: Any, task_id: str) -> Any:
    return page.locator(f'#task-table tr[data-uuid="{task_id}"] td.state')


def test_dashboard_shows_a_live_cluster_and_acts_on_it(
    stack: dict[str, Any], project: Path
) -> None:
    from proj import tasks  # type: ignore[import-not-found]

    from caraway import chain, chord

    page, expect = stack["page"], playwright_api.expect
    page.goto(stack["url"] + "/#workers")
    worker_row = page.locator('#worker-table tr[data-hostname^="w1@"]')
    expect(worker_row.locator("td.status")).to_have_text("online")
    expect(worker_row.locator("td").nth(2)).to_have_text("prefork")  # from remote control
    page.screenshot(path=str(SHOTS / "workers.png"), full_page=True)

    page.click('nav a[data-tab="tasks"]')
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")

    ok = [tasks.add.delay(i, i) for i in range(3)]
    bad = tasks.boom.delay("kaboom from the test")
    flaky = tasks.flaky.delay(str(project / "flaky.marker"), 1)
    joined = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)])(tasks.xsum.s())
    chained = chain(tasks.add.s(4, 4), tasks.mul.s(8)).apply_async()
    assert joined.get(timeout=20) == 6
    assert chained.get(timeout=20) == 64

    for result in ok:
        expect(row_state(page, result.id)).to_have_text("SUCCESS")
    expect(row_state(page, bad.id)).to_have_text("FAILURE")
    expect(row_state(page, flaky.id)).to_have_text("SUCCESS")
    retries = page.locator(f'#task-table tr[data-uuid="{flaky.id}"] td').nth(8)
    expect(retries).to_have_text("1", timeout=15_000)  # generous: CI machines are slow
    expect(row_state(page, joined.id)).to_have_text("SUCCESS")
    expect(row_state(page, chained.id)).to_have_text("SUCCESS")
    assert page.evaluate("window.__notReloaded") is True, "rows must arrive without a reload"
    page.screenshot(path=str(SHOTS / "tasks-live.png"), full_page=True)

    # filters: only the failure is left when filtering by state
    page.select_option('#filters select[name="state"]', "FAILURE")
    expect(page.locator("#task-table tbody tr")).to_have_count(1)
    page.select_option('#filters select[name="state"]', "")

    # the failed task's detail shows its traceback
    page.click(f'#task-table tr[data-uuid="{bad.id}"] td.uuid a')
    expect(page.locator('#detail-fields dd[data-field="state"]')).to_have_text("FAILURE")
    expect(page.locator("#detail-traceback")).to_contain_text("ValueError: kaboom from the test")
    expect(page.locator('#detail-fields dd[data-field="args"]')).to_contain_text("kaboom")
    page.screenshot(path=str(SHOTS / "task-failed-detail.png"), full_page=True)

    # a chain is drawn as a tree: add -> mul
    page.goto(f"{stack['url']}/#task/{chained.id}")
    tree = page.locator("#detail-tree")
    expect(tree.locator(f'li[data-uuid="{chained.parent.id}"] li[data-uuid="{chained.id}"]'))
    expect(tree.locator("a.node")).to_have_count(2)
    page.screenshot(path=str(SHOTS / "task-chain-tree.png"), full_page=True)

    _revoke_scheduled_task_from_the_page(stack, project)

    page.click('nav a[data-tab="queues"]')
    expect(page.locator('#queue-table tr[data-queue="celery"]')).to_have_count(1)
    chart = page.locator("#throughput")
    expect(chart.locator("polyline.ok")).to_have_count(1)
    wait_until(lambda: int(chart.get_attribute("data-succeeded") or 0) >= 8, timeout=10)
    assert int(chart.get_attribute("data-failed") or 0) >= 1
    page.screenshot(path=str(SHOTS / "queues-throughput.png"), full_page=True)


def _revoke_scheduled_task_from_the_page(stack: dict[str, Any], project: Path) -> None:
    from proj import tasks

    page, expect = stack["page"], playwright_api.expect
    output = project / "revoked.out"
    eta = time.time() + 4
    scheduled = tasks.record.apply_async((str(output), "too late"), countdown=4)
    page.goto(f"{stack['url']}/#tasks")
    expect(row_state(page, scheduled.id)).to_have_text("RECEIVED")
    page.click(f'#task-table tr[data-uuid="{scheduled.id}"] td.uuid a')
    page.click("#revoke")
    expect(page.locator("#notice")).to_contain_text("revoke: ok")
    page.screenshot(path=str(SHOTS / "task-revoked.png"), full_page=True)
    wait_until(lambda: time.time() > eta + 0.5, timeout=10, message="the revoked task's eta")
    # a task sent after the eta runs; the revoked one, due before it, must not have
    tasks.record.delay(str(output), "after").get(timeout=15)
    assert output.read_text().splitlines() == ["after"]
    wait_until(
        lambda: stack["app"].AsyncResult(scheduled.id).state == "REVOKED",
        timeout=10,
        message="the revoked task's REVOKED result",
    )
    expect(page.locator('#detail-fields dd[data-field="state"]')).to_have_text("REVOKED")


def test_dashboard_refuses_requests_without_credentials(stack: dict[str, Any]) -> None:
    browser, url = stack["browser"], stack["url"]
    anonymous = browser.new_context()
    try:
        page = anonymous.new_page()
        statuses: list[int] = []
        page.on("response", lambda response: statuses.append(response.status))
        # Chromium answers a basic-auth 401 it cannot prompt for with a navigation error
        with pytest.raises(playwright_api.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
            page.goto(url + "/")
        assert statuses == [401]
        assert anonymous.request.get(url + "/api/tasks").status == 401
        revoke = anonymous.request.post(
            url + "/api/workers/w1@x/shutdown",
            headers={"Content-Type": "application/json"},
            data="{}",
        )
        assert revoke.status == 401
    finally:
        anonymous.close()
    page = stack["page"]
    page.goto(url + "/#workers")
    playwright_api.expect(page.locator('#worker-table tr[data-hostname^="w1@"]')).to_have_count(1)
    page.screenshot(path=str(SHOTS / "authenticated.png"))


def test_a_rebound_host_name_is_refused(stack: dict[str, Any]) -> None:
    """DNS rebinding: a page on a hostile name that resolves to 127.0.0.1 gets nothing."""
    page, port = stack["page"], stack["url"].rsplit(":", 1)[1]
    response = page.goto(f"http://{REBOUND}:{port}/")
    assert response is not None and response.status == 421
    assert "is not served here" in (page.text_content("body") or "")
    # the rebound page's own script reads its "same-origin" API: refused too
    status = page.evaluate("fetch('/api/workers').then((r) => r.status)")
    assert status == 421


def test_actions_need_the_csrf_token_and_refuse_other_sites(stack: dict[str, Any]) -> None:
    page, url, expect = stack["page"], stack["url"], playwright_api.expect
    page.goto(url + "/#workers")
    row = page.locator('#worker-table tr[data-hostname^="w1@"]')
    expect(row.locator("td.status")).to_have_text("online")
    hostname = row.get_attribute("data-hostname")
    target = f"{url}/api/workers/{hostname}/shutdown"
    # same page, no token: refused
    status = page.evaluate(
        """async (target) => (await fetch(target, {method: "POST",
             headers: {"Content-Type": "application/json"}, body: "{}"})).status""",
        target,
    )
    assert status == 403
    # another site posts a form at the dashboard (the browser sends the credentials)
    form = (
        f'<form method="post" action="{target}" enctype="text/plain">'
        '<input name="x" value="y"><button id="go">go</button></form>'
    )
    page.route(ATTACKER + "/**", lambda route: route.fulfill(body=form, content_type="text/html"))
    page.goto(ATTACKER + "/")
    with page.expect_navigation() as navigation:
        page.click("#go")
    assert navigation.value is not None and navigation.value.status == 403
    # the worker is still there, and the page's own action (with its token) works
    page.goto(url + "/#workers")
    expect(row.locator("td.status")).to_have_text("online")
    page.evaluate("window.confirm = () => true")
    row.locator('button[data-action="grow"]').click()
    expect(page.locator("#notice")).to_contain_text("grow: ok")


def test_a_terminated_task_shows_revoked_and_a_killed_one_failed(stack: dict[str, Any]) -> None:
    """The supervisor kills the child: its events must still say how the task ended."""
    from proj import tasks

    page, expect = stack["page"], playwright_api.expect
    page.goto(stack["url"] + "/#tasks")
    expect(page.locator("#live")).to_have_text("live")
    running = tasks.slow.delay(30)
    expect(row_state(page, running.id)).to_have_text("STARTED")
    page.click(f'#task-table tr[data-uuid="{running.id}"] td.uuid a')
    page.click("#terminate")
    expect(page.locator("#notice")).to_contain_text("terminate: ok")
    expect(page.locator('#detail-fields dd[data-field="state"]')).to_have_text("REVOKED")
    killed = tasks.hard_limited.delay(30)
    page.goto(stack["url"] + "/#tasks")
    expect(row_state(page, killed.id)).to_have_text("FAILURE", timeout=20_000)
    expect(row_state(page, running.id)).to_have_text("REVOKED")
