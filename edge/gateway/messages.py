"""The messages a node publishes: events (``stopewatch.event/2``) and their waveforms (``stopewatch.waveform/1``).

Field by field in docs/mqtt.md; the JSON Schemas are edge/schemas/*.schema.json. ``stopewatch.event/2`` is
``/1`` with four objects added (``stream``, ``archive``, ``units``, ``timing``); nothing of ``/1`` changed.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge.gateway.pipeline import PipelineEvent
    from edge.gateway.streams import StreamCodes

EVENT_SCHEMA = "stopewatch.event/2"
WAVEFORM_SCHEMA = "stopewatch.waveform/1"


@dataclass(frozen=True)
class Timing:
    """How good the event's times are: the event message's ``timing``."""

    clock: str  # "board" (the board's GPS/PPS stamps), "host" (fit of host arrival times), "record" (replay)
    error_s: float | None  # the clock's stated error, None when unknown
    quality: int  # SEED timing quality 0-100, as written into the archive's records

    @property
    def locked(self) -> bool:
        return self.clock == "board"

    def as_fields(self) -> dict:
        error = None if self.error_s is None else round(self.error_s, 6)
        return {"clock": self.clock, "locked": self.locked, "error_s": error, "quality": self.quality}


def feature_units(units: str, features: dict) -> dict:
    """The unit of every feature of an event (``units`` is the board's physical unit, e.g. m/s)."""
    known = {"ppv": units, "dominant_hz": "Hz", "duration_s": "s", "snr_db": "dB", "sta_lta_max": "1",
             "energy": f"({units})^2*s", "band_energy": "1", "clipped": "boolean"}
    return {name: known.get(name, "") for name in features}


@dataclass(frozen=True)
class EventContext:
    """What an event message says about where its samples came from, besides the pipeline's event."""

    stream: StreamCodes
    units: str
    timing: Timing
    archive: dict | None  # the archive's span for the event (edge.gateway.archive.span_fields), None if off


def new_boot_id() -> str:
    """A fresh id for this run of the daemon (events carry it with a per-boot sequence number)."""
    return uuid.uuid4().hex[:16]


class EventMessenger:
    """Numbers events of one boot and turns pipeline events into event messages.

    ``event_id`` is ``{site}.{node}.{boot_id}.{seq}``: unique, and stable across redelivery because
    it is written into the stored message once, before the first attempt to publish it.
    """

    def __init__(self, site: str, node: str, boot_id: str, model: dict):
        self.site, self.node, self.boot_id, self.model = site, node, boot_id, dict(model)
        self.seq = 0

    def message(self, event: PipelineEvent, context: EventContext) -> dict:
        """The ``stopewatch.event/2`` message for one pipeline event."""
        self.seq += 1
        signal = event.signal_fields()
        return {
            "schema": EVENT_SCHEMA,
            "event_id": f"{self.site}.{self.node}.{self.boot_id}.{self.seq}",
            "site": self.site,
            "node": self.node,
            "boot_id": self.boot_id,
            "seq": self.seq,
            **signal,
            "stream": context.stream.as_fields(),
            "archive": context.archive,
            "units": feature_units(context.units, signal["features"]),
            "timing": context.timing.as_fields(),
            "model": self.model,
            "historical": False,
        }


def waveform_message(event_id: str, data: np.ndarray, fs: float, start: str, channels: Sequence[str],
                     units: str = "", site: str = "", node: str = "", boot_id: str = "") -> dict:
    """The ``stopewatch.waveform/1`` message: the event window for central review and relabelling.

    Samples travel as base64 of little-endian float32 in (channels, samples) C order: exact (the
    pipeline's own float32 values), decodable in one line anywhere
    (``np.frombuffer(base64.b64decode(m["data"]), "<f4").reshape(len(m["channels"]), m["samples"])``),
    and only a third larger than raw binary while the message stays self-describing JSON.
    """
    arr = np.ascontiguousarray(np.asarray(data, dtype="<f4"))
    if arr.ndim != 2 or arr.shape[0] != len(channels):
        raise ValueError(f"waveform must be (channels, samples) with {len(channels)} channels, got {arr.shape}")
    return {"schema": WAVEFORM_SCHEMA, "event_id": event_id, "site": site, "node": node, "boot_id": boot_id,
            "start": start, "fs": float(fs), "channels": list(channels), "samples": int(arr.shape[1]),
            "units": units, "dtype": "float32-le", "encoding": "base64", "data": base64.b64encode(arr).decode()}


def decode_waveform(message: dict) -> np.ndarray:
    """Samples of a ``stopewatch.waveform/1`` message as float32 (channels, samples)."""
    raw = np.frombuffer(base64.b64decode(message["data"]), dtype="<f4")
    return raw.reshape(len(message["channels"]), int(message["samples"])).astype(np.float32)


def split_waveform(message: dict, max_bytes: int) -> list[dict]:
    """A ``stopewatch.waveform/1`` message cut in time into parts whose JSON is at most ``max_bytes`` each.

    For a broker whose Maximum Packet Size is below the whole window. Each part is a complete waveform
    message for its samples (``start`` and ``fs`` stay the window's; ``samples`` and ``data`` are the
    part's) with ``part = {index, count, first_sample, window_samples}``: ``first_sample`` is the part's
    offset in the window, so :func:`join_waveform` puts the window back together exactly. Returns [] when
    not even one sample per part fits.
    """
    arr = decode_waveform(message)
    channels, total = arr.shape

    def part(lo: int, hi: int, index: int, count: int) -> dict:
        chunk = np.ascontiguousarray(arr[:, lo:hi], dtype="<f4")
        return dict(message, samples=hi - lo, data=base64.b64encode(chunk).decode(),
                    part={"index": index, "count": count, "first_sample": lo, "window_samples": total})

    def size(msg: dict) -> int:
        return len(json.dumps(msg, separators=(",", ":"), allow_nan=False).encode())

    # The JSON around the samples, with the widest numbers a part can carry; what is left holds base64.
    frame = size(part(0, 0, total, total)) + 2 * len(str(total))
    per = (max_bytes - frame) * 3 // 4 // (4 * channels)
    while per >= 1:
        count = -(-total // per)
        parts = [part(lo, min(lo + per, total), i + 1, count) for i, lo in enumerate(range(0, total, per))]
        if all(size(p) <= max_bytes for p in parts):
            return parts
        per -= max(1, per // 16)
    return []


def join_waveform(parts: list[dict]) -> np.ndarray:
    """The window of a waveform sent whole or in parts (any order, duplicates allowed), float32 (channels, samples).

    Raises ValueError when a part is missing.
    """
    if len(parts) == 1 and "part" not in parts[0]:
        return decode_waveform(parts[0])
    by_index = {p["part"]["index"]: p for p in parts}
    count = parts[0]["part"]["count"]
    if sorted(by_index) != list(range(1, count + 1)):
        raise ValueError(f"waveform {parts[0]['event_id']}: parts {sorted(by_index)} of {count}")
    out = np.empty((len(parts[0]["channels"]), parts[0]["part"]["window_samples"]), dtype=np.float32)
    for p in by_index.values():
        lo = p["part"]["first_sample"]
        out[:, lo:lo + p["samples"]] = decode_waveform(p)
    return out
