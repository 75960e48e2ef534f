"""Plain text mode for prototype boards: one line of comma-separated samples per instant.

    -1203,877,15\\n

Counts (integers) or floats, one field per channel, '\\n' or '\\r\\n' line ends; lines that
start with '#' are comments. Text mode has no sequence numbers or CRC: a malformed line
(wrong field count, not a number) is dropped and counted, and because it most likely
held one instant, the decoder advances the sample index past it and reports a one-sample
gap, keeping later samples on time. Lines are parsed a chunk at a time with numpy.
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
        """End of stream: a last line without its newline is decoded too."""
        if not self._buf:
            return []
        chunk = bytes(self._buf) + b"\n"
        del self._buf[:]
        return self._parse(chunk)

    def _bad(self, k: int) -> None:
        self.stats.bad_lines += k
        self._pending_gap += k
        self.sample += k

    def _parse(self, chunk: bytes) -> list[SampleBlock]:
        lines = chunk.replace(b"\r", b"").split(b"\n")[:-1]
        lines = [ln for ln in lines if ln and not ln.startswith(b"#")]
        if not lines:
            return []
        self.stats.lines += len(lines)
        if self.channels is None:
            self.channels = lines[0].count(b",") + 1
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
