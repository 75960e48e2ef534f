"""Simulator ground truth, clipping and text mode; the sample clock."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware_bridge.clock import SampleClock, iso_utc, parse_iso_utc
from firmware_bridge.decoder import FrameDecoder, SampleBlock, StatusReport
from firmware_bridge.faults import FaultConfig, FaultInjector
from firmware_bridge.simulator import BoardSimulator, FilePort
from firmware_bridge.sources import NoisePulseSource
from firmware_bridge.textmode import TextDecoder


def test_truth_jsonl_and_timestamps(tmp_path):
    src = NoisePulseSource(1000.0, 3, seed=1, rate_per_min=120)
    start = parse_iso_utc("2026-03-01T12:00:00Z")
    sim = BoardSimulator(src, fs=1000.0, channels=3, fmt="int24", start_ns=start, timestamps=True, seed=1)
    port = FilePort(tmp_path / "s.bin")
    report = sim.run(port, seconds=30, speed=0, truth=tmp_path / "t.jsonl")
    port.close()
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(lines) == report.events > 20
    for e in lines:
        assert e["label"] == "pulse" and 0 <= e["sample"] < 30000
        assert e["time"] == iso_utc(start + e["sample"] * 1_000_000)
    items = FrameDecoder().feed((tmp_path / "s.bin").read_bytes())
    assert items[1].timestamp_ns == start + items[1].first_sample * 1_000_000


def test_clipping_is_counted_and_reported():
    class Loud:
        def next_block(self, n):
            return np.full((2, n), 100.0, np.float32), []

    sim = BoardSimulator(Loud(), fs=100.0, channels=2, fmt="int16", scale=1000.0, samples_per_frame=10)
    frames, _ = sim.next_frames(10)
    frames2, _ = sim.next_frames(90)
    frames3, _ = sim.next_frames(10)  # a status frame every second (100 samples)
    items = FrameDecoder().feed(b"".join(f[1] for f in frames + frames2 + frames3))
    assert items[1].data.max() == 32767
    status = [i for i in items if isinstance(i, StatusReport)]
    assert status[-1].clipped.tolist() == [100, 100]


def test_text_mode_simulator_round_trip(tmp_path):
    sim = BoardSimulator(NoisePulseSource(500.0, 3, seed=2), fs=500.0, channels=3, fmt="int24", text=True,
                         keep_counts=True)
    port = FilePort(tmp_path / "t.txt")
    report = sim.run(port, seconds=2, speed=0, keep_log=True)
    port.close()
    dec = TextDecoder(fs=500.0)
    blocks = dec.feed((tmp_path / "t.txt").read_bytes())
    got = np.concatenate([b.data for b in blocks], axis=1)
    assert np.array_equal(got, np.concatenate([r.counts for r in report.log], axis=1))
    assert dec.stats.bad_lines == 0 and isinstance(blocks[0], SampleBlock)


def test_fault_injector_intact_flag_is_truthful():
    inj = FaultInjector(FaultConfig(bit_error_rate=1e-3, drop_rate=1e-3, insert_rate=1e-3, garbage_rate=0.3),
                        seed=0)
    frame = bytes(range(256)) * 2
    for _ in range(300):
        wire, intact = inj.apply(frame)
        assert intact == (frame in wire)
    assert inj.bits_flipped and inj.bytes_dropped and inj.bytes_inserted and inj.garbage_bytes


def test_fault_config_rejects_bad_rates():
    with pytest.raises(ValueError, match="allowed 0..1"):
        FaultConfig(drop_rate=2.0)


def _arrivals(rng, fs, n_blocks, spb, drift_ppm, t0):
    """Host arrival times of blocks: true time of the last sample plus USB/scheduler latency."""
    end_idx = (np.arange(n_blocks) + 1) * spb
    true = t0 + end_idx / (fs * (1 + drift_ppm * 1e-6)) * 1e9
    latency = 1e6 + rng.exponential(3e6, n_blocks) + rng.integers(0, 2, n_blocks) * 8e6  # 1 ms + jitter + USB
    latency[rng.random(n_blocks) < 0.01] += 200e6  # occasional long scheduling delays
    return end_idx, true, true + latency


def test_clock_tracks_drift_within_a_few_ms_despite_jitter():
    fs, spb = 10000.0, 100
    rng = np.random.default_rng(0)
    t0 = parse_iso_utc("2026-01-01T00:00:00Z")
    end_idx, true, arrival = _arrivals(rng, fs, 6000, spb, drift_ppm=80.0, t0=t0)  # 60 s at 100 blocks/s
    clock = SampleClock(fs)
    errors = []
    for i, (idx, t) in enumerate(zip(end_idx, arrival, strict=True)):
        clock.observe(int(idx) - spb, spb, host_ns=int(t))
        if i > 300:
            errors.append(clock.time_ns(int(idx)) - true[i])
    errors = np.abs(np.array(errors)) / 1e6
    assert np.percentile(errors, 99) < 3.0  # ms: latency jitter is 3 ms mean plus 8 ms USB frames
    assert abs(clock.rate / fs - (1 + 80e-6)) < 30e-6  # the board's crystal runs 80 ppm fast


def test_clock_uses_board_time_stamps_exactly():
    clock = SampleClock(1000.0)
    t0 = parse_iso_utc("2026-01-01T00:00:00.5Z")
    for k in range(50):
        clock.observe(k * 10, 10, board_ns=t0 + k * 10_000_000, host_ns=t0 + 5_000_000_000)
    assert clock.disciplined and clock.iso(12345) == "2026-01-01T00:00:12.845000Z"


def test_clock_restarts_after_host_clock_step():
    clock = SampleClock(100.0)
    for k in range(20):
        clock.observe(k * 10, 10, host_ns=(k + 1) * 100_000_000)
    clock.observe(200, 10, host_ns=3600 * 10**9)  # NTP stepped the host clock by an hour
    assert clock.restarts == 1 and abs(clock.time_ns(210) - 3600 * 10**9) < 10**6
