"""The crosscheck generator: behaviour measured on the signals it produces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.signal import hilbert, medfilt, welch

from edge.errors import UserError
from edge.formats import read_windows
from edge.vocabulary import CLASSES
from training.crosscheck import LOW_REGIME_DEFAULTS, UNSEEN, generate_stream, generate_windows, write_dataset
from training.crosscheck.generate import energy_span, event_rms, render_event
from training.crosscheck.instrument import SITE_TYPES
from training.crosscheck.sources import REGIMES, Ctx, closing_crack, double_couple, microseismic, radiation

HIGH_FS = 10000.0
QUIET_SITE = "grouted_borehole_14hz"  # fine ADC, full scale far above the events: no clipping


def _ctx(rng, regime="high", fs=HIGH_FS, site=QUIET_SITE):
    return Ctx(fs, REGIMES[regime], SITE_TYPES[site].draw(rng, fs, 3), 3)


def _dominant(x, fs, nperseg=1024):
    f, p = welch(x, fs, nperseg=min(nperseg, x.shape[-1]))
    return f[np.argmax(p.sum(0))]


def test_same_seed_same_arrays_and_window_i_depends_only_on_seed_and_i():
    a = generate_windows(12, 3, channels=3)
    b = generate_windows(12, 3, channels=3)
    c = generate_windows(6, 3, channels=3)
    d = generate_windows(12, 4, channels=3)
    assert np.array_equal(a.waveforms, b.waveforms) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.waveforms[:6], c.waveforms) and np.array_equal(a.snr_db[:6], c.snr_db, equal_nan=True)
    assert not np.array_equal(a.waveforms, d.waveforms)
    assert a.waveforms.shape == (12, 3, 10240) and a.waveforms.dtype == np.float32
    assert generate_windows(2, 3, samples=4096).waveforms.shape == (2, 3, 4096)
    low = generate_windows(2, 3, regime="low", channels=1, **LOW_REGIME_DEFAULTS)
    assert low.waveforms.shape == (2, 1, 4096) and low.fs == 500.0


def test_labels_are_balanced_and_unseen_classes_can_be_asked_for():
    ws = generate_windows(60, 1, samples=4096)
    assert {c: int(np.sum(ws.labels == c)) for c in CLASSES} == {c: 10 for c in CLASSES}
    assert set(ws.site) <= set(SITE_TYPES) and len(set(ws.site)) >= 5
    assert np.all(np.isnan(ws.snr_db[ws.labels == "noise"]))
    ev = ws.snr_db[ws.labels != "noise"]
    assert np.all((ev >= -3) & (ev <= 30))
    un = generate_windows(8, 1, samples=4096, classes=UNSEEN)
    assert sorted(set(un.labels)) == sorted(UNSEEN) and np.all(np.isfinite(un.waveforms))
    with pytest.raises(UserError, match="classes"):
        generate_windows(2, 1, classes=["earthquake"])
    with pytest.raises(UserError, match="regime"):
        generate_windows(2, 1, regime="medium")


def test_snr_is_event_rms_over_its_energy_span_against_background_rms():
    # The same (seed, i) at two SNRs differs only in the event's scale: recover the event and the background.
    lo, hi = 6.0, 16.0
    a = generate_windows(12, 8, snr_db=(lo, lo), sites=[QUIET_SITE], classes=["microseismic", "blast"])
    b = generate_windows(12, 8, snr_db=(hi, hi), sites=[QUIET_SITE], classes=["microseismic", "blast"])
    measured = []
    for xa, xb in zip(a.waveforms.astype(float), b.waveforms.astype(float), strict=True):
        unit = (xb - xa) / (10 ** (hi / 20) - 10 ** (lo / 20))
        event = unit * 10 ** (lo / 20)
        background = xa - event
        measured.append(20 * np.log10(event_rms(event) / np.sqrt(np.mean(background ** 2))))
    assert np.allclose(measured, lo, atol=1.0), measured


def test_microseismic_dominant_frequency_falls_with_magnitude():
    for regime, fs, mags, site in (("high", HIGH_FS, (-2.5, -1.0, 0.6), QUIET_SITE),
                                   ("low", 500.0, (-0.8, 0.5, 1.8), "longwall_node_4p5hz")):
        rng = np.random.default_rng(11)
        medians = []
        for mag in mags:
            dom = []
            for _ in range(25):
                x = render_event(rng, _ctx(rng, regime, fs, site), "microseismic", 100, int(fs), magnitude=mag)
                dom.append(_dominant(x, fs, 1024 if regime == "high" else 512))
            medians.append(float(np.median(dom)))
        assert medians[0] > medians[1] > medians[2], (regime, medians)


@pytest.mark.parametrize(("regime", "fs", "band"), [("high", HIGH_FS, (100.0, 2000.0)), ("low", 500.0, (5.0, 100.0))])
def test_microseismic_energy_sits_in_the_regimes_band(regime, fs, band):
    # Events as recorded by every site type (sensor, mounting, filter), magnitudes as the generator draws them.
    rng = np.random.default_rng(21)
    names = list(SITE_TYPES)
    inside = []
    for k in range(96):
        x = render_event(rng, _ctx(rng, regime, fs, names[k % len(names)]), "microseismic", 100, int(fs))
        seg = x[:, : int((0.2 if regime == "high" else 4.0) * fs)]
        inside.append(band[0] <= _dominant(seg, fs, 1024 if regime == "high" else 512) <= band[1])
    assert np.mean(inside) >= 0.75, np.mean(inside)


def test_double_couples_are_sometimes_p_dominant_and_implosions_dilatational():
    rng = np.random.default_rng(5)
    # Radiation: a closing crack pulls every ray inward; a double couple pushes some, pulls others.
    rays = rng.standard_normal((300, 3))
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    crack, dc = closing_crack(rng), double_couple(rng)
    assert all(radiation(crack, r)[0] < 0 for r in rays)
    signs = {np.sign(radiation(dc, r)[0]) for r in rays}
    assert signs == {-1.0, 1.0}
    p_dominant, same_sign, n_imp = 0, 0, 0
    for k in range(160):
        ctx = _ctx(rng)
        mech = "double_couple" if k % 2 == 0 else "implosive"
        info: dict = {}
        ground, _ = microseismic(rng, ctx, 100, 6000, mechanism=mech, info=info)
        rec = ctx.site.record(ground, "ground")
        p, s = info["p_index"], info["s_index"]
        if mech == "double_couple":
            p_dominant += np.abs(rec[:, p:s]).max() > np.abs(rec[:, s:s + max(s - p, 200)]).max()
            continue
        n_imp += 1
        # Ground motion at the P onset points back toward the source (dilatation) ...
        onset = ground[:, p:p + 40]
        assert float(ray_motion(onset, info["ray"])) < 0
        # ... and on the recorded components the first motions sometimes all agree in sign.
        first = []
        for c in range(3):
            seg = rec[c, p:s]
            first.append(np.sign(seg[np.argmax(np.abs(seg) > 0.2 * np.abs(seg).max())]))
        same_sign += len(set(first)) == 1
    assert 0.03 <= p_dominant / 80 <= 0.5, p_dominant
    assert same_sign / n_imp >= 0.1, same_sign


def ray_motion(x: np.ndarray, ray: np.ndarray) -> float:
    """Displacement-like first motion along ``ray``: the largest early excursion of the projection."""
    proj = ray @ x
    return proj[np.argmax(np.abs(proj))]


def _envelope_repeats(x, fs, start_s):
    env = np.abs(hilbert(x - x.mean(1, keepdims=True), axis=-1)).sum(0)
    k = int(0.005 * fs)
    env = np.convolve(env, np.ones(k) / k, "same")[int(start_s * fs):]
    env = env - env.mean()
    ac = np.correlate(env, env, "full")[env.size - 1:]
    ac = ac / ac[0]
    a = ac[int(0.015 * fs):int(0.11 * fs)]
    peaks = [a[j] for j in range(1, a.size - 1) if a[j] > a[j - 1] and a[j] >= a[j + 1]]
    return max(peaks, default=0.0)


def test_blast_envelopes_repeat_at_the_delay_interval():
    ws = generate_windows(60, 4, snr_db=(20.0, 30.0), samples=8192, classes=["blast", "microseismic"])
    rep = {lab: np.mean([_envelope_repeats(x.astype(float), ws.fs, 0.18) > 0.3
                         for x, lab2 in zip(ws.waveforms, ws.labels, strict=True) if lab2 == lab])
           for lab in ("blast", "microseismic")}
    assert rep["blast"] >= 0.7 and rep["blast"] >= rep["microseismic"] + 0.3, rep


def test_electrical_pickup_is_common_mode_at_zero_lag():
    ws = generate_windows(40, 6, snr_db=(20.0, 30.0), samples=6144, classes=["electrical", "microseismic"])
    ok = {"electrical": [], "microseismic": []}
    for x, lab in zip(ws.waveforms.astype(float), ws.labels, strict=True):
        x = x - x[:, : int(0.18 * ws.fs)].mean(1, keepdims=True)
        # Event-dominated samples: total power ten times the pre-onset background's.
        power = np.convolve((x ** 2).sum(0), np.ones(32) / 32, "same")
        busy = power > 10 * power[: int(0.18 * ws.fs)].mean()
        busy[: int(0.18 * ws.fs)] = False
        post = x[:, busy]
        r = np.abs(np.corrcoef(post)[np.triu_indices(3, 1)]).min()
        # Zero lag is the best lag between channels 0 and 1.
        seg = x[:, np.flatnonzero(busy)[0]:][:, :2048]
        cc = np.correlate(seg[0], seg[1], "full")
        lag = int(np.argmax(np.abs(cc))) - (seg.shape[1] - 1)
        ok[lab].append(r > 0.9 and lag == 0)
    assert np.mean(ok["electrical"]) >= 0.9 and np.mean(ok["microseismic"]) <= 0.2, ok


def test_noise_windows_carry_tonal_lines():
    ws = generate_windows(30, 2, classes=["noise"])
    prominent = []
    for x in ws.waveforms.astype(float):
        _, p = welch(x, ws.fs, nperseg=4096)
        p = p.mean(0)
        prominent.append(np.max(p[5:] / medfilt(p, 31)[5:]) > 10.0)  # a line 10 dB over its neighbourhood
    assert np.mean(prominent) >= 0.7


def test_low_regime_events_last_longer():
    durations = {}
    for regime, fs in (("high", HIGH_FS), ("low", 500.0)):
        rng = np.random.default_rng(3)
        d = []
        for label in ("microseismic", "blast"):
            for _ in range(15):
                x = render_event(rng, _ctx(rng, regime, fs), label, 50, int(8 * fs) if regime == "low" else 8000)
                a, b = energy_span(x)
                d.append((b - a) / fs)
        durations[regime] = float(np.median(d))
    assert durations["low"] >= 5 * durations["high"] and durations["low"] >= 0.5, durations


def test_stream_ground_truth_points_at_real_events():
    s = generate_stream(120.0, 9, fs=4000.0, events_per_minute=8.0, site=QUIET_SITE)
    assert s.data.shape == (3, 480000) and s.data.dtype == np.float32
    assert len(s.event_onsets) >= 6 and set(s.event_labels) <= set(CLASSES)
    assert np.all(np.diff(s.event_onsets) > 0)
    fs, x = s.fs, s.data.astype(float)
    hits = []
    for onset, label, snr in zip(s.event_onsets, s.event_labels, s.event_snr_db, strict=True):
        if label == "noise" or snr < 6:
            continue
        before = np.mean(x[:, onset - int(1.5 * fs):onset - int(0.6 * fs)] ** 2)
        blocks = x[:, onset:onset + int(2.0 * fs)].reshape(3, 40, -1)
        hits.append(np.max(np.mean(blocks ** 2, axis=(0, 2))) > 2.0 * before)
    assert len(hits) >= 3 and np.mean(hits) >= 0.9, hits
    again = generate_stream(120.0, 9, fs=4000.0, events_per_minute=8.0, site=QUIET_SITE)
    assert np.array_equal(again.data, s.data) and np.array_equal(again.event_onsets, s.event_onsets)


def test_dataset_on_disk_reads_back(tmp_path):
    manifest = write_dataset(tmp_path / "ds", 10, 5, shard_size=4, samples=4096, classes=list(CLASSES) + ["rockfall"])
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 2]
    on_disk = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert on_disk["generator"]["name"] == "crosscheck" and on_disk["seed"] == 5 and on_disk["generator"]["version"]
    with pytest.raises(UserError, match="rockfall"):
        read_windows(tmp_path / "ds")
    ws = read_windows(tmp_path / "ds", vocabulary=None)
    direct = generate_windows(10, 5, samples=4096, classes=list(CLASSES) + ["rockfall"])
    assert np.array_equal(ws.waveforms, direct.waveforms) and np.array_equal(ws.labels, direct.labels)
    assert np.array_equal(ws.site, direct.site)
    write_dataset(tmp_path / "ds2", 10, 5, shard_size=10, samples=4096, classes=list(CLASSES) + ["rockfall"])
    assert np.array_equal(read_windows(tmp_path / "ds2", vocabulary=None).waveforms, ws.waveforms)
