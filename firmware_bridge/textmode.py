"""Plain text mode for prototype boards: one line of comma-separated samples per instant.

    -1203,877,15\\n

Counts (integers) or floats, one field per channel, '\\n' or '\\r\\n' line ends; lines that
start with '#' are comments. Text mode has no sequence numbers or CRC: a malformed line
(wrong field count, not a number) is dropped and counted, and because it most likely
held one instant, the decoder advances the sample index past it and reports a one-sample
gap, keeping later samples on time. Lines are parsed a chunk at a time with numpy.

When the channel count is not configured, it is learnt from the first run of ``LEARN_RUN``
consecutive lines with the same number of numeric fields: a boot banner or a half line at power-up
cannot fix a wrong count. Lines before that run are counted as bad lines (the stream starts after them).
"""

from __future__ import annotations

import io

import numpy as np

from firmware_bridge.decoder import DecoderStats, SampleBlock
from firmware_bridge.protocol import SampleFormat

MAX_LINE = 1024  # longer "lines" are garbage: drop them


def encode_lines(counts: np.ndarray, fmt: SampleFormat = SampleFormat.INT24) -> bytes:
    """(channels, n) counts -> n text lines."""
    out = io.BytesIO()
    np.savetxt(out, np.asarray(counts).T, fmt="%.9g" if fmt == SampleFormat.FLOAT32 else "%d", delimiter=",")
    return out.getvalue()


LEARN_RUN = 16  # consistent lines that fix the channel count of a text-mode board
MAX_LEARN_LINES = 4096  # lines held at most while no consistent run has appeared


def _numeric_fields(line: bytes) -> int | None:
    """How many comma-separated numbers ``line`` holds, or None when it is not such a line."""
    parts = line.split(b",")
    try:
        for p in parts:
            float(p)
    except ValueError:
        return None
    return len(parts) if len(parts) <= 64 else None


class TextDecoder:
    """Incremental decoder for text mode; ``channels`` may be left None to take it from the first line."""

    def __init__(self, fs: float, channels: int | None = None, dtype: np.dtype | type = np.float64,
                 board_id: int = 0) -> None:
        self.fs = float(fs)
        self.channels = channels
        self.dtype = np.dtype(dtype)
        self.board_id = board_id
        self.sample = 0
        self.stats = DecoderStats()  # bytes_in, lines, bad_lines, samples and gaps are what text mode counts
        self._buf = bytearray()
        self._pending_gap = 0
        self._started = False
        self._learning: list[bytes] = []  # lines held while the channel count is being learnt

    def feed(self, data: bytes | bytearray | memoryview) -> list[SampleBlock]:
        """Decode every complete line in what has arrived."""
        self.stats.bytes_in += len(data)
        self._buf += data
        end = self._buf.rfind(b"\n")
        if end < 0:
            if len(self._buf) > MAX_LINE:
                self._bad(1)
                del self._buf[:]
            return []
        chunk = bytes(self._buf[:end + 1])
        del self._buf[:end + 1]
        return self._parse(chunk)

    def flush(self) -> list[SampleBlock]:
        """End of stream: a last line without its newline is decoded too; a record too short to learn the
        channel count from a full run takes the commonest count of its numeric lines."""
        out: list[SampleBlock] = []
        if self._buf:
            chunk = bytes(self._buf) + b"\n"
            del self._buf[:]
            out += self._parse(chunk)
        if self.channels is None and self._learning:
            counts = [f for f in map(_numeric_fields, self._learning) if f is not None]
            if counts:
                self.channels = max(set(counts), key=counts.count)
                held, self._learning = self._learning, []
                out += self._decode(held)
        return out

    def _bad(self, k: int) -> None:
        self.stats.bad_lines += k
        self._pending_gap += k
        self.sample += k

    def _learn_channels(self, lines: list[bytes]) -> list[bytes]:
        """Before the channel count is known: keep lines until ``LEARN_RUN`` consistent numeric ones follow
        each other, then fix the count and return the lines from that run on (earlier ones are bad lines)."""
        self._learning += lines
        run_start, run_fields = 0, None
        for i, line in enumerate(self._learning):
            fields = _numeric_fields(line)
            if fields is None or fields != run_fields:
                run_start, run_fields = i, fields
            if run_fields is not None and i - run_start + 1 >= LEARN_RUN:
                self.channels = run_fields
                self.stats.bad_lines += run_start
                rest, self._learning = self._learning[run_start:], []
                return rest
        if len(self._learning) > MAX_LEARN_LINES:  # never learnt: drop the oldest, count them
            drop = len(self._learning) - MAX_LEARN_LINES
            self.stats.bad_lines += drop
            del self._learning[:drop]
        return []

    def _parse(self, chunk: bytes) -> list[SampleBlock]:
        lines = chunk.replace(b"\r", b"").split(b"\n")[:-1]
        lines = [ln for ln in lines if ln and not ln.startswith(b"#")]
        self.stats.lines += len(lines)
        if lines and self.channels is None:
            lines = self._learn_channels(lines)
        return self._decode(lines) if lines else []

    def _decode(self, lines: list[bytes]) -> list[SampleBlock]:
        """Blocks of sample lines (already counted) at the known channel count."""
        c = self.channels
        body = b"\n".join(lines)
        arr = np.frombuffer(body, np.uint8)
        nl = np.flatnonzero(arr == 10)
        commas = np.concatenate(([0], np.cumsum(arr == 44)[nl], [int((arr == 44).sum())]))
        per_line = np.diff(commas)
        good = (per_line == c - 1) & (np.array([len(x) for x in lines]) <= MAX_LINE)
        values = np.full((len(lines), c), np.nan)
        if good.all():
            values = self._numbers(body.replace(b"\n", b","), len(lines), c, values)
        else:
            idx = np.flatnonzero(good)
            if idx.size:
                sub = b",".join(lines[i] for i in idx)
                values[idx] = self._numbers(sub, idx.size, c, values[idx])
        good &= ~np.isnan(values).any(axis=1)
        return self._blocks(values, good)

    @staticmethod
    def _numbers(text: bytes, rows: int, c: int, fallback: np.ndarray) -> np.ndarray:
        fields = np.array(text.split(b","))
        try:
            return fields.astype(np.float64).reshape(rows, c)
        except ValueError:
            # Some field is not a number: parse line by line (rare, only on corrupted input).
            out = fallback.copy()
            for r in range(rows):
                try:
                    out[r] = fields[r * c:(r + 1) * c].astype(np.float64)
                except ValueError:
                    out[r] = np.nan
            return out

    def _blocks(self, values: np.ndarray, good: np.ndarray) -> list[SampleBlock]:
        blocks = []
        # Runs of good lines become blocks; each bad line costs one sample index and a gap.
        edges = np.flatnonzero(np.diff(np.concatenate(([0], good.astype(np.int8), [0]))))
        runs = edges.reshape(-1, 2)
        pos = 0
        for a, b in runs:
            if a > pos:
                self._bad(int(a - pos))
            data = values[a:b].T.astype(self.dtype)
            reset = not self._started or self._pending_gap > 0
            if self._pending_gap:
                self.stats.sample_gaps += 1
                self.stats.samples_missed += self._pending_gap
            self.stats.samples += int(b - a)
            blocks.append(SampleBlock(self.board_id, 0, -1, self.sample, data, self.fs, None, None,
                                      self._pending_gap, reset, None))
            self._started = True
            self._pending_gap = 0
            self.sample += int(b - a)
            pos = b
        if len(good) > pos:
            self._bad(int(len(good) - pos))
        return blocks
