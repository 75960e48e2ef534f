"""Incremental decoder: serial bytes in, numpy sample blocks and status reports out.

The decoder searches the byte stream for the sync marker, checks the header's fields
for consistency and the CRC-32 over the whole frame, and only then hands the frame
on. After corrupted, truncated or inserted bytes it resumes at the next sync marker
(one byte past a rejected candidate), so every frame that arrived intact is found.
Samples are converted with numpy, one call per frame, never a Python loop per sample.

Per board it tracks the sequence number and the absolute index of the next expected
sample, so each block says how many samples are missing before it (``gap_before``)
and whether the filter state must be reset (``reset``). Duplicated frames are dropped.

A frame can pass its CRC and still be nonsense (a firmware bug, a board in a bad state): a sample rate
outside 1 Hz..1 MHz or a sample index beyond 2^62 is rejected and counted (``rejected_frames``), and a
frame holding NaN or infinite samples is dropped and becomes a gap (``nonfinite_frames``), which the
pipeline conceals (or resets at, when long) instead of averaging NaN into its trigger.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from firmware_bridge.protocol import (
    BYTES_PER_SAMPLE,
    CRC_SIZE,
    FLAG_TIME_VALID,
    HEADER,
    HEADER_SIZE,
    MAX_CHANNELS,
    MAX_FRAME_TYPE,
    MAX_PAYLOAD,
    STATUS_CHANNEL_DTYPE,
    STATUS_FIXED,
    SYNC,
    VERSION,
    FrameType,
    SampleFormat,
    status_payload_size,
)

_NUMPY_DTYPE = {SampleFormat.INT16: np.dtype("<i2"), SampleFormat.INT32: np.dtype("<i4"),
                SampleFormat.FLOAT32: np.dtype("<f4")}
_FORMATS = {int(f): f for f in SampleFormat}


@dataclass(frozen=True, eq=False)
class SampleBlock:
    """Samples of one frame in board units (ADC counts), shape (channels, n).

    ``first_sample`` is the absolute index of ``data[:, 0]`` since the board's session
    started. ``gap_before`` is the number of samples lost between the previous block of
    this board and this one (0 = contiguous). ``reset`` is True for the first block of a
    board or session and after a lost stretch: filter state should start afresh.
    ``gain`` is the PGA gain per channel from the board's latest status frame (None
    until one arrived).
    """

    board_id: int
    session: int
    seq: int
    first_sample: int
    data: np.ndarray
    fs: float
    sample_format: SampleFormat | None  # None in text mode
    timestamp_ns: int | None
    gap_before: int
    reset: bool
    gain: np.ndarray | None

    @property
    def channels(self) -> int:
        return self.data.shape[0]

    @property
    def end_sample(self) -> int:
        """Absolute index one past this block's last sample."""
        return self.first_sample + self.data.shape[1]


@dataclass(frozen=True, eq=False)
class StatusReport:
    """A board's status frame: temperature (degC), supply (V), cumulative buffer overruns,
    per-channel PGA gain and cumulative clipped-sample counts, taken at absolute ``sample``."""

    board_id: int
    session: int
    seq: int
    sample: int
    fs: float
    timestamp_ns: int | None
    temperature_c: float
    supply_v: float
    buffer_overruns: int
    gain: np.ndarray
    clipped: np.ndarray


@dataclass(frozen=True)
class Gap:
    """Samples lost on one board: ``samples`` samples from absolute index ``start``; ``frames`` sequence
    numbers were skipped (status frames included)."""

    board_id: int
    start: int
    samples: int
    frames: int


@dataclass
class DecoderStats:
    """Counters since the decoder was created: what the health topic reports."""

    bytes_in: int = 0
    frames: int = 0
    sample_frames: int = 0
    status_frames: int = 0
    unknown_frames: int = 0
    samples: int = 0
    crc_errors: int = 0
    resyncs: int = 0
    bytes_skipped: int = 0
    seq_gaps: int = 0
    frames_missed: int = 0
    sample_gaps: int = 0
    samples_missed: int = 0
    duplicates: int = 0
    resets: int = 0
    rejected_frames: int = 0  # CRC-valid frames with an impossible header (rate, sample index)
    nonfinite_frames: int = 0  # float frames with NaN/inf samples, dropped and turned into a gap
    lines: int = 0  # text mode: lines read
    bad_lines: int = 0  # text mode: lines that were not a row of numbers of the board's channel count
    recent_gaps: deque[Gap] = field(default_factory=lambda: deque(maxlen=256))

    def as_dict(self) -> dict[str, int]:
        """The integer counters, for JSON."""
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int)}


class Decoder(Protocol):
    """What the daemon needs of a decoder of the board's byte stream (binary frames or text lines)."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[SampleBlock | StatusReport]: ...

    def flush(self) -> list[SampleBlock | StatusReport]: ...

    @property
    def stats(self) -> DecoderStats: ...


@dataclass
class _BoardState:
    session: int
    next_seq: int
    next_sample: int
    gain: np.ndarray | None = None
    dup_run: int = 0  # consecutive "duplicates" that follow each other: a board restarted without new session
    dup_next_seq: int = -1


# This many consecutive frames that look like duplicates but continue each other's sequence mean the
# board restarted its counters without changing its session id: start tracking afresh.
RESTART_RUN = 8
MIN_FS_HZ, MAX_FS_HZ = 1.0, 1e6  # sample rates a real board can have
MAX_SAMPLE_INDEX = 2**62  # absolute indices beyond this would overflow int64 arithmetic downstream

_OK, _BAD, _WAIT = 0, 1, 2


def payload_to_counts(payload: bytes | bytearray | memoryview, fmt: SampleFormat, channels: int,
                      dtype: np.dtype | type = np.float64) -> np.ndarray:
    """Interleaved payload bytes -> (channels, n) array of counts in ``dtype``."""
    if fmt == SampleFormat.INT24:
        b = np.frombuffer(payload, np.uint8).reshape(-1, 3)
        # Put the 3 bytes in the top of an int32, then shift right arithmetically: sign extension for free.
        wide = np.zeros((b.shape[0], 4), np.uint8)
        wide[:, 1:] = b
        raw = wide.view("<i4").reshape(-1) >> 8
    else:
        raw = np.frombuffer(payload, _NUMPY_DTYPE[fmt])
    return raw.reshape(-1, channels).T.astype(dtype)


class FrameDecoder:
    """Turns chunks of bytes into SampleBlock and StatusReport objects.

    Feed it whatever the serial port returns; it keeps at most one frame's worth of
    undecided bytes between calls. It never raises on bad input.
    """

    def __init__(self, dtype: np.dtype | type = np.float64) -> None:
        self.dtype = np.dtype(dtype)
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._boards: dict[int, _BoardState] = {}
        self._skipping = False  # bytes were skipped since the last good frame

    def feed(self, data: bytes | bytearray | memoryview) -> list[SampleBlock | StatusReport]:
        """Decode as many complete frames as ``data`` (appended to what is buffered) allows."""
        self.stats.bytes_in += len(data)
        self._buf += data
        out: list[SampleBlock | StatusReport] = []
        self._scan(out, final=False)
        return out

    def flush(self) -> list[SampleBlock | StatusReport]:
        """End of stream: decide every buffered candidate (incomplete ones are dropped)."""
        out: list[SampleBlock | StatusReport] = []
        self._scan(out, final=True)
        self._skipping = False
        return out

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    # ------------------------------------------------------------------ internals
    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        if not self._skipping:
            self.stats.resyncs += 1
            self._skipping = True
        self.stats.bytes_skipped += n

    def _check(self, buf: bytearray, mv: memoryview, idx: int, n: int) -> tuple[int, tuple, int]:
        """Candidate frame at ``idx``: (_OK, fields, end), (_BAD, (), 0) or (_WAIT, (), 0) for more bytes."""
        if n - idx < HEADER_SIZE:
            return _WAIT, (), 0
        h = HEADER.unpack_from(buf, idx)
        if not self._plausible(h[1], h[2], h[4], h[5], h[8], h[13]):
            return _BAD, (), 0
        end = idx + HEADER_SIZE + h[13] + CRC_SIZE
        if end > n:
            return _WAIT, (), 0
        if zlib.crc32(mv[idx:end - CRC_SIZE]) != int.from_bytes(mv[end - CRC_SIZE:end], "little"):
            self.stats.crc_errors += 1
            return _BAD, (), 0
        return _OK, h, end

    def _scan(self, out: list, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        start = 0  # bytes before `start` are consumed as frames or counted as skipped
        pos = 0  # where the next sync search begins
        cut = 0  # bytes before `cut` are dropped from the buffer when the scan ends
        mv = memoryview(buf)
        try:
            while True:
                idx = buf.find(SYNC, pos)
                if idx < 0:
                    # Keep a trailing first sync byte: it may begin the next frame.
                    cut = n - 1 if (not final and n > pos and buf[n - 1] == SYNC[0]) else n
                    break
                state, h, end = self._check(buf, mv, idx, n)
                if state == _BAD or (state == _WAIT and final):
                    pos = idx + 1
                    continue
                if state == _WAIT:
                    cut = idx
                    break
                (_, _, ftype, flags, channels, fmt, _, board, nsamp, seq, fs_mhz, first, ts, _, session) = h
                self._skip(idx - start)
                self._skipping = False
                self.stats.frames += 1
                item = self._frame(ftype, channels, fmt, board, nsamp, seq, fs_mhz / 1000.0, first,
                                   ts if flags & FLAG_TIME_VALID else None, session,
                                   mv[idx + HEADER_SIZE:end - CRC_SIZE])
                if item is not None:
                    out.append(item)
                start = pos = end
                # The next frame may begin inside this one's CRC: a frame torn short by k <= 3 bytes passes
                # its CRC when the missing bytes equal the next frame's first ones (then its content is
                # the genuine frame's), and a dropped sync byte can equal the previous CRC's last byte.
                nxt = buf.find(SYNC, end - CRC_SIZE, end + 1)
                if nxt >= 0:
                    pos = nxt
                elif end == n and buf[n - 1] == SYNC[0] and not final:
                    pos = n - 1  # that byte may be the sync of a frame whose rest has not arrived yet
        finally:
            mv.release()
        self._skip(cut - start)
        del buf[:cut]

    @staticmethod
    def _plausible(version: int, ftype: int, channels: int, fmt: int, nsamp: int, plen: int) -> bool:
        if version != VERSION or plen > MAX_PAYLOAD or not 1 <= channels <= MAX_CHANNELS:
            return False
        if ftype == FrameType.SAMPLES:
            return (fmt in _FORMATS and nsamp > 0
                    and plen == channels * nsamp * BYTES_PER_SAMPLE[_FORMATS[fmt]])
        if ftype == FrameType.STATUS:
            return plen == status_payload_size(channels)
        return 0 < ftype < MAX_FRAME_TYPE

    def _track(self, board: int, session: int, seq: int, first: int, end: int
               ) -> tuple[bool, int, bool, _BoardState]:
        """Sequence bookkeeping. Returns (accept, gap_before, reset, state)."""
        st = self._boards.get(board)
        if st is not None and st.session == session:
            dseq = (seq - st.next_seq) & 0xFFFFFFFF
            if dseq >= 0x80000000 or (end > first and end <= st.next_sample):
                # Sequence number already seen, or samples already delivered.
                st.dup_run = st.dup_run + 1 if seq == st.dup_next_seq else 1
                st.dup_next_seq = (seq + 1) & 0xFFFFFFFF
                if st.dup_run < RESTART_RUN:
                    self.stats.duplicates += 1
                    return False, 0, False, st
                self.stats.duplicates -= RESTART_RUN - 1  # they were a restarted board, not duplicates
                st = None
        if st is None or st.session != session:
            if st is not None or board in self._boards:
                self.stats.resets += 1
            # A status frame does not tell where the next sample frame starts: -1 = not known yet.
            st = _BoardState(session, (seq + 1) & 0xFFFFFFFF, end if end > first else -1)
            self._boards[board] = st
            return True, 0, True, st
        st.dup_run = 0
        gap = 0
        reset = False
        if dseq:
            self.stats.seq_gaps += 1
            self.stats.frames_missed += dseq
        if end > first:  # a sample frame
            if st.next_sample < 0:
                reset = True
            elif first > st.next_sample:
                gap = first - st.next_sample
                self.stats.sample_gaps += 1
                self.stats.samples_missed += gap
                self.stats.recent_gaps.append(Gap(board, st.next_sample, gap, dseq))
                reset = True
            elif first < st.next_sample:
                # Overlaps delivered samples with a newer sequence number: the board's index jumped back.
                self.stats.resets += 1
                reset = True
            st.next_sample = end
        st.next_seq = (seq + 1) & 0xFFFFFFFF
        return True, gap, reset, st

    def _frame(self, ftype: int, channels: int, fmt: int, board: int, nsamp: int, seq: int, fs: float,
               first: int, ts: int | None, session: int, payload: memoryview
               ) -> SampleBlock | StatusReport | None:
        if not (MIN_FS_HZ <= fs <= MAX_FS_HZ and first + nsamp <= MAX_SAMPLE_INDEX):
            self.stats.rejected_frames += 1
            return None
        if ftype == FrameType.SAMPLES:
            ok, gap, reset, st = self._track(board, session, seq, first, first + nsamp)
            if not ok:
                return None
            f = _FORMATS[fmt]
            data = payload_to_counts(payload, f, channels, self.dtype)
            if f == SampleFormat.FLOAT32 and not np.isfinite(data).all():
                self.stats.nonfinite_frames += 1
                st.next_sample = first  # the next frame reports these samples as a gap
                return None
            self.stats.sample_frames += 1
            self.stats.samples += nsamp
            return SampleBlock(board, session, seq, first, data, fs, f, ts, gap, reset, st.gain)
        if ftype == FrameType.STATUS:
            ok, _, _, st = self._track(board, session, seq, first, first)
            if not ok:
                return None
            temp, mv, overruns = STATUS_FIXED.unpack_from(payload, 0)
            per = np.frombuffer(payload, STATUS_CHANNEL_DTYPE, offset=STATUS_FIXED.size)
            gain = per["gain"].astype(np.float64)
            st.gain = gain
            self.stats.status_frames += 1
            return StatusReport(board, session, seq, first, fs, ts, temp / 100.0, mv / 1000.0, overruns,
                                gain, per["clipped"].astype(np.int64))
        self.stats.unknown_frames += 1
        return None


def join_contiguous(blocks: Sequence[SampleBlock]) -> list[SampleBlock]:
    """Merge each run of contiguous blocks of one board (same rate and layout, no reset) into one block.

    A run keeps its first block's identity (board, session, seq, time stamp, gap, reset, gain); the pipeline
    then makes fewer, larger calls. Blocks that do not follow on start a new run.
    """
    out: list[SampleBlock] = []
    run: list[SampleBlock] = []

    def close() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            out.append(replace(run[0], data=np.concatenate([b.data for b in run], axis=1)))
        run.clear()

    for b in blocks:
        if run and (b.reset or b.board_id != run[0].board_id or b.first_sample != run[-1].end_sample
                    or b.fs != run[0].fs or b.channels != run[0].channels):
            close()
        run.append(b)
    close()
    return out
