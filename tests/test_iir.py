"""The gateway's numpy filters and resampler against scipy.signal (which stays a test and training dependency),
and the gateway's runtime path without scipy.signal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from edge.gateway import iir
from edge.gateway.preprocess import PreprocessParams, filter_windows, preprocess, resample
from edge.gateway.resample import resample_poly

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = [(4, 3.0, 1800.0, 4000.0), (2, 2.0, 4500.0, 10000.0), (2, 20.0, 1500.0, 4000.0), (3, 3.0, 1800.0, 4000.0),
           (1, 5.0, 200.0, 500.0), (5, 1.0, 100.0, 500.0), (8, 5.0, 30.0, 200.0)]
KERNELS = ["dispatch", "blocks"]


def run(kernel: str, sos, x, zi):
    return iir.sosfilt(sos, x, zi) if kernel == "dispatch" else iir.sosfilt_blocks(sos, x, zi)


@pytest.mark.parametrize("order,lo,hi,fs", DESIGNS)
def test_butterworth_design_has_scipys_response(order, lo, hi, fs):
    ref = signal.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
    mine = iir.butter_bandpass_sos(order, lo, hi, fs)
    assert mine.shape == ref.shape
    _, h_ref = signal.sosfreqz(ref, 4096, fs=fs)
    _, h = signal.sosfreqz(mine, 4096, fs=fs)
    np.testing.assert_allclose(h, h_ref, atol=1e-9)
    np.testing.assert_allclose(iir.sosfilt_zi(ref), signal.sosfilt_zi(ref), rtol=1e-9, atol=1e-12)


def test_design_refuses_a_band_beyond_nyquist():
    with pytest.raises(ValueError, match="fs/2"):
        iir.butter_bandpass_sos(2, 10.0, 3000.0, 4000.0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n", [1, 2, 31, 32, 33, 1000, 1024, 1025, 2047, 5000])
def test_sosfilt_equals_scipy_with_carried_state(kernel, n):
    rng = np.random.default_rng(n)
    sos = signal.butter(4, [3.0, 1800.0], btype="bandpass", fs=4000.0, output="sos")
    x = rng.standard_normal((3, n)) * 1e4
    zi = rng.standard_normal((3, 4, 2)) * 1e3
    y_ref, zf_ref = signal.sosfilt(sos, x, axis=-1, zi=zi.transpose(1, 0, 2))
    y, zf = run(kernel, sos, x, zi)
    scale = np.abs(y_ref).max()
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10 * scale)
    # The block kernel reaches the states through powers of A: a little more round-off, which decays (below).
    tol = 1e-10 if kernel == "dispatch" and iir.kernel_name() == "compiled" else 1e-8
    np.testing.assert_allclose(zf, zf_ref.transpose(1, 0, 2), rtol=0, atol=tol * np.abs(zf_ref).max())


@pytest.mark.parametrize("kernel", KERNELS)
def test_streamed_in_blocks_equals_one_pass_over_a_minute(kernel):
    """The trigger's band-pass over 60 s at 10 kHz in 0.1 s blocks: carried states do not drift."""
    sos = signal.butter(2, [2.0, 4500.0], btype="bandpass", fs=10000.0, output="sos")
    x = np.random.default_rng(11).standard_normal((3, 600_000)) * 1e3
    ref = signal.sosfilt(sos, x, axis=-1)
    zi = np.zeros((3, 2, 2))
    out = []
    for i in range(0, x.shape[1], 1000):
        y, zi = run(kernel, sos, x[:, i:i + 1000], zi)
        out.append(y)
    np.testing.assert_allclose(np.concatenate(out, axis=1), ref, rtol=0, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_loud_event_leaves_the_quiet_samples_before_it_exact(kernel):
    """A causal kernel: 1e7-count samples at the end of a block add no round-off to the 1-count ones before."""
    sos = signal.butter(2, [2.0, 4500.0], btype="bandpass", fs=10000.0, output="sos")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 1000))
    loud = x.copy()
    loud[:, 900:] *= 1e7
    y_quiet, _ = run(kernel, sos, x, np.zeros((1, 2, 2)))
    y_loud, _ = run(kernel, sos, loud, np.zeros((1, 2, 2)))
    np.testing.assert_array_equal(y_loud[:, :900], y_quiet[:, :900])


@pytest.mark.parametrize("n", [37, 4096, 4100, 10000])
def test_sosfiltfilt_equals_scipy(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((6, n))
    sos = signal.butter(4, [3.0, 1800.0], btype="bandpass", fs=4000.0, output="sos")
    np.testing.assert_allclose(iir.sosfiltfilt(sos, x), signal.sosfiltfilt(sos, x, axis=-1), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="more than 27"):
        iir.sosfiltfilt(sos, x[:, :27])


@pytest.mark.parametrize("kernel", KERNELS)
def test_exponential_average_equals_lfilter(kernel, monkeypatch):
    if kernel == "blocks":
        monkeypatch.setattr(iir, "_COMPILED", None)
    rng = np.random.default_rng(3)
    sq = rng.random((3, 1500)) ** 2
    prev = rng.random(3)
    for n in (10, 400, 100_000):
        c = 1.0 / n
        ref = signal.lfilter([c], [1.0, c - 1.0], sq, axis=-1, zi=(prev * (1.0 - c))[:, None])[0]
        np.testing.assert_allclose(iir.exponential_average(sq, n, prev), ref, rtol=1e-12)


def test_detrend_equals_scipy():
    x = np.random.default_rng(1).standard_normal((2, 3, 4097)) + np.linspace(0, 50, 4097)
    np.testing.assert_allclose(iir.detrend_linear(x), signal.detrend(x, axis=-1, type="linear"), atol=1e-9)


@pytest.mark.parametrize("up,down,n", [(2, 5, 10240), (1, 2, 8192), (2, 1, 2048), (4, 5, 5000), (5, 2, 100),
                                       (1, 8, 4096), (8, 1, 37), (25, 8, 1000), (1, 20, 80_000), (3, 7, 1)])
def test_resample_poly_equals_scipy(up, down, n):
    x = np.random.default_rng(n).standard_normal((2, 3, n))
    ref = signal.resample_poly(x, up, down, axis=-1)
    got = resample_poly(x, up, down)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fs_in", [4000.0, 10000.0, 2000.0, 44100.0])
def test_preprocessing_equals_the_scipy_recipe_the_models_were_trained_with(fs_in):
    params = PreprocessParams()
    raw = np.random.default_rng(int(fs_in)).standard_normal((4, 3, int(fs_in * 1.1))).astype(np.float32) * 300
    # Today's recipe, spelled in scipy.signal as it was before the gateway stopped importing it.
    from fractions import Fraction

    ratio = Fraction(params.fs / fs_in).limit_denominator(1000)
    x = raw if fs_in == params.fs else signal.resample_poly(raw, ratio.numerator, ratio.denominator, axis=-1)
    x = x.astype(np.float32)
    np.testing.assert_allclose(resample(raw, fs_in, params.fs), x, rtol=1e-6, atol=1e-4)
    n = x.shape[-1]
    start = (n - params.samples) // 2
    x = x[..., start:start + params.samples] if n > params.samples else x
    sos = signal.butter(params.order, [params.highpass_hz, params.lowpass_hz], btype="bandpass", fs=params.fs,
                        output="sos")
    ref = signal.sosfiltfilt(sos, signal.detrend(np.asarray(x, np.float64), axis=-1), axis=-1).astype(np.float32)
    got = filter_windows(x, params)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    # What the int8 model sees: normalised and clipped, equal within float32 tolerance.
    assert np.abs(preprocess(raw, fs_in, params)).max() <= params.clip


def test_the_gateway_runtime_path_does_not_import_scipy_signal():
    code = """
import sys
import numpy as np
import edge.cli, edge.gateway.daemon, edge.gateway.pipeline, edge.field.doctor
from edge.gateway.config import TriggerConfig
from edge.gateway.model import Classifier
from edge.gateway.pipeline import Pipeline, fixed_clock
from edge.field.doctor import run_selftest, selftest_windows
c = Classifier(sys.argv[1])
assert run_selftest(c)["right"] == 6
# A stream at 10 kHz (resampled to the model's 4 kHz) with one event: trigger, window, classify, features.
waves, _, fs = selftest_windows(c.fs)
rng = np.random.default_rng(0)
event = np.repeat(waves[1], 5, axis=-1)[:, :25000] * 50
x = rng.standard_normal((3, 200000))
x[:, 120000:120000 + event.shape[1]] += event
from datetime import UTC, datetime
pipe = Pipeline(TriggerConfig(), c, 10000.0, ["Z", "N", "E"], fixed_clock(datetime(2026, 1, 1, tzinfo=UTC), 10000.0))
events = [e for i in range(0, x.shape[1], 1000) for e in pipe.feed(x[:, i:i + 1000], i)] + pipe.flush()
assert events and events[0].features["ppv"] > 0, events
bad = sorted(m for m in sys.modules if m == "scipy.signal" or m.startswith(("scipy.stats", "scipy.optimize",
             "scipy.interpolate", "scipy.linalg", "scipy.sparse", "tensorflow")))
print(bad)
"""
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "models" / "triaxial")], capture_output=True,
                          text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
