"""Frame format of the ADC board's serial protocol, version 1 (see PROTOCOL.md).

Everything little-endian. A frame is a fixed 40-byte header, a payload of at most
``MAX_PAYLOAD`` bytes and a CRC-32 (``zlib.crc32``) over header and payload.

This module holds the constants, the header layout and a numpy encoder used by the
simulator and the tests. The C encoder (``fb_encoder.c``) writes the same bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER = struct.Struct("<2sBBBBBBHHIIQqHH")
HEADER_SIZE = HEADER.size  # 40
CRC_SIZE = 4
MAX_PAYLOAD = 16384
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_CHANNELS = 32

FLAG_TIME_VALID = 0x01  # the time stamp field holds a disciplined UTC time (e.g. GPS/PPS)

# A frame type below this value that the decoder does not know is skipped (CRC-checked, counted).
MAX_FRAME_TYPE = 16


class FrameType(IntEnum):
    """What a frame's payload holds."""

    SAMPLES = 1
    STATUS = 2


class SampleFormat(IntEnum):
    """How one sample of one channel is stored in a sample frame's payload."""

    INT16 = 1
    INT24 = 2  # packed, 3 bytes, two's complement
    INT32 = 3
    FLOAT32 = 4


BYTES_PER_SAMPLE = {SampleFormat.INT16: 2, SampleFormat.INT24: 3, SampleFormat.INT32: 4,
                    SampleFormat.FLOAT32: 4}
FULL_SCALE = {  # (min, max) counts
    SampleFormat.INT16: (-(2**15), 2**15 - 1),
    SampleFormat.INT24: (-(2**23), 2**23 - 1),
    SampleFormat.INT32: (-(2**31), 2**31 - 1),
    SampleFormat.FLOAT32: (-3.4e38, 3.4e38),
}
FORMAT_NAMES = {f.name.lower(): f for f in SampleFormat}

# Status payload: temperature (0.01 degC, i16), supply (mV, u16), buffer overruns (u32, cumulative),
# then per channel: PGA gain (f32) and clipped-sample count (u32, cumulative).
STATUS_FIXED = struct.Struct("<hHI")
STATUS_CHANNEL_DTYPE = np.dtype([("gain", "<f4"), ("clipped", "<u4")])


def status_payload_size(channels: int) -> int:
    """Payload length of a status frame for ``channels`` channels."""
    return STATUS_FIXED.size + STATUS_CHANNEL_DTYPE.itemsize * channels


def parse_format(name: str | int | SampleFormat) -> SampleFormat:
    """A SampleFormat from its name ('int16', 'int24', 'int32', 'float32') or its code."""
    if isinstance(name, SampleFormat):
        return name
    if isinstance(name, int):
        return SampleFormat(name)
    try:
        return FORMAT_NAMES[name.lower()]
    except KeyError:
        raise ValueError(f"sample format {name!r}; allowed: {', '.join(FORMAT_NAMES)}") from None


def max_samples_per_frame(channels: int, fmt: SampleFormat) -> int:
    """The most samples per channel that fit in one frame."""
    return min(0xFFFF, MAX_PAYLOAD // (channels * BYTES_PER_SAMPLE[fmt]))


@dataclass(frozen=True)
class FrameHeader:
    """The fields of a frame header (sample rate in Hz; time stamp in ns since the Unix epoch, UTC)."""

    frame_type: int
    channels: int
    sample_format: int
    board_id: int
    seq: int
    fs: float
    first_sample: int
    n_samples: int = 0
    timestamp_ns: int | None = None
    session: int = 0


def _pack(h: FrameHeader, payload: bytes) -> bytes:
    flags = FLAG_TIME_VALID if h.timestamp_ns is not None else 0
    head = HEADER.pack(
        SYNC, VERSION, int(h.frame_type), flags, h.channels, int(h.sample_format), 0, h.board_id,
        h.n_samples, h.seq & 0xFFFFFFFF, int(round(h.fs * 1000.0)), h.first_sample,
        h.timestamp_ns if h.timestamp_ns is not None else 0, len(payload), h.session)
    body = head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def samples_to_payload(counts: np.ndarray, fmt: SampleFormat) -> bytes:
    """Interleave a (channels, n) array of counts into payload bytes (instant-major, as ADC DMA writes)."""
    x = np.asarray(counts).T  # (n, channels)
    if fmt == SampleFormat.FLOAT32:
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    lo, hi = FULL_SCALE[fmt]
    xi = np.asarray(x, dtype=np.int64)
    if xi.size and (xi.min() < lo or xi.max() > hi):
        raise ValueError(f"{fmt.name.lower()} sample outside [{lo}, {hi}]")
    if fmt == SampleFormat.INT16:
        return np.ascontiguousarray(xi, dtype="<i2").tobytes()
    if fmt == SampleFormat.INT32:
        return np.ascontiguousarray(xi, dtype="<i4").tobytes()
    b = np.ascontiguousarray(xi, dtype="<i4").view(np.uint8).reshape(-1, 4)[:, :3]
    return np.ascontiguousarray(b).tobytes()


def encode_samples(counts: np.ndarray, *, fmt: SampleFormat | str, fs: float, first_sample: int, seq: int,
                   board_id: int = 1, session: int = 0, timestamp_ns: int | None = None) -> bytes:
    """One sample frame from a (channels, n) array of ADC counts."""
    fmt = parse_format(fmt)
    counts = np.asarray(counts)
    if counts.ndim != 2 or not 1 <= counts.shape[0] <= MAX_CHANNELS:
        raise ValueError(f"samples must be (channels, n) with 1..{MAX_CHANNELS} channels, got {counts.shape}")
    channels, n = counts.shape
    if n > max_samples_per_frame(channels, fmt):
        raise ValueError(f"{n} samples x {channels} channels of {fmt.name.lower()} exceed the frame bound")
    h = FrameHeader(FrameType.SAMPLES, channels, fmt, board_id, seq, fs, first_sample, n, timestamp_ns,
                    session)
    return _pack(h, samples_to_payload(counts, fmt))


@dataclass(frozen=True)
class BoardStatus:
    """A board's health as reported in a status frame."""

    temperature_c: float
    supply_v: float
    buffer_overruns: int
    gain: tuple[float, ...]
    clipped: tuple[int, ...]


def encode_status(status: BoardStatus, *, fs: float, sample: int, seq: int, board_id: int = 1,
                  session: int = 0, timestamp_ns: int | None = None) -> bytes:
    """One status frame; ``sample`` is the absolute sample index at which the status was taken."""
    channels = len(status.gain)
    if len(status.clipped) != channels or not 1 <= channels <= MAX_CHANNELS:
        raise ValueError("status: gain and clipped need one value per channel")
    per = np.zeros(channels, STATUS_CHANNEL_DTYPE)
    per["gain"] = status.gain
    per["clipped"] = np.minimum(np.asarray(status.clipped, dtype=np.int64), 0xFFFFFFFF)
    payload = STATUS_FIXED.pack(int(round(status.temperature_c * 100)), int(round(status.supply_v * 1000)),
                                status.buffer_overruns & 0xFFFFFFFF) + per.tobytes()
    h = FrameHeader(FrameType.STATUS, channels, 0, board_id, seq, fs, sample, 0, timestamp_ns, session)
    return _pack(h, payload)
