"""Board simulator: streams frames like the ADC board would, from any signal source.

The simulator takes blocks of physical-unit samples from a source (``next_block``),
converts them to ADC counts (``scale`` counts per unit, clipped to the format's full
scale, clipping counted as the board does), frames them, passes the bytes through the
fault injector and writes them to a port in real time (or ``speed`` times faster).
The events the source injected are written to a ground-truth JSONL file.

Ports: ``PtyPort`` (a pseudo-terminal pair, optionally behind a stable symlink so a
reader can reopen "the same device" after a simulated unplug), ``FilePort`` and
``SerialPort`` (any pyserial URL).
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from firmware_bridge.clock import iso_utc
from firmware_bridge.faults import FaultConfig, FaultInjector
from firmware_bridge.protocol import (
    BYTES_PER_SAMPLE,
    FULL_SCALE,
    BoardStatus,
    SampleFormat,
    encode_samples,
    encode_status,
    max_samples_per_frame,
    parse_format,
)
from firmware_bridge.sources import SignalSource
from firmware_bridge.textmode import encode_lines

# A board's firmware sends a frame per DMA half-buffer of its ADC: about this much payload (a few USB
# full-speed packets), and at least this often, so that a slow board's samples are not held back.
FRAME_PAYLOAD_BYTES = 256
FRAME_MAX_S = 0.02


def default_samples_per_frame(fs: float, channels: int, fmt: SampleFormat) -> int:
    """Samples per frame of a real board: ``FRAME_PAYLOAD_BYTES`` of payload, at most ``FRAME_MAX_S`` of
    samples, at least one (3 ch int24: 28 samples, 2.8 ms at 10 kHz, 7 ms at 4 kHz; 5 samples at 250 Hz)."""
    per_instant = channels * BYTES_PER_SAMPLE[fmt]
    return max(1, min(FRAME_PAYLOAD_BYTES // per_instant, round(FRAME_MAX_S * fs),
                      max_samples_per_frame(channels, fmt)))


# --------------------------------------------------------------------------- ports
class PtyPort:
    """A pseudo-terminal pair; the simulator writes the master, a reader opens ``path``.

    With ``link`` the slave is reached through that symlink, which ``reconnect`` points at
    a fresh pty: like a USB device re-enumerating under a udev-stable name.
    """

    def __init__(self, link: str | os.PathLike | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self.stop = threading.Event()
        self.master = self.slave = -1
        self.device = ""
        self._open()

    def _open(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: bytes pass unchanged
        self.device = os.ttyname(self.slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(self.device, tmp)
            os.replace(tmp, self.link)

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self.device

    def write(self, data: bytes) -> None:
        """Write everything, waiting while the reader lags; returns early if ``stop`` is set."""
        view = memoryview(data)
        while view and not self.stop.is_set():
            _, writable, _ = select.select([], [self.master], [], 0.2)
            if writable:
                k = os.write(self.master, view)
                view = view[k:]

    def disconnect(self) -> None:
        """The device vanishes: the link disappears and the pty closes (readers get an error)."""
        if self.link is not None:
            self.link.unlink(missing_ok=True)
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def reconnect(self) -> None:
        """The device comes back (under the same link path)."""
        if self.master < 0:
            self._open()

    def close(self) -> None:
        self.stop.set()
        self.disconnect()


class FilePort:
    """Writes the byte stream to a file (for replay); a disconnect just leaves a hole."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self._f: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        self._f.write(data)

    def disconnect(self) -> None:
        self._f.flush()

    def reconnect(self) -> None:
        pass

    def close(self) -> None:
        self._f.close()


class SerialPort:
    """Any pyserial URL (a real UART, socket://host:port, ...)."""

    def __init__(self, url: str, baudrate: int = 921600) -> None:
        import serial  # pyserial: only needed for this port

        self.path = url
        self._serial_mod = serial
        self._s = serial.serial_for_url(url, baudrate=baudrate, write_timeout=5)

    def write(self, data: bytes) -> None:
        self._s.write(data)

    def disconnect(self) -> None:
        self._s.close()

    def reconnect(self) -> None:
        if not self._s.is_open:
            self._s.open()

    def close(self) -> None:
        self._s.close()


# --------------------------------------------------------------------------- simulator
@dataclass
class FrameRecord:
    """What the simulator sent: kind ('samples', 'status', 'text'), sequence number, first sample,
    sample count, whether the frame's bytes went out unchanged (``intact``) and whether they were
    written at all (``delivered``: not during a disconnect). ``counts`` only when keep_counts."""

    kind: str
    seq: int
    first_sample: int
    n: int
    intact: bool
    delivered: bool
    counts: np.ndarray | None = None


@dataclass
class SimulatorReport:
    frames: int = 0
    bytes_written: int = 0
    samples: int = 0
    events: int = 0
    clipped: int = 0
    stalls: int = 0
    disconnects: int = 0
    wall_seconds: float = 0.0
    log: list[FrameRecord] = field(default_factory=list)


class BoardSimulator:
    """Turns a signal source into the byte stream an ADC board would send.

    ``scale`` converts physical units to counts; ``samples_per_frame`` defaults to a real board's
    frame (:func:`default_samples_per_frame`). ``timestamps`` adds a (simulated GPS) UTC time stamp
    to every frame.
    ``text`` sends the plain text mode instead of binary frames.
    """

    def __init__(self, source: SignalSource, *, fs: float, channels: int, fmt: str | SampleFormat = "int24",
                 scale: float = 1000.0, samples_per_frame: int | None = None, board_id: int = 1,
                 session: int | None = None, status_interval_s: float = 1.0, timestamps: bool = False,
                 text: bool = False, faults: FaultConfig | None = None, seed: int = 0,
                 start_ns: int | None = None, gain: float = 1.0, keep_counts: bool = False) -> None:
        self.source = source
        self.fs = float(fs)
        self.channels = int(channels)
        self.fmt = parse_format(fmt)
        self.scale = float(scale)
        cap = max_samples_per_frame(self.channels, self.fmt)
        spf = samples_per_frame or default_samples_per_frame(self.fs, self.channels, self.fmt)
        if not 1 <= spf <= cap:
            raise ValueError(f"samples_per_frame = {spf}; allowed 1..{cap} for {self.channels} channels "
                             f"of {self.fmt.name.lower()}")
        self.samples_per_frame = spf
        self.board_id = board_id
        rng = np.random.default_rng(seed)
        self.session = int(rng.integers(0, 0x10000)) if session is None else session
        self.status_interval = int(round(status_interval_s * self.fs)) if status_interval_s > 0 else 0
        self.timestamps = timestamps
        self.text = text
        self.injector = FaultInjector(faults or FaultConfig(), rng)
        self.start_ns = time.time_ns() if start_ns is None else int(start_ns)
        self.gain = gain
        self.keep_counts = keep_counts
        self.clipped = np.zeros(self.channels, np.int64)
        self.seq = 0
        self.sample = 0

    def sample_time_ns(self, index: int) -> int:
        """The board's UTC for sample ``index`` (what a GPS-disciplined board would stamp)."""
        return self.start_ns + int(round(index * 1e9 / self.fs))

    def to_counts(self, x: np.ndarray) -> np.ndarray:
        """Physical units -> counts, clipped to full scale (clipping is counted per channel)."""
        c = np.rint(np.asarray(x, np.float64) * self.scale)
        lo, hi = FULL_SCALE[self.fmt]
        over = (c < lo) | (c > hi)
        if over.any():
            self.clipped += over.sum(axis=1)
            c = np.clip(c, lo, hi)
        return c if self.fmt == SampleFormat.FLOAT32 else c.astype(np.int64)

    def _status_frame(self) -> bytes:
        st = BoardStatus(temperature_c=35.0 + 0.5 * np.sin(self.sample / self.fs / 600.0), supply_v=5.02,
                         buffer_overruns=0, gain=(self.gain,) * self.channels,
                         clipped=tuple(int(v) for v in self.clipped))
        ts = self.sample_time_ns(self.sample) if self.timestamps else None
        return encode_status(st, fs=self.fs, sample=self.sample, seq=self.seq, board_id=self.board_id,
                             session=self.session, timestamp_ns=ts)

    def next_frames(self, n: int) -> tuple[list[tuple[str, bytes, FrameRecord]], list[dict]]:
        """Take ``n`` samples from the source and frame them: [(kind, bytes, record)], events."""
        out = []
        # A status frame where the block crosses a multiple of the interval, taken before the block.
        if not self.text and self.status_interval and (-self.sample) % self.status_interval < n:
            rec = FrameRecord("status", self.seq, self.sample, 0, True, True)
            out.append(("status", self._status_frame(), rec))
            self.seq = (self.seq + 1) & 0xFFFFFFFF
        x, events = self.source.next_block(n)
        counts = self.to_counts(x)
        if self.text:
            rec = FrameRecord("text", -1, self.sample, n, True, True, counts if self.keep_counts else None)
            out.append(("text", encode_lines(counts, self.fmt), rec))
            self.sample += n
            return out, events
        ts = self.sample_time_ns(self.sample) if self.timestamps else None
        frame = encode_samples(counts, fmt=self.fmt, fs=self.fs, first_sample=self.sample, seq=self.seq,
                               board_id=self.board_id, session=self.session, timestamp_ns=ts)
        rec = FrameRecord("samples", self.seq, self.sample, n, True, True, counts if self.keep_counts else None)
        out.append(("samples", frame, rec))
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.sample += n
        return out, events

    def truth_line(self, event: dict) -> str:
        """One ground-truth JSONL line for an injected event."""
        s = int(event["sample"])
        return json.dumps({"sample": s, "time": iso_utc(self.sample_time_ns(s)), "label": str(event["label"]),
                           "snr_db": round(float(event["snr_db"]), 3)})

    def run(self, port, *, seconds: float | None, speed: float = 1.0, truth: str | os.PathLike | None = None,
            stop: threading.Event | None = None, keep_log: bool = False) -> SimulatorReport:
        """Stream ``seconds`` of signal (None = until ``stop``) to ``port``; ``speed`` <= 0 = no pacing."""
        stop = stop or threading.Event()
        report = SimulatorReport()
        total = None if seconds is None else int(round(seconds * self.fs))
        truth_f = open(truth, "a", encoding="utf-8") if truth else None  # noqa: SIM115
        t0 = time.monotonic()
        first = self.sample
        offline_until = -1  # sample index until which the device is unplugged
        try:
            while not stop.is_set() and (total is None or self.sample < total):
                n = self.samples_per_frame if total is None else min(self.samples_per_frame, total - self.sample)
                start = self.sample
                frames, events = self.next_frames(n)
                for ev in events:
                    report.events += 1
                    if truth_f is not None:
                        truth_f.write(self.truth_line(ev) + "\n")
                        truth_f.flush()
                fault = self.injector.next_time_fault(n / self.fs)
                if fault is not None and fault[0] == "disconnect" and offline_until < start:
                    report.disconnects += 1
                    port.disconnect()
                    offline_until = start + int(fault[1] * self.fs)
                elif fault is not None and fault[0] == "stall":
                    report.stalls += 1
                    # The board keeps sampling into its buffer and then catches up in a burst.
                    time.sleep(fault[1] / speed if speed > 0 else fault[1])
                if 0 <= offline_until <= start:
                    port.reconnect()
                    offline_until = -1
                if speed > 0:
                    wait = t0 + (self.sample - first) / (self.fs * speed) - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                for _kind, data, rec in frames:
                    if offline_until >= 0:
                        rec.delivered = rec.intact = False
                    else:
                        wire, rec.intact = self.injector.apply(data)
                        port.write(wire)
                        report.bytes_written += len(wire)
                    report.frames += 1
                    if keep_log:
                        report.log.append(rec)
                report.samples += n
        finally:
            if truth_f is not None:
                truth_f.close()
        report.clipped = int(self.clipped.sum())
        report.wall_seconds = time.monotonic() - t0
        return report


def open_port(port: str | None = None, out: str | None = None, link: str | None = None
              ) -> PtyPort | FilePort | SerialPort:
    """Where the simulator writes: a file (``out``), a serial device or pyserial URL (``port``), or by
    default a new pseudo-terminal (reachable through the symlink ``link`` if given)."""
    if out is not None:
        return FilePort(out)
    if port is not None:
        return SerialPort(port)
    return PtyPort(link)


def describe(sim: BoardSimulator) -> str:
    """One line: what the simulated board sends."""
    mode = "text lines" if sim.text else f"{sim.fmt.name.lower()} frames of {sim.samples_per_frame} samples"
    return f"{sim.channels} ch x {sim.fs:g} Hz, {mode}, board {sim.board_id} session {sim.session}"
