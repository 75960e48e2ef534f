"""Windows, continuous streams and sharded datasets from the crosscheck sources and sites."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.formats import WINDOWS_FORMAT, Stream, WindowSet, write_manifest, write_windows
from edge.vocabulary import CLASSES
from training.crosscheck.instrument import SITE_TYPES, Site
from training.crosscheck.sources import REGIMES, SYNTHS, UNSEEN, Ctx

GENERATOR = "crosscheck"
VERSION = "1.0.0"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Convenient settings for the low-rate regime (coal / open-pit / regional networks).
LOW_REGIME_DEFAULTS: dict[str, float | int] = {"fs": 500.0, "samples": 4096, "pre_s": 2.0, "pre_jitter_s": 0.3}
ALL_CLASSES: tuple[str, ...] = CLASSES + UNSEEN


def _iso(seconds: float) -> str:
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def energy_span(x: np.ndarray, lo: float = 0.05, hi: float = 0.95) -> tuple[int, int]:
    """Sample range holding the ``lo``..``hi`` fraction of the total (all-channel) energy of ``x``."""
    cum = np.cumsum(np.sum(np.square(x), axis=0))
    if cum[-1] <= 0:
        return 0, 0
    a = int(np.searchsorted(cum, lo * cum[-1]))
    b = int(np.searchsorted(cum, hi * cum[-1]))
    return a, max(b, a + 1)


def event_rms(x: np.ndarray) -> float:
    """RMS of an event over its 5-95 % energy span (mean over channels)."""
    a, b = energy_span(x)
    return float(np.sqrt(np.mean(np.square(x[:, a:b])))) if b > a else 0.0


def _check(fs: float, channels: int, regime: str, classes: Sequence[str], sites: Sequence[str],
           snr_db: tuple[float, float]) -> None:
    if regime not in REGIMES:
        raise UserError(f"crosscheck: regime = {regime!r}; allowed: {', '.join(REGIMES)}")
    if not (np.isfinite(fs) and fs > 0):
        raise UserError(f"crosscheck: fs = {fs}; expected a positive sampling rate in Hz")
    if int(channels) < 1:
        raise UserError(f"crosscheck: channels = {channels}; expected 1 or more")
    bad = [c for c in classes if c not in SYNTHS]
    if bad or not classes:
        raise UserError(f"crosscheck: classes = {list(classes)!r}; allowed: {', '.join(ALL_CLASSES)}")
    bad = [s for s in sites if s not in SITE_TYPES]
    if bad or not sites:
        raise UserError(f"crosscheck: sites = {list(sites)!r}; allowed: {', '.join(SITE_TYPES)}")
    if len(snr_db) != 2 or not snr_db[0] <= snr_db[1]:
        raise UserError(f"crosscheck: snr_db = {snr_db!r}; expected (low, high) in dB with low <= high")


def _place(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """``x`` (channels, L) laid into an array of ``n`` samples at ``start`` (cropped or zero-padded)."""
    out = np.zeros((x.shape[0], n))
    a, b = max(start, 0), min(start + x.shape[1], n)
    if b > a:
        out[:, a:b] = x[:, a - start:b - start]
    return out


def render_event(rng: np.random.Generator, ctx: Ctx, label: str, lead: int, span: int,
                 **source: object) -> np.ndarray | None:
    """The class's signal as recorded by the site (channels, >= lead + 1), onset at index ``lead``;
    None when the draw holds no transient (a quiet noise window). ``source`` goes to the class's
    synthesiser (e.g. ``magnitude``, ``mechanism``, ``info`` for microseismic events)."""
    x, path = SYNTHS[label](rng, ctx, lead, span, **source)
    if path == "none":
        return None
    if path == "digital":
        return x[:ctx.channels]
    return ctx.site.record(x, path)


def _one_window(seed: int, index: int, label: str, sites: Sequence[str], fs: float, channels: int, n: int,
                pre_s: float, jitter_s: float, snr_db: tuple[float, float], regime: str) -> tuple:
    rng = np.random.default_rng([seed, index])
    site_name = str(sites[int(rng.integers(len(sites)))])
    site = SITE_TYPES[site_name].draw(rng, fs, channels)
    ctx = Ctx(fs, REGIMES[regime], site, channels)
    onset = int(np.clip(round((pre_s + rng.uniform(-jitter_s, jitter_s)) * fs), 1, n - 2))
    t0 = rng.uniform(0.0, 8 * 3600.0)
    background = site.background(rng, n, t0)
    bg_rms = float(np.sqrt(np.mean(background ** 2)))
    event = render_event(rng, ctx, label, onset, n - onset)
    snr = math.nan
    if event is not None:
        event = _place(event, 0, n)
        if label == "noise":  # below engineering interest, but enough to fire a trigger
            level = rng.uniform(10.0, 40.0) if np.count_nonzero(event) < 8 else 10 ** (rng.uniform(-6.0, 8.0) / 20)
            ref = np.max(np.abs(event)) if np.count_nonzero(event) < 8 else event_rms(event)
        else:
            snr = float(rng.uniform(*snr_db))
            level, ref = 10 ** (snr / 20), event_rms(event)
        if ref > 0:
            background = background + event * (level * bg_rms / ref)
    wave = site.digitise(rng, background, bg_rms)
    return wave.astype(np.float32), snr, site_name, t0


def _labels(seed: int, indices: Sequence[int], classes: Sequence[str]) -> list[str]:
    """Balanced labels: each consecutive block of len(classes) windows holds every class once."""
    k = len(classes)
    out, perms = [], {}
    for i in indices:
        b = i // k
        if b not in perms:
            perms[b] = np.random.default_rng([seed, b, 0xB1]).permutation(k)
        out.append(classes[perms[b][i % k]])
    return out


def _window_set(seed: int, indices: Sequence[int], *, fs: float, channels: int, samples: int | None,
                duration_s: float, pre_s: float, pre_jitter_s: float, snr_db: tuple[float, float],
                classes: Sequence[str] | None, regime: str, sites: Sequence[str] | None) -> WindowSet:
    classes = tuple(CLASSES if classes is None else classes)
    sites = tuple(SITE_TYPES if sites is None else sites)
    _check(fs, channels, regime, classes, sites, snr_db)
    n = int(samples) if samples is not None else int(round(duration_s * fs))
    if n < 64:
        raise UserError(f"crosscheck: samples = {n}; expected at least 64")
    if not 0 < pre_s * fs < n:
        raise UserError(f"crosscheck: pre_s = {pre_s}; the onset must lie inside the {n / fs:.3f} s window")
    labels = _labels(seed, indices, classes)
    waves = np.empty((len(indices), channels, n), np.float32)
    snrs = np.empty(len(indices), np.float32)
    site_names, times = [], []
    for j, (i, label) in enumerate(zip(indices, labels, strict=True)):
        waves[j], snrs[j], name, t0 = _one_window(seed, i, label, sites, fs, channels, n, pre_s, pre_jitter_s,
                                                  snr_db, regime)
        site_names.append(name)
        times.append(_iso(i * 60.0 + t0 % 60.0))
    return WindowSet(waves, np.array(labels, dtype=str), float(fs), snrs, np.array(site_names, dtype=str),
                     np.array(times, dtype=str))


def generate_windows(count: int, seed: int, *, fs: float = 10000.0, channels: int = 3, samples: int | None = None,
                     duration_s: float = 1.024, pre_s: float = 0.256, pre_jitter_s: float = 0.075,
                     snr_db: tuple[float, float] = (-3.0, 30.0), classes: Sequence[str] | None = None,
                     regime: str = "high", sites: Sequence[str] | None = None) -> WindowSet:
    """``count`` labelled windows (channels, samples) at ``fs``; window ``i`` depends only on (seed, i).

    The onset lies ``pre_s`` (+- ``pre_jitter_s``) after the window start; ``samples`` overrides
    ``duration_s``. Classes default to the six model classes, balanced; ``classes`` may name unseen
    ones (rockfall, scaling, raise_boring, test_pulse). ``snr_db`` is the range of the event's RMS
    over its 5-95 % energy span against the background RMS (NaN for noise). ``regime`` is ``high``
    (hard rock, 2-20 kHz, Mw -3..1) or ``low`` (coal / open pit, 250-1000 Hz, ML -1..2; see
    ``LOW_REGIME_DEFAULTS``). ``sites`` restricts the site types (default: all eight).
    """
    if count < 0:
        raise UserError(f"crosscheck: count = {count}; expected 0 or more")
    return _window_set(seed, range(count), fs=fs, channels=channels, samples=samples, duration_s=duration_s,
                       pre_s=pre_s, pre_jitter_s=pre_jitter_s, snr_db=snr_db, classes=classes, regime=regime,
                       sites=sites)


# -- continuous streams --------------------------------------------------------------------------------

_STREAM_SPAN_S = {  # how long each kind lasts in a stream (s, before the regime's time scale)
    "drilling": (2.0, 20.0), "mechanical": (2.0, 10.0), "raise_boring": (5.0, 20.0), "electrical": (0.3, 2.0),
    "rockfall": (1.0, 4.0), "scaling": (2.0, 8.0), "test_pulse": (0.5, 1.0), "noise": (0.5, 1.5),
    "microseismic": (0.5, 0.8), "blast": (0.5, 0.8),
}


def _line_gates(rng: np.random.Generator, site: Site, seconds: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each tonal line, times at which it switches (fans and pumps start and stop) and its states."""
    gates = []
    for _ in site.lines:
        toggles = np.cumsum(rng.exponential(rng.uniform(120.0, 900.0), 64))
        toggles = toggles[toggles < seconds]
        state0 = rng.random() < 0.8
        gates.append((toggles, np.array([state0 ^ bool(k % 2) for k in range(toggles.size + 1)], float)))
    return gates


def _gate(t: np.ndarray, toggles: np.ndarray, states: np.ndarray, ramp_s: float) -> np.ndarray:
    """Smooth on/off level at times ``t`` (each switch ramps over ``ramp_s``)."""
    level = np.full(t.size, states[0])
    for k, tk in enumerate(toggles):
        if tk > t[-1]:
            break
        step = np.clip((t - tk) / ramp_s, 0.0, 1.0)
        level = level + (states[k + 1] - states[k]) * step
    return level


def generate_stream(seconds: float, seed: int, *, fs: float = 10000.0, channels: int = 3, regime: str = "high",
                    events_per_minute: float = 4.0, site: str | None = None,
                    snr_db: tuple[float, float] = (-3.0, 30.0), classes: Sequence[str] | None = None) -> Stream:
    """A continuous record over a non-stationary background (level drift over minutes, fans and pumps
    switching on and off, wandering tonal lines, mains) with non-overlapping injected events.

    Ground truth: ``event_onsets`` (sample index of each onset), ``event_labels``, ``event_snr_db``
    (NaN for noise transients). ``site`` names a site type (default: drawn from the seed).
    """
    classes = tuple(CLASSES if classes is None else classes)
    site_name = site if site is not None else str(list(SITE_TYPES)[np.random.default_rng([seed, 7]).integers(8)])
    _check(fs, channels, regime, classes, [site_name], snr_db)
    if not seconds > 0:
        raise UserError(f"crosscheck: seconds = {seconds}; expected a positive duration")
    if events_per_minute < 0:
        raise UserError(f"crosscheck: events_per_minute = {events_per_minute}; expected 0 or more")
    rng = np.random.default_rng([seed, 0x57])
    reg = REGIMES[regime]
    chain = SITE_TYPES[site_name].draw(rng, fs, channels)
    ctx = Ctx(fs, reg, chain, channels)
    n = int(round(seconds * fs))
    data = np.empty((channels, n), np.float32)
    # Non-stationary level: a few slow swings (shift activity, ventilation changes), +-3..6 dB in all.
    periods = rng.uniform(60.0, 1800.0, 3)
    phases = rng.uniform(0, 2 * math.pi, 3)
    depth = math.log(10 ** (rng.uniform(3.0, 6.0) / 20)) / 3

    def level(t: np.ndarray) -> np.ndarray:
        return np.exp(depth * np.sum(np.sin(2 * math.pi * t[None, :] / periods[:, None] + phases[:, None]), 0))

    gates = _line_gates(rng, chain, seconds)
    ramp = rng.uniform(5.0, 20.0)
    block, overlap = 1 << 18, 4096
    fade = np.sin(0.5 * math.pi * (np.arange(overlap) + 0.5) / overlap)
    tail = None
    for start in range(0, n, block):
        m = min(block, n - start)
        noise = chain.noise(rng, m + overlap)
        if tail is not None:  # crossfade independent blocks: sin^2 + cos^2 = 1 keeps the variance
            noise[:, :overlap] = tail * fade[::-1] + noise[:, :overlap] * fade
        tail = noise[:, m:m + overlap].copy()
        t = (start + np.arange(m)) / fs
        on = np.array([_gate(t, tg, st, ramp) for tg, st in gates]) if gates else None
        data[:, start:start + m] = ((noise[:, :m] + chain.tones(t, on)) * level(t) + chain.mains(t))
    bg_rms = float(np.sqrt(np.mean(np.square(data[:, :: max(1, n // 200000)], dtype=np.float64))))
    onsets, labels, snrs = [], [], []
    rate = events_per_minute / 60.0
    guard = max(2.0, 1.5 * reg.scale)
    t_next = 1.0 + rng.exponential(1 / rate) if rate > 0 else math.inf  # room for the first event's lead
    k = 0
    while rate > 0 and t_next < seconds - 1.0:
        if k % len(classes) == 0:  # every class once per round, in a fresh order
            order = rng.permutation(len(classes))
        label = classes[order[k % len(classes)]]
        k += 1
        lo, hi = _STREAM_SPAN_S[label]
        span = int(rng.uniform(lo, hi) * math.sqrt(reg.scale) * fs)
        if label in ("microseismic", "blast"):
            span = int((0.8 if regime == "high" else 6.0) * fs)
        lead = int(min(0.5 * guard, 0.5) * fs)
        onset = int(t_next * fs)
        event = render_event(rng, ctx, label, lead, span)
        if event is None:  # a quiet noise draw: nothing to inject, try another class
            t_next += 1.0
            continue
        a, b = energy_span(event, 0.0, 0.995)
        end = onset - lead + b
        if end >= n:
            break
        w0, w1 = max(0, onset - int(0.25 * reg.scale * fs)), min(n, onset + int(0.75 * reg.scale * fs))
        local = float(np.sqrt(np.mean(np.square(data[:, w0:w1], dtype=np.float64))))
        snr = math.nan
        if label == "noise":
            gain = 10 ** (rng.uniform(-6.0, 8.0) / 20) * local / max(event_rms(event), 1e-30)
            if np.count_nonzero(event) < 8:
                gain = rng.uniform(10.0, 40.0) * local / np.max(np.abs(event))
        else:
            snr = float(rng.uniform(*snr_db))
            gain = 10 ** (snr / 20) * local / max(event_rms(event), 1e-30)
        s0 = onset - lead
        seg = event[:, : min(event.shape[1], n - s0)]
        data[:, s0:s0 + seg.shape[1]] += (gain * seg).astype(np.float32)
        onsets.append(onset)
        labels.append(label)
        snrs.append(snr)
        t_next = end / fs + guard + rng.exponential(1 / rate)
    for start in range(0, n, block):  # the ADC, block by block
        data[:, start:start + block] = chain.digitise(rng, data[:, start:start + block].astype(np.float64),
                                                      bg_rms).astype(np.float32)
    names = ["Z", "N", "E"][:channels] + [f"C{j + 1}" for j in range(3, channels)]
    return Stream(data, float(fs), _iso(0.0), np.array(names, dtype=str), np.array(onsets, dtype=np.int64),
                  np.array(labels, dtype=str), np.array(snrs, dtype=np.float32))


# -- datasets on disk ----------------------------------------------------------------------------------

def write_dataset(out_dir: str | Path, count: int, seed: int, *, shard_size: int = 1000, **kwargs) -> dict:
    """Write ``count`` windows (``generate_windows`` keyword arguments in ``kwargs``) as shards
    ``shard-NNNNN.npz`` with a manifest recording the generator, its version, seed and parameters.
    The same arguments give the same bytes, whatever ``shard_size``. Returns the manifest."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if shard_size < 1:
        raise UserError(f"crosscheck: shard_size = {shard_size}; expected 1 or more")
    allowed = {"fs", "channels", "samples", "duration_s", "pre_s", "pre_jitter_s", "snr_db", "classes", "regime",
               "sites"}
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise UserError(f"crosscheck: unknown parameter(s) {bad}; allowed: {', '.join(sorted(allowed))}")
    params = {"fs": 10000.0, "channels": 3, "samples": None, "duration_s": 1.024, "pre_s": 0.256,
              "pre_jitter_s": 0.075, "snr_db": (-3.0, 30.0), "classes": None, "regime": "high", "sites": None}
    params.update(kwargs)
    out.mkdir(parents=True, exist_ok=True)
    shards, class_counts, site_counts = [], {}, {}
    for j, start in enumerate(range(0, count, shard_size)):
        ws = _window_set(seed, range(start, min(count, start + shard_size)), **params)
        name = f"shard-{j:05d}.npz"
        write_windows(out / name, ws)
        shards.append({"file": name, "count": len(ws)})
        for lab in ws.labels.tolist():
            class_counts[lab] = class_counts.get(lab, 0) + 1
        for s in ws.site.tolist():
            site_counts[s] = site_counts.get(s, 0) + 1
    classes = list(CLASSES if params["classes"] is None else params["classes"])
    fs = float(params["fs"])
    samples = int(params["samples"]) if params["samples"] is not None else int(round(params["duration_s"] * fs))
    channels = int(params["channels"])
    recorded = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    manifest = {
        "format": WINDOWS_FORMAT, "source": GENERATOR, "count": count, "seed": seed,
        "generator": {"name": GENERATOR, "version": VERSION, "parameters": recorded},
        "class_counts": {c: class_counts.get(c, 0) for c in classes}, "shards": shards, "fs": fs,
        "channels": channels, "channel_names": (["Z", "N", "E"][:channels] + [f"C{j + 1}" for j in range(3, channels)]),
        "samples": samples, "units": "counts", "onset_s": float(params["pre_s"]),
        "sites": sorted(site_counts), "site_counts": dict(sorted(site_counts.items())),
    }
    write_manifest(out, manifest)
    return manifest
