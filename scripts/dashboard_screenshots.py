#!/usr/bin/env python3
"""Screenshots of the dashboard for docs/img/, light and dark, on a ledger worth looking at.

    python scripts/dashboard_screenshots.py [--out docs/img]

A throwaway embedded server gets the benchmark's synthetic history (2,000 tasks over 30
days, benchmarks/bench_web.py), the demo's crashed-then-resumed task (`jr-checkpoint demo`),
and one task a worker holds (its lease). `jr-checkpoint serve` serves it, and
Debian's chromium, through Playwright, photographs each page.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]

import bench_web  # noqa: E402
import psycopg2.extensions  # noqa: E402

from jr_checkpoint import cli, embedded  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def photograph(address: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    pages = [("tasks", ""), ("task", "tasks/-1"), ("analytics", "analytics?since=7d")]
    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for scheme in ("light", "dark"):
            context = browser.new_context(color_scheme=scheme, viewport={"width": 1100, "height": 760})
            page = context.new_page()
            for name, path in pages:
                page.goto(address + path)
                shots.append(out / f"{name}-{scheme}.png")
                page.screenshot(path=str(shots[-1]), full_page=name != "tasks")
            context.close()
        browser.close()
    return shots


# Until the attempt writer records them itself: the two attempts the demo makes, built from the
# times of its own step rows (attempt 1 wrote steps 0-2, then died in step 3; attempt 2 skipped
# them and ran 3-5). Only when the demo left no attempt row of its own.
MIRROR_DEMO = """
INSERT INTO jr_task_attempts (task_id, attempt, owner, host, pid, started_at, ended_at, outcome,
    resumed_at, ran, skipped, failed)
SELECT -1, 1, 'demo-1', 'localhost', 4101, min(updated_at) - interval '5 ms',
       (SELECT min(updated_at) - interval '5 ms' FROM jr_step_rewards WHERE task_id = -1 AND step_number = 3),
       'died', NULL, '{0,1,2}'::integer[], '{}'::integer[], '{}'::integer[]
FROM jr_step_rewards WHERE task_id = -1 AND step_number < 3
UNION ALL
SELECT -1, 2, 'demo-2', 'localhost', 4100, min(updated_at) - interval '5 ms',
       max(updated_at) + interval '5 ms', 'finished', 3, '{3,4,5}'::integer[], '{0,1,2}'::integer[],
       '{}'::integer[]
FROM jr_step_rewards WHERE task_id = -1 AND step_number >= 3
"""


def mirror_demo_attempts(cur) -> None:
    cur.execute("SELECT count(*) FROM jr_task_attempts WHERE task_id = -1")
    if cur.fetchone()[0] == 0:
        print("the demo left no attempt row: inserting the two it makes (the writer has not landed)")
        cur.execute(MIRROR_DEMO)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jr-shots-") as scratch, \
            embedded.server(Path(scratch) / "pgdata", keep_data=False) as target:
        dsn = psycopg2.extensions.make_dsn(**target.params)
        bench_web.fill(target, 2000, 6)
        assert cli.main(["demo", "--dsn", dsn]) == 0
        with contextlib.closing(target.connect()) as conn, conn, conn.cursor() as cur:
            mirror_demo_attempts(cur)
            # bring three unfinished tasks to the top: 1980 runs (a worker's lease on it),
            # 1960 crashed a few minutes ago, 2000 is exhausted
            cur.execute("UPDATE jr_task_checkpoints SET updated_at = LOCALTIMESTAMP - "
                        "make_interval(mins => (2000 - task_id) / 10) WHERE task_id IN (1960, 1980)")
            cur.execute("UPDATE jr_task_checkpoints SET checkpoint_data = checkpoint_data || "
                        "jsonb_build_object('owner', 'worker-7f3a', 'lease_until', "
                        "extract(epoch FROM now()) + 3600) WHERE task_id = 1980")
        server = subprocess.Popen([sys.executable, "-m", "jr_checkpoint", "serve", "--dsn", dsn,
                                   "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            for line in server.stdout:
                if match := re.search(r"on (http://\S+) ", line):
                    break
            for shot in photograph(match.group(1), out):
                print(shot)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
