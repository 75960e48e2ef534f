"""Typed records of what the nodes publish, parsed from MQTT payloads (docs/mqtt.md).

The collector turns each message into one of these before it touches the database; a payload that
does not fit raises :class:`BadMessage` with one line saying which field and why, and the collector
keeps the raw payload in the ``rejected`` table rather than losing it.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field

import numpy as np

from edge.gateway.messages import EVENT_SCHEMA, WAVEFORM_SCHEMA
from edge.vocabulary import LABELS
from firmware_bridge.clock import iso_utc, parse_utc

# /2 only adds fields to /1 (stream codes, archive span, units, timing): a collector reads both
EVENT_SCHEMAS = ("stopewatch.event/1", EVENT_SCHEMA)

STATES = ("online", "offline", "stopped")


class BadMessage(ValueError):
    """A payload that is not a valid message of its topic's kind (the text says which field)."""


@dataclass(frozen=True)
class EventRecord:
    """One ``stopewatch.event/1`` or ``/2`` message (the fields both carry)."""

    event_id: str
    site: str
    node: str
    boot_id: str
    seq: int
    trigger_time: str
    window_start: str
    fs: float
    samples: int
    channels: tuple[str, ...]
    label: str
    confidence: float
    entropy: float
    probabilities: dict[str, float]
    features: dict
    model_name: str
    model_version: str
    model_sha256: str
    latency_ms: float
    historical: bool

    @property
    def ppv(self) -> float:
        return float(self.features.get("ppv", 0.0))


@dataclass(frozen=True)
class WaveformRecord:
    """One ``stopewatch.waveform/1`` message, samples decoded to float32 (channels, samples)."""

    event_id: str
    site: str
    node: str
    boot_id: str
    start: str
    fs: float
    channels: tuple[str, ...]
    units: str
    data: np.ndarray = field(repr=False)

    @property
    def samples(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True)
class StatusRecord:
    """A node's retained status: online, offline (its will) or stopped."""

    site: str
    node: str
    state: str
    ts: str
    boot_id: str
    version: str
    model_name: str
    model_sha256: str


@dataclass(frozen=True)
class HealthRecord:
    """The figures of one health message the node list shows; the whole payload is kept too."""

    site: str
    node: str
    ts: str
    boot_id: str
    uptime_s: float
    backlog: int
    realtime_factor: float | None
    frames_ok: int
    crc_errors: int
    gaps: int
    samples_missed: int
    board: dict | None
    payload: dict = field(repr=False)


def _json(payload: bytes) -> dict:
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadMessage(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _get(obj: dict, key: str, kind: type | tuple[type, ...], where: str = ""):
    if key not in obj:
        raise BadMessage(f"missing field '{where}{key}'")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise BadMessage(f"field '{where}{key}' = {value!r:.60}; expected {names}")
    return value


def _num(obj: dict, key: str, where: str = "") -> float:
    value = float(_get(obj, key, (int, float), where))
    if not math.isfinite(value):
        raise BadMessage(f"field '{where}{key}' = {value}; expected a finite number")
    return value


def _time(obj: dict, key: str, where: str = "") -> str:
    text = _get(obj, key, str, where)
    try:
        return iso_utc(parse_utc(text))
    except ValueError:
        raise BadMessage(f"field '{where}{key}' = {text!r:.60}; expected an ISO-8601 UTC time") from None


def _same_node(obj: dict, site: str, node: str) -> None:
    for key, want in (("site", site), ("node", node)):
        got = obj.get(key, want)
        if got != want:
            raise BadMessage(f"field '{key}' = {got!r:.60} but the topic says {want!r}")


def parse_event(payload: bytes, site: str, node: str) -> EventRecord:
    """An event message published on ``{prefix}/{site}/{node}/event``."""
    m = _json(payload)
    if m.get("schema") not in EVENT_SCHEMAS:
        raise BadMessage(f"field 'schema' = {m.get('schema')!r:.60}; expected one of {', '.join(EVENT_SCHEMAS)}")
    _same_node(m, site, node)
    window, model = _get(m, "window", dict), _get(m, "model", dict)
    label = _get(m, "label", str)
    if label not in LABELS:
        raise BadMessage(f"field 'label' = {label!r:.60}; allowed: {', '.join(LABELS)}")
    seq = _get(m, "seq", int)
    if seq < 1:
        raise BadMessage(f"field 'seq' = {seq}; expected an integer >= 1")
    probs = _get(m, "probabilities", dict)
    features = _get(m, "features", dict)
    for k in ("ppv", "dominant_hz", "duration_s", "snr_db", "sta_lta_max", "energy"):
        _num(features, k, "features.")
    channels = _get(window, "channels", list, "window.")
    return EventRecord(
        event_id=_get(m, "event_id", str), site=site, node=node, boot_id=_get(m, "boot_id", str), seq=seq,
        trigger_time=_time(m, "trigger_time"), window_start=_time(window, "start", "window."),
        fs=_num(window, "fs", "window."), samples=_get(window, "samples", int, "window."),
        channels=tuple(str(c) for c in channels), label=label, confidence=_num(m, "confidence"),
        entropy=_num(m, "entropy"), probabilities={str(k): _num(probs, k, "probabilities.") for k in probs},
        features=features, model_name=str(model.get("name", "")), model_version=str(model.get("version", "")),
        model_sha256=str(model.get("sha256", "")), latency_ms=_num(m, "latency_ms"),
        historical=_get(m, "historical", bool))


def parse_waveform(payload: bytes, site: str, node: str) -> WaveformRecord:
    """A waveform message published on ``{prefix}/{site}/{node}/waveform``."""
    m = _json(payload)
    if m.get("schema") != WAVEFORM_SCHEMA:
        raise BadMessage(f"field 'schema' = {m.get('schema')!r:.60}; expected {WAVEFORM_SCHEMA!r}")
    _same_node(m, site, node)
    channels = tuple(str(c) for c in _get(m, "channels", list))
    samples = _get(m, "samples", int)
    if m.get("dtype") != "float32-le" or m.get("encoding") != "base64":
        raise BadMessage("fields 'dtype'/'encoding' must be 'float32-le'/'base64'")
    try:
        raw = base64.b64decode(_get(m, "data", str), validate=True)
    except ValueError:
        raise BadMessage("field 'data' is not valid base64") from None
    if len(raw) != 4 * samples * len(channels):
        raise BadMessage(f"field 'data' holds {len(raw)} bytes; {len(channels)} channels x {samples} samples "
                         f"x 4 = {4 * samples * len(channels)} expected")
    data = np.frombuffer(raw, dtype="<f4").reshape(len(channels), samples)
    return WaveformRecord(event_id=_get(m, "event_id", str), site=site, node=node,
                          boot_id=str(m.get("boot_id", "")), start=_time(m, "start"), fs=_num(m, "fs"),
                          channels=channels, units=str(m.get("units", "")), data=data)


def parse_status(payload: bytes, site: str, node: str) -> StatusRecord:
    """A retained status message published on ``{prefix}/{site}/{node}/status``."""
    m = _json(payload)
    state = _get(m, "state", str)
    if state not in STATES:
        raise BadMessage(f"field 'state' = {state!r:.60}; allowed: {', '.join(STATES)}")
    model = m.get("model") if isinstance(m.get("model"), dict) else {}
    return StatusRecord(site=site, node=node, state=state, ts=_time(m, "ts"), boot_id=_get(m, "boot_id", str),
                        version=str(m.get("version", "")), model_name=str(model.get("name", "")),
                        model_sha256=str(model.get("sha256", "")))


def parse_health(payload: bytes, site: str, node: str) -> HealthRecord:
    """A health message published on ``{prefix}/{site}/{node}/health``."""
    m = _json(payload)
    rtf = m.get("realtime_factor")
    board = m.get("board")
    return HealthRecord(
        site=site, node=node, ts=_time(m, "ts"), boot_id=_get(m, "boot_id", str), uptime_s=_num(m, "uptime_s"),
        backlog=int(m.get("backlog", 0) or 0),
        realtime_factor=float(rtf) if isinstance(rtf, int | float) and not isinstance(rtf, bool) else None,
        frames_ok=int(m.get("frames_ok", 0) or 0), crc_errors=int(m.get("crc_errors", 0) or 0),
        gaps=int(m.get("gaps", 0) or 0), samples_missed=int(m.get("samples_missed", 0) or 0),
        board=board if isinstance(board, dict) else None, payload=m)
