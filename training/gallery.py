"""A one-page gallery of a window dataset: one waveform and spectrogram per class.

Rows follow ``edge.vocabulary.CLASSES``; the left panel is the first channel's waveform
against time in the window (seconds, onset marked when known), the right panel its
spectrogram up to fs/2 in dB. Each class shows a representative window: the one with the
median SNR (or the median peak amplitude when the dataset has no SNR), or a random one
with ``seed``. Meant for a seismologist to judge realism at a glance.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from scipy.signal import spectrogram

from edge.errors import UserError
from edge.formats import iter_windows, read_manifest
from edge.vocabulary import CLASSES

FIGSIZE = (12.0, 13.0)  # inches; at DPI this gives a 1200 x 1300 pixel PNG
DPI = 100
DYNAMIC_RANGE_DB = 80.0


def pick_representatives(labels: np.ndarray, score: np.ndarray | None, seed: int | None) -> dict[str, int]:
    """Index of one window per class present: the (lower) median of ``score``, or random with ``seed``."""
    rng = None if seed is None else np.random.default_rng(seed)
    picked: dict[str, int] = {}
    for cls in CLASSES:
        idx = np.flatnonzero(labels == cls)
        if idx.size == 0:
            continue
        if rng is not None:
            picked[cls] = int(rng.choice(idx))
            continue
        values = score[idx] if score is not None else np.zeros(idx.size)
        values = np.where(np.isfinite(values), values, -np.inf)
        order = np.argsort(values, kind="stable")
        picked[cls] = int(idx[order[(idx.size - 1) // 2]])
    return picked


def _survey(data: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, bool, float]:
    """Labels and a representativeness score of every window (one pass, shard by shard)."""
    labels, snr, peak, fs_seen = [], [], [], set()
    has_snr = True
    for ws in iter_windows(data):
        labels.append(ws.labels)
        fs_seen.add(ws.fs)
        if ws.snr_db is None:
            has_snr = False
        else:
            snr.append(ws.snr_db)
        peak.append(np.log10(np.max(np.abs(ws.waveforms[:, 0, :]), axis=-1) + 1e-30))
    if not labels:
        raise UserError(f"{data}: the dataset holds no windows")
    if len(fs_seen) > 1:
        raise UserError(f"{data}: shards have different sampling rates {sorted(fs_seen)}; expected one")
    score = np.concatenate(snr) if has_snr else np.concatenate(peak)
    return np.concatenate(labels), score, has_snr, fs_seen.pop()


def _fetch(data: str | os.PathLike, wanted: dict[str, int]) -> dict[str, dict]:
    """The chosen windows with their metadata, by class."""
    by_index = {i: cls for cls, i in wanted.items()}
    out: dict[str, dict] = {}
    offset = 0
    for ws in iter_windows(data):
        for i in range(offset, offset + len(ws)):
            if i in by_index:
                k = i - offset
                out[by_index[i]] = {
                    "index": i, "x": ws.waveforms[k, 0].astype(np.float64), "fs": ws.fs,
                    "site": None if ws.site is None else str(ws.site[k]),
                    "snr_db": None if ws.snr_db is None else float(ws.snr_db[k]),
                    "time": None if ws.time is None else str(ws.time[k]),
                }
        offset += len(ws)
    return out


def _dataset_info(data: str | os.PathLike) -> dict:
    path = Path(data)
    return read_manifest(path) if path.is_dir() else {}


def _units(info: dict) -> str:
    """The manifest's units, or the one unit all its site profiles share, else 'amplitude'."""
    if isinstance(info.get("units"), str):
        return info["units"]
    sites = info.get("sites")
    units = {s.get("units") for s in sites.values() if isinstance(s, dict)} if isinstance(sites, dict) else set()
    return units.pop() if len(units) == 1 and None not in units else "amplitude"


def _title(cls: str, w: dict) -> str:
    parts = [f"{cls}  (window {w['index']})"]
    if w["site"]:
        parts.append(f"site {w['site']}")
    if w["snr_db"] is not None and math.isfinite(w["snr_db"]):
        parts.append(f"SNR {w['snr_db']:.1f} dB")
    return ",  ".join(parts)


def write_gallery(data: str | os.PathLike, out: str | os.PathLike, *, seed: int | None = None,
                  onset_s: float | None = None) -> dict[str, int]:
    """Plot the gallery of ``data`` to the PNG ``out``; returns the window index shown per class.

    ``onset_s`` (seconds into the window) is drawn as a dashed line; by default it is the
    manifest's ``onset_s`` when the dataset is a directory that records it (imported data),
    else the manifest's ``parameter_ranges.onset_s`` span is shaded (synthetic data).
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: expected a .png file name")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("the gallery needs matplotlib, which is not installed: "
                        "pip install 'stopewatch[train]'") from None
    info = _dataset_info(data)
    if onset_s is None and isinstance(info.get("onset_s"), int | float):
        onset_s = float(info["onset_s"])
    onset_range = (info.get("parameter_ranges") or {}).get("onset_s")  # the generator's jittered onsets
    if not (isinstance(onset_range, list) and len(onset_range) == 2):
        onset_range = None
    units = _units(info)
    labels, score, has_snr, _ = _survey(data)
    picked = pick_representatives(labels, score, seed)
    windows = _fetch(data, picked)

    # Figure and canvas directly (no pyplot): no global backend state, safe inside other programs.
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(CLASSES), 2, gridspec_kw={"width_ratios": [1.0, 1.15]})
    for row, cls in enumerate(CLASSES):
        ax_w, ax_s = axes[row]
        w = windows.get(cls)
        if w is None:
            for ax in (ax_w, ax_s):
                ax.text(0.5, 0.5, f"no {cls} windows", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
            ax_w.set_ylabel(cls, fontweight="bold")
            continue
        x, fs = w["x"], w["fs"]
        t = np.arange(x.size) / fs
        ax_w.plot(t, x, lw=0.5, color="k")
        ax_w.set_xlim(0.0, x.size / fs)
        ax_w.set_ylabel(f"{cls}\n{units}", fontsize=9)
        ax_w.set_title(_title(cls, w), fontsize=9, loc="left")
        nperseg = int(min(1024, max(32, 2 ** round(math.log2(max(x.size, 32) / 32)))))
        f, ts, sxx = spectrogram(x - x.mean(), fs=fs, nperseg=min(nperseg, x.size),
                                 noverlap=min(nperseg, x.size) * 3 // 4)
        db = 10.0 * np.log10(sxx + 1e-30)
        # At most 80 dB of range, and no colour spent below the quietest 2 % (DC bin, deep notches).
        top = float(db.max())
        floor = max(top - DYNAMIC_RANGE_DB, float(np.percentile(db, 2)))
        mesh = ax_s.pcolormesh(ts, f, db, shading="auto", cmap="magma", vmin=floor, vmax=top)
        ax_s.set_ylim(0.0, fs / 2)
        ax_s.set_xlim(0.0, x.size / fs)
        ax_s.set_ylabel("Hz", fontsize=9)
        fig.colorbar(mesh, ax=ax_s, pad=0.01, label="dB")
        for ax in (ax_w, ax_s):
            if onset_s is not None:
                ax.axvline(onset_s, color="tab:cyan", ls="--", lw=1.0)
            elif onset_range is not None and ax is ax_w:
                ax.axvspan(*onset_range, color="tab:cyan", alpha=0.2, lw=0)
            elif onset_range is not None:
                for t_on in onset_range:
                    ax.axvline(t_on, color="tab:cyan", ls=":", lw=1.0)
        if row == len(CLASSES) - 1:
            ax_w.set_xlabel("time in window (s)")
            ax_s.set_xlabel("time in window (s)")
    how = "median SNR" if has_snr else "median peak amplitude"
    if seed is not None:
        how = f"random, seed {seed}"
    fig.suptitle(f"{Path(data).name}: one window per class ({how}), first channel")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return {cls: w["index"] for cls, w in windows.items()}
