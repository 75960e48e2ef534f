"""Realism of the synthetic benchmark: each family shows the physics of its kind of source.

Measurements are made on the generated signals themselves (envelopes, spectra,
correlations), not read back from the parameters that made them. Where a mechanism
legitimately lies outside a measured range (a doublet lasts longer than one fracture,
a rotary drill has no blows), the test says which windows it measures and why; the
mechanisms themselves are measured in test_synthetic_variety.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal
from scipy.ndimage import median_filter

from training.synthetic.generate import synthesize_window
from training.synthetic.recording import energy_span
from training.synthetic.sites import SITES, TRAIN_SITES

FS = 4000.0


def windows(family: str, count: int, seed: int, snr_db: float, sites=TRAIN_SITES):
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        yield synthesize_window(rng, family, sites[i % len(sites)], FS, 3, 4096, snr_db)


def envelope(x: np.ndarray, smooth_s: float) -> np.ndarray:
    """Vector envelope of a (c, n) signal, smoothed with a boxcar of ``smooth_s``."""
    env = np.sqrt(np.sum(np.abs(signal.hilbert(x, axis=-1)) ** 2, axis=0))
    k = max(1, int(smooth_s * FS))
    return np.convolve(env, np.ones(k) / k, mode="same")


def autocorrelation_peak(env: np.ndarray, lo_s: float, hi_s: float) -> float:
    """Lag (s) of the highest autocorrelation peak of ``env`` between ``lo_s`` and ``hi_s``."""
    e = env - env.mean()
    acf = np.correlate(e, e, "full")[e.size - 1:]
    lo, hi = int(lo_s * FS), int(hi_s * FS)
    return (lo + int(np.argmax(acf[lo:hi]))) / FS


def test_microseismic_duration_and_dominant_frequency_match_mine_records():
    dominant, duration = [], []
    for _, meta in windows("microseismic", 80, 1, 40.0):
        if meta["mechanism"] == "doublet":  # two fractures: its span is not one event's duration
            continue
        clean = meta["clean"]
        f, pxx = signal.welch(clean, fs=FS, nperseg=512)
        dominant.append(f[np.argmax(pxx.sum(axis=0))])
        env = envelope(clean, 0.005)
        above = np.flatnonzero(env > 0.1 * env.max())
        duration.append((above[-1] - above[0]) / FS)
    dominant, duration = np.array(dominant), np.array(duration)
    # Mine records at 10 kHz: energy at 200-1500 Hz, f_c from kHz down to ~50 Hz; events ~50-100 ms.
    assert 150 <= np.median(dominant) <= 1000
    assert np.mean((dominant >= 30) & (dominant <= 2000)) >= 0.95
    assert 0.05 <= np.median(duration) <= 0.2
    assert np.mean((duration >= 0.02) & (duration <= 0.4)) >= 0.9


def test_microseismic_s_wave_is_larger_than_p_on_horizontals():
    # On velocity sensors: an accelerometer's differentiation favours the higher-frequency P wave,
    # so there P can legitimately look as large as S. Shear sources only: implosive events are
    # P-strong by nature, and double couples seen near an S node are P-dominant (a measured share).
    geophones = tuple(n for n in TRAIN_SITES if SITES[n].sensor == "geophone")
    ratios = []
    for _, meta in windows("microseismic", 110, 2, 40.0, geophones):
        if meta["mechanism"] == "implosive":
            continue
        clean, p, s = meta["clean"], meta["onset"], meta["source"]["s_sample"]
        if s - p < 8:  # S-P too short to separate the phases
            continue
        horizontal = np.hypot(clean[1], clean[2])
        ratios.append(horizontal[s:s + int(0.03 * FS)].max() / horizontal[p:s].max())
    assert len(ratios) >= 60
    assert np.mean(np.array(ratios) > 1.0) >= 0.85
    assert np.median(ratios) >= 1.5


def test_blasts_repeat_at_millisecond_delays():
    spacing, designed = [], []
    for _, meta in windows("blast", 60, 3, 30.0):
        if meta["source"]["charges"] < 3:
            continue
        env = envelope(meta["clean"][:, meta["onset"]:], 0.004)
        spacing.append(autocorrelation_peak(env, 0.012, 0.110))
        designed.append(meta["source"]["delay_s"])
    spacing, designed = np.array(spacing), np.array(designed)
    assert len(spacing) >= 40
    close = np.abs(spacing / designed - 1.0) < 0.1
    assert close.mean() >= 0.8
    assert np.all((spacing[close] >= 0.017 * 0.9) & (spacing[close] <= 0.100 * 1.1))


def test_drilling_envelope_is_periodic_at_the_blow_rate():
    errors = []
    for _, meta in windows("drilling", 50, 4, 20.0):
        if meta["mechanism"] == "rotary":  # quasi-continuous grinding: no blows to count
            continue
        env = envelope(meta["clean"][:, max(meta["onset"], 0):], 0.004)
        rate = meta["source"]["blow_rate_hz"]  # 10-60 blows/s: periods of 17-100 ms
        errors.append(autocorrelation_peak(env, 0.010, 0.110) * rate - 1.0)
    assert len(errors) >= 30
    assert np.mean(np.abs(errors) < 0.05) >= 0.9


def test_electrical_interference_is_common_mode_and_seismic_waves_are_not():
    def min_zero_lag_correlation(family: str) -> np.ndarray:
        out = []
        for wave, meta in windows(family, 40, 5, 20.0):
            a, b = energy_span(meta["clean"])
            # |r|: a channel wired with the opposite polarity still carries the same waveform.
            cc = np.abs(np.corrcoef(wave[:, a:b].astype(float)))
            out.append(cc[np.triu_indices(3, 1)].min())
        return np.array(out)

    electrical = min_zero_lag_correlation("electrical")
    seismic = min_zero_lag_correlation("microseismic")
    assert np.mean(electrical > 0.9) >= 0.95
    assert np.median(seismic) < 0.5


def test_mechanical_onsets_are_emergent_and_fractures_impulsive():
    def rise_times(family: str) -> np.ndarray:
        out = []
        for _, meta in windows(family, 50, 6, 20.0):
            # A machine switched off decays from its onset, and knocks are impulsive by nature.
            if meta["mechanism"] in ("fan_stop", "knocks"):
                continue
            env = envelope(meta["clean"], 0.02)[meta["onset"]:]
            peak = env.max()
            out.append((np.argmax(env > 0.9 * peak) - np.argmax(env > 0.1 * peak)) / FS)
        return np.array(out)

    mechanical, fracture = rise_times("mechanical"), rise_times("microseismic")
    assert np.mean(mechanical > 0.1) >= 0.9
    assert np.median(mechanical) > 5 * np.median(fracture)


def _burst_ratio(wave: np.ndarray) -> float:
    """Loudest 50 ms of a window over its median 50 ms (RMS), after removing single-sample spikes."""
    x = median_filter(wave.astype(float), size=(1, 3))
    k = int(0.05 * FS)
    power = np.sum(x**2, axis=0)
    seg = power[: power.size // k * k].reshape(-1, k).mean(axis=1)
    return float(np.sqrt(seg.max() / np.median(seg)))


def test_noise_windows_hold_no_event():
    # The background (with or without a transient far below it); bursts, spikes and gusts are what
    # a trigger fires on with no event, and are measured in test_synthetic_variety.py.
    noise = np.array([_burst_ratio(w) for w, m in windows("noise", 120, 7, 0.0)
                      if m["mechanism"] in ("background", "small_transient")])
    assert noise.size >= 40
    # The same measure finds real events at a modest SNR, so it would see one in a noise window.
    fracture = np.array([_burst_ratio(w) for w, _ in windows("microseismic", 60, 8, 6.0)])
    assert np.all(noise < 1.6)
    assert np.mean(fracture > 1.6) >= 0.8
    assert all(np.isnan(m["snr_db"]) for _, m in windows("noise", 5, 9, 0.0))


@pytest.mark.parametrize("snr_db", [-3.0, 6.0, 25.0])
def test_events_are_scaled_to_the_drawn_snr(snr_db):
    for family in ("microseismic", "blast", "drilling", "electrical", "mechanical"):
        for _, meta in windows(family, 4, 10, snr_db):
            clean = meta["clean"]
            a, b = energy_span(clean)
            measured = 20 * np.log10(np.sqrt(np.mean(clean[:, a:b] ** 2)) / meta["noise_rms"])
            assert measured == pytest.approx(snr_db, abs=0.01), family


def test_sites_differ_in_mains_frequency_and_quantisation():
    def noise_window(site: str, seed: int) -> np.ndarray:
        return synthesize_window(np.random.default_rng(seed), "noise", site, FS, 1, 4096, 0.0)[0][0]

    for name, site in SITES.items():
        x = noise_window(name, 11)
        f, pxx = signal.welch(x, fs=FS, nperseg=4096)
        band = (f > 40) & (f < 70)
        assert f[band][np.argmax(pxx[band])] == pytest.approx(site.mains_hz, abs=2.0), name
    # Coarse quantisation near the noise floor: only tens of distinct values over the background.
    coarse = [len(np.unique(noise_window("au-sublevel-stope", s))) for s in range(5)]
    fine = [len(np.unique(noise_window("za-deep-gold", s))) for s in range(5)]
    assert all(10 <= c <= 60 for c in coarse)
    assert min(fine) > 3 * max(coarse)


def test_uniaxial_and_other_sampling_rates():
    rng = np.random.default_rng(12)
    wave, meta = synthesize_window(rng, "microseismic", "za-deep-gold", 10_000.0, 1, 10_240, 30.0)
    assert wave.shape == (1, 10_240) and wave.dtype == np.float32
    assert 0.175 <= meta["onset"] / 10_000.0 <= 0.325
    wave, _ = synthesize_window(rng, "mechanical", "cn-coal-longwall", 250.0, 3, 1024, 10.0)
    assert wave.shape == (3, 1024) and np.all(np.isfinite(wave))
