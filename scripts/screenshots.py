"""Screenshots of the review page for the README, from the real chain: ``stopewatch demo --surface``.

The demo's simulated board, daemon, broker and collector fill the archive; Playwright drives Debian's
chromium (never a downloaded browser) through the page as a reviewer would: it logs in, relabels two
events with a note, and takes one PNG per page into docs/img/. Run::

    .venv/bin/python scripts/screenshots.py [--out docs/img] [--events 16]

It needs ``apt-get install chromium`` and the dev extra (playwright); it takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1360, "height": 900}


def start_demo(events_per_min: float) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    demo = subprocess.Popen([sys.executable, "-m", "edge.cli", "demo", "--surface", "--web-port", "0",
                             "--events-per-min", str(events_per_min), "--seconds", "900"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        print(line, end="")
        m = re.match(r"review page: (http://127\.0\.0\.1:\d+)/  login: demo / (\S+)", line)
        if m:  # the demo goes on printing its event table: drain it, or its pipe fills and it blocks
            threading.Thread(target=lambda: [None for _ in demo.stdout], daemon=True).start()
            return demo, m.group(1), m.group(2)
    demo.kill()
    raise SystemExit("the demo did not print the review page's address")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="directory of the PNGs (default docs/img)")
    ap.add_argument("--events", type=int, default=16, help="archived events to wait for (default 16)")
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demo, base, password = start_demo(events_per_min=30.0)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(base + "/login")
            page.screenshot(path=str(out / "review-login.png"))
            page.fill("input[name=username]", "demo")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/nodes")
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # the demo's events reach the archive as they happen
                page.goto(base + "/events?reviewed=any")
                total = int(page.inner_text("#total").split()[0])
                if total >= args.events:
                    break
                time.sleep(2.0)
            ids = [a.get_attribute("href") for a in page.locator("table.grid tbody tr td:first-child a").all()]
            for href, (label, note) in zip(ids[2:4], (("blast", "development end blast, 11:40 schedule"),
                                                      ("microseismic", "P and S phases clear on all three")),
                                           strict=False):
                page.goto(base + href)
                page.select_option("select[name=label]", label)
                page.fill("textarea[name=note]", note)
                page.click("form.relabel button[type=submit]")
                page.wait_for_selector("p.flash")
            page.goto(base + "/nodes")
            page.screenshot(path=str(out / "review-nodes.png"), full_page=True)
            page.goto(base + "/events")
            page.screenshot(path=str(out / "review-events.png"), full_page=True)
            page.goto(base + ids[2])
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out / "review-event.png"), full_page=True)
            page.goto(base + "/queue")
            page.screenshot(path=str(out / "review-queue.png"), full_page=True)
            page.goto(base + "/counts?bucket=hour")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out / "review-counts.png"), full_page=True)
            page.goto(base + "/alerts")
            page.screenshot(path=str(out / "review-alerts.png"), full_page=True)
            browser.close()
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=120)
    for png in sorted(out.glob("review-*.png")):
        print(f"wrote {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
