"""Frame encoding, decoding, sequence tracking and text mode of firmware_bridge."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.decoder import FrameDecoder, SampleBlock, StatusReport, join_contiguous
from firmware_bridge.protocol import (
    HEADER_SIZE,
    MAX_FRAME,
    BoardStatus,
    SampleFormat,
    encode_samples,
    encode_status,
    max_samples_per_frame,
)
from firmware_bridge.textmode import TextDecoder, encode_lines
from firmware_bridge.vectors.generate import HERE as VECTOR_DIR
from firmware_bridge.vectors.generate import build


def decode_all(data: bytes, chunk: int = 0) -> tuple[list, FrameDecoder]:
    dec = FrameDecoder()
    out = []
    if chunk:
        for k in range(0, len(data), chunk):
            out += dec.feed(data[k:k + chunk])
    else:
        out += dec.feed(data)
    out += dec.flush()
    return out, dec


def test_python_encoder_reproduces_every_vector(vectors):
    for v in vectors:
        assert build(v) == (VECTOR_DIR / f"{v['name']}.bin").read_bytes(), v["name"]


def test_decoder_reads_every_binary_vector(vectors):
    for v in vectors:
        data = (VECTOR_DIR / f"{v['name']}.bin").read_bytes()
        if v["kind"] == "text":
            dec = TextDecoder(fs=100.0)
            blocks = dec.feed(data) + dec.flush()  # a few lines: the channel count is settled at the end
            assert np.array_equal(blocks[0].data, np.asarray(v["samples"], dtype=np.float64))
            continue
        (item,), dec = decode_all(data)
        assert dec.stats.crc_errors == 0 and dec.stats.bytes_skipped == 0
        assert (item.board_id, item.session, item.seq, item.fs) == (v["board_id"], v["session"], v["seq"], v["fs"])
        assert item.timestamp_ns == v["timestamp_ns"]
        if v["kind"] == "samples":
            assert isinstance(item, SampleBlock)
            assert item.sample_format == SampleFormat[v["format"].upper()]
            assert item.first_sample == v["first_sample"]
            expect = np.asarray(v["samples"], dtype=np.float32 if v["format"] == "float32" else np.float64)
            assert np.array_equal(item.data, expect.astype(np.float64))
        else:
            assert isinstance(item, StatusReport)
            assert item.sample == v["first_sample"]
            assert item.temperature_c == pytest.approx(v["temperature_c"], abs=0.005)
            assert item.supply_v == pytest.approx(v["supply_v"], abs=0.0005)
            assert item.buffer_overruns == v["buffer_overruns"]
            assert item.gain.tolist() == v["gain"] and item.clipped.tolist() == v["clipped"]


@pytest.mark.parametrize("fmt", list(SampleFormat))
@pytest.mark.parametrize("channels", [1, 3, 8, 32])
def test_round_trip_every_format_at_the_frame_bound(fmt, channels):
    rng = np.random.default_rng(channels)
    n = max_samples_per_frame(channels, fmt)
    if fmt == SampleFormat.FLOAT32:
        x = rng.standard_normal((channels, n)).astype(np.float32) * 1e5
    else:
        bits = {SampleFormat.INT16: 16, SampleFormat.INT24: 24, SampleFormat.INT32: 32}[fmt]
        x = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (channels, n))
        x[:, 0] = -(2 ** (bits - 1))
        x[:, -1] = 2 ** (bits - 1) - 1
    frame = encode_samples(x, fmt=fmt, fs=1000.0, first_sample=5, seq=1)
    assert len(frame) <= MAX_FRAME
    (b,), _ = decode_all(b"noise" + frame, chunk=97)
    assert b.data.shape == (channels, n) and np.array_equal(b.data, x.astype(np.float64))


def test_encoder_refuses_out_of_range_and_oversized():
    with pytest.raises(ValueError, match="outside"):
        encode_samples(np.array([[40000]]), fmt="int16", fs=1, first_sample=0, seq=0)
    with pytest.raises(ValueError, match="frame bound"):
        encode_samples(np.zeros((8, 600)), fmt="int32", fs=1, first_sample=0, seq=0)
    with pytest.raises(ValueError, match="allowed"):
        encode_samples(np.zeros((1, 1)), fmt="int12", fs=1, first_sample=0, seq=0)


def _frames(n: int, spf: int = 10, start_seq: int = 0, session: int = 0, board: int = 1) -> list[bytes]:
    return [encode_samples(np.full((2, spf), i), fmt="int24", fs=100.0, first_sample=i * spf,
                           seq=(start_seq + i) & 0xFFFFFFFF, session=session, board_id=board)
            for i in range(n)]


def test_gap_reported_with_size_and_reset_flag():
    f = _frames(6)
    out, dec = decode_all(b"".join(f[:2] + f[4:]))
    assert [b.gap_before for b in out] == [0, 0, 20, 0]
    assert [b.reset for b in out] == [True, False, True, False]
    assert dec.stats.sample_gaps == 1 and dec.stats.samples_missed == 20
    assert dec.stats.seq_gaps == 1 and dec.stats.frames_missed == 2
    gap = dec.stats.recent_gaps[0]
    assert (gap.start, gap.samples, gap.frames) == (20, 20, 2)


def test_duplicates_dropped_and_counted():
    f = _frames(3)
    out, dec = decode_all(b"".join([f[0], f[1], f[1], f[0], f[2]]))
    assert [b.seq for b in out] == [0, 1, 2]
    assert dec.stats.duplicates == 2 and dec.stats.sample_gaps == 0


def test_sequence_number_wraps_without_gap():
    out, dec = decode_all(b"".join(_frames(4, start_seq=0xFFFFFFFE)))
    assert [b.seq for b in out] == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1]
    assert dec.stats.seq_gaps == 0 and dec.stats.duplicates == 0


def test_new_session_resets_tracking():
    out, dec = decode_all(b"".join(_frames(3, session=1) + _frames(2, session=2)))
    assert len(out) == 5 and out[3].reset and out[3].gap_before == 0
    assert dec.stats.resets == 1 and dec.stats.duplicates == 0


def test_board_restart_without_new_session_is_recovered():
    out, dec = decode_all(b"".join(_frames(20) + _frames(20)))
    # The first frames after the restart look like duplicates until the run proves a restart.
    assert dec.stats.resets == 1
    assert out[-1].seq == 19 and out[-1].first_sample == 190
    assert sum(b.reset for b in out) == 2


def test_boards_are_tracked_separately():
    a, b = _frames(3, board=1), _frames(3, board=2)
    out, dec = decode_all(b"".join([a[0], b[0], a[1], b[1], a[2], b[2]]))
    assert len(out) == 6 and dec.stats.sample_gaps == 0 and dec.stats.duplicates == 0


def test_status_gain_reaches_following_blocks():
    st = BoardStatus(30.0, 5.0, 2, (2.0, 16.0), (0, 3))
    f = _frames(1)
    out, _ = decode_all(f[0] + encode_status(st, fs=100.0, sample=10, seq=1)
                        + encode_samples(np.ones((2, 10)), fmt="int24", fs=100.0, first_sample=10, seq=2))
    blocks = [o for o in out if isinstance(o, SampleBlock)]
    assert blocks[0].gain is None and blocks[1].gain.tolist() == [2.0, 16.0]
    assert blocks[1].gap_before == 0


def test_unknown_frame_type_skipped_and_counted():
    import struct
    import zlib

    from firmware_bridge.protocol import HEADER, SYNC
    head = HEADER.pack(SYNC, 1, 9, 0, 1, 0, 0, 1, 0, 0, 100000, 0, 0, 3, 0)
    unknown = head + b"abc"
    unknown += struct.pack("<I", zlib.crc32(unknown))
    f = _frames(2)
    out, dec = decode_all(f[0] + unknown + f[1])
    assert len(out) == 2 and dec.stats.unknown_frames == 1 and dec.stats.seq_gaps == 0


def test_truncated_frame_at_end_of_stream_is_not_returned():
    f = _frames(2)
    dec = FrameDecoder()
    assert len(dec.feed(f[0] + f[1][:-1])) == 1
    assert dec.buffered == len(f[1]) - 1
    assert dec.flush() == [] and dec.buffered == 0
    assert dec.stats.bytes_skipped == len(f[1]) - 1


def test_header_is_forty_bytes():
    assert HEADER_SIZE == 40


def test_join_contiguous_merges_runs_and_keeps_breaks():
    out, _ = decode_all(b"".join(_frames(3)))
    (whole,) = join_contiguous(out)
    assert whole.first_sample == 0 and whole.data.shape == (2, 30) and whole.seq == out[0].seq
    np.testing.assert_array_equal(whole.data, np.concatenate([b.data for b in out], axis=1))
    parts = join_contiguous([out[0], out[2]])
    assert [p.first_sample for p in parts] == [out[0].first_sample, out[2].first_sample]


# --------------------------------------------------------------------------- text mode
def test_text_mode_round_trip_in_odd_chunks():
    x = np.random.default_rng(0).integers(-(2**23), 2**23, (3, 500))
    data = encode_lines(x).replace(b"\n", b"\r\n")
    dec = TextDecoder(fs=1000.0)
    blocks = []
    for k in range(0, len(data), 13):
        blocks += dec.feed(data[k:k + 13])
    blocks += dec.flush()
    (joined,) = join_contiguous(blocks)
    y = joined.data
    assert np.array_equal(y, x) and dec.stats.bad_lines == 0 and dec.channels == 3


def test_text_mode_bad_lines_cost_one_sample_each():
    dec = TextDecoder(fs=100.0, channels=2)
    blocks = dec.feed(b"1,2\n3,4\n# comment\n5\n6,x\n7,8\n\n9,10\n11,12")
    blocks += dec.flush()
    assert [b.first_sample for b in blocks] == [0, 4, 6]
    assert [b.gap_before for b in blocks] == [0, 2, 0]
    assert join_contiguous(blocks[1:])[0].data.tolist() == [[7, 9, 11], [8, 10, 12]]
    assert dec.stats.bad_lines == 2 and dec.stats.sample_gaps == 1 and dec.stats.samples_missed == 2


def test_text_mode_drops_overlong_garbage_line():
    dec = TextDecoder(fs=100.0, channels=1)
    assert dec.feed(b"7" * 5000) == []
    assert dec.stats.bad_lines == 1
    assert dec.feed(b"\n3\n")[-1].data.tolist() == [[3.0]]


def test_frame_sharing_the_previous_crc_byte_is_found_in_any_chunking():
    # Frame b lost its first byte (0xA5) but frame a's CRC ends in 0xA5: both are on the wire intact.
    rng = np.random.default_rng(0)
    for first in range(5000):
        a = encode_samples(rng.integers(-100, 100, (1, 4)), fmt="int16", fs=100.0, first_sample=first, seq=0)
        if a[-1] == 0xA5:
            break
    b = encode_samples(np.ones((1, 4)), fmt="int16", fs=100.0, first_sample=first + 4, seq=1)
    wire = a + b[1:]
    for cut in range(1, len(wire)):
        dec = FrameDecoder()
        out = dec.feed(wire[:cut]) + dec.feed(wire[cut:]) + dec.flush()
        assert [o.seq for o in out] == [0, 1], cut


# --------------------------------------------------------------------------- CRC-valid nonsense
@pytest.mark.parametrize("fs, first", [(0.0, 0), (0.001, 0), (2e6, 0), (100.0, 2**64 - 5)])
def test_crc_valid_frames_with_impossible_headers_are_rejected_and_counted(fs, first):
    good = _frames(2)
    bad = encode_samples(np.ones((2, 10)), fmt="int24", fs=fs, first_sample=first, seq=2)
    out, dec = decode_all(b"".join([*good, bad]))
    assert len(out) == 2 and all(b.fs == 100.0 for b in out)
    assert dec.stats.rejected_frames == 1 and dec.stats.crc_errors == 0


def test_nan_or_inf_samples_become_a_gap_not_data():
    x = np.arange(60, dtype=np.float64).reshape(2, 30)
    frames = [encode_samples(x[:, i * 10:(i + 1) * 10], fmt="float32", fs=100.0, first_sample=i * 10, seq=i)
              for i in range(3)]
    poisoned = x[:, 10:20].copy()
    poisoned[1, 3], poisoned[0, 7] = np.nan, np.inf
    frames[1] = encode_samples(poisoned, fmt="float32", fs=100.0, first_sample=10, seq=1)
    out, dec = decode_all(b"".join(frames))
    assert [b.first_sample for b in out] == [0, 20]
    assert out[1].gap_before == 10 and out[1].reset  # the pipeline resets its filters here
    assert dec.stats.nonfinite_frames == 1 and dec.stats.samples_missed == 10
    assert all(np.isfinite(b.data).all() for b in out)


def test_text_mode_learns_the_channel_count_from_a_run_not_from_a_boot_banner():
    x = np.random.default_rng(1).integers(-1000, 1000, (3, 200))
    data = b"stopewatch-board v2 booting\n1,2\n" + encode_lines(x)
    dec = TextDecoder(fs=1000.0)
    blocks = []
    for k in range(0, len(data), 50):
        blocks += dec.feed(data[k:k + 50])
    blocks += dec.flush()
    assert dec.channels == 3 and dec.stats.bad_lines == 2  # the banner and the half line
    (joined,) = join_contiguous(blocks)
    np.testing.assert_array_equal(joined.data, x)


def test_text_mode_short_record_takes_the_commonest_count():
    dec = TextDecoder(fs=100.0)
    blocks = dec.feed(b"hello\n1,2,3\n4,5,6\n7,8\n") + dec.flush()
    assert dec.channels == 3 and [b.data.tolist() for b in blocks][0] == [[1, 4], [2, 5], [3, 6]]
    assert dec.stats.bad_lines == 2  # "hello" and the two-field line
