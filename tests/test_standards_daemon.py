"""The daemon speaks the mine's standards, end to end: a board on a real pty without GPS (host clock),
a hole in its stream, `stopewatch run` with the archive and /metrics on, a real broker.

Shown: ObsPy reads the daemon's SDS archive back with exactly the counts the board sent, a gap where
the board's frames never arrived and none elsewhere, segment times within the clock's stated error of
the board's true sampling times; the event messages carry stream codes, archive span, units and timing
and validate against the schema; a Prometheus scrape of /metrics parses and agrees with health.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from field_support import shipped_model
from jsonschema import Draft202012Validator
from mqtt_broker import Collector, free_port

from firmware_bridge.clock import parse_iso_utc
from firmware_bridge.simulator import BoardSimulator, PtyPort
from training.synthetic.stream import StreamSynth

obspy = pytest.importorskip("obspy", reason="ObsPy (the dev extra) reads the archive back")
from obspy.clients.filesystem.sds import Client as SdsClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "stopewatch/v1/testmine/gw1"
FS = 4000.0
SECONDS = 16.0
HOLE = (8.0, 9.5)  # seconds of stream whose frames never reach the gateway
T = 90.0


class PacedBoard:
    """Frames from the board simulator written to a pty in real time by this test, so that it knows which
    frames went out, with which counts, and when each sample was taken (host wall clock: the truth)."""

    def __init__(self, pty: PtyPort):
        source = StreamSynth(fs=FS, channels=3, site="za-deep-gold", seed=11, families=["blast", "microseismic"],
                             snr_db=(20.0, 30.0), rate_per_min=20)
        self.sim = BoardSimulator(source, fs=FS, channels=3, fmt="int24", scale=1e9, timestamps=False, seed=11,
                                  keep_counts=True)
        self.pty = pty
        self.sent: list[tuple[int, np.ndarray]] = []  # (first sample, counts) of every sample frame written
        self.t0_ns = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        self.t0_ns = time.time_ns()  # sample i is taken at t0_ns + i / FS
        n = self.sim.samples_per_frame
        while self.sim.sample < SECONDS * FS and not self.stop.is_set():
            frames, _ = self.sim.next_frames(n)
            wait = t0 + self.sim.sample / FS - time.monotonic()  # a frame leaves once its last sample is taken
            if wait > 0:
                time.sleep(wait)
            for kind, data, rec in frames:
                if HOLE[0] * FS <= rec.first_sample < HOLE[1] * FS:
                    continue  # lost on the line
                self.pty.write(data)
                if kind == "samples":
                    self.sent.append((rec.first_sample, rec.counts))

    def truth_ns(self, index: int) -> int:
        return self.t0_ns + round(index * 1e9 / FS)


def write_config(tmp: Path, pty: PtyPort, broker_port: int, metrics_port: int) -> Path:
    cfg = tmp / "stopewatch.toml"
    cfg.write_text(f"""
[node]
site = "testmine"
node = "gw1"
state_dir = "{tmp / 'state'}"
[board]
port = "{pty.path}"
counts_per_unit = 1e9
[model]
path = "{shipped_model()}"
[mqtt]
port = {broker_port}
[health]
interval_s = 2.0
[stream]
network = "ZA"
station = "L29E"
[archive]
path = "{tmp / 'archive'}"
min_free_bytes = 0
[metrics]
enabled = true
port = {metrics_port}
""")
    return cfg


def scrape(port: int) -> dict:
    """{sample name + labels: value} of one scrape of /metrics, parsed by prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


def test_daemon_archive_round_trip_events_and_metrics(mqtt_broker, tmp_path):
    pty = PtyPort()
    board = PacedBoard(pty)
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    metrics_port = free_port()
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                             str(write_config(tmp_path, pty, mqtt_broker.port, metrics_port))],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    try:
        # The board starts once the daemon has opened the port, as a board powered up under a running gateway.
        assert col.wait_for(lambda c: any(h["serial"] == "connected" for h in c.payloads(f"{TOPIC}/health")), T), \
            (tmp_path / "daemon.log").read_text()
        board.thread.start()
        board.thread.join(SECONDS + 60)
        sent_samples = sum(c.shape[1] for _, c in board.sent)
        assert col.wait_for(lambda c: any(h["samples_in"] >= sent_samples for h in c.payloads(f"{TOPIC}/health")),
                            T), (tmp_path / "daemon.log").read_text()
        metrics = scrape(metrics_port)
        health = col.payloads(f"{TOPIC}/health")
        assert proc.send_signal(signal.SIGTERM) is None and proc.wait(60) == 0
    finally:
        board.stop.set()
        pty.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        col.close()
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    last = health[-1]
    assert last["timing"]["clock"] == "host" and not last["timing"]["locked"]
    assert last["archive"]["write_errors"] == 0 and last["archive"]["records_dropped"] == 0
    stated_s = max(h["timing"]["error_s"] for h in health if h["timing"])

    # --- the archive, read back by ObsPy
    sds = SdsClient(str(tmp_path / "archive"))
    begin = obspy.UTCDateTime(board.t0_ns / 1e9) - 60
    delivered = np.concatenate([np.arange(first, first + c.shape[1]) for first, c in board.sent])
    worst = 0.0
    for row, cha in enumerate(("GPZ", "GPN", "GPE")):
        st = sds.get_waveforms("ZA", "L29E", "00", cha, begin, begin + SECONDS + 180)
        st.merge(-1)
        st.sort()
        counts = np.concatenate([c[row] for _, c in board.sent]).astype(np.int32)
        at = 0  # position in the delivered samples
        for tr in st:
            idx = delivered[at:at + tr.stats.npts]
            assert np.array_equal(tr.data, counts[at:at + tr.stats.npts]), (cha, at)
            assert np.all(np.diff(idx) == 1), f"{cha}: a trace spans a hole in the board's stream"
            start_err = abs(tr.stats.starttime.ns - board.truth_ns(int(idx[0]))) / 1e9
            end_err = abs(tr.stats.endtime.ns - board.truth_ns(int(idx[-1]))) / 1e9
            assert start_err <= stated_s, (cha, start_err, stated_s)
            assert end_err <= stated_s, (cha, end_err, stated_s)
            worst = max(worst, start_err, end_err)
            at += tr.stats.npts
        assert at == len(delivered)  # every sample the board sent, nothing else
        breaks = [i for i in range(1, len(st)) if st[i].stats.starttime - st[i - 1].stats.endtime > 1.5 / FS]
        assert len(breaks) == 1, st  # the one hole: time tears (re-anchoring) are contiguous in index
        gap_s = st[breaks[0]].stats.starttime - st[breaks[0] - 1].stats.endtime - 1 / FS
        # The true hole is whole frames: from the last sample sent before it to the first one after it.
        before = sum(tr.stats.npts for tr in st[:breaks[0]])
        true_gap_s = (delivered[before] - delivered[before - 1] - 1) / FS
        assert HOLE[1] - HOLE[0] <= true_gap_s < HOLE[1] - HOLE[0] + 2 * board.sim.samples_per_frame / FS
        assert abs(gap_s - true_gap_s) <= stated_s, (gap_s, true_gap_s)
    assert "ERROR" not in text, text
    print(f"stated timing error {stated_s * 1e3:.2f} ms, worst archive time error {worst * 1e3:.2f} ms, "
          f"{last['archive']['time_tears']} time tears")

    # --- events: stream codes, archive span, units, timing; valid /2 messages
    got = col.first_payloads(f"{TOPIC}/event")
    assert got, text
    validator = Draft202012Validator(json.loads((ROOT / "edge/schemas/event.schema.json").read_text()))
    for msg in got:
        validator.validate(msg)
        assert msg["schema"] == "stopewatch.event/2"
        assert msg["stream"] == {"network": "ZA", "station": "L29E", "location": "00",
                                 "channels": ["GPZ", "GPN", "GPE"]}
        assert msg["units"]["ppv"] == "m/s" and msg["units"]["energy"] == "(m/s)^2*s"
        assert set(msg["units"]) == set(msg["features"])
        assert msg["timing"]["clock"] == "host" and 0 < msg["timing"]["error_s"] <= stated_s
        assert msg["archive"]["start"] == msg["window"]["start"]
        span = parse_iso_utc(msg["archive"]["end"]) - parse_iso_utc(msg["archive"]["start"])
        assert abs(span - msg["window"]["samples"] / FS * 1e9) < 1000
        for rel in msg["archive"]["files"]:
            assert (tmp_path / "archive" / rel).is_file(), rel

    # --- the Prometheus scrape, taken while the daemon ran
    assert metrics["stopewatch_samples_in_total"] > 0
    assert metrics["stopewatch_archive_records_total"] > 0 and metrics["stopewatch_archive_write_errors_total"] == 0
    assert metrics["stopewatch_serial{state=connected}"] == 1.0
    assert metrics["stopewatch_timing_clock{state=host}"] == 1.0 and 0 < metrics["stopewatch_timing_quality"] <= 80
    assert metrics["stopewatch_node_info{node=gw1,site=testmine}"] == 1.0
    assert metrics["stopewatch_inference_seconds_count"] == metrics["stopewatch_event_latency_seconds_count"]
    assert metrics["stopewatch_inference_seconds_count"] >= 1
    assert metrics["stopewatch_inference_seconds_bucket{le=+Inf}"] == metrics["stopewatch_inference_seconds_count"]


def test_a_busy_metrics_port_is_one_clear_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "node.toml"
        cfg.write_text(f'[node]\nstate_dir = "{tmp_path / "state"}"\n[model]\npath = "{shipped_model()}"\n'
                       f'[board]\nport = "{tmp_path / "no-board"}"\n[metrics]\nenabled = true\nport = {port}\n')
        proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("stopewatch: error:")]
    assert len(lines) == 1 and f"127.0.0.1:{port}: cannot listen" in lines[0] and "Traceback" not in proc.stderr
