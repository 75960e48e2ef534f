"""edge.gateway.features: interpretable event features and the classical-baseline vector."""

import numpy as np
import pytest

from edge.gateway.features import baseline_names, baseline_vector, event_features

FS = 4000.0


def _event(rng, freq=300.0, onset=1000, amp=50.0):
    t = np.arange(4096) / FS
    x = rng.standard_normal((3, 4096))
    burst = amp * np.sin(2 * np.pi * freq * t) * np.exp(-np.clip(t - onset / FS, 0, None) / 0.03)
    burst[:onset] = 0
    return (x + burst * np.array([[1.0], [0.6], [0.3]])).astype(np.float32)


def test_event_features_of_an_impulsive_event_and_of_noise():
    rng = np.random.default_rng(0)
    ev = event_features(_event(rng), FS)
    nz = event_features(rng.standard_normal((3, 4096)).astype(np.float32), FS)
    assert set(ev) == {"ppv", "dominant_hz", "duration_s", "snr_db", "sta_lta_max", "energy", "band_energy",
                       "clipped"}
    assert ev["dominant_hz"] == pytest.approx(300.0, abs=10.0)
    assert ev["sta_lta_max"] > 5 * nz["sta_lta_max"]
    assert ev["snr_db"] > nz["snr_db"] + 10
    assert ev["ppv"] > 30 and ev["duration_s"] < 0.2 < nz["duration_s"]
    assert sum(ev["band_energy"].values()) == pytest.approx(1.0, abs=1e-6)
    assert max(ev["band_energy"], key=ev["band_energy"].get) == "150-300" or ev["band_energy"]["300-600"] > 0.3
    assert not ev["clipped"]


def test_clipping_is_detected():
    x = np.clip(_event(np.random.default_rng(1)), -20, 20)
    assert event_features(x, FS)["clipped"]


def test_baseline_vector_shape_and_common_mode():
    rng = np.random.default_rng(2)
    names = baseline_names(FS)
    v = baseline_vector(_event(rng), FS)
    assert v.shape == (len(names),) and np.isfinite(v).all()
    hum = np.sin(2 * np.pi * 50 * np.arange(4096) / FS)
    common = np.stack([hum, 0.9 * hum, 1.1 * hum]) + 0.01 * rng.standard_normal((3, 4096))
    vc = dict(zip(names, baseline_vector(common, FS), strict=True))
    assert vc["channel_corr"] > 0.99 and vc["mains_ratio"] > 0.5
    assert dict(zip(names, baseline_vector(common[:1], FS), strict=True))["channel_corr"] == 1.0
