"""A stand-in classifier for tests of the parts around the model (pipeline, replay)."""

from __future__ import annotations

import numpy as np

from edge.gateway.model import Classification, normalised_entropy, softmax
from edge.vocabulary import CLASSES


class EnergyClassifier:
    """Classifies a window by where its energy sits: a deterministic function of the samples.

    Probabilities come from the window's RMS in six equal time slices, so two runs that cut the stream
    differently must give the same numbers, and a gap (zero-filled samples) changes them.
    """

    def __init__(self, fs: float = 4000.0, samples: int = 4096, channels: int = 3):
        self._fs, self._samples, self.channels = fs, samples, channels
        self.calls = 0

    @property
    def fs(self) -> float:
        return self._fs

    @property
    def samples(self) -> int:
        return self._samples

    def classify(self, waveforms: np.ndarray, fs: float) -> list[Classification]:
        self.calls += 1
        out = []
        for w in np.asarray(waveforms, dtype=np.float64):
            slices = np.array_split(np.square(w).sum(axis=0), len(CLASSES))
            logits = np.log10(np.array([s.mean() for s in slices]) + 1e-30)
            p = softmax(logits[None])[0]
            k = int(np.argmax(p))
            out.append(Classification(CLASSES[k], float(p[k]), dict(zip(CLASSES, map(float, p), strict=True)),
                                      float(normalised_entropy(p[None])[0])))
        return out
