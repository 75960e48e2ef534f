"""The miniSEED ring archive read back by ObsPy: samples, gaps, time stamps, the ring's bound, its faults.

The archive is the real writer (pymseed/libmseed) fed by the real sample clock; ObsPy, an independent
reader, reads the SDS tree back. The daemon's own round trip over a pty is in test_standards_daemon.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge.gateway.archive import RingArchive, sds_path
from edge.gateway.config import ArchiveConfig, StreamConfig
from edge.gateway.streams import band_code, orientation_codes, stream_codes
from firmware_bridge.clock import SampleClock

obspy = pytest.importorskip("obspy", reason="ObsPy (the dev extra) reads the archive back")
from obspy.clients.filesystem.sds import Client as SdsClient  # noqa: E402

T0 = 1_767_268_800 * 10**9  # 2026-01-01T12:00:00Z


def gps_run(archive: RingArchive, fs: float, blocks: list[tuple[int, np.ndarray]]) -> SampleClock:
    """Feed (first sample, counts) blocks with GPS stamps of T0 + index / fs, as a disciplined board sends."""
    clock = SampleClock(fs)
    for first, counts in blocks:
        clock.observe(first, counts.shape[1], board_ns=T0 + round(first * 1e9 / fs))
        archive.write(counts, first, clock)
    archive.flush()
    return clock


def test_seed_channel_codes_follow_the_rate_and_the_sensor():
    assert [band_code(fs) for fs in (4000, 1000, 500, 250, 200, 80, 50, 10, 5)] == list("GGDDEESSM")
    assert [band_code(fs, broadband=True) for fs in (4000, 500, 100, 20)] == list("FCHB")
    assert band_code(10_000) == "J"
    codes = stream_codes(StreamConfig(network="ZA", station="L29E"), 4000.0, 3)
    assert codes.channels == ("GPZ", "GPN", "GPE") and codes.nslc(0) == "ZA.L29E.00.GPZ"
    assert stream_codes(StreamConfig(instrument="accelerometer"), 200.0, 1).channels == ("HNZ",)
    assert orientation_codes(2) == "12" and orientation_codes(3, "Z12") == "Z12"


@pytest.mark.parametrize(("encoding", "record_bytes"),
                         [("steim2", 4096), ("steim1", 4096), ("int32", 4096), ("int32", 65536)])
def test_gps_stream_with_gaps_reads_back_exactly(tmp_path, encoding, record_bytes):
    fs = 4000.0
    archive = RingArchive(ArchiveConfig(min_free_bytes=0, encoding=encoding, record_bytes=record_bytes), tmp_path)
    codes = stream_codes(StreamConfig(), fs, 3)
    archive.start(codes, fs, "int24")
    rng = np.random.default_rng(1)
    blocks, at = [], 0
    for k in range(300):  # 30 s in 0.1 s frames; two holes of 1.5 s and 0.05 s
        if k in (100, 200):
            at += 6000 if k == 100 else 200
        blocks.append((at, np.rint(rng.normal(0, 2e5, (3, 400)) * (1 + (k % 7)))))
        at += 400
    clock = gps_run(archive, fs, blocks)
    assert clock.quality == 100 and archive.stats.gaps == 2 and archive.stats.time_tears == 0
    assert archive.stats.write_errors == 0 and archive.stats.records_dropped == 0
    client = SdsClient(str(tmp_path))
    for row, cha in enumerate(codes.channels):
        st = client.get_waveforms("XX", "STA01", "00", cha, obspy.UTCDateTime(T0 / 1e9),
                                  obspy.UTCDateTime(T0 / 1e9 + 60))
        st.merge(-1)  # contiguous records joined, gaps kept
        st.sort()
        runs = np.split(np.arange(len(blocks)), [100, 200])
        assert len(st) == 3, st
        for tr, run in zip(st, runs, strict=True):
            first = blocks[run[0]][0]
            sent = np.concatenate([blocks[i][1][row] for i in run]).astype(np.int32)
            assert np.array_equal(tr.data, sent)  # the board's counts, sample for sample
            assert abs(tr.stats.starttime.ns - (T0 + round(first * 1e9 / fs))) <= 1000  # within the 1 us stated
            assert tr.stats.sampling_rate == fs
    details = obspy.read(str(tmp_path / sds_path(codes, 0, T0)), details=True)
    assert {tr.stats.mseed.blkt1001.timing_quality for tr in details} == {100}
    assert {tr.stats.mseed.encoding for tr in details} == {encoding.upper()}
    assert {tr.stats.mseed.record_length for tr in details} == {record_bytes}


def test_float_boards_are_archived_as_float32(tmp_path):
    fs = 1000.0
    archive = RingArchive(ArchiveConfig(min_free_bytes=0, record_bytes=512), tmp_path)
    codes = stream_codes(StreamConfig(), fs, 1)
    archive.start(codes, fs, "float32")
    data = np.random.default_rng(2).normal(0, 1e-3, (1, 5000)).astype(np.float32)
    gps_run(archive, fs, [(0, data[:, :2500]), (2500, data[:, 2500:])])
    st = obspy.read(str(tmp_path / sds_path(codes, 0, T0)))
    st.merge(-1)
    assert len(st) == 1 and st[0].data.dtype == np.float32 and np.array_equal(st[0].data, data[0])
    assert st[0].id == "XX.STA01.00.GPZ"  # 1000 Hz is still band G


def test_the_ring_stays_under_its_limit_over_a_simulated_day(tmp_path):
    """24 h of a 100 Hz triaxial board from noon to noon (two day files per channel), fast-forwarded: after
    every 100 s block the files on disk stay within max_bytes, the oldest data go first, the newest hour
    is whole."""
    fs, limit = 100.0, 3_000_000
    cfg = ArchiveConfig(max_bytes=limit, min_free_bytes=0, record_bytes=4096)
    archive = RingArchive(cfg, tmp_path)
    codes = stream_codes(StreamConfig(), fs, 3)
    archive.start(codes, fs, "int24")
    clock = SampleClock(fs)
    rng = np.random.default_rng(3)
    n, largest, day_s = 10_000, 0, 86_400
    last = None
    for first in range(0, int(day_s * fs), n):
        counts = np.rint(rng.normal(0, 300, (3, n)))
        clock.observe(first, n, board_ns=T0 + round(first * 1e9 / fs))
        archive.write(counts, first, clock)
        on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*.D.*"))
        assert on_disk == archive.stats.size_bytes
        largest = max(largest, on_disk)
        last = counts
    archive.flush()
    assert largest <= limit and archive.stats.size_bytes <= limit
    assert archive.stats.records_trimmed > 0 and archive.stats.files_deleted >= 3  # the first day went whole
    assert archive.stats.bytes_written > 5 * limit  # it really wrapped around
    days = sorted({p.name[-8:] for p in tmp_path.rglob("*.D.*")})
    assert days == ["2026.002"], days  # noon-to-midnight of 1 January is gone, 2 January remains
    end = obspy.UTCDateTime(T0 / 1e9 + day_s)
    for path in tmp_path.rglob("*.D.*"):  # a day file holds its day only (blocks are split at midnight)
        st = obspy.read(str(path))
        assert st[0].stats.starttime >= obspy.UTCDateTime(2026, 1, 2) and st[-1].stats.endtime < end
    st = SdsClient(str(tmp_path)).get_waveforms("XX", "STA01", "00", "EPZ", end - 3600, end)
    st.merge(-1)
    assert len(st) == 1 and st[0].stats.npts == 3600 * fs  # the newest hour, without a hole
    assert np.array_equal(st[0].data[-n:], last[0].astype(np.int32))


def test_max_days_drops_whole_old_days(tmp_path):
    fs = 10.0
    archive = RingArchive(ArchiveConfig(max_days=1.0, min_free_bytes=0, record_bytes=512), tmp_path)
    codes = stream_codes(StreamConfig(), fs, 1)
    archive.start(codes, fs, "int24")
    hours = 4 * 24
    gps_run(archive, fs, [(h * 36_000, np.full((1, 36_000), h, float)) for h in range(hours)])
    days = sorted(p.name[-8:] for p in tmp_path.rglob("*.D.*"))
    first = obspy.read(str(sorted(tmp_path.rglob("*.D.2026.005"))[0]))
    assert first[0].stats.starttime == obspy.UTCDateTime(2026, 1, 5)  # the block over midnight was split there
    # 1 Jan (from noon) .. 5 Jan (to noon): the newest data are on 5 Jan; 3 Jan ended 1.5 days before them.
    assert days == ["2026.004", "2026.005"], days


def test_a_full_disk_or_a_broken_path_is_counted_not_raised(tmp_path, caplog):
    fs = 100.0
    codes = stream_codes(StreamConfig(), fs, 1)
    data = [(0, np.zeros((1, 20_000)))]
    full = RingArchive(ArchiveConfig(min_free_bytes=10**15, record_bytes=512), tmp_path / "a")
    full.start(codes, fs, "int16")
    with caplog.at_level(logging.ERROR, logger="stopewatch.archive"):
        gps_run(full, fs, data)
    assert full.stats.records == 0 and full.stats.records_dropped > 0
    assert "below archive.min_free_bytes" in full.stats.last_error and "min_free_bytes" in caplog.text
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    broken = RingArchive(ArchiveConfig(min_free_bytes=0, record_bytes=512), blocker / "archive")
    broken.start(codes, fs, "int16")
    gps_run(broken, fs, data)
    assert broken.stats.write_errors > 0 and broken.stats.records == 0
    assert str(blocker) in broken.stats.last_error


def test_a_restart_continues_the_same_ring(tmp_path):
    fs = 100.0
    codes = stream_codes(StreamConfig(), fs, 1)
    first = RingArchive(ArchiveConfig(min_free_bytes=0, record_bytes=512), tmp_path)
    first.start(codes, fs, "int16")
    gps_run(first, fs, [(0, np.ones((1, 5000)))])
    again = RingArchive(ArchiveConfig(min_free_bytes=0, record_bytes=512), tmp_path)
    assert again.stats.size_bytes == first.stats.size_bytes > 0 and again.stats.oldest == "2026-001"


def test_archive_config_errors_are_one_line():
    from edge.errors import UserError
    from edge.gateway.config import parse_config

    for table, message in [({"archive": {"record_bytes": 1000}}, "archive.record_bytes = 1000; allowed: a power"),
                           ({"archive": {"max_bytes": 10}}, "archive.max_bytes = 10; allowed 1e+06"),
                           ({"stream": {"station": "toolong"}}, "stream.station = 'toolong'; allowed: 1-5"),
                           ({"stream": {"instrument": "laser"}}, "stream.instrument = 'laser'; allowed: geophone"),
                           ({"stream": {"orientation": "zne"}}, "stream.orientation = 'zne'; allowed")]:
        with pytest.raises(UserError, match=message.replace("+", r"\+").replace("(", r"\(")) as err:
            parse_config(table, "node.toml")
        assert "node.toml" in str(err.value) and "\n" not in str(err.value)


def test_archive_path_defaults_beside_the_state(tmp_path):
    from edge.gateway.config import parse_config

    cfg = parse_config({"node": {"state_dir": str(tmp_path)}})
    assert cfg.archive_path == Path(tmp_path) / "archive"
