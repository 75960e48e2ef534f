"""Sites as a distribution: drawn recording chains stay in range, respect the held-out split, and show
their mains, tones, offsets, polarity, dropouts and quantisation in the signals they generate."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import signal

from edge.cli import main
from edge.formats import read_stream, read_windows
from training.synthetic.generate import generate_windows, synthesize_window
from training.synthetic.recording import ChainBackground
from training.synthetic.sites import AA_DESIGNS, AA_FAMILIES, MAINS_HARMONICS, WIDE, RecordingChain, draw_chain
from training.synthetic.stream import StreamSynth

FS = 4000.0


def chains(count: int, seed: int, region: str = "train") -> list[RecordingChain]:
    return [draw_chain(np.random.default_rng([seed, i]), WIDE, region) for i in range(count)]


def quiet(seed: int = 0, **changes) -> RecordingChain:
    """A drawn chain with its defects and lines removed, then ``changes`` applied: one effect at a time."""
    base = draw_chain(np.random.default_rng(seed))
    clean = dict(sensor="geophone", natural_hz=4.5, damping=0.7, mount_gain_db=0.0, aa_family="butter", aa_order=8,
                 aa_ripple_db=0.0, aa_stop_db=0.0, aa_corner=0.9, gain=1.0, channel_gain=(1.0, 1.0, 1.0),
                 dc_offset=(0.0, 0.0, 0.0), polarity=(1, 1, 1), orientation="ZNE", azimuth_deg=0.0, tilt_deg=0.0,
                 noise_slope=0.0, bumps=(), tones=(), level_drift_db=0.0, coherence=0.0, hum_db=-60.0,
                 mains_harmonics=(), lsb_sigma=0.01, clip_db=90.0, spike_rate=0.0, dropout_rate=0.0)
    return dataclasses.replace(base, **(clean | changes))


def noise(chain: RecordingChain, seed: int, channels: int = 3) -> tuple[np.ndarray, dict]:
    """A window of the plain background (no trigger-fodder transient) recorded through ``chain``."""
    return synthesize_window(np.random.default_rng(seed), "noise", chain, FS, channels, 4096, 0.0,
                             mechanisms="background")


def psd_db(x: np.ndarray, nperseg: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    f, pxx = signal.welch(x.astype(float), fs=FS, nperseg=nperseg, axis=-1)
    return f, 10 * np.log10(np.atleast_2d(pxx).mean(axis=0) + 1e-300)


def prominence_db(f: np.ndarray, p: np.ndarray, hz: float, tol: float = 3.0) -> float:
    """Peak level within ``tol`` of ``hz`` over the median of its +-40 Hz neighbourhood (line excluded)."""
    at = np.abs(f - hz) <= tol
    near = (np.abs(f - hz) <= 40.0) & (np.abs(f - hz) > 8.0)
    return float(p[at].max() - np.median(p[near]))


def test_draws_stay_in_the_distribution():
    drawn = chains(400, 1) + chains(400, 2, "heldout")
    d = WIDE
    for c in drawn:
        if c.sensor == "geophone":
            assert 2.0 <= c.natural_hz <= 40.0 and d.damping[0] <= c.damping <= d.damping[1]
        else:
            assert c.natural_hz == 0.0
        assert 1.5 <= c.mount_q <= 30.0 and 100.0 <= c.mount_hz <= 2000.0
        assert c.aa_family in AA_FAMILIES and (c.aa_order, c.aa_ripple_db, c.aa_stop_db) in AA_DESIGNS[c.aa_family]
        assert 0.30 <= c.aa_corner <= 0.92 and math.isclose(c.aa_corner * 50, round(c.aa_corner * 50))
        assert -2.0 <= c.noise_slope <= 1.0 and -40.0 <= c.mains_harmonic_db <= 6.0
        assert 0.05 <= c.lsb_sigma <= 0.6 and d.clip_db[0] <= c.clip_db <= d.clip_db[1]
        assert c.mains_hz in (50.0, 60.0) and d.hum_db[0] <= c.hum_db <= d.hum_db[1]
        assert [h for h, _ in c.mains_harmonics] == list(MAINS_HARMONICS[c.mains_spectrum])
        assert max(db for _, db in c.mains_harmonics) == pytest.approx(c.mains_harmonic_db)
        assert all(abs(v) <= d.dc_offset[1] for v in c.dc_offset) and set(c.polarity) <= {-1, 1}
        assert all(abs(20 * np.log10(g)) <= d.channel_gain_db + 1e-9 for g in c.channel_gain)
        assert (c.tilt_deg == 0.0) == (c.orientation != "tilted") and 0.0 <= c.coherence <= 0.9
        assert c.q_range[0] < c.q_range[1] and 40.0 <= c.q_range[0] <= 250.0
        assert len(c.bumps) <= 3 and len(c.tones) <= 3 and 0.0 <= c.spike_rate <= 2.0
        assert c.dropout_rate == 0.0 or 0.2 <= c.dropout_rate <= 3.0
        hash(c)  # filters are cached by the chain
    # Wide means wide: every option is drawn somewhere.
    assert {c.aa_family for c in drawn} == set(AA_FAMILIES)
    assert {c.orientation for c in drawn} == {"ZNE", "Z12", "tilted"}
    assert {c.mains_spectrum for c in drawn} == set(MAINS_HARMONICS) and {c.mount for c in drawn} == {"bolted",
                                                                                                       "grouted"}
    assert {c.sensor for c in drawn} == {"geophone", "accelerometer"} and -1 in {p for c in drawn for p in c.polarity}


def test_train_draws_never_enter_heldout_intervals_and_heldout_draws_do():
    axes = {a.name: a for a in WIDE.heldout_axes}
    for c in chains(1000, 3):
        inside = [n for n, v in c.axis_values().items() if not math.isnan(v) and axes[n].inside(v)]
        assert inside == [] and c.heldout_axes == () and c.name == "wide"
    counts = dict.fromkeys(axes, 0)
    for c in chains(400, 4, "heldout"):
        inside = sorted(n for n, v in c.axis_values().items() if not math.isnan(v) and axes[n].inside(v))
        assert len(inside) >= 2 and inside == list(c.heldout_axes) and c.name == "wide-heldout"
        for n in inside:
            counts[n] += 1
    assert min(counts.values()) >= 40  # every axis is held out in some draws


def test_mains_line_and_its_drawn_harmonics_stand_out_of_the_background():
    for mains_hz, spectrum in ((50.0, "thyristor"), (60.0, "odd")):
        orders = MAINS_HARMONICS[spectrum]
        harmonics = tuple((h, -6.0 - 2.0 * k) for k, h in enumerate(orders))
        chain = quiet(1, mains_hz=mains_hz, hum_db=10.0, mains_spectrum=spectrum, mains_harmonics=harmonics)
        f, p = psd_db(noise(chain, 2)[0])
        band = (f > 40) & (f < 70)
        assert f[band][np.argmax(p[band])] == pytest.approx(mains_hz, abs=2.0)
        for h, _ in harmonics:
            if h * mains_hz < 0.4 * FS:
                assert prominence_db(f, p, h * mains_hz) > 10.0, (spectrum, h)
        absent = [h for h in range(2, 8) if h not in orders]  # harmonics the spectrum does not have
        assert all(prominence_db(f, p, h * mains_hz) < 6.0 for h in absent), spectrum


def test_drawn_chains_hum_at_their_mains_frequency():
    found = 0
    for c in chains(60, 5):
        if c.hum_db < -3.0:
            continue
        f, p = psd_db(noise(c, 6)[0])
        band = (f > 40) & (f < 70)
        assert f[band][np.argmax(p[band])] == pytest.approx(c.mains_hz, abs=2.0)
        found += 1
    assert found >= 5


def test_machinery_lines_and_harmonics_are_visible():
    chain = quiet(2, tones=((137.0, (0.0, -6.0), 0.0, 0.005, 100.0),))
    f, p = psd_db(noise(chain, 3)[0])
    assert prominence_db(f, p, 137.0, tol=4.0) > 15.0
    assert prominence_db(f, p, 274.0, tol=7.0) > 10.0
    f, p = psd_db(noise(quiet(2), 3)[0])
    assert prominence_db(f, p, 137.0, tol=4.0) < 6.0


def test_dc_offset_channel_gain_and_polarity_are_applied():
    rng_seed = 7
    straight = quiet(3, dc_offset=(5.0, -3.0, 0.0))
    flipped = dataclasses.replace(straight, polarity=(1, -1, 1))
    a, meta = synthesize_window(np.random.default_rng(rng_seed), "microseismic", straight, FS, 3, 4096, 20.0)
    b, _ = synthesize_window(np.random.default_rng(rng_seed), "microseismic", flipped, FS, 3, 4096, 20.0)
    mean = a.astype(float).mean(axis=1) / meta["noise_rms"]
    assert mean[0] == pytest.approx(5.0, abs=0.3) and mean[1] == pytest.approx(-3.0, abs=0.3)
    assert abs(mean[2]) < 0.3
    ac, bc = (w.astype(float) - w.astype(float).mean(axis=1, keepdims=True) for w in (a, b))
    assert np.corrcoef(ac[0], bc[0])[0, 1] > 0.999 and np.corrcoef(ac[1], bc[1])[0, 1] < -0.999
    scaled, _ = synthesize_window(np.random.default_rng(rng_seed), "microseismic",
                                  dataclasses.replace(straight, gain=10.0), FS, 3, 4096, 20.0)
    assert np.std(scaled[2]) / np.std(a[2]) == pytest.approx(10.0, rel=1e-3)


def runs(mask: np.ndarray, min_len: int) -> int:
    """Number of runs of True at least ``min_len`` long."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int(np.sum(stops - starts >= min_len))


@pytest.mark.parametrize("hold", [False, True])
def test_dropouts_occur_at_the_drawn_rate(hold):
    rate, ms = 3.0, 5.0
    chain = quiet(4, dropout_rate=rate, dropout_ms=ms, dropout_hold=hold, dc_offset=(2.0, 2.0, 2.0))
    length = int(ms * 1e-3 * FS)
    count, seconds = 0, 0.0
    for seed in range(40):
        w = noise(chain, seed)[0]
        dead = np.all(w == 0.0, axis=0) if not hold else np.all(np.diff(w, axis=1) == 0.0, axis=0)
        count += runs(dead, length - 1)
        seconds += w.shape[1] / FS
    expected = rate * seconds
    assert 0.75 * expected <= count <= 1.15 * expected
    w = noise(dataclasses.replace(chain, dropout_rate=0.0), 0)[0]
    assert runs(np.all(np.diff(w, axis=1) == 0.0, axis=0), length - 1) == 0


def test_coarse_quantisation_leaves_few_distinct_values():
    coarse = [len(np.unique(noise(quiet(5, lsb_sigma=0.6), s, 1)[0])) for s in range(5)]
    fine = [len(np.unique(noise(quiet(5, lsb_sigma=0.05), s, 1)[0])) for s in range(5)]
    assert all(8 <= c <= 40 for c in coarse)
    assert min(fine) > 5 * max(coarse)


def test_same_seed_same_bytes_and_seeds_differ():
    a = generate_windows(12, 21, sites=["wide"])
    b = generate_windows(12, 21, sites=["wide"])
    c = generate_windows(12, 22, sites=["wide"])
    assert a.waveforms.tobytes() == b.waveforms.tobytes() and set(a.site) == {"wide"}
    assert not np.array_equal(a.waveforms, c.waveforms)
    h = generate_windows(6, 21, sites=["wide-heldout"], channels=1, fs=10_000.0, samples=2048)
    assert h.waveforms.shape == (6, 1, 2048) and set(h.site) == {"wide-heldout"} and np.all(np.isfinite(h.waveforms))
    low = generate_windows(6, 21, sites=["wide"], fs=1000.0, samples=1024)
    assert np.all(np.isfinite(low.waveforms)) and np.all(low.waveforms.std(axis=-1) > 0)


def normalised_log_psd(w: np.ndarray) -> np.ndarray:
    f, p = psd_db(w[0], nperseg=512)
    keep = (f > 5) & (f < 1500)
    return p[keep] - np.mean(p[keep])


def test_drawn_chains_spread_the_background_spectrum():
    # Two records of one chain share a spectrum; two chains do not. (Spikes and dropouts, different in
    # every record, are the digitiser's, not the background's.)
    drawn = [dataclasses.replace(c, spike_rate=0.0, dropout_rate=0.0) for c in chains(8, 6)]
    same = [np.sqrt(np.mean((normalised_log_psd(noise(c, 1)[0]) - normalised_log_psd(noise(c, 2)[0])) ** 2))
            for c in drawn]
    shapes = [normalised_log_psd(noise(c, 1)[0]) for c in drawn]
    between = [np.sqrt(np.mean((shapes[i] - shapes[j]) ** 2)) for i in range(8) for j in range(i + 1, 8)]
    assert np.median(same) < 2.5
    assert np.median(between) > 3 * np.median(same) and np.median(between) > 5.0


def test_stream_background_drifts_in_level_and_tone_frequency():
    chain = quiet(8, level_drift_db=6.0, level_period_s=40.0, tones=((200.0, (0.0,), 10.0, 0.02, 30.0),))
    bg = ChainBackground(chain, FS, 1, np.random.default_rng(1), endless=True)
    x = np.concatenate([bg.block(int(FS)) for _ in range(40)], axis=1)[0]
    tone_free = signal.sosfiltfilt(signal.butter(4, [20.0, 120.0], btype="band", fs=FS, output="sos"), x)
    rms_db = 20 * np.log10([np.std(s) for s in np.split(tone_free, 40)])
    assert rms_db.max() - rms_db.min() > 8.0  # +-6 dB drawn
    peaks = []
    for seg in np.split(x, 20):
        f, p = signal.welch(seg, fs=FS, nperseg=8000)
        band = (f > 180) & (f < 220)
        peaks.append(f[band][np.argmax(p[band])])
    assert np.ptp(peaks) > 4.0  # +-2 % of 200 Hz drawn
    steady = ChainBackground(quiet(8), FS, 1, np.random.default_rng(2), endless=True)
    y = np.concatenate([steady.block(1000) for _ in range(100)], axis=1)[0]  # seams every 1000 samples
    seg_rms = np.array([np.std(s) for s in np.split(y, 400)])  # quarter-block pieces, seams included
    assert seg_rms.max() / np.median(seg_rms) < 1.5 and seg_rms.min() / np.median(seg_rms) > 0.6


def test_cli_wide_windows_and_stream(tmp_path):
    out = tmp_path / "w"
    assert main(["dataset", "generate", "--out", str(out), "--quiet", "--count", "12", "--seed", "3",
                 "--sites", "wide"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["site_regions"] == {"wide": "train"} and "heldout_axes" in manifest["site_distribution"]
    assert set(read_windows(out).site) == {"wide"}
    out = tmp_path / "h"
    assert main(["dataset", "generate", "--out", str(out), "--quiet", "--count", "6", "--sites", "wide-heldout"]) == 0
    assert set(read_windows(out).site) == {"wide-heldout"}
    s1, s2 = tmp_path / "s1.npz", tmp_path / "s2.npz"
    for path in (s1, s2):
        assert main(["dataset", "generate", "--stream", "30", "--out", str(path), "--seed", "4", "--site", "wide",
                     "--events-per-min", "10", "--snr-db", "20:25"]) == 0
    assert s1.read_bytes() == s2.read_bytes()
    s = read_stream(s1)
    assert s.data.shape == (3, 120_000) and len(s.event_onsets) >= 2 and np.all(np.isfinite(s.data))
    synth = StreamSynth(site="wide-heldout", seed=5)
    assert synth.site.region == "heldout" and len(synth.site.heldout_axes) >= 2
