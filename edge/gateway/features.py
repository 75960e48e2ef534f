"""Interpretable features of an event window (numpy; the training-side baselines also scipy).

Two users: the gateway daemon reports :func:`event_features` (the event message's
``features``) with every classification, and the classical baselines of the
training report use :func:`baseline_vector` (time-domain, spectral band energies,
dominant and centroid frequency, statistical moments -- the features of the
published classical methods).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Band edges (Hz) for band energies; the last band ends at Nyquist.
BAND_EDGES_HZ: tuple[float, ...] = (0.0, 25.0, 75.0, 150.0, 300.0, 600.0, 1200.0)


def _band_names(fs: float) -> list[str]:
    edges = [e for e in BAND_EDGES_HZ if e < fs / 2] + [fs / 2]
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _energy_duration(power: np.ndarray, fs: float, lo: float = 0.05, hi: float = 0.95) -> tuple[float, int, int]:
    """Significant duration: time between ``lo`` and ``hi`` of the cumulative energy."""
    cum = np.cumsum(power, dtype=np.float64)
    total = cum[-1]
    if total <= 0:
        return 0.0, 0, 0
    i0 = int(np.searchsorted(cum, lo * total))
    i1 = int(np.searchsorted(cum, hi * total))
    return (i1 - i0) / fs, i0, i1


@lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    """The periodic Hann window of ``scipy.signal.get_window("hann", n)`` (what welch uses), in numpy."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _psd(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD (512-sample Hann segments, 50 % overlap, mean-detrended, density scaling).

    The same numbers as ``scipy.signal.welch(x, fs, nperseg=512)``, computed with one strided FFT
    instead of its general machinery: the gateway calls this for every event.
    """
    n = x.shape[-1]
    nper = min(512, n)
    step = nper - nper // 2
    segs = np.lib.stride_tricks.sliding_window_view(x, nper, axis=-1)[..., ::step, :]
    win = _hann(nper)
    spec = np.fft.rfft((segs - segs.mean(axis=-1, keepdims=True)) * win, axis=-1)
    pxx = (spec.real**2 + spec.imag**2).mean(axis=-2) / (fs * np.sum(win * win))
    pxx[..., 1:(nper + 1) // 2] *= 2  # one-sided: double all but DC (and Nyquist for even nper)
    return np.fft.rfftfreq(nper, 1.0 / fs), pxx


def _moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Centred moving average of length ``k`` (as np.convolve(x, ones(k)/k, 'same')), via a cumulative sum."""
    if k <= 1:
        return x
    c = np.concatenate([[0.0], np.cumsum(x)])
    hi = np.arange(x.size) + (k - 1) // 2 + 1  # 'same' keeps the full convolution from (k-1)//2 on
    return (c[np.clip(hi, 0, x.size)] - c[np.clip(hi - k, 0, x.size)]) / k


def event_features(window: np.ndarray, fs: float, sta_lta_max: float) -> dict:
    """The event message's ``features`` of one raw window (channels, samples) in physical units.

    ``ppv`` peak vector amplitude; ``dominant_hz`` PSD peak; ``duration_s`` 5-95 % duration of the
    energy above the background; ``snr_db`` loudest 5-95 % part vs the quietest quarter; ``sta_lta_max``
    the trigger's peak STA/LTA, given by the caller; ``energy`` sum of squares / fs;
    ``band_energy`` fraction of energy per band (Hz); ``clipped`` flat-topped peaks (>= 3 equal
    samples at the extreme).
    """
    x = np.atleast_2d(np.asarray(window, dtype=np.float64))
    x = x - x.mean(axis=-1, keepdims=True)
    power = np.sum(x * x, axis=0)
    ppv = float(np.sqrt(power.max())) if power.size else 0.0
    f, pxx = _psd(x, fs)
    psum = pxx.sum(axis=0)
    dominant = float(f[int(np.argmax(psum[1:])) + 1]) if len(f) > 1 else 0.0
    # duration of the energy above the background (median of the 10 ms smoothed power)
    smooth = _moving_average(power, max(1, int(0.01 * fs)))
    duration, i0, i1 = _energy_duration(np.clip(smooth - np.median(smooth), 0, None), fs)
    q = max(1, len(power) // 4)
    quiet = np.partition(power, q - 1)[:q].mean()
    loud = power[i0:max(i1, i0 + 1)].mean() if power.size else 0.0
    snr = float(10 * np.log10(max(loud, 1e-30) / max(quiet, 1e-30)))
    bands = {}
    names = _band_names(fs)
    edges = [e for e in BAND_EDGES_HZ if e < fs / 2] + [fs / 2 + 1e-9]
    total = float(psum.sum()) or 1.0
    for name, lo, hi in zip(names, edges[:-1], edges[1:], strict=True):
        bands[name] = float(psum[(f >= lo) & (f < hi)].sum() / total)
    raw = np.atleast_2d(np.asarray(window))
    peak = np.abs(raw).max(axis=-1, keepdims=True)
    at_peak = (np.abs(raw) >= peak) & (peak > 0)
    runs = at_peak[:, 2:] & at_peak[:, 1:-1] & at_peak[:, :-2] if raw.shape[-1] > 2 else at_peak[:, :0]
    return {
        "ppv": ppv,
        "dominant_hz": dominant,
        "duration_s": float(duration),
        "snr_db": snr,
        "sta_lta_max": float(sta_lta_max),
        "energy": float(power.sum() / fs),
        "band_energy": bands,
        "clipped": bool(runs.any()),
    }


def baseline_names(fs: float) -> list[str]:
    """Names of the :func:`baseline_vector` entries, in order."""
    return (["log_rms", "crest", "duration_s", "rise_s", "zcr", "env_cv", "env_acf_peak", "env_acf_lag_s",
             "skewness", "kurtosis", "dominant_hz", "centroid_hz", "bandwidth_hz", "flatness", "mains_ratio",
             "channel_corr"] + [f"band_{b}" for b in _band_names(fs)])


def baseline_vector(window: np.ndarray, fs: float) -> np.ndarray:
    """Classical feature vector of one band-passed window (channels, samples); see :func:`baseline_names`.

    Per-channel features are averaged over channels so that uniaxial and triaxial records share
    one vector; ``channel_corr`` (mean pairwise correlation, 1 for one channel) captures the
    common-mode character of electrical interference.
    """
    from scipy import signal, stats  # training side only: the gateway's event_features needs neither

    x = np.atleast_2d(np.asarray(window, dtype=np.float64))
    x = x - x.mean(axis=-1, keepdims=True)
    c, n = x.shape
    power = np.sum(x * x, axis=0)
    rms = np.sqrt(power.mean() / c) + 1e-30
    env = np.sqrt(signal.convolve(power, np.ones(32) / 32, mode="same"))
    duration, i0, _ = _energy_duration(power, fs)
    rise = (int(np.argmax(env)) - i0) / fs
    zcr = float(np.mean(np.abs(np.diff(np.signbit(x), axis=-1)))) * fs
    env_cv = float(env.std() / (env.mean() + 1e-30))
    e = env - env.mean()
    acf = signal.fftconvolve(e, e[::-1], mode="full")[n - 1:]
    acf = acf / (acf[0] + 1e-30)
    lo = int(0.01 * fs)  # repetitions faster than 100/s are ringing, not blows or delays
    k = lo + int(np.argmax(acf[lo:n // 2])) if n // 2 > lo else 0
    skew = float(np.mean(stats.skew(x, axis=-1)))
    kurt = float(np.mean(stats.kurtosis(x, axis=-1)))
    f, pxx = _psd(x, fs)
    p = pxx.mean(axis=0) + 1e-30
    dom = float(f[int(np.argmax(p[1:])) + 1])
    cen = float(np.sum(f * p) / np.sum(p))
    bw = float(np.sqrt(np.sum((f - cen) ** 2 * p) / np.sum(p)))
    flat = float(np.exp(np.mean(np.log(p))) / np.mean(p))
    df = f[1] - f[0]
    mains = np.zeros_like(f, dtype=bool)
    for h in (50.0, 60.0, 100.0, 120.0, 150.0, 180.0):
        mains |= np.abs(f - h) <= df
    mains_ratio = float(p[mains].sum() / p.sum())
    if c > 1:
        cc = np.corrcoef(x)
        corr = float(np.nanmean(np.abs(cc[np.triu_indices(c, 1)])))
    else:
        corr = 1.0
    edges = [e for e in BAND_EDGES_HZ if e < fs / 2] + [fs / 2 + 1e-9]
    bands = [float(p[(f >= a) & (f < b)].sum() / p.sum()) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return np.array([np.log10(rms), float(np.abs(x).max() / rms), duration, rise, zcr, env_cv,
                     float(acf[k]) if k else 0.0, k / fs, skew, kurt, dom, cen, bw, flat, mains_ratio,
                     corr] + bands, dtype=np.float64)
