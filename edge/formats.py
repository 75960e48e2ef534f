"""Window datasets and continuous streams on disk (described in docs/data-formats.md).

Every file is a plain ``.npz`` read with ``allow_pickle=False``; string arrays are
stored as fixed-width unicode so that nothing ever needs pickle. Writing is
deterministic (fixed zip timestamps), so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.vocabulary import CLASSES
from firmware_bridge.clock import parse_utc

MANIFEST = "manifest.json"
WINDOWS_FORMAT = "stopewatch.windows/1"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
MIN_FS, MAX_FS = 1.0, 1e6  # sampling rates a file may state: from a slow tiltmeter to a fast ADC


@dataclass
class WindowSet:
    """Labelled event windows: ``waveforms`` (n, channels, samples) in physical units."""

    waveforms: np.ndarray
    labels: np.ndarray
    fs: float
    snr_db: np.ndarray | None = None
    site: np.ndarray | None = None
    time: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])

    def subset(self, index: np.ndarray) -> WindowSet:
        """The windows selected by ``index`` (a boolean mask or integer indices)."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return WindowSet(self.waveforms[index], self.labels[index], self.fs,
                         pick(self.snr_db), pick(self.site), pick(self.time))


@dataclass
class Stream:
    """A continuous multi-channel record with optional ground-truth events."""

    data: np.ndarray  # float32 (channels, samples)
    fs: float
    start_time: str
    channels: np.ndarray
    event_onsets: np.ndarray | None = None
    event_labels: np.ndarray | None = None
    event_snr_db: np.ndarray | None = None


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed .npz with fixed timestamps (same data, same bytes).

    The file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            arr = np.asanyarray(value)
            if arr.dtype == object:
                raise ValueError(f"{key}: object arrays would need pickle; use a fixed-width dtype")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an .npz without pickle; refuse anything else with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise UserError(f"{path}: holds Python objects that need pickle; refused "
                            "(store strings as fixed-width unicode, numbers as numeric arrays)") from None
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None


def _require(z: Mapping[str, np.ndarray], path: Path, key: str, what: str) -> np.ndarray:
    if key not in z:
        raise UserError(f"{path}: missing key '{key}' ({what}); keys present: {sorted(z)}")
    return z[key]


def _as_str(arr: np.ndarray, path: Path, key: str, n: int | None) -> np.ndarray:
    if arr.dtype.kind not in "US":
        raise UserError(f"{path}: key '{key}' has dtype {arr.dtype}; expected strings")
    arr = arr.astype(str)
    if n is not None and arr.shape != (n,):
        raise UserError(f"{path}: key '{key}' has shape {arr.shape}; expected ({n},)")
    return arr


def _as_fs(arr: np.ndarray, path: Path) -> float:
    try:
        fs = float(np.asarray(arr).reshape(()))
    except (TypeError, ValueError):
        raise UserError(f"{path}: key 'fs' = {arr!r}; expected one positive number (Hz)") from None
    if not (np.isfinite(fs) and MIN_FS <= fs <= MAX_FS):
        raise UserError(f"{path}: key 'fs' = {fs:g}; expected a sampling rate from {MIN_FS:g} to {MAX_FS:g} Hz")
    return fs


def parse_time(value: str, where: str) -> datetime:
    """``value`` as an aware UTC datetime (no zone means UTC), else a UserError naming ``where``."""
    try:
        return parse_utc(value)
    except ValueError:
        raise UserError(f"{where} = {value!r}; expected an ISO-8601 UTC time "
                        "such as 2026-01-01T00:00:00.000000Z") from None


def check_time(value: str, where: str) -> str:
    """Return ``value`` if it is an ISO-8601 time, else raise a UserError naming ``where``."""
    parse_time(value, where)
    return str(value)


def _check_waveforms(wav: np.ndarray, path: Path, key: str = "waveforms") -> None:
    """Float (n, channels, samples) with at least one sample, every value finite (NaN or inf would reach
    the filters, which refuse them, or the model, which answers confidently about them)."""
    if wav.ndim != 3 or wav.dtype.kind != "f" or 0 in wav.shape[1:]:
        raise UserError(f"{path}: key '{key}' has shape {wav.shape} dtype {wav.dtype}; "
                        "expected float (n, channels, samples) with channels and samples >= 1")
    bad = ~np.isfinite(wav)
    if bad.any():
        first = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
        raise UserError(f"{path}: key '{key}' holds {int(bad.sum())} NaN or infinite value(s), the first in "
                        f"window {first}; refused (repair or drop those windows)")


def _parse_windows(z: Mapping[str, np.ndarray], path: Path, vocabulary: tuple[str, ...] | None) -> WindowSet:
    wav = _require(z, path, "waveforms", "float32 (n, channels, samples)")
    _check_waveforms(wav, path)
    n = wav.shape[0]
    labels = _as_str(_require(z, path, "labels", "class names (n,)"), path, "labels", n)
    if vocabulary is not None:
        bad = sorted(set(labels.tolist()) - set(vocabulary))
        if bad:
            raise UserError(f"{path}: key 'labels' has {bad!r}; allowed: {', '.join(vocabulary)}")
    fs = _as_fs(_require(z, path, "fs", "sampling rate in Hz"), path)
    snr = z.get("snr_db")
    if snr is not None:
        snr = np.asarray(snr, dtype=np.float32)
        if snr.shape != (n,):
            raise UserError(f"{path}: key 'snr_db' has shape {snr.shape}; expected ({n},)")
    site = _as_str(z["site"], path, "site", n) if "site" in z else None
    time = _as_str(z["time"], path, "time", n) if "time" in z else None
    if time is not None and n:
        check_time(time[0], f"{path}: key 'time'[0]")
    return WindowSet(wav.astype(np.float32, copy=False), labels, fs, snr, site, time)


def write_windows(path: str | os.PathLike, windows: WindowSet) -> None:
    """Write one window file (docs/data-formats.md)."""
    arrays: dict[str, np.ndarray] = {
        "waveforms": np.ascontiguousarray(windows.waveforms, dtype=np.float32),
        "labels": np.asarray(windows.labels, dtype=str),
        "fs": np.float64(windows.fs),
    }
    if windows.snr_db is not None:
        arrays["snr_db"] = np.asarray(windows.snr_db, dtype=np.float32)
    if windows.site is not None:
        arrays["site"] = np.asarray(windows.site, dtype=str)
    if windows.time is not None:
        arrays["time"] = np.asarray(windows.time, dtype=str)
    write_npz(path, arrays)


def write_manifest(directory: str | os.PathLike, manifest: dict) -> None:
    """Write ``manifest.json`` (sorted keys, so the same dataset gives the same bytes)."""
    path = Path(directory) / MANIFEST
    tmp = path.with_name(MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike, missing: str = "no such file") -> object:
    """A JSON file's content; a missing or malformed file is a UserError naming it (``missing`` says why)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_manifest(directory: str | os.PathLike) -> dict:
    """Read a sharded dataset's manifest, with a clear error if it is missing or malformed."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise UserError(f"{directory}: not a window dataset (no {MANIFEST} and not an .npz file)")
    manifest = read_json(path)
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not all(isinstance(s, dict) and "file" in s for s in shards):
        raise UserError(f"{path}: key 'shards' must be a list of {{\"file\": ..., \"count\": ...}}")
    return manifest


def window_files(path: str | os.PathLike) -> list[Path]:
    """The .npz files that make up a window dataset: the file itself, or the manifest's shards."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    manifest = read_manifest(path)
    files = [path / s["file"] for s in manifest["shards"]]
    for f in files:
        if not f.is_file():
            raise UserError(f"{path / MANIFEST}: lists shard '{f.name}', which is missing")
    return files


def iter_windows(path: str | os.PathLike, vocabulary: tuple[str, ...] | None = CLASSES) -> Iterator[WindowSet]:
    """Yield a window dataset shard by shard (bounded memory). ``vocabulary=None`` accepts any label."""
    for f in window_files(path):
        yield _parse_windows(read_npz(f), f, vocabulary)


def read_windows(path: str | os.PathLike, vocabulary: tuple[str, ...] | None = CLASSES) -> WindowSet:
    """Read a whole window dataset (one .npz or a sharded directory) into memory."""
    parts = list(iter_windows(path, vocabulary))
    if not parts:
        raise UserError(f"{path}: the dataset holds no shards")
    fs = {p.fs for p in parts}
    if len(fs) > 1:
        raise UserError(f"{path}: shards have different sampling rates {sorted(fs)}; expected one")
    shapes = {p.waveforms.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise UserError(f"{path}: shards have different (channels, samples) {sorted(shapes)}; expected one")

    def cat(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        if any(v is None for v in values):
            return None
        return np.concatenate(values)

    return WindowSet(np.concatenate([p.waveforms for p in parts]), np.concatenate([p.labels for p in parts]),
                     parts[0].fs, cat("snr_db"), cat("site"), cat("time"))


def write_stream(path: str | os.PathLike, stream: Stream) -> None:
    """Write a continuous stream file (docs/data-formats.md)."""
    arrays: dict[str, np.ndarray] = {
        "data": np.ascontiguousarray(stream.data, dtype=np.float32),
        "fs": np.float64(stream.fs),
        "start_time": np.asarray(stream.start_time, dtype=str),
        "channels": np.asarray(stream.channels, dtype=str),
    }
    if stream.event_onsets is not None:
        arrays["event_onsets"] = np.asarray(stream.event_onsets, dtype=np.int64)
        arrays["event_labels"] = np.asarray(stream.event_labels, dtype=str)
        if stream.event_snr_db is not None:
            arrays["event_snr_db"] = np.asarray(stream.event_snr_db, dtype=np.float32)
    write_npz(path, arrays)


def read_stream(path: str | os.PathLike) -> Stream:
    """Read a continuous stream file, validating keys, shapes and types."""
    path = Path(path)
    z = read_npz(path)
    data = _require(z, path, "data", "float32 (channels, samples)")
    if data.ndim != 2 or data.dtype.kind != "f":
        raise UserError(f"{path}: key 'data' has shape {data.shape} dtype {data.dtype}; "
                        "expected float (channels, samples)")
    fs = _as_fs(_require(z, path, "fs", "sampling rate in Hz"), path)
    start = str(_as_str(np.atleast_1d(_require(z, path, "start_time", "ISO-8601 UTC")), path, "start_time", 1)[0])
    check_time(start, f"{path}: key 'start_time'")
    channels = _as_str(_require(z, path, "channels", "channel names (c,)"), path, "channels", data.shape[0])
    onsets = labels = snr = None
    if "event_onsets" in z:
        onsets = np.asarray(z["event_onsets"])
        if onsets.ndim != 1 or onsets.dtype.kind not in "iu":
            raise UserError(f"{path}: key 'event_onsets' must be int64 (k,); got {onsets.dtype} {onsets.shape}")
        labels = _as_str(_require(z, path, "event_labels", "class per onset"), path, "event_labels", len(onsets))
        if "event_snr_db" in z:
            snr = np.asarray(z["event_snr_db"], dtype=np.float32)
    return Stream(data.astype(np.float32, copy=False), fs, start, channels, onsets.astype(np.int64)
                  if onsets is not None else None, labels, snr)


def iter_unlabelled(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, float]]:
    """(waveforms, fs) of every file of a window file or sharded dataset; labels are optional here
    (``classify``, adaptation to a mine's unlabelled windows)."""
    for f in window_files(path):
        z = read_npz(f)
        if "waveforms" not in z or "fs" not in z:
            raise UserError(f"{f}: needs keys 'waveforms' (n, channels, samples) and 'fs'; has {sorted(z)}")
        wav = z["waveforms"]
        _check_waveforms(wav, f)
        yield wav, _as_fs(z["fs"], f)
