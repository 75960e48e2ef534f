"""``stopewatch demo``: every class in a default run, and nothing left behind on any exit path.

The demo is run as the technician runs it (``python -m edge.cli demo``) with its own TMPDIR, so that
what it leaves is visible: after a refusal, a failing daemon and Ctrl-C (SIGINT to the demo alone,
the hard case: its broker and daemon must be stopped by the demo itself), the directory must be empty
and no process started from it (Mosquitto, the daemon) may still run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from field_support import REPO, model_variant, shipped_model

from edge.devtools.demo import FS, demo_source
from edge.vocabulary import CLASSES

T = 120.0


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (the demo's temp directory)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def start_demo(tmp: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "edge.cli", "demo", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def assert_nothing_left(tmp: Path) -> None:
    deadline = time.monotonic() + 10  # a killed child may take a moment to be reaped by init
    while processes_mentioning(str(tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(tmp)) == []
    assert list(tmp.iterdir()) == []


def test_a_default_run_injects_every_event_class():
    """The demo's signal over its default minute (12 events a minute, seed 1) holds every event family;
    noise is the background itself."""
    source = demo_source("za-deep-gold", seed=1, events_per_min=12.0)
    labels = []
    block = int(FS / 10)
    for _ in range(int(58 * FS / block)):  # the last 2 s of a run are not scored
        _, events = source.next_block(block)
        labels += [e["label"] for e in events]
    assert set(labels) == set(CLASSES) - {"noise"}, labels


@pytest.mark.parametrize("args", [("--site", "bogus"), ("--seconds", "-1"), ("--events-per-min", "nan")])
def test_bad_arguments_leave_nothing(tmp_path, args):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = start_demo(tmp, *args)
    _out, err = demo.communicate(timeout=T)
    assert demo.returncode == 2 and "Traceback" not in err and args[0] in err
    assert_nothing_left(tmp)


def test_a_failing_daemon_is_reported_and_leaves_nothing(tmp_path):
    """A model whose card is fine but whose weights are garbage: the daemon refuses it at start."""
    bad = model_variant(shipped_model(), tmp_path / "bad-model")
    (bad / "model.tflite").write_bytes(b"not a flatbuffer")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = start_demo(tmp, "--model", str(bad), "--seconds", "30")
    out, err = demo.communicate(timeout=T)
    assert demo.returncode == 1 and "Traceback" not in err
    assert "daemon exited with 2" in out and "sha256" in out  # the daemon's own line, from its log
    assert_nothing_left(tmp)


def test_ctrl_c_stops_everything_and_still_scores(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = start_demo(tmp, "--seconds", "300")
    lines = []
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:  # running: board, daemon and broker all started
        line = demo.stdout.readline()
        lines.append(line)
        if line.startswith("trigger UTC") or not line:
            break
    assert any(line.startswith("trigger UTC") for line in lines), "".join(lines) + demo.stderr.read()
    assert processes_mentioning(str(tmp)), "the demo's broker and daemon should be running"
    time.sleep(3)
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=T)
    out = "".join(lines) + out
    assert demo.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "(interrupted)" in out and "per class (injected / published):" in out
    table = out.split("per class (injected / published):")[1]
    assert all(f"  {c} " in table for c in CLASSES)  # every class has its line, seen or not
    assert_nothing_left(tmp)


def test_surface_demo_serves_the_page_until_ctrl_c_and_leaves_nothing(tmp_path):
    """``demo --surface``: the collector archives the demo's events with their waveforms, the printed login
    opens the printed page, and Ctrl-C stops everything (page, collector, broker, daemon, temp files)."""
    import json
    import re

    from surface_support import web_login, web_opener

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = start_demo(tmp, "--surface", "--web-port", "0")  # no --seconds: until Ctrl-C
    lines = []
    deadline = time.monotonic() + T
    found = None
    while time.monotonic() < deadline and found is None:
        line = demo.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.match(r"review page: (http://127\.0\.0\.1:\d+)/  login: demo / (\S+)", line)
    assert found, "".join(lines) + demo.stderr.read()
    base, password = found.groups()
    opener = web_opener()
    web_login(opener, base, "demo", password)

    def archived() -> list[dict]:
        events = json.loads(opener.open(base + "/api/events", timeout=10).read())["events"]
        return [e for e in events if e["has_waveform"]]

    while time.monotonic() < deadline and not archived():
        time.sleep(1.0)
    events = archived()
    assert events, "no event with its waveform reached the archive"
    one = json.loads(opener.open(f"{base}/api/events/{events[0]['event_id']}", timeout=10).read())
    assert one["waveform"]["channels"] == ["Z", "N", "E"] and one["waveform"]["fs"] == FS
    png = opener.open(f"{base}/events/{events[0]['event_id']}/waveform.png", timeout=30).read()
    assert png[:4] == b"\x89PNG"
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=T)
    assert demo.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "(interrupted)" in out
    assert_nothing_left(tmp)
