"""`jr-checkpoint serve` on a populated ledger, driven in headless Chromium (Debian's package)
through Playwright: what a person sees on each page, with a screenshot of each.

The screenshots land in the test's own directory (pytest's tmp_path, printed on failure);
``JR_CHECKPOINT_SCREENSHOTS=DIR`` also copies them there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.attempt_story import DEAD_TASK, DEMO_TASK, MIXED_TASK, insert_story
from tests.web_ledger import STATES, held_locks, populate

CHROMIUM = os.environ.get("JR_CHECKPOINT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ADDRESS = re.compile(r"serving the dashboard on (http://\S+) \(Ctrl-C to stop\)")


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium: .ci/run installs it. Missing, the test fails; it is not skipped."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def served(dsn):
    """`jr-checkpoint serve --port 0` on the ledger; yields its address once it printed it."""
    insert_story(dsn)  # the demo's crashed-then-resumed task -1, as attempt rows; a dead holder
    populate(dsn)
    command = [sys.executable, "-m", "jr_checkpoint", "serve", "--dsn", dsn, "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in server.stdout:  # the handshake: the line with the address
            lines.append(line)
            if match := ADDRESS.search(line):
                break
        else:
            pytest.fail(f"serve exited {server.wait()}: {''.join(lines)}{server.stderr.read()}")
        with held_locks(dsn):
            yield match.group(1), server
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def shoot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a real picture, not an empty page
    copy_to = os.environ.get("JR_CHECKPOINT_SCREENSHOTS")
    if copy_to:
        Path(copy_to).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(copy_to) / path.name)
    return path


def test_a_person_sees_tasks_a_timeline_and_charts(browser, served, tmp_path):
    address, server = served
    dialogs = []
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme, viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

        page.goto(address)
        rows = page.locator("#tasks tbody tr")
        seen = {int(r.get_attribute("data-task")): r.locator(".state").inner_text()
                for r in rows.all()}
        assert seen == {**STATES, DEMO_TASK: "finished", DEAD_TASK: "dead", MIXED_TASK: "finished"}
        counted = page.locator(f'#tasks tr[data-task="{DEMO_TASK}"] td').nth(2).inner_text()
        assert counted == "2"  # attempts
        if scheme == "dark":  # the page follows the reader's preference
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(20, 24, 29)"
        shoot(page, tmp_path, f"tasks-{scheme}")

        page.click('#tasks a[href$="/tasks/-1"]')  # the demo's task: crashed in step 3, resumed, finished
        page.wait_for_selector("#timeline")
        steps = page.locator("#timeline tbody tr[data-step]")
        assert steps.count() == 6
        assert page.inner_text("#task-state") == "finished"
        assert [s.get_attribute("data-result") for s in steps.all()] == ["success"] * 6
        attempts = page.locator("#attempts tbody tr")
        assert [a.locator("td").nth(1).inner_text() for a in attempts.all()] == ["died in step 3", "finished"]
        cells = [[c.inner_text() for c in row.locator("td.cell").all()]
                 for row in page.locator("#attempts-timeline tbody tr").all()]
        assert cells == [["ran", "skipped"]] * 3 + [["died", "ran"], ["·", "ran"], ["·", "ran"]]
        assert page.locator("#timeline tbody tr[data-step] td").nth(6).inner_text() == "1"  # attempt
        shoot(page, tmp_path, f"task-{scheme}")

        page.goto(f"{address}tasks/{DEAD_TASK}")
        assert page.inner_text("#task-state") == "dead"

        page.goto(f"{address}tasks/12")
        error = page.locator("pre.error-detail").first.inner_text()
        assert error.startswith('<script>alert("pwned")</script>')  # shown as text, not run
        shoot(page, tmp_path, f"task-hostile-{scheme}")

        page.goto(f"{address}analytics?since=7d")
        labels = [svg.get_attribute("aria-label") for svg in page.locator("svg.chart").all()]
        assert labels == ["success rate by step type", "p95 duration by step type (ms)",
                          "target files that fail most", "attempts per unfinished task",
                          "step outcomes over time"]
        texts = page.locator("#chart-success svg text").all_text_contents()
        assert "search_replace" in texts and "shell" in texts
        assert page.locator("#chart-outcomes rect.bar-success").count() >= 1
        shoot(page, tmp_path, f"analytics-{scheme}")
        context.close()
    assert dialogs == []  # no script from the ledger ever ran

    narrow = browser.new_context(viewport={"width": 380, "height": 800})
    page = narrow.new_page()
    for path in ("", "tasks/12", "analytics"):
        page.goto(address + path)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
    shoot(page, tmp_path, "analytics-narrow")
    narrow.close()

    server.send_signal(signal.SIGINT)  # Ctrl-C
    assert server.wait(timeout=30) == 0
    assert "stopped" in server.stdout.read()
