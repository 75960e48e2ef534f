"""Prewhitened STA/LTA: the AR whitening removes steady lines, keeps onsets, and streams block-size
independently; dropouts (runs of repeated or zero samples) are masked instead of firing the trigger."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from test_dsp import detector_run

from edge.gateway.config import TriggerConfig
from edge.gateway.dsp import DropoutMask, Prewhiten, bandpass_sos, levinson_durbin
from edge.gateway.pipeline import Detector

FS = 4000.0
PLAIN = replace(TriggerConfig(), prewhiten_order=0)  # today's band-passed STA/LTA


def whiten_all(pw: Prewhiten, y: np.ndarray, sizes: list[int] | None = None) -> np.ndarray:
    """Stream ``y`` through ``pw`` in blocks of ``sizes`` (cut at its fit segments), every segment clean."""
    out, at, k = [], 0, 0
    while at < y.shape[1]:
        n = min(sizes[k % len(sizes)] if sizes else y.shape[1], pw.until_boundary(), y.shape[1] - at)
        k += 1
        out.append(pw(y[:, at:at + n]))
        at += n
        if pw.until_boundary() == 0:
            pw.end_segment(clean=True)
    return np.concatenate(out, axis=1)


def line_to_background(x: np.ndarray, hz: float, fs: float) -> float:
    """Power within 3 Hz of ``hz`` over the power elsewhere."""
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    near = np.abs(np.fft.rfftfreq(x.size, 1 / fs) - hz) < 3.0
    return float(spec[near].sum() / spec[~near].sum())


def test_levinson_recovers_an_ar2_process():
    rng = np.random.default_rng(0)
    n = 100_000
    x = np.zeros(n)
    e = rng.standard_normal(n)
    for i in range(2, n):
        x[i] = 1.5 * x[i - 1] - 0.8 * x[i - 2] + e[i]
    r = np.array([[x[k:] @ x[:n - k] for k in range(5)]]) / n
    a, err = levinson_durbin(r, 4, loading=0.0)
    np.testing.assert_allclose(a[0], [1.5, -0.8, 0.0, 0.0], atol=0.02)
    assert abs(err[0] - 1.0) < 0.03


def test_whitening_suppresses_a_steady_line_by_20_db():
    rng = np.random.default_rng(1)
    t = np.arange(int(30 * FS)) / FS
    # a machinery line 6.5 dB above the background (weaker lines are flattened down to the whitening's floor)
    y = (rng.standard_normal(t.size) + 3.0 * np.sin(2 * np.pi * 173.0 * t))[None, :]
    pw = Prewhiten(16, int(2 * FS), int(0.5 * FS), 1)
    e = whiten_all(pw, y)[0]
    assert pw.fits > 10
    before = line_to_background(y[0, -int(4 * FS):], 173.0, FS)
    after = line_to_background(e[-int(4 * FS):], 173.0, FS)
    assert 10 * np.log10(before / after) >= 20.0, (before, after)


def test_whitening_keeps_an_impulsive_onset():
    rng = np.random.default_rng(2)
    fs = FS
    x = rng.standard_normal((3, int(40 * fs)))
    t = np.arange(x.shape[1]) / fs
    x += 20.0 * np.sin(2 * np.pi * 120.0 * t)  # a machinery line 26 dB above the background
    onset = int(30 * fs)
    burst_t = np.arange(int(0.2 * fs)) / fs
    x[:, onset:onset + burst_t.size] += 6.0 * np.sin(2 * np.pi * 600 * burst_t) * np.exp(-burst_t / 0.03)
    plain, _ = detector_run(x, PLAIN, fs, None)
    ons, _ = detector_run(x, replace(TriggerConfig(), prewhiten_order=12), fs, None)
    assert not plain  # under the line the plain band-passed STA/LTA does not see it ...
    assert len(ons) == 1 and 0 <= ons[0] - onset < 0.02 * fs, ons  # ... the whitened one does, on time


def test_prewhitened_detector_does_not_depend_on_block_sizes():
    rng = np.random.default_rng(3)
    fs = FS
    x = rng.standard_normal((3, int(30 * fs)))
    t = np.arange(x.shape[1]) / fs
    x += 8.0 * np.sin(2 * np.pi * (90.0 + 0.5 * np.sin(t / 3.0)) * t)  # a drifting line
    for on in (int(8 * fs), int(15.3 * fs), int(24 * fs)):
        bt = np.arange(int(0.3 * fs)) / fs
        x[:, on:on + bt.size] += 15 * np.sin(2 * np.pi * 400 * bt) * np.exp(-bt / 0.05)
    x[:, int(12 * fs):int(12 * fs) + 30] = 0.0  # a dropout
    cfg = replace(TriggerConfig(), prewhiten_order=10, prewhiten_s=1.0, dropout_min_run=4)
    whole = detector_run(x, cfg, fs, None)
    assert len(whole[0]) == 3
    for seed in (1, 2):
        assert detector_run(x, cfg, fs, seed) == whole


def test_dropouts_are_masked_and_zero_runs_repaired_whatever_the_blocks():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5000)) + 50.0  # an offset: a zero run is a big step
    x[:, 1000:1040] = 0.0  # zeros
    x[:, 3000:3040] = x[:, 2999:3000]  # the last value held
    m = DropoutMask(4, 10, 3)
    y, keep = m(x)
    masked = np.flatnonzero(keep == 0)
    assert masked.min() == 1001 and 1040 + 9 <= np.flatnonzero(keep[:2000] == 0).max() <= 1040 + 10
    assert 3004 in masked and 3002 not in masked and keep[3040 + 11:].all()
    assert np.all(y[:, 1001:1040] == x[:, 999:1000])  # the zeros after the first hold the last live sample
    assert np.all(y[:, :1000] == x[:, :1000])
    for seed in (1, 2):
        m2 = DropoutMask(4, 10, 3)
        rng2 = np.random.default_rng(seed)
        parts, at = [], 0
        while at < x.shape[1]:
            n = int(rng2.choice([0, 1, 3, 17, 500]))
            parts.append(m2(x[:, at:at + n]))
            at += n
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts], axis=1), y)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), keep)


def test_a_zero_dropout_fires_the_plain_trigger_but_not_the_masked_one():
    rng = np.random.default_rng(5)
    fs = FS
    x = rng.standard_normal((3, int(20 * fs))) + 20.0  # a DC offset of 20 background RMS
    x[:, int(10 * fs):int(10 * fs) + 20] = 0.0  # 5 ms of zeros on every channel
    x[1, int(15 * fs)] += 300.0  # an isolated single-sample spike (Despike removes it)
    plain, _ = detector_run(x, PLAIN, fs, None)
    masked, _ = detector_run(x, replace(PLAIN, dropout_min_run=4), fs, None)
    whitened, _ = detector_run(x, replace(TriggerConfig(), dropout_min_run=4, prewhiten_order=8), fs, None)
    assert plain and all(abs(o - 10 * fs) < 0.05 * fs for o in plain)
    assert masked == [] and whitened == []


def test_prewhitening_off_is_the_plain_band_passed_sta_lta():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, int(10 * FS)))
    x[:, int(6 * FS):int(6 * FS) + 400] *= 20
    det = Detector(PLAIN, FS, 3)
    assert det._whiten is None and det._dropouts is None
    ons, offs, ratio = det(x)
    assert len(ons) == 1 and len(offs) == 1
    # the plain path: band-pass, then the STA/LTA of its squares
    from edge.gateway.dsp import Despike, RecursiveStaLta, SosFilter
    y = SosFilter(bandpass_sos(FS, 20.0, 1500.0, 2), 3)(Despike(3)(x))
    want = RecursiveStaLta(round(0.02 * FS), round(2.0 * FS), 3)(y).ratio.max(axis=0)
    np.testing.assert_array_equal(ratio[:ons[0]], want[:ons[0]])
