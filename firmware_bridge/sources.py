"""A small built-in signal source for the board simulator: Gaussian noise plus decaying pulses.

It only exists so that firmware_bridge can be tested on its own; the demo feeds the
simulator with the benchmark's waveform physics instead. Any object with the same
``next_block`` method can drive the simulator.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class SignalSource(Protocol):
    """What the simulator needs: consecutive blocks of samples in physical units and their events."""

    def next_block(self, n: int) -> tuple[np.ndarray, list[dict]]:
        """float32 (channels, n) and the events whose onset falls in the block:
        {"sample": absolute onset index, "label": str, "snr_db": float}."""
        ...


def overlay(block: np.ndarray, start: int, pending: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    """Add the parts of ``pending`` signals (absolute start sample, (channels, m)) that fall in ``block``
    (which starts at absolute sample ``start``), in place; return those that go on past the block."""
    end = start + block.shape[1]
    still = []
    for onset, w in pending:
        a, b = max(onset, start), min(onset + w.shape[1], end)
        if a < b:
            block[:, a - start:b - start] += w[:, a - onset:b - onset]
        if onset + w.shape[1] > end:
            still.append((onset, w))
    return still


class NoisePulseSource:
    """Unit-variance noise with exponentially decaying sine pulses ("pulse") at Poisson times.

    Pulses may straddle block boundaries; their tails carry over to the next block.
    """

    def __init__(self, fs: float, channels: int, *, seed: int = 0, rate_per_min: float = 30.0,
                 snr_db: tuple[float, float] = (10.0, 30.0), noise_rms: float = 1.0) -> None:
        if fs <= 0 or channels < 1:
            raise ValueError(f"fs = {fs}, channels = {channels}; both must be positive")
        self.fs = float(fs)
        self.channels = channels
        self.rate_per_min = rate_per_min
        self.snr_db = snr_db
        self.noise_rms = noise_rms
        self.rng = np.random.default_rng(seed)
        self.sample = 0
        self._next_onset = self._draw_gap()
        self._active: list[tuple[int, np.ndarray]] = []  # (onset, waveform (channels, m))

    def _draw_gap(self) -> int:
        if self.rate_per_min <= 0:
            return 2**62
        return self.sample + 1 + int(self.rng.exponential(60.0 * self.fs / self.rate_per_min))

    def _pulse(self, snr_db: float) -> np.ndarray:
        f0 = self.rng.uniform(0.02, 0.15) * self.fs
        tau = self.rng.uniform(0.005, 0.03)
        t = np.arange(int(5 * tau * self.fs) + 1) / self.fs
        env = np.exp(-t / tau)
        amp = self.noise_rms * 10 ** (snr_db / 20.0) * np.sqrt(2.0)
        gains = self.rng.uniform(0.3, 1.0, (self.channels, 1))
        return (amp * gains * env * np.sin(2 * np.pi * f0 * t)).astype(np.float32)

    def next_block(self, n: int) -> tuple[np.ndarray, list[dict]]:
        """The next ``n`` samples, float32 (channels, n), and the events with onset inside them."""
        start, end = self.sample, self.sample + n
        x = (self.rng.standard_normal((self.channels, n)) * self.noise_rms).astype(np.float32)
        events: list[dict] = []
        while self._next_onset < end:
            snr = float(self.rng.uniform(*self.snr_db))
            self._active.append((self._next_onset, self._pulse(snr)))
            events.append({"sample": int(self._next_onset), "label": "pulse", "snr_db": snr})
            self.sample = self._next_onset
            self._next_onset = self._draw_gap()
        self._active = overlay(x, start, self._active)
        self.sample = end
        return x, events
