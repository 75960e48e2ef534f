"""Streaming signal processing with state carried across blocks.

Every class here gives the same output whatever the block sizes the stream is cut
into (tests check this against whole-array computations and ObsPy), allocates only
per-block arrays, and does work proportional to the block, so CPU stays flat over
days of streaming (recomputing STA/LTA over a rolling buffer on every packet makes CPU grow with the
LTA length).
Call ``reset()`` after a gap in the stream: filter state from before a gap is wrong.

References: Withers et al. (1998), A comparison of select trigger algorithms for
automated global seismic phase and event detection, BSSA 88(1); Trnkoczy (2012),
Understanding and parameter setting of STA/LTA trigger algorithm, NMSOP-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from edge.gateway import iir


@lru_cache(maxsize=16)
def bandpass_sos(fs: float, highpass_hz: float, lowpass_hz: float, order: int) -> np.ndarray:
    """Butterworth band-pass as second-order sections: the trigger's band and the model's preprocessing.

    Cached: the gateway asks for the same design for every window. Callers keep ``lowpass_hz`` below
    Nyquist (the trigger clamps its band to the board's rate, preprocessing checks its parameters).
    Designed in numpy (edge.gateway.iir): the gateway never imports scipy.signal.
    """
    return iir.butter_bandpass_sos(order, highpass_hz, lowpass_hz, fs)


class SosFilter:
    """Causal IIR filter (second-order sections) over (channels, n) blocks, with carried state."""

    def __init__(self, sos: np.ndarray, channels: int):
        self.sos = np.asarray(sos, dtype=np.float64)
        self.channels = channels
        self.reset()

    def reset(self) -> None:
        self._zi = np.zeros((self.channels, self.sos.shape[0], 2))
        self._primed = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] == 0:
            return x.copy()
        if not self._primed:
            # Start from the steady state of the first sample, so an offset does not ring the filter.
            self._zi = iir.sosfilt_zi(self.sos)[None, :, :] * x[:, :1, None]
            self._primed = True
        y, self._zi = iir.sosfilt(self.sos, x, self._zi)
        return y


class Despike:
    """Three-point running median: removes single-sample spikes (ADC glitches) before triggering.

    Output is delayed by one sample; the first call's first sample is passed through.
    """

    def __init__(self, channels: int):
        self.channels = channels
        self.reset()

    def reset(self) -> None:
        self._tail: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] == 0:
            return x
        tail = np.repeat(x[:, :1], 2, axis=1) if self._tail is None else self._tail
        full = np.concatenate([tail, x], axis=1)
        self._tail = full[:, -2:]
        a, b, c = full[:, :-2], full[:, 1:-1], full[:, 2:]
        return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


exponential_average = iir.exponential_average  # y_i = y_{i-1} + (x_i - y_{i-1}) / n, carried from y_{-1}


@dataclass(frozen=True)
class StaLtaBlock:
    """STA, LTA and their ratio for one block, (channels, n) each.

    ``lta`` is a fresh array that :meth:`StaLta.restart_lta` may rewrite from a sample on (a trigger
    that closes an event continues the LTA from the background it held).
    """

    sta: np.ndarray
    lta: np.ndarray
    ratio: np.ndarray


class StaLta(Protocol):
    """What the trigger needs of an STA/LTA: streamed blocks, a reset after gaps, a held-LTA restart."""

    def __call__(self, x: np.ndarray) -> StaLtaBlock: ...

    def reset(self) -> None: ...

    def restart_lta(self, block: StaLtaBlock, offset: int, lta: np.ndarray) -> None: ...


class RecursiveStaLta:
    """Recursive STA/LTA of each channel (as ObsPy's recursive_sta_lta), streamed.

    sta_i = sta_{i-1} + (x_i^2 - sta_{i-1}) / nsta, likewise lta; the ratio is 0 for the
    first ``nlta`` samples after a (re)start, as in ObsPy.
    """

    def __init__(self, nsta: int, nlta: int, channels: int):
        self.nsta, self.nlta, self.channels = nsta, nlta, channels
        self.reset()

    def reset(self) -> None:
        self._last_sta = np.zeros(self.channels)
        self._last_lta = np.full(self.channels, 1e-99)  # ObsPy's guard against 0/0
        self._seen = 0

    def __call__(self, x: np.ndarray) -> StaLtaBlock:
        sq = x * x
        self._sq = sq  # the last block's squares, for restart_lta
        if x.shape[-1] == 0:
            return StaLtaBlock(sq, sq.copy(), sq.copy())
        sta = exponential_average(sq, self.nsta, self._last_sta)
        lta = exponential_average(sq, self.nlta, self._last_lta)
        self._last_sta, self._last_lta = sta[:, -1].copy(), lta[:, -1].copy()
        ratio = sta / lta
        warm = self.nlta - self._seen
        if warm > 0:
            ratio[:, :warm] = 0.0
        self._seen += x.shape[-1]
        return StaLtaBlock(sta, lta, ratio)

    def restart_lta(self, block: StaLtaBlock, offset: int, lta: np.ndarray) -> None:
        """Continue the last block's LTA from sample ``offset`` as if it had been ``lta`` just before.

        A trigger uses this to forget an event it has just closed: the LTA goes on from the
        background held at the event's start, exactly as if the event had never been averaged in.
        ``block.lta`` is rewritten from ``offset`` on; the ratio is left to the caller.
        """
        if offset >= self._sq.shape[1]:
            self._last_lta = np.array(lta, dtype=np.float64)
            return
        tail = exponential_average(self._sq[:, offset:], self.nlta, lta)
        block.lta[:, offset:] = tail
        self._last_lta = tail[:, -1].copy()


class ClassicStaLta:
    """Classic STA/LTA (as ObsPy's classic_sta_lta): mean of the last nsta squares over the last nlta.

    Keeps the last ``nlta`` squared samples; each block costs O(block + nlta) in vectorised numpy.
    """

    def __init__(self, nsta: int, nlta: int, channels: int):
        self.nsta, self.nlta, self.channels = nsta, nlta, channels
        self.reset()

    def reset(self) -> None:
        self._hist = np.zeros((self.channels, 0))

    def __call__(self, x: np.ndarray) -> StaLtaBlock:
        full = np.concatenate([self._hist, x * x], axis=1)
        csum = np.concatenate([np.zeros((self.channels, 1)), np.cumsum(full, axis=1)], axis=1)
        n_hist, n = self._hist.shape[1], x.shape[1]
        end = np.arange(n_hist + 1, n_hist + n + 1)  # csum index just after each new sample
        ratio = np.zeros((self.channels, n))
        sta = (csum[:, end] - csum[:, np.maximum(end - self.nsta, 0)]) / self.nsta
        lta = (csum[:, end] - csum[:, np.maximum(end - self.nlta, 0)]) / self.nlta
        ok = end >= self.nlta
        if ok.any():
            ratio[:, ok] = sta[:, ok] / np.where(lta[:, ok] > 0, lta[:, ok], np.inf)
        self._hist = full[:, -(self.nlta - 1):] if self.nlta > 1 else full[:, :0]
        self._sq = full[:, n_hist:]  # the last block's squares, for restart_lta
        return StaLtaBlock(sta, lta, ratio)

    def restart_lta(self, block: StaLtaBlock, offset: int, lta: np.ndarray) -> None:
        """Continue the last block's LTA from sample ``offset`` as if the squares before it had been ``lta``.

        A trigger uses this to forget an event it has just closed (see RecursiveStaLta.restart_lta).
        """
        tail = self._sq[:, offset:]
        m = np.arange(1, tail.shape[1] + 1)
        held = np.clip(self.nlta - m, 0, None)
        # The first nlta samples after the restart mix the held background with new squares; later ones
        # are plain means of new squares, as before.
        csum = np.cumsum(tail, axis=1)
        lagged = np.concatenate([np.zeros((self.channels, self.nlta)), csum], axis=1)[:, :tail.shape[1]]
        block.lta[:, offset:] = (held * lta[:, None] + csum - lagged) / self.nlta
        keep = max(self.nlta - 1, 0)
        recent = tail[:, -keep:] if keep else tail[:, :0]
        fill = np.repeat(lta[:, None], keep - recent.shape[1], axis=1)
        self._hist = np.concatenate([fill, recent], axis=1)


# The trigger's STA/LTA by the config's ``trigger.method`` (names listed in edge.gateway.config.STA_LTA_METHODS).
STA_LTA: dict[str, type] = {"recursive": RecursiveStaLta, "classic": ClassicStaLta}
