"""End to end through real pseudo-terminals: simulator -> pty -> pyserial -> decoder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.clock import iso_utc
from firmware_bridge.decoder import FrameDecoder, SampleBlock
from firmware_bridge.faults import FaultConfig
from firmware_bridge.reader import FileReader, SerialReader, open_reader
from firmware_bridge.simulator import BoardSimulator, FilePort, PtyPort
from firmware_bridge.sources import NoisePulseSource

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Consumer(threading.Thread):
    """Reads a SerialReader into a FrameDecoder on its own thread."""

    def __init__(self, reader: SerialReader) -> None:
        super().__init__(daemon=True)
        self.reader, self.decoder, self.items = reader, FrameDecoder(), []

    def run(self) -> None:
        for chunk in self.reader.chunks():
            self.items += self.decoder.feed(chunk)

    def wait_for_bytes(self, n: int, timeout: float = 60.0) -> None:
        t = time.monotonic() + timeout
        while self.decoder.stats.bytes_in < n and time.monotonic() < t:
            time.sleep(0.05)

    def finish(self) -> list:
        self.reader.close()
        self.join(10)
        return self.items + self.decoder.flush()


def test_pty_end_to_end_3ch_10khz_int24_with_bit_errors_and_drops():
    port = PtyPort()
    try:
        sim = BoardSimulator(NoisePulseSource(10000.0, 3, seed=5), fs=10000.0, channels=3, fmt="int24",
                             samples_per_frame=32, keep_counts=True, seed=11,
                             faults=FaultConfig(bit_error_rate=1e-4, drop_rate=1e-3))
        consumer = Consumer(SerialReader(port.path))
        consumer.start()
        t = time.monotonic() + 30
        while consumer.reader.stats.connects == 0 and time.monotonic() < t:
            time.sleep(0.02)
        report = sim.run(port, seconds=6.0, speed=5.0, keep_log=True)  # 60,000 samples per channel
        consumer.wait_for_bytes(report.bytes_written)
        items = consumer.finish()
    finally:
        port.close()
    sent = [r for r in report.log if r.kind == "samples"]
    intact = [r for r in sent if r.intact]
    blocks = [b for b in items if isinstance(b, SampleBlock)]
    assert consumer.decoder.stats.bytes_in == report.bytes_written
    assert 0.2 * len(sent) < len(intact) < 0.9 * len(sent)  # the faults really bit
    # Every intact frame recovered, nothing else, bit for bit.
    assert [b.seq for b in blocks] == [r.seq for r in intact]
    for b, r in zip(blocks, intact, strict=True):
        assert b.first_sample == r.first_sample and np.array_equal(b.data, r.counts)
    # Gaps reported exactly: a run of lost frames between intact ones is one gap of their samples.
    expected = [(r.first_sample, a.first_sample + a.n) for a, r in zip(intact, intact[1:], strict=False)
                if r.first_sample != a.first_sample + a.n]
    got = [(b.first_sample, b.first_sample - b.gap_before) for b in blocks if b.gap_before]
    assert got == expected
    stats = consumer.decoder.stats
    assert stats.sample_gaps == len(expected)
    assert stats.samples_missed == sum(a - b for a, b in expected)
    assert stats.crc_errors > 0 and stats.resyncs > 0


def test_reader_reconnects_when_the_device_comes_back(tmp_path):
    link = tmp_path / "ttyBOARD"
    port = PtyPort(link)
    try:
        sim = BoardSimulator(NoisePulseSource(2000.0, 1, seed=1), fs=2000.0, channels=1, fmt="int16", seed=2)
        consumer = Consumer(SerialReader(str(link), backoff_initial=0.05, backoff_max=0.2))
        consumer.start()
        t = time.monotonic() + 30
        while consumer.reader.stats.connects == 0 and time.monotonic() < t:
            time.sleep(0.02)
        sim.run(port, seconds=0.5, speed=0)
        consumer.wait_for_bytes(1)
        time.sleep(0.3)
        port.disconnect()  # USB unplug: the path vanishes, the reader's fd errors
        sim.source.next_block(2000)  # the board keeps sampling while unplugged: one second is lost
        sim.sample += 2000
        time.sleep(0.5)
        port.reconnect()  # the device is back under the same path
        t = time.monotonic() + 30
        while consumer.reader.stats.connects < 2 and time.monotonic() < t:
            time.sleep(0.02)
        before = consumer.decoder.stats.bytes_in
        report = sim.run(port, seconds=2.0, speed=0)
        consumer.wait_for_bytes(before + report.bytes_written)
        items = consumer.finish()
    finally:
        port.close()
    assert consumer.reader.stats.disconnects >= 1 and consumer.reader.stats.connects >= 2
    blocks = [b for b in items if isinstance(b, SampleBlock)]
    assert blocks[-1].end_sample == 4000
    gaps = [b.gap_before for b in blocks if b.gap_before]
    assert len(gaps) == 1 and gaps[0] >= 2000  # the unplugged second (plus bytes lost in the old pty)


def test_file_replay_reader(tmp_path):
    path = tmp_path / "stream.bin"
    port = FilePort(path)
    sim = BoardSimulator(NoisePulseSource(1000.0, 2, seed=3), fs=1000.0, channels=2, fmt="int32", seed=4,
                         keep_counts=True)
    report = sim.run(port, seconds=3.0, speed=0, keep_log=True)
    port.close()
    reader = open_reader(str(path), read_size=1000)
    assert isinstance(reader, FileReader)
    dec = FrameDecoder()
    blocks = [b for c in reader.chunks() for b in dec.feed(c) if isinstance(b, SampleBlock)]
    sent = np.concatenate([r.counts for r in report.log if r.kind == "samples"], axis=1)
    assert np.array_equal(np.concatenate([b.data for b in blocks], axis=1), sent)
    assert dec.stats.status_frames == 3 and blocks[-1].gain.tolist() == [1.0, 1.0]


@pytest.mark.slow
def test_cli_board_simulate_through_a_pty(tmp_path):
    """`stopewatch board simulate` with the benchmark's StreamSynth, read back through pyserial."""
    pytest.importorskip("training.synthetic.stream")
    link = tmp_path / "ttySIM"
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "board", "simulate", "--link", str(link), "--seconds", "20",
         "--speed", "10", "--fs", "4000", "--truth", str(truth), "--events-per-min", "60", "--seed", "7",
         "--bit-error-rate", "1e-5", "--timestamps"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        first = proc.stdout.readline()
        assert str(link) in first, first + proc.stderr.read()
        consumer = Consumer(SerialReader(str(link)))
        consumer.start()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        time.sleep(0.5)
        items = consumer.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
    blocks = [b for b in items if isinstance(b, SampleBlock)]
    assert len(blocks) > 100 and blocks[0].timestamp_ns is not None and blocks[0].data.shape[0] == 3
    assert "sent 80000 samples" in out
    events = [json.loads(line) for line in truth.read_text().splitlines()]
    assert events and {"sample", "time", "label", "snr_db"} <= set(events[0])
    # Ground-truth times agree with the board's time stamps (both are the board's clock).
    checked = 0
    for e in events:
        b = next((b for b in blocks if b.first_sample <= e["sample"] < b.end_sample), None)
        if b is not None:
            # Both round to the nanosecond and then to the microsecond, so they may differ by 1 us.
            ours = b.timestamp_ns + (e["sample"] - b.first_sample) * 1e9 / 4000.0
            stamped = datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
            theirs = (stamped - EPOCH) // timedelta(microseconds=1) * 1000
            assert abs(ours - theirs) <= 1500, (iso_utc(ours), e["time"])
            checked += 1
    assert checked > 0
