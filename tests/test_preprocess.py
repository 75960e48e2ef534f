"""edge.gateway.preprocess: the one preprocessing implementation shared by training and the gateway."""

import numpy as np
import pytest

from edge.errors import UserError
from edge.gateway.preprocess import (
    PreprocessParams,
    adapt_channels,
    filter_windows,
    fit_length,
    normalise,
    preprocess,
    resample,
)

P = PreprocessParams()


def tone(freq, fs=4000.0, n=4096, amp=1.0):
    t = np.arange(n) / fs
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_bandpass_keeps_in_band_and_removes_out_of_band():
    x = np.stack([tone(200.0), tone(0.5, amp=50.0) + tone(200.0)])[None]
    y = filter_windows(x, P)
    mid = slice(500, -500)
    # a 200 Hz tone passes with its amplitude; the 0.5 Hz swell (50x larger) is gone
    assert np.std(y[0, 0, mid]) == pytest.approx(np.std(x[0, 0, mid]), rel=0.02)
    assert np.std(y[0, 1, mid] - y[0, 0, mid]) < 0.02 * np.std(50 * tone(0.5))  # > 34 dB down
    hi = filter_windows(tone(1950.0)[None, None], P)
    assert np.std(hi[0, 0, mid]) < 0.1


def test_detrend_removes_offset_and_linear_drift():
    x = (np.linspace(-100, 300, 4096) + 7.0).astype(np.float32)[None, None]
    assert np.abs(filter_windows(x, P)).max() < 1e-3


def test_normalise_unit_rms_over_all_channels_keeps_channel_ratio_and_clips():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 1000)).astype(np.float32) * np.array([1.0, 2.0, 4.0], np.float32)[:, None]
    y = normalise(x * 1e-7, clip=16.0)
    assert np.sqrt(np.mean(y[0] ** 2)) == pytest.approx(1.0, rel=0.05)
    assert np.std(y[0, 2]) / np.std(y[0, 0]) == pytest.approx(4.0, rel=0.1)
    spike = np.zeros((1, 1, 1000), np.float32)
    spike[0, 0, 10] = 1.0
    assert np.abs(normalise(spike, 16.0)).max() == 16.0
    assert not np.isnan(normalise(np.zeros((1, 3, 100), np.float32), 16.0)).any()


def test_scale_invariance_of_the_whole_chain():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4096)).astype(np.float32)
    np.testing.assert_allclose(preprocess(x, 4000.0, P), preprocess(x * 1e-6, 4000.0, P), atol=1e-3)


def test_resample_keeps_a_tone_and_sets_the_length():
    x = np.sin(2 * np.pi * 100.0 * np.arange(8192) / 8000.0).astype(np.float32)[None, None]
    y = resample(x, 8000.0, 4000.0)
    assert y.shape == (1, 1, 4096)
    np.testing.assert_allclose(y[0, 0, 200:-200], tone(100.0)[200:-200], atol=0.02)
    out = preprocess(np.repeat(x, 3, axis=1), 8000.0, P)
    assert out.shape == (1, 3, 4096) and out.dtype == np.float32


def test_fit_length_crops_centre_and_pads():
    x = np.arange(10, dtype=np.float32)[None, None]
    np.testing.assert_array_equal(fit_length(x, 4)[0, 0], [3, 4, 5, 6])
    padded = fit_length(x, 14)
    assert padded.shape[-1] == 14 and padded[0, 0, 2] == 0 and padded[0, 0, -3] == 9


def test_adapt_channels_policies():
    tri = np.ones((2, 3, 8), np.float32)
    uni = np.ones((2, 1, 8), np.float32)
    assert adapt_channels(tri, 1, "first").shape == (2, 1, 8)
    z = adapt_channels(uni, 3, "zero_fill")
    assert z.shape == (2, 3, 8) and z[:, 1:].sum() == 0
    with pytest.raises(UserError, match="channel"):
        adapt_channels(uni, 3, "strict")
    with pytest.raises(UserError, match="first"):
        adapt_channels(uni, 3, "first")


def test_params_validation_names_the_key():
    with pytest.raises(UserError, match="lowpass_hz"):
        PreprocessParams.from_dict({"fs": 4000.0, "lowpass_hz": 2500.0})
    with pytest.raises(UserError, match="unknown key"):
        PreprocessParams.from_dict({"cutoff": 3})
    assert PreprocessParams.from_dict(P.to_dict()) == P


def test_gateway_modules_never_load_tensorflow():
    import subprocess
    import sys
    code = ("import sys, edge.gateway.model, edge.gateway.preprocess, edge.gateway.features; "
            "bad = [m for m in ('tensorflow', 'tf_keras', 'training') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
