"""The page's plots as PNG bytes, drawn with matplotlib's Agg backend on the server (no JS in the page).

Figures are made with the object API (``Figure``), never pyplot's global state, so the waitress threads
do not share a figure; one lock keeps matplotlib's font and text caches single-threaded.
"""

from __future__ import annotations

import io
import threading
from collections import defaultdict

import numpy as np

from firmware_bridge.clock import parse_utc
from surface.store import CountRow, EventRow, Waveform

_LOCK = threading.Lock()
_DPI = 100


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def onset_s(event: EventRow, wf: Waveform) -> float:
    """The trigger time as seconds into the waveform."""
    return (parse_utc(event.trigger_time) - parse_utc(wf.start)).total_seconds()


def waveform_png(event: EventRow, wf: Waveform) -> bytes:
    """One panel per component over the window's time, the onset (trigger) as a red line."""
    from matplotlib.figure import Figure

    with _LOCK:
        n = max(1, len(wf.channels))
        fig = Figure(figsize=(9, 1.5 + 1.3 * n), layout="constrained")
        axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
        t = np.arange(wf.data.shape[1]) / wf.fs
        onset = onset_s(event, wf)
        for ax, name, x in zip(axes, wf.channels, wf.data, strict=False):
            ax.plot(t, x, lw=0.6, color="#1f3b5a")
            ax.axvline(onset, color="#c0392b", lw=1.2, label="onset (trigger)")
            ax.set_ylabel(f"{name} [{wf.units or 'units'}]")
            ax.grid(alpha=0.3)
        axes[0].legend(loc="upper right", fontsize=8)
        axes[0].set_title(f"{event.event_id}  ({wf.fs:g} Hz)", fontsize=9)
        axes[-1].set_xlabel("seconds from the window start")
        return _png(fig)


def spectrogram_png(event: EventRow, wf: Waveform) -> bytes:
    """The spectrogram of the first component (dB), the onset marked."""
    from matplotlib.figure import Figure
    from scipy.signal import spectrogram

    with _LOCK:
        x = wf.data[0].astype(np.float64)
        nper = int(min(256, max(16, 2 ** int(np.log2(max(16, len(x) // 8))))))
        f, t, sxx = spectrogram(x, fs=wf.fs, nperseg=nper, noverlap=nper * 3 // 4)
        fig = Figure(figsize=(9, 3.2), layout="constrained")
        ax = fig.subplots()
        db = 10 * np.log10(sxx + 1e-30)
        top = float(np.max(db)) if db.size else 0.0
        mesh = ax.pcolormesh(t, f, db, shading="auto", cmap="viridis", vmin=top - 80, vmax=top)
        ax.axvline(onset_s(event, wf), color="#ff5e4d", lw=1.5, label="onset (trigger)")
        ax.set_xlabel("seconds from the window start")
        ax.set_ylabel("Hz")
        ax.set_title(f"spectrogram, component {wf.channels[0] if wf.channels else '?'}", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
        fig.colorbar(mesh, ax=ax, label=f"dB re 1 ({wf.units or 'units'})²/Hz")
        return _png(fig)


def counts_png(rows: list[CountRow], title: str) -> bytes:
    """Stacked bars: events per time bucket, one colour per key (a label, or a node)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    with _LOCK:
        buckets = sorted({r.bucket for r in rows})
        keys = sorted({r.key for r in rows})
        table: dict[str, dict[str, int]] = defaultdict(dict)
        for r in rows:
            table[r.key][r.bucket] = r.count
        fig = Figure(figsize=(9, 3.6), layout="constrained")
        ax = fig.subplots()
        if not rows:
            ax.text(0.5, 0.5, "no events yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            return _png(fig)
        x = np.arange(len(buckets))
        bottom = np.zeros(len(buckets))
        cmap = colormaps["tab10"]
        for i, key in enumerate(keys):
            values = np.array([table[key].get(b, 0) for b in buckets], dtype=float)
            ax.bar(x, values, bottom=bottom, label=key, color=cmap(i % 10))
            bottom += values
        step = max(1, len(buckets) // 12)
        ax.set_xticks(x[::step], [buckets[i] for i in range(0, len(buckets), step)], rotation=30, ha="right",
                      fontsize=8)
        ax.set_ylabel("events")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, ncols=min(4, len(keys)), loc="upper left")
        ax.grid(axis="y", alpha=0.3)
        return _png(fig)
