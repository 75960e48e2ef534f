"""Streaming DSP: block-size independence, and equality with ObsPy's STA/LTA on real and synthetic records."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from obspy.signal.trigger import classic_sta_lta, recursive_sta_lta

from edge.gateway.config import TriggerConfig
from edge.gateway.dsp import ClassicStaLta, Despike, RecursiveStaLta, SosFilter, StaLtaBlock, bandpass_sos
from edge.gateway.pipeline import Detector


def in_blocks(process, x: np.ndarray, seed: int) -> np.ndarray:
    """Run a streaming ``process`` over ``x`` cut into random block sizes (including empty ones)."""
    rng = np.random.default_rng(seed)
    out, at = [], 0
    while at < x.shape[1]:
        n = int(rng.choice([0, 1, 2, 7, 100, 1000, 4096]))
        y = process(x[:, at:at + n])
        out.append(y.ratio if isinstance(y, StaLtaBlock) else y)
        at += n
    return np.concatenate(out, axis=1)


def real_records() -> list[np.ndarray]:
    """ObsPy's bundled real seismograms (RJOB's three components, and SAC files shipped with ObsPy)."""
    import obspy

    traces = [tr.data.astype(np.float64) for tr in obspy.read()]
    base = os.path.dirname(obspy.__file__)
    for path in sorted(glob.glob(f"{base}/*/tests/data/*.SAC"))[:2]:
        traces.append(obspy.read(path)[0].data.astype(np.float64))
    return traces


def synthetic_record() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(30_000)
    x[12_000:12_600] += 10 * np.sin(np.arange(600) / 3.0) * np.exp(-np.arange(600) / 200)
    return x


@pytest.mark.parametrize("cls, reference", [(RecursiveStaLta, recursive_sta_lta), (ClassicStaLta, classic_sta_lta)])
def test_streaming_sta_lta_equals_obspy_on_the_whole_array(cls, reference):
    records = [*real_records(), synthetic_record()]
    assert len(records) >= 4
    for i, trace in enumerate(records):
        nsta, nlta = 20, 300
        if trace.size < 3 * nlta:
            continue
        got = in_blocks(cls(nsta, nlta, 1), trace[None, :], seed=i)[0]
        # ObsPy's recursive version starts at the second sample: give it a leading zero to line them up.
        want = reference(np.concatenate([[0.0], trace]), nsta, nlta)[1:] if cls is RecursiveStaLta \
            else reference(trace, nsta, nlta)
        np.testing.assert_allclose(got[nlta:], want[nlta:], rtol=1e-9, atol=1e-12)
        assert np.all(got[:nlta - 1] == 0)  # warm-up: no ratio before a full LTA, as in ObsPy


@pytest.mark.parametrize("make", [
    lambda: SosFilter(bandpass_sos(4000.0, 20.0, 1500.0, 2), 3),
    lambda: Despike(3),
    lambda: RecursiveStaLta(40, 4000, 3),
    lambda: ClassicStaLta(40, 4000, 3),
])
def test_results_do_not_depend_on_block_sizes(make):
    x = np.random.default_rng(5).standard_normal((3, 20_000)) + 5.0  # an offset, as raw counts have
    whole = make()(x)
    whole = whole.ratio if isinstance(whole, StaLtaBlock) else whole
    np.testing.assert_allclose(in_blocks(make(), x, seed=1), whole, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(in_blocks(make(), x, seed=2), whole, rtol=1e-10, atol=1e-12)


def test_despike_removes_single_sample_spikes_but_keeps_signals():
    x = np.zeros((1, 200))
    x[0, 50] = 100.0
    x[0, 100:130] = np.sin(np.arange(30) / 4.0)
    y = Despike(1)(x)
    assert np.abs(y[0, 45:56]).max() == 0.0
    assert np.abs(y[0, 101:131]).max() > 0.9  # delayed by one sample


def detector_run(x: np.ndarray, cfg: TriggerConfig, fs: float, seed: int | None) -> tuple[list, list]:
    det = Detector(cfg, fs, x.shape[0])
    ons, offs, at = [], [], 0
    sizes = np.random.default_rng(seed).choice([1, 50, 400, 3000], 10_000) if seed is not None else [x.shape[1]]
    for n in sizes:
        if at >= x.shape[1]:
            break
        o, f, _ = det(x[:, at:at + n])
        ons += [at + i for i in o]
        offs += [at + i for i in f]
        at += n
    return ons, offs


def test_detector_triggers_once_per_event_whatever_the_blocks():
    fs = 4000.0
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, int(60 * fs)))
    onsets = [int(10 * fs), int(25 * fs), int(40 * fs)]
    t = np.arange(int(0.3 * fs)) / fs
    burst = 12 * np.sin(2 * np.pi * 300 * t) * np.exp(-t / 0.05)
    for on in onsets:
        x[:, on:on + burst.size] += burst
    x[1, int(50 * fs)] += 500.0  # a single-sample spike must not trigger
    cfg = TriggerConfig()
    ons, offs = detector_run(x, cfg, fs, None)
    assert len(ons) == 3 and len(offs) == 3
    assert all(0 <= o - on < 0.02 * fs for o, on in zip(ons, onsets, strict=True))
    for seed in (1, 2):
        assert detector_run(x, cfg, fs, seed) == (ons, offs)


def test_a_long_event_is_one_trigger_and_does_not_mask_the_next():
    fs = 4000.0
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, int(40 * fs)))
    x[:, int(5 * fs):int(17 * fs)] *= 30.0  # 12 s of loud drilling-like energy, 30 dB
    t = np.arange(int(0.2 * fs)) / fs
    x[0, int(18.5 * fs):int(18.5 * fs) + t.size] += 8 * np.sin(2 * np.pi * 400 * t) * np.exp(-t / 0.03)
    ons, offs = detector_run(x, TriggerConfig(), fs, 3)
    assert len(ons) == 2
    assert abs(ons[0] - 5 * fs) < 0.01 * fs and abs(offs[0] - 17 * fs) < 0.2 * fs  # STA decay
    assert abs(ons[1] - 18.5 * fs) < 0.01 * fs  # an LTA that had learnt the drilling would miss this one


def test_every_configurable_sta_lta_method_is_implemented():
    from edge.gateway.config import STA_LTA_METHODS
    from edge.gateway.dsp import STA_LTA

    assert set(STA_LTA) == set(STA_LTA_METHODS)
