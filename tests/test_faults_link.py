"""Fault injection on the board side of the real daemon: worker threads killed, hostile board data, degraded links.

Each daemon test runs ``python -m edge.cli run`` as a subprocess against a real Mosquitto on a free port
and the board simulator (the benchmark's physics, real frames) on a pseudo-terminal. A worker fault is
armed in the daemon's own interpreter by tests/fault_hooks/sitecustomize.py and fired by a trigger file.
For each case the ledger counts events injected by the board, classified by the daemon, delivered to
the broker, still stored, dead-lettered and evicted: ``lost`` (classified but in none of the others)
must be 0. Waits are on conditions with generous timeouts.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from faults_link_helpers import (
    LINK_LEDGER_HEADER,
    LINK_LEDGERS,
    ROOT,
    TOPIC,
    Board,
    Daemon,
    NanFrames,
    detected,
    events,
    healths,
    ledger,
    outbox_rows,
    write_config,
)
from jsonschema import Draft202012Validator
from mqtt_broker import Collector, wait_until

from edge.gateway.config import TriggerConfig
from edge.gateway.model import Classifier
from edge.gateway.pipeline import Pipeline, fixed_clock
from firmware_bridge.decoder import FrameDecoder, SampleBlock, join_contiguous
from firmware_bridge.faults import FaultConfig
from firmware_bridge.protocol import encode_samples
from firmware_bridge.simulator import BoardSimulator, FilePort
from training.synthetic.stream import StreamSynth

T = 90.0
README_LINK = FaultConfig(bit_error_rate=1e-4, drop_rate=1e-3, disconnect_rate=1 / 60.0)  # README.md's command
EVENT_SCHEMA = Draft202012Validator(json.loads((ROOT / "edge/schemas/event.schema.json").read_text()))


@pytest.fixture(scope="module", autouse=True)
def _print_ledgers():
    yield
    if LINK_LEDGERS:
        print("\n" + LINK_LEDGER_HEADER + "\n" + "\n".join(book.row() for book in LINK_LEDGERS))


@pytest.fixture
def cleanup():
    things: list = []
    yield things.append
    for thing in reversed(things):
        if isinstance(thing, Daemon):
            thing.kill()
        elif isinstance(thing, Board):
            thing.stop()
        elif isinstance(thing, Collector):
            thing.close()


def _start(tmp_path, mqtt_broker, cleanup, sim: Board, **sections) -> tuple[Collector, Path]:
    cleanup(sim)
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    cleanup(col)
    return col, write_config(tmp_path, sim.pty.path, mqtt_broker.port, **sections)


# --------------------------------------------------------------------------- worker threads killed
WORKERS = {"serial": ("serial", "injected fault in the serial reader"),
           "sender": ("mqtt-sender", "injected fault in the MQTT sender"),
           "network": ("mqtt-network", "InjectedFault: injected fault in the MQTT network loop")}


@pytest.mark.parametrize("worker", list(WORKERS))
def test_a_killed_worker_exits_1_with_its_cause_and_the_restart_loses_nothing(worker, mqtt_broker, tmp_path,
                                                                               cleanup):
    """The worker raises mid-stream: the daemon logs the cause, reports it (health ``dead_workers`` while MQTT
    still works, ``systemctl status``), exits 1 for systemd, and the restarted daemon delivers every event."""
    board = Board(tmp_path, speed=2.0, rate_per_min=30, seed=21)
    col, config = _start(tmp_path, mqtt_broker, cleanup, board)
    trigger = tmp_path / "fault-now"
    first = Daemon(config, tmp_path, "first", fault=(worker, trigger))
    cleanup(first)
    first.opened(board)
    assert wait_until(lambda: "fault hook armed" in first.text(), 30), first.text()
    assert col.wait_for(lambda c: len(events(c)) >= 2, T), first.text()
    trigger.touch()
    assert first.wait(T) == 1, first.text()[-3000:]
    name, cause = WORKERS[worker]
    text = first.text()
    assert "worker thread(s) died" in text and name in text and cause in text, text[-3000:]
    assert "exit 1 so that systemd restarts the service" in text
    if worker != "network":  # with paho's thread dead nothing reaches the broker, health included
        dead = [h["dead_workers"] for h in healths(col) if h["dead_workers"]]
        assert dead and name in dead[-1], healths(col)[-1:]
    # systemd restarts the service: everything the first run classified goes out.
    second = Daemon(config, tmp_path, "second")
    cleanup(second)
    assert col.wait_for(lambda c: len({m["boot_id"] for m in events(c)}) == 2, T), second.text()
    assert wait_until(lambda: outbox_rows(tmp_path) == 0, T), second.text()[-2000:]
    board.stop()
    assert second.stop() == 0
    book = ledger(f"{worker} thread killed, restarted", board, [first, second], col, tmp_path)
    assert book.lost == 0 and book.stored == 0 and book.classified >= 3, book


# --------------------------------------------------------------------------- hostile board data
def nonsense_frames(session: int, seq: int) -> list[bytes]:
    """CRC-valid sample frames with impossible headers: rate 0, 1 mHz, 2 MHz; a first sample near 2^64."""
    zeros = np.zeros((3, 28))
    return [encode_samples(zeros, fmt="int24", fs=fs, first_sample=first, seq=seq, board_id=1, session=session)
            for fs, first in ((0.0, 0), (0.001, 0), (2e6, 0), (4000.0, 2**64 - 10))]


def test_crc_valid_nonsense_frames_are_rejected_counted_and_named(mqtt_broker, tmp_path, cleanup):
    board = Board(tmp_path, speed=2.0, rate_per_min=30, seed=22)
    col, config = _start(tmp_path, mqtt_broker, cleanup, board)
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    daemon.opened(board)
    assert col.wait_for(lambda c: len(events(c)) >= 1, T), daemon.text()
    sent = 0
    for _ in range(5):
        for frame in nonsense_frames(board.sim.session, board.sim.seq):
            board.pty.extra.put(frame)
            sent += 1
    assert col.wait_for(lambda c: any(h["rejected_frames"] == sent for h in healths(c)), T), healths(col)[-1:]
    n = len(events(col))
    assert col.wait_for(lambda c: len(events(c)) >= n + 2, T), daemon.text()[-2000:]  # still detecting
    health = [h for h in healths(col) if h["rejected_frames"] == sent][-1]
    assert f"{sent} frames with an impossible header" in (health["link"]["reason"] or ""), health["link"]
    board.stop()
    assert daemon.stop() == 0 and "Traceback" not in daemon.text()
    book = ledger("CRC-valid nonsense frames", board, [daemon], col, tmp_path)
    assert book.lost == 0 and book.stored == 0, book


class OneNanFrame:
    """A source whose block number ``at`` (one frame) is NaN."""

    def __init__(self, source, at: int):
        self.source, self.at, self.blocks = source, at, 0

    def next_block(self, n: int):
        x, ev = self.source.next_block(n)
        self.blocks += 1
        return (np.full_like(x, np.nan) if self.blocks == self.at else x), ev


def _decode_and_detect(tmp: Path, nan_at: int | None, classifier) -> tuple[list[int], FrameDecoder]:
    """A float32 board stream (one NaN frame at block ``nan_at``) through the daemon's decoder and pipeline."""
    fs = 4000.0
    source = StreamSynth(fs=fs, channels=3, site="za-deep-gold", seed=5, families=["microseismic", "blast"],
                         snr_db=(15.0, 30.0), rate_per_min=30)
    if nan_at is not None:
        source = OneNanFrame(source, nan_at)
    sim = BoardSimulator(source, fs=fs, channels=3, fmt="float32", scale=1e9, seed=5)
    port = FilePort(tmp / "float.bin")
    sim.run(port, seconds=60, speed=0)
    port.close()
    dec = FrameDecoder()
    pipe = Pipeline(TriggerConfig(), classifier, fs, ["Z", "N", "E"], fixed_clock(datetime(2026, 1, 1, tzinfo=UTC), fs))
    out = []
    data = (tmp / "float.bin").read_bytes()
    for at in range(0, len(data), 4096):
        for b in join_contiguous([x for x in dec.feed(data[at:at + 4096]) if isinstance(x, SampleBlock)]):
            out += pipe.feed(b.data.astype(np.float32) / np.float32(1e9), b.first_sample)
    out += pipe.flush()
    assert pipe.stats.gaps == 0  # the NaN frame was concealed, not a reset
    return [e.trigger_sample for e in out], dec


def test_one_nan_frame_does_not_cut_the_events_detected(triaxial_model):
    classifier = Classifier(triaxial_model)
    with tempfile.TemporaryDirectory() as tmp:
        clean, _ = _decode_and_detect(Path(tmp), None, classifier)
        # The NaN frame lands 10 frames before the second event's onset: the trigger's state is then live.
        spf = 21  # float32 x 3 channels: 256 payload bytes
        first_events = sorted(clean)
        nan_block = (first_events[1] // spf) - 10
        with_nan, dec = _decode_and_detect(Path(tmp), nan_block, classifier)
    assert dec.stats.nonfinite_frames == 1 and len(clean) >= 10
    assert len(with_nan) == len(clean)
    assert all(abs(a - b) <= 4000 * 0.05 for a, b in zip(sorted(clean), sorted(with_nan), strict=True))


def test_nan_frames_are_concealed_gaps_and_every_event_still_arrives(mqtt_broker, tmp_path, cleanup):
    board = Board(tmp_path, speed=2.0, rate_per_min=30, seed=23, fmt="float32", nan_every=200)
    col, config = _start(tmp_path, mqtt_broker, cleanup, board)
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    daemon.opened(board)
    assert col.wait_for(lambda c: len(events(c)) >= 8, 2 * T), daemon.text()[-2000:]
    board.stop()
    nan = board.source.injected
    assert isinstance(board.source, NanFrames) and nan >= 10
    assert col.wait_for(lambda c: any(h["nonfinite_frames"] == nan for h in healths(c)), T), healths(col)[-1:]
    assert daemon.stop() == 0
    health = [h for h in healths(col) if h["nonfinite_frames"] == nan][-1]
    assert health["concealed_gaps"] >= nan and health["trigger_resets"] == 0, health
    got = events(col)
    for m in got:
        EVENT_SCHEMA.validate(m)
    assert any(m["concealed_samples"] > 0 for m in got) and all(m["missing_samples"] == 0 for m in got)
    hits = detected(board.injected(), got)
    assert sum(hits) >= 0.9 * len(hits), hits
    book = ledger("NaN frames", board, [daemon], col, tmp_path)
    assert book.lost == 0 and book.stored == 0, book


def test_a_text_board_boot_banner_is_counted_and_the_channels_learnt(mqtt_broker, tmp_path, cleanup):
    banner = (b"\r\nGEO-ADC rev C bootloader 2.1\r\nchannels: 3, rate 4000 Hz, gain 1\r\n"
              b"self-test: 1, 2\r\n# calibration follows\r\n12,7\r\n")
    board = Board(tmp_path, speed=2.0, rate_per_min=30, seed=24, text=True, banner=banner)
    col, config = _start(tmp_path, mqtt_broker, cleanup, board, board={"text_mode": True, "text_fs": 4000.0})
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    daemon.opened(board)
    assert col.wait_for(lambda c: len(events(c)) >= 4 and healths(c), 2 * T), daemon.text()[-2000:]
    board.stop()
    assert daemon.stop() == 0 and "Traceback" not in daemon.text()
    health = healths(col)[-1]
    # The banner's lines that are not a row of 3 numbers (the comment is not one of them).
    assert health["bad_lines"] == 4 and health["link"]["state"] != "blind", health
    assert all(m["window"]["channels"] == ["Z", "N", "E"] for m in events(col))
    book = ledger("text board boot banner", board, [daemon], col, tmp_path)
    assert book.lost == 0 and book.stored == 0, book


# --------------------------------------------------------------------------- degraded links
def test_the_readme_faulty_link_detects_90_percent_and_health_and_doctor_name_it(mqtt_broker, tmp_path, cleanup):
    """README.md's simulator command (10 kHz, 1e-4 bit errors, 0.1 % dropped bytes, a 2 s disconnect a minute)
    through the real pty and daemon: recall >= 0.9 at SNR >= 6 dB, nothing lost, the link named."""
    from edge.field.doctor import FAIL, WARN, run_checks

    board = Board(tmp_path, fs=10000.0, speed=2.0, rate_per_min=20, seed=25, faults=README_LINK,
                  snr_db=(6.0, 30.0), link=True)
    col, config = _start(tmp_path, mqtt_broker, cleanup, board)
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    daemon.opened(board)
    assert col.wait_for(lambda c: len(board.injected()) >= 32 and any(h["uptime_s"] > 40 for h in healths(c)),
                        4 * T), daemon.text()[-2000:]
    health = healths(col)[-1]
    link = health["link"]
    assert link["state"] == "degraded" and "% of frames lost (CRC errors" in link["reason"], link
    assert health["concealed_gaps"] > 100 and health["blind_reason"] is None, health
    assert "board link degraded" in daemon.text()
    # The events the daemon could have classified: the board goes on for doctor after the daemon stops.
    last = board.sim.sample - round(2.0 * 10000.0)
    injected = [e for e in board.injected() if e["sample"] < last]
    assert daemon.stop() == 0
    # Doctor reads the same board (the daemon has stopped: one reader at a time) and names the link.
    serial = run_checks(str(config), ("serial",), serial_seconds=3.0)[0]
    # (blind when one of the 2 s disconnects falls in its 3 s read, else degraded)
    assert serial.status in (WARN, FAIL) and "; link " in serial.detail and "% of frames lost" in serial.detail, \
        serial
    board.stop()
    got = events(col)
    hits = detected(injected, got)
    # An unplug takes its 2 s of stream, then the reopen (the reader's back-off; pyserial flushes what the new
    # port already holds: up to 2 s of stream at twice real time) and the LTA's 2 s of warm-up; the bench
    # measures recall with all of that over 600 s. Here, over about 100 s of stream, recall is asserted on
    # the events outside those spans and reported for all.
    fs = 10000.0
    spans = [(a - 1.0 * fs, b + 5.0 * fs) for a, b in board.unplugged()]
    onsets = [e["sample"] for e in sorted(injected, key=lambda e: e["sample"])]
    clear = [h for h, at in zip(hits, onsets, strict=True) if not any(a <= at < b for a, b in spans)]
    summary = (f"README faulty link through the daemon: {sum(hits)} of {len(hits)} events detected, "
               f"{sum(clear)} of {len(clear)} outside {len(spans)} unplugs")
    print(summary)
    assert len(clear) >= 15 and sum(clear) >= 0.9 * len(clear), summary
    assert any(m["concealed_samples"] > 0 for m in got)
    book = ledger("README faulty link", board, [daemon], col, tmp_path)
    assert book.lost == 0 and book.stored == 0, book


def test_a_link_losing_most_frames_is_reported_blind_with_its_reason(mqtt_broker, tmp_path, cleanup):
    """The same faults on frames of 10 ms (940 bytes at 10 kHz): 18 % of them arrive and the trigger can
    hardly arm. Health, the journal and ``systemctl status`` say so and why."""
    board = Board(tmp_path, fs=10000.0, speed=1.0, rate_per_min=6, seed=26, faults=README_LINK,
                  samples_per_frame=100, link=True)
    col, config = _start(tmp_path, mqtt_broker, cleanup, board)
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    daemon.opened(board)
    assert col.wait_for(lambda c: any(h["blind_reason"] for h in healths(c)), T), daemon.text()[-2000:]
    health = [h for h in healths(col) if h["blind_reason"]][-1]
    reason = health["blind_reason"]
    assert reason.startswith("trigger not armed") and "% of frames lost" in reason and "gaps reset" in reason, reason
    assert health["link"]["state"] == "blind" and health["link"]["trigger_armed_pct"] < 50
    assert wait_until(lambda: "board link blind: trigger not armed" in daemon.text(), 10), daemon.text()[-2000:]
    board.stop()
    assert daemon.stop() == 0


def test_no_board_is_blind_no_samples(mqtt_broker, tmp_path, cleanup):
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    cleanup(col)
    config = write_config(tmp_path, str(tmp_path / "no-such-tty"), mqtt_broker.port)
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    assert col.wait_for(lambda c: any((h["blind_reason"] or "").startswith("no samples from the board")
                                      for h in healths(c) if h["uptime_s"] > 5), T), daemon.text()
    assert wait_until(lambda: "board link blind: no samples from the board" in daemon.text(), 10), daemon.text()
    assert daemon.stop() == 0
