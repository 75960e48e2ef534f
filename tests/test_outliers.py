"""Outlier exposure (training/outliers.py): what each transform makes, and the loss toward the uniform
answer, on real TensorFlow."""

import numpy as np
import pytest

from edge.vocabulary import CLASSES
from training import outliers as O


def windows(n_per_class: int = 6, channels: int = 3, samples: int = 1024, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(samples)
    x = np.zeros((n_per_class * len(CLASSES), channels, samples), np.float32)
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    for i, k in enumerate(y):  # an impulsive onset a quarter in, with a decay, per class its own tone
        env = np.where(t >= samples // 4, np.exp(-(t - samples // 4) / 80.0), 0.0)
        x[i] = env * np.sin(2 * np.pi * (0.02 + 0.02 * k) * t) + 0.01 * rng.standard_normal((channels, samples))
    return x, y


def test_reverse_and_phase_scramble_keep_the_spectrum_but_not_the_onset():
    x, y = windows()
    rng = np.random.default_rng(1)
    r = O.reverse(x[:3])
    assert np.array_equal(r[..., ::-1], x[:3])
    p = O.phase_scramble(x[:3], rng)
    amp = np.abs(np.fft.rfft(x[:3], axis=-1))[..., 1:]
    assert np.allclose(np.abs(np.fft.rfft(p, axis=-1))[..., 1:], amp, rtol=1e-3, atol=1e-3)
    # the onset's energy was all after a quarter of the window; scrambled, it spreads over all of it
    early = np.mean(p[..., : x.shape[-1] // 4] ** 2) / np.mean(p ** 2)
    assert np.mean(x[:3, :, : x.shape[-1] // 4] ** 2) / np.mean(x[:3] ** 2) < 0.01 and early > 0.1


def test_frequency_shift_moves_the_spectrum_off_its_band():
    x, _ = windows()
    s = O.frequency_shift(x[:8], np.random.default_rng(2))
    peak = np.abs(np.fft.rfft(x[:8], axis=-1)).argmax(axis=-1)
    moved = np.abs(np.fft.rfft(s, axis=-1)).argmax(axis=-1)
    bins = x.shape[-1] // 2 + 1
    assert np.all(np.abs(moved - peak) >= int(0.1 * bins) - 1)


def test_incoherent_windows_take_each_component_from_another_class():
    x, y = windows()
    out = O.incoherent(x, y, 20, np.random.default_rng(3))
    for w in out:
        src = [int(np.flatnonzero(np.all(x[:, ch] == w[ch], axis=-1))[0]) for ch in range(3)]
        assert len({int(y[i]) for i in src}) == 3


def test_make_outliers_mixes_the_transforms_and_uses_only_transients_for_the_others():
    x, y = windows()
    out = O.make_outliers(x, y, 40, np.random.default_rng(4))
    assert out.shape == (40, *x.shape[1:]) and np.isfinite(out).all()
    # no transient among the windows: only the incoherent transform is possible
    keep = ~np.isin(y, O.TRANSIENT)
    only = O.make_outliers(x[keep], y[keep], 10, np.random.default_rng(5))
    assert only.shape[0] == 10
    assert O.make_outliers(x[keep][:, :1], y[keep], 10, np.random.default_rng(6)).shape[0] == 0  # one channel


def test_the_loss_is_cross_entropy_for_known_labels_and_toward_uniform_for_outliers():
    from training.tf_env import tensorflow

    tf, keras, _ = tensorflow()
    k = len(CLASSES)
    loss = O.outlier_exposure_loss(k)
    z = np.random.default_rng(7).standard_normal((5, k)).astype(np.float32)
    y = np.array([0, 3, O.OUTLIER, 5, O.OUTLIER])
    got = loss(tf.constant(y), tf.constant(z)).numpy()
    ce = keras.losses.sparse_categorical_crossentropy(np.array([0, 3, 5]), z[[0, 1, 3]], from_logits=True).numpy()
    assert np.allclose(got[[0, 1, 3]], ce, atol=1e-5)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert np.allclose(got[[2, 4]], -logp[[2, 4]].mean(axis=1), atol=1e-5)
    # the uniform target is met by equal logits, at log k, and any confident answer costs more
    flat = loss(tf.constant([O.OUTLIER]), tf.zeros((1, k))).numpy()[0]
    sure = loss(tf.constant([O.OUTLIER]), tf.constant([[8.0] + [0.0] * (k - 1)])).numpy()[0]
    assert flat == pytest.approx(np.log(k), abs=1e-6) and sure > flat + 1
    # label smoothing: the known label's cross-entropy mixed with the uniform one
    smooth = O.outlier_exposure_loss(k, 0.1)(tf.constant(y), tf.constant(z)).numpy()
    assert np.allclose(smooth[[0, 1, 3]], 0.9 * ce - 0.1 * logp[[0, 1, 3]].mean(axis=1), atol=1e-5)
    assert np.allclose(smooth[[2, 4]], got[[2, 4]], atol=1e-6)
