"""Variety of the synthetic benchmark: each class's mechanisms, held-out ones, the low-rate regime.

Every figure is measured on generated signals (envelopes, spectra, first motions), not read back
from the parameters that made them; parameters only say where to look (an onset, a ray direction).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from edge.formats import read_npz, read_windows
from edge.vocabulary import CLASSES
from training.synthetic import sources
from training.synthetic.generate import generate_windows_and_mechanisms, synthesize_window, write_window_dataset
from training.synthetic.recording import record
from training.synthetic.sites import SITES, TRAIN_SITES

GEOPHONES = tuple(n for n in TRAIN_SITES if SITES[n].sensor == "geophone")


def windows(family: str, mechanism: str, count: int, seed: int, snr_db: float = 40.0, sites=TRAIN_SITES,
            regime: str = "high"):
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        yield synthesize_window(rng, family, sites[i % len(sites)], None, 3, None, snr_db, regime=regime,
                                mechanisms=mechanism)


def envelope(x: np.ndarray, fs: float, smooth_s: float) -> np.ndarray:
    """Vector envelope of a (c, n) signal, smoothed with a boxcar of ``smooth_s``."""
    env = np.sqrt(np.sum(np.abs(signal.hilbert(x, axis=-1)) ** 2, axis=0))
    k = max(1, int(smooth_s * fs))
    return np.convolve(env, np.ones(k) / k, mode="same")


def p_over_s(meta: dict, fs: float) -> float | None:
    """Peak vector amplitude of the P wave over that of the S wave (None when S-P is too short)."""
    clean, p, s = meta["clean"], meta["onset"], meta["source"]["s_sample"]
    if s - p < 8:
        return None
    norm = np.linalg.norm(clean, axis=0)
    return float(norm[p:s].max() / norm[s:s + int(0.03 * fs)].max())


def test_double_couples_give_a_measurable_share_of_p_dominant_records():
    dc = [r for _, m in windows("microseismic", "double_couple", 60, 1, sites=GEOPHONES)
          if (r := p_over_s(m, 4000.0)) is not None]
    classic = [r for _, m in windows("microseismic", "random_radiation", 60, 1, sites=GEOPHONES)
               if (r := p_over_s(m, 4000.0)) is not None]
    trained = [r for _, m in windows("microseismic", "train", 80, 2, sites=GEOPHONES)
               if (r := p_over_s(m, 4000.0)) is not None]
    share = lambda r: float(np.mean(np.array(r) > 1.0))  # noqa: E731
    assert len(dc) >= 45 and len(classic) >= 45
    assert 0.08 <= share(dc) <= 0.6  # near S-nodal rays: P-dominant, but most shear records stay S-dominant
    assert share(classic) <= 0.05
    assert share(trained) >= 0.05  # so a trained model meets them


def first_motion(meta: dict) -> np.ndarray:
    """Signs of the first P motion on Z, N, E, where the vector amplitude first reaches 20 % of its P peak."""
    clean, p, s = meta["clean"], meta["onset"], meta["source"]["s_sample"]
    seg = clean[:, max(p - 20, 0):s]
    norm = np.linalg.norm(seg, axis=0)
    at = int(np.argmax(norm > 0.2 * norm.max()))
    return np.sign(seg[:, at])


def dilatational(meta: dict) -> bool | None:
    """True if every component with a clear share of the ray moved towards the source (None if S-P too short)."""
    if meta["source"]["s_sample"] - meta["onset"] < 12:
        return None
    ray = np.array(meta["source"]["ray"])
    clear = np.abs(ray) > 0.25
    relative = first_motion(meta)[clear] * np.sign(ray[clear])  # +1 away from the source on that component
    return bool(np.all(relative < 0)) if np.all(relative != 0) and np.unique(relative).size == 1 else False


def test_implosive_events_have_a_dilatational_first_motion_on_every_component():
    implosive = [d for _, m in windows("microseismic", "implosive", 40, 3) if (d := dilatational(m)) is not None]
    shear = [d for _, m in windows("microseismic", "double_couple", 60, 3) if (d := dilatational(m)) is not None]
    assert len(implosive) >= 30 and len(shear) >= 40
    assert np.mean(implosive) >= 0.9
    assert 0.2 <= np.mean(shear) <= 0.8  # a shear source is compressional on half the rays, dilatational on half


def rise(env: np.ndarray, at: int, fs: float) -> float:
    """Envelope peak in the 25 ms after ``at`` over its peak in the 25-3 ms before."""
    before = env[max(at - int(0.025 * fs), 0):at - int(0.003 * fs)]
    return float(env[at:at + int(0.025 * fs)].max() / (before.max() + 1e-30))


def test_doublets_show_two_onsets():
    doublet, single = [], []
    pairs = zip(windows("microseismic", "doublet", 50, 4), windows("microseismic", "double_couple", 50, 4), strict=True)
    for (_, d), (_, s) in pairs:
        if d["source"]["events"] < 2:
            continue
        second = d["source"]["event_samples"][1]
        doublet.append(rise(envelope(d["clean"], 4000.0, 0.004), second, 4000.0))
        # The same delay after a single fracture's onset: nothing starts there.
        single.append(rise(envelope(s["clean"], 4000.0, 0.004), s["onset"] + second - d["onset"], 4000.0))
    assert len(doublet) >= 35
    assert np.mean(np.array(doublet) > 1.5) >= 0.7
    assert np.mean(np.array(single) > 1.5) <= 0.25


def pulse_count(x: np.ndarray, fs: float, delay_s: float) -> int:
    """Charges seen in a blast record: envelope peaks at least 0.7 delay apart, standing 30 % of the largest out."""
    env = envelope(x, fs, 0.1 * delay_s)
    peaks, _ = signal.find_peaks(env, distance=max(1, int(0.7 * delay_s * fs)), prominence=0.3 * env.max())
    return int(peaks.size)


def blast_pair(seed: int, **kw) -> tuple[sources.Source, sources.Source]:
    """One blast made twice from the same random state: with and without the option in ``kw``."""
    grid = sources.Grid.make(4000.0, 8192)
    ctx = sources.Context(SITES["za-deep-gold"].q_range, 50.0)
    off = {k: 0.0 for k in kw}
    a = sources.blast_pattern(np.random.default_rng(seed), grid, 0.3, ctx, 10, 0.01, **kw)
    b = sources.blast_pattern(np.random.default_rng(seed), grid, 0.3, ctx, 10, 0.01, **off)
    return a, b


def test_blast_misfires_reduce_the_pulse_count():
    full_counts, lost, misfired = [], [], []
    for seed in range(30):
        with_misfires, full = blast_pair(seed, misfire_p=1.0)
        rec = [record("za-deep-gold", 4000.0, s.signal) for s in (with_misfires, full)]
        counted = [pulse_count(r, 4000.0, full.meta["delay_s"]) for r in rec]
        full_counts.append(counted[1])
        lost.append(counted[1] - counted[0])
        misfired.append(with_misfires.meta["misfires"])
    lost, misfired = np.array(lost), np.array(misfired)
    assert np.median(full_counts) == 10  # the measure counts the ten designed charges ...
    assert np.mean(lost > 0) >= 0.9  # ... and fewer when some misfire ...
    assert np.mean(lost == misfired) >= 0.8  # ... as many fewer as did not fire


def _first_arrival(x: np.ndarray) -> int:
    """First sample whose vector amplitude exceeds a tenth of its peak."""
    amp = np.linalg.norm(x, axis=0)
    return int(np.argmax(amp > 0.1 * amp.max()))


def _centroid_bin(x: np.ndarray) -> float:
    """Spectral centroid, in FFT bins, of the power over all channels."""
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    return float(np.sum(power * np.arange(x.shape[-1] // 2 + 1)) / np.sum(power))


def test_air_blasts_arrive_later_at_lower_frequency():
    later, lower = [], []
    for seed in range(20):
        with_air, ground = blast_pair(seed, air_p=1.0)
        air = record("za-deep-gold", 4000.0, with_air.signal - ground.signal)  # the air-coupled wave alone
        seismic = record("za-deep-gold", 4000.0, ground.signal)
        later.append(_first_arrival(air) > _first_arrival(seismic) + int(0.05 * 4000.0))
        lower.append(_centroid_bin(air) < 0.5 * _centroid_bin(seismic))
    assert np.mean(later) >= 0.95
    assert np.mean(lower) >= 0.9


@pytest.mark.parametrize("regime", ["high", "low"])
def test_heldout_mechanisms_never_appear_in_training(regime):
    heldout = {m.name for ms in sources.MECHANISMS.values() for m in ms if m.heldout}
    assert all(any(m.heldout for m in sources.MECHANISMS[c]) for c in CLASSES)  # at least one per class
    _, train = generate_windows_and_mechanisms(240, 5, regime=regime, samples=1024)
    _, held = generate_windows_and_mechanisms(60, 5, regime=regime, samples=1024, mechanisms="heldout")
    assert not set(train) & heldout
    assert len(set(train)) >= 15  # the training set holds the variety
    assert set(held) <= heldout and len(set(held)) == len(CLASSES)


def test_window_files_and_manifest_record_mechanism_and_regime(tmp_path):
    manifest = write_window_dataset(tmp_path / "d", 12, 6, regime="low", mechanisms="all", shard_size=5,
                                    progress=False)
    assert manifest["regime"] == "low" and manifest["fs"] == 500.0 and manifest["samples"] == 4096
    assert list(manifest["parameter_ranges"]["regime"]["mw"]) == [-1.0, 2.0]
    assert manifest["mechanisms"]["set"] == "all" and "swarm" in manifest["mechanisms"]["heldout"]["microseismic"]
    ws = read_windows(tmp_path / "d")  # the extra key does not disturb the standard reader
    mech = np.concatenate([read_npz(tmp_path / "d" / s["file"])["mechanism"] for s in manifest["shards"]])
    assert len(ws) == mech.size == 12
    assert sum(sum(c.values()) for c in manifest["mechanisms"]["counts"].values()) == 12


def test_unseen_sources_are_never_drawn_for_training():
    assert {"rockfall", "orepass", "test_pulse"} <= set(sources.EVALUATION_ONLY)
    ws, _ = generate_windows_and_mechanisms(60, 7, samples=512)
    assert set(ws.labels) <= set(CLASSES)
    for family in ("orepass", "test_pulse"):
        wave, meta = next(windows(family, "train", 1, 8, 20.0))
        assert np.all(np.isfinite(wave)) and np.any(meta["clean"])


def duration_and_dominant(meta: dict, fs: float) -> tuple[float, float]:
    clean = meta["clean"]
    f, pxx = signal.welch(clean, fs=fs, nperseg=min(512, clean.shape[-1]))
    env = envelope(clean, fs, 0.04 if fs < 1000 else 0.005)
    above = np.flatnonzero(env > 0.1 * env.max())
    return (above[-1] - above[0]) / fs, float(f[np.argmax(pxx.sum(axis=0))])


def test_low_regime_events_are_lower_in_frequency_and_longer():
    low = np.array([duration_and_dominant(m, 500.0) for _, m in windows("microseismic", "double_couple", 40, 9,
                                                                         regime="low")])
    high = np.array([duration_and_dominant(m, 4000.0) for _, m in windows("microseismic", "double_couple", 40, 9)])
    assert 5.0 <= np.median(low[:, 1]) <= 100.0
    assert np.mean((low[:, 1] >= 5.0) & (low[:, 1] <= 100.0)) >= 0.9
    assert 0.5 <= np.median(low[:, 0]) <= 5.0
    assert np.median(low[:, 0]) > 3 * np.median(high[:, 0])
    wave, meta = next(windows("blast", "production_ring", 1, 10, regime="low"))
    assert wave.shape == (3, 4096) and 1.4 * 500 <= meta["onset"] <= 2.6 * 500  # onset ~2 s into 8.2 s
