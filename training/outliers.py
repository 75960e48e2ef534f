"""Outlier exposure: windows no known source makes, trained toward a uniform answer.

A network trained on six classes is confidently one of them on anything: rockfall, ore passes or a
calibration pulse come out as drilling, blast or electrical at high confidence, so no score of its
logits separates them. Outlier exposure (Hendrycks et al., 2019) adds, during training, windows that
belong to none of the classes with the target "equally likely every class" (the cross-entropy to the
uniform distribution), so that the softmax learns to flatten where the classes' evidence runs out.

The outliers here are made from the training windows themselves by transforms that no physical source
of any class produces, so no evaluation-only family is drawn or imitated:

- ``reverse``: a transient (microseismic, blast) played backwards: an emergent build-up ending abruptly;
- ``phase_scramble``: a transient with its Fourier phases randomised: its spectrum as a stationary hum;
- ``frequency_shift``: a transient's spectrum moved by a tenth to a third of the band, off its physics;
- ``incoherent``: (several channels) each component from a different window of a different class, where
  one source would move all three coherently.

Pure functions of numpy arrays (windows as ``(n, channels, samples)``, filtered, before normalisation).
"""

from __future__ import annotations

import numpy as np

from edge.vocabulary import CLASSES

TRANSIENT = tuple(CLASSES.index(c) for c in ("microseismic", "blast"))
TRANSFORMS = ("reverse", "phase_scramble", "frequency_shift", "incoherent")
OUTLIER = len(CLASSES)  # the label of an outlier window: trained toward the uniform answer


def reverse(x: np.ndarray) -> np.ndarray:
    """Windows played backwards in time."""
    return np.ascontiguousarray(x[..., ::-1])


def phase_scramble(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The windows' amplitude spectra with random phases (the same draw on every channel of a window)."""
    spec = np.fft.rfft(x, axis=-1)
    phase = np.exp(2j * np.pi * rng.random((x.shape[0], 1, spec.shape[-1])))
    phase[..., 0] = 1.0  # the mean and (even lengths) the Nyquist bin are real: their phases stay
    if x.shape[-1] % 2 == 0:
        phase[..., -1] = 1.0
    return np.fft.irfft(spec * phase, n=x.shape[-1], axis=-1).astype(x.dtype)


def frequency_shift(x: np.ndarray, rng: np.random.Generator, low: float = 0.1, high: float = 0.33) -> np.ndarray:
    """Spectra moved by ``low``..``high`` of the band, up when a window's energy sits in the lower half of
    it and down otherwise, so that the content moves rather than falls off an end (a window emptied that
    way would be background, which is a class)."""
    spec = np.fft.rfft(x, axis=-1)
    bins = spec.shape[-1]
    power = np.sum(np.abs(spec) ** 2, axis=1)  # (n, bins), over channels
    centroid = (power @ np.arange(bins)) / np.maximum(power.sum(axis=1), 1e-30)
    out = np.zeros_like(spec)
    for i in range(len(x)):
        k = int(rng.uniform(low, high) * bins) * (1 if centroid[i] < bins / 2 else -1)
        if k > 0:
            out[i, :, k:] = spec[i, :, :bins - k]
        else:
            out[i, :, :bins + k] = spec[i, :, -k:]
    return np.fft.irfft(out, n=x.shape[-1], axis=-1).astype(x.dtype)


def incoherent(x: np.ndarray, y: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` windows whose channels come each from a window of a different class."""
    n, c, s = x.shape
    out = np.empty((count, c, s), x.dtype)
    by_class = [np.flatnonzero(y == k) for k in range(len(CLASSES))]
    present = [k for k, idx in enumerate(by_class) if idx.size]
    for i in range(count):
        classes = rng.choice(present, size=c, replace=len(present) < c)
        for ch, k in enumerate(classes):
            out[i, ch] = x[rng.choice(by_class[k]), ch]
    return out


def make_outliers(x: np.ndarray, y: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` outlier windows from the (augmented, filtered) training windows ``x`` with labels ``y``,
    the transforms drawn in equal shares (``incoherent`` only when the windows have several channels and
    at least two classes). Returns ``(count, channels, samples)``; empty when nothing can be made."""
    transient = np.flatnonzero(np.isin(y, TRANSIENT))
    kinds = ["reverse", "phase_scramble", "frequency_shift"] if transient.size else []
    if x.shape[1] > 1 and len(np.unique(y)) > 1:
        kinds.append("incoherent")
    if not kinds or count <= 0:
        return np.empty((0, *x.shape[1:]), x.dtype)
    pick = rng.integers(0, len(kinds), count)
    parts = []
    for j, kind in enumerate(kinds):
        m = int(np.sum(pick == j))
        if m == 0:
            continue
        if kind == "incoherent":
            parts.append(incoherent(x, y, m, rng))
            continue
        src = x[rng.choice(transient, m)]
        parts.append(reverse(src) if kind == "reverse" else phase_scramble(src, rng) if kind == "phase_scramble"
                     else frequency_shift(src, rng))
    return np.concatenate(parts)


def outlier_exposure_loss(n_classes: int, label_smoothing: float = 0.0):
    """Cross-entropy from logits on sparse labels, where label ``n_classes`` means an outlier and its
    target is the uniform distribution (cross-entropy logsumexp(z) - mean(z), minimal at log k). With
    ``label_smoothing`` e, a known label's target is (1 - e) one-hot + e uniform, whose cross-entropy is
    the same mixture of the two."""
    from training.tf_env import tensorflow

    tf, keras, _ = tensorflow()

    def loss(y_true, logits):
        y = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        known = tf.less(y, n_classes)
        ce = keras.losses.sparse_categorical_crossentropy(tf.minimum(y, n_classes - 1), logits, from_logits=True)
        uniform = tf.reduce_logsumexp(logits, axis=-1) - tf.reduce_mean(logits, axis=-1)
        return tf.where(known, (1.0 - label_smoothing) * ce + label_smoothing * uniform, uniform)

    return loss
