"""From the archive back to training, and out to seismology tools.

- :func:`export_windows`: reviewed events with their waveforms as a window dataset
  (``stopewatch.windows/1``, docs/data-formats.md) that ``stopewatch train --init MODEL --data DIR`` reads.
- :func:`export_quakeml`: the catalogue as QuakeML 1.2, written by ObsPy's ``Catalog``. ObsPy is the
  seismology community's own library and validates against the QuakeML schema, so we do not hand-write XML.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.formats import MANIFEST, WINDOWS_FORMAT, write_manifest, write_npz
from edge.vocabulary import CLASSES, UNKNOWN
from firmware_bridge.clock import parse_utc
from surface.store import EventQuery, EventRow, Store, Waveform

# The model's classes as QuakeML 1.2 event types (the nearest the standard's vocabulary offers).
QUAKEML_TYPES = {
    "microseismic": "induced or triggered event",
    "blast": "mining explosion",
    "drilling": "anthropogenic event",
    "mechanical": "anthropogenic event",
    "electrical": "not existing",  # electrical pickup: no ground motion happened
    "noise": "not existing",
    UNKNOWN: "not reported",
}
_QUAKEML_UNITS = ("m", "s", "m/s", "m/(s*s)", "m*s", "dimensionless")
FEATURE_UNITS = {"ppv": "{units}", "dominant_hz": "Hz", "duration_s": "s", "snr_db": "dB", "sta_lta_max": "ratio",
                 "energy": "{units}^2 s", "band_energy": "fraction per band", "clipped": "boolean"}


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    count: int
    class_counts: dict[str, int]
    skipped: dict[str, int]  # reason -> events left out


def export_windows(store: Store, out: str | Path, reviewed_only: bool = True, since: str | None = None,
                   shard_size: int = 1000) -> ExportSummary:
    """Write the archive's events with waveforms as a sharded window dataset in ``out`` (new or empty).

    The label of each window is the reviewer's (else, without ``reviewed_only``, the model's); windows
    labelled ``unknown`` are left out (training needs a class). Windows of one dataset share one rate
    and (channels, samples): the most common shape is written, the others are counted as skipped.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty directory; choose a new one")
    skipped: Counter[str] = Counter()
    shapes: Counter[tuple] = Counter()
    for row, wf in store.iter_export(reviewed_only, since):
        if row.current_label in CLASSES:
            shapes[(wf.fs, wf.channels, wf.data.shape[1])] += 1
    if not shapes:
        what = "reviewed events with waveforms" if reviewed_only else "events with waveforms and a class"
        raise UserError(f"{store.url}: no {what}" + (f" since {since}" if since else "") + "; nothing to export")
    shape = shapes.most_common(1)[0][0]
    fs, channels, samples = shape
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict] = []
    buf: list[tuple[EventRow, Waveform]] = []
    counts: Counter[str] = Counter()
    units: set[str] = set()
    onsets: list[float] = []

    def flush() -> None:
        if not buf:
            return
        name = f"shard-{len(shards):05d}.npz"
        write_npz(out / name, {
            "waveforms": np.stack([w.data for _, w in buf]).astype(np.float32),
            "labels": np.array([r.current_label for r, _ in buf], dtype=str),
            "fs": np.float64(fs),
            "site": np.array([r.site for r, _ in buf], dtype=str),
            "time": np.array([r.trigger_time for r, _ in buf], dtype=str),
            "event_id": np.array([r.event_id for r, _ in buf], dtype=str),  # readers ignore keys they do not know
        })
        shards.append({"file": name, "count": len(buf),
                       "sha256": hashlib.sha256((out / name).read_bytes()).hexdigest()})
        buf.clear()

    for row, wf in store.iter_export(reviewed_only, since):
        label = row.current_label
        if label not in CLASSES:
            skipped[f"label {label}"] += 1
            continue
        if (wf.fs, wf.channels, wf.data.shape[1]) != shape:
            skipped[f"shape {wf.fs:g} Hz x {len(wf.channels)} x {wf.data.shape[1]}"] += 1
            continue
        buf.append((row, wf))
        counts[label] += 1
        units.add(wf.units)
        onsets.append((parse_utc(row.trigger_time) - parse_utc(wf.start)).total_seconds())
        if len(buf) >= shard_size:
            flush()
    flush()
    total = sum(counts.values())
    write_manifest(out, {
        "format": WINDOWS_FORMAT, "source": "surface", "shards": shards, "count": total, "fs": fs,
        "samples": samples, "channels": len(channels), "channel_names": list(channels),
        "class_counts": {c: counts.get(c, 0) for c in CLASSES}, "units": ", ".join(sorted(units)),
        "onset_s": round(float(np.median(onsets)), 6), "reviewed_only": reviewed_only, "since": since,
        "skipped": dict(skipped), "database": store.url,
    })
    return ExportSummary(out, total, dict(counts), dict(skipped))


def read_stations(path: str | Path) -> dict[tuple[str, str], tuple[float, float, float]]:
    """``site,node,latitude,longitude,depth_m`` CSV -> {(site, node): (lat, lon, depth_m)}."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except OSError as exc:
        raise UserError(f"--stations {path}: cannot read ({exc})") from None
    need = {"site", "node", "latitude", "longitude", "depth_m"}
    out = {}
    for i, row in enumerate(rows, start=2):
        if not need <= set(row):
            raise UserError(f"--stations {path}: columns {sorted(need)} are required; found {sorted(row)}")
        try:
            lat, lon, depth = float(row["latitude"]), float(row["longitude"]), float(row["depth_m"])
        except (TypeError, ValueError):
            raise UserError(f"--stations {path}: line {i}: latitude, longitude and depth_m must be numbers") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise UserError(f"--stations {path}: line {i}: latitude {lat} / longitude {lon} out of range")
        out[(row["site"], row["node"])] = (lat, lon, depth)
    return out


def export_quakeml(store: Store, out: str | Path, reviewed_only: bool = False, since: str | None = None,
                   stations: dict[tuple[str, str], tuple[float, float, float]] | None = None) -> int:
    """Write the catalogue as QuakeML 1.2 (validated against the schema); returns the number of events.

    Each event carries a pick (the trigger at the node: network code = site, station code = node), its
    PPV amplitude, its type (:data:`QUAKEML_TYPES`, certainty ``known`` once reviewed), the features
    and probabilities as comments, and an origin at the node's position when ``stations`` gives it
    (a single node locates nothing: the origin time is the trigger time, the place the sensor's).
    """
    try:
        from obspy import UTCDateTime
        from obspy.core.event import (
            Amplitude,
            Catalog,
            Comment,
            CreationInfo,
            Event,
            Origin,
            Pick,
            ResourceIdentifier,
            WaveformStreamID,
        )
    except ImportError:
        raise UserError("the QuakeML export needs ObsPy: pip install 'stopewatch[surface]'") from None
    stations = stations or {}
    cat = Catalog(resource_id=ResourceIdentifier("smi:stopewatch.invalid/catalogue"),
                  description="stopewatch surface archive")
    offset = 0
    while True:
        rows = store.query_events(EventQuery(since=since, reviewed=True if reviewed_only else None, limit=1000,
                                             offset=offset))
        if not rows:
            break
        offset += len(rows)
        for r in rows:
            wf_units = store.waveform_units(r.event_id) or ""
            rid = f"smi:stopewatch.invalid/event/{r.event_id}"
            t = UTCDateTime(r.trigger_time)
            pick = Pick(resource_id=ResourceIdentifier(f"{rid}/pick"), time=t,
                        waveform_id=WaveformStreamID(network_code=r.site, station_code=r.node),
                        method_id=ResourceIdentifier("smi:stopewatch.invalid/method/sta-lta"),
                        evaluation_mode="automatic")
            ev = Event(resource_id=ResourceIdentifier(rid), event_type=QUAKEML_TYPES[r.current_label],
                       event_type_certainty="known" if r.reviewed_label else "suspected",
                       creation_info=CreationInfo(agency_id="stopewatch", author=r.reviewed_by or r.model_name))
            ev.picks.append(pick)
            ev.amplitudes.append(Amplitude(
                resource_id=ResourceIdentifier(f"{rid}/ppv"), generic_amplitude=float(r.features["ppv"]),
                type="PPV", category="point", unit=wf_units if wf_units in _QUAKEML_UNITS else "other",
                pick_id=pick.resource_id, waveform_id=pick.waveform_id))
            if (r.site, r.node) in stations:
                lat, lon, depth = stations[(r.site, r.node)]
                ev.origins.append(Origin(resource_id=ResourceIdentifier(f"{rid}/origin"), time=t, latitude=lat,
                                         longitude=lon, depth=depth, evaluation_mode="automatic",
                                         comments=[Comment(text="single-node trigger: time of the trigger, "
                                                                "position of the sensor")]))
                ev.preferred_origin_id = ev.origins[0].resource_id
            units = {k: v.replace("{units}", wf_units or "units") for k, v in FEATURE_UNITS.items()}
            ev.comments.append(Comment(text="features " + json.dumps(
                {k: {"value": v, "unit": units.get(k, "")} for k, v in r.features.items()}, sort_keys=True)))
            ev.comments.append(Comment(text=f"model {r.model_name} {r.model_version} label {r.label} "
                                            f"confidence {r.confidence:.6f} probabilities "
                                            + json.dumps(r.probabilities, sort_keys=True)))
            if r.reviewed_label:
                ev.comments.append(Comment(text=f"reviewed by {r.reviewed_by} at {r.reviewed_at}: "
                                                f"{r.label} -> {r.reviewed_label}"))
            cat.events.append(ev)
    if not cat.events:
        raise UserError(f"{store.url}: no events" + (f" since {since}" if since else "") + "; nothing to export")
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist")
    cat.write(str(out), format="QUAKEML", validate=True)
    return len(cat.events)


__all__ = ["MANIFEST", "QUAKEML_TYPES", "ExportSummary", "export_quakeml", "export_windows", "read_stations"]
