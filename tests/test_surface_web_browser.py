"""The review page in a real headless Chromium (Playwright driving Debian's ``chromium``), served by the real
collector process (``stopewatch collect`` with ``[web] enabled = true``) over a real Mosquitto, on SQLite and
PostgreSQL: log in, filter the events, open one, relabel it, and find the new label in ``dataset export``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from mqtt_broker import wait_until
from paho.mqtt.enums import CallbackAPIVersion
from surface_support import event_message, health_message, status_message, waveform_message

from edge.cli import main
from edge.devtools.broker import free_port, mosquitto_path
from edge.topics import DEFAULT_PREFIX, NodeTopics
from surface.store import EventQuery, open_store

ROOT = Path(__file__).resolve().parents[1]
SITE, NODE = "kloof-4", "l29-east"
PASSWORD = "browser-test-Pa55"
T = 60.0
CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
    pytest.mark.skipif(mosquitto_path() is None, reason="needs Mosquitto (apt-get install mosquitto)"),
    pytest.mark.slow,
]


def publish(port: int, messages: list[tuple[str, dict, bool]]) -> None:
    """Publish (topic, payload, retain) at QoS 1 and wait for each PUBACK."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="browser-test-node", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            client.publish(topic, json.dumps(payload), qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.fixture
def collector_with_page(surface_url, mqtt_broker, tmp_path):
    """``stopewatch collect`` serving the page, fed 12 events with waveforms; yields (base URL, archive URL)."""
    web_port = free_port()
    cfg = tmp_path / "surface.toml"
    cfg.write_text(f'[database]\nurl = "{surface_url}"\n[broker]\nport = {mqtt_broker.port}\n'
                   f'client_id = "browser-test-collector"\n[web]\nenabled = true\nport = {web_port}\n'
                   'secret_key_file = "web.key"\n')
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert main(["surface", "user", "add", "rita", "--role", "reviewer", "--config", str(cfg),
                 "--password-file", str(pw)]) == 0
    log = open(tmp_path / "collector.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "collect", "--config", str(cfg)],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=subprocess.STDOUT)
    try:
        topics = NodeTopics(DEFAULT_PREFIX, SITE, NODE)
        labels = ["blast", "microseismic", "noise", "blast", "drilling", "blast", "unknown", "mechanical",
                  "blast", "electrical", "noise", "blast"]
        msgs: list[tuple[str, dict, bool]] = [(topics.status, status_message("online"), True)]
        for seq, label in enumerate(labels, start=1):
            ev = event_message(seq=seq, label=label, confidence=0.5 + 0.04 * seq)
            msgs += [(topics.event, ev, False), (topics.waveform, waveform_message(ev, seed=seq), False)]
        msgs.append((topics.health, health_message(), False))

        def stored() -> int:
            with open_store(surface_url) as store:
                return sum(1 for e in store.query_events() if e.has_waveform)

        # the collector subscribes after it connects: publish (again) until all 12 are stored; dedup absorbs repeats
        assert wait_until(lambda: publish(mqtt_broker.port, msgs) or stored() == 12, T, interval=1.0), \
            (tmp_path / "collector.log").read_text()
        yield f"http://127.0.0.1:{web_port}", surface_url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert proc.returncode == 0, (tmp_path / "collector.log").read_text()
    assert PASSWORD not in (tmp_path / "collector.log").read_text()


def test_login_filter_open_relabel_then_export(collector_with_page, tmp_path):
    from playwright.sync_api import sync_playwright

    base, db_url = collector_with_page
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.goto(base + "/events")
            assert "/login" in page.url  # anonymous: sent to the login form
            page.fill("input[name=username]", "rita")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/events")  # back where the login interrupted
            assert "12 events" in page.inner_text("#total")

            page.select_option("select[name=label]", "blast")
            page.fill("input[name=min_confidence]", "0.6")
            page.click("form.filters button[type=submit]")
            page.wait_for_url("**/events?*label=blast*")
            with open_store(db_url) as store:
                want = store.query_events(EventQuery(label="blast", min_confidence=0.6))
            assert len(want) == 4 and f"{len(want)} events" in page.inner_text("#total")
            rows = page.locator("table.grid tbody tr")
            assert rows.count() == len(want)
            assert all(rows.nth(i).locator(".label").inner_text() == "blast" for i in range(rows.count()))

            rows.first.locator("a").first.click()
            target = want[0].event_id  # the newest first, as the list shows them
            page.wait_for_url(f"**/events/{target}")
            assert page.inner_text("#current-label") == "blast"
            for alt in ("waveform components", "spectrogram"):  # the PNG plots loaded (natural width > 0)
                img = page.locator(f"img[alt^='{alt}']")
                assert img.evaluate("i => i.complete && i.naturalWidth") > 0

            page.select_option("select[name=label]", "microseismic")
            page.fill("textarea[name=note]", "P and S phases clear on N")
            page.click("form.relabel button[type=submit]")
            page.wait_for_selector("p.flash")
            assert page.inner_text("#current-label") == "microseismic"
            history = page.inner_text("#history")
            assert "rita" in history and "blast" in history and "P and S phases clear on N" in history
        finally:
            browser.close()

    out = tmp_path / "reviewed"
    done = subprocess.run([sys.executable, "-m", "edge.cli", "dataset", "export", "--db", db_url, "--out", str(out)],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 1 and manifest["class_counts"]["microseismic"] == 1
    with np.load(out / manifest["shards"][0]["file"]) as shard:
        assert list(shard["event_id"]) == [target] and list(shard["labels"]) == ["microseismic"]
        assert shard["waveforms"].shape == (1, 3, 512)
