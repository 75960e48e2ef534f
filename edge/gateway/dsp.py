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

from collections import deque
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


def levinson_durbin(r: np.ndarray, order: int, loading: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Linear-prediction coefficients from autocorrelations (Yule-Walker, by the Levinson-Durbin recursion).

    ``r`` (rows, order + 1) holds lags 0..order of each row. Returns ``a`` (rows, order) with
    x_i ~ sum_k a_k x_{i-k}, and the prediction-error power (rows,) in the units of ``r``. Lag 0 is loaded
    by ``loading`` (a white floor: a pure tone gives a notch of finite depth, and the recursion stays
    well conditioned); a row whose error power would vanish keeps the order it reached; an all-zero row
    gives a = 0 (no whitening).
    """
    r = np.asarray(r, dtype=np.float64)
    rows = r.shape[0]
    a = np.zeros((rows, order))
    err = r[:, 0] * (1.0 + loading)
    live = err > 0
    err = np.where(live, err, 1.0)
    for m in range(1, order + 1):
        acc = r[:, m] - np.einsum("ij,ij->i", a[:, :m - 1], r[:, m - 1:0:-1])
        k = np.where(live, acc / err, 0.0)
        ok = live & (np.abs(k) < 1.0 - 1e-9)
        k = np.where(ok, k, 0.0)
        live = ok
        if m > 1:
            old = a[:, :m - 1].copy()
            a[:, :m - 1] = old - k[:, None] * old[:, ::-1]
        a[:, m - 1] = k
        err = err * (1.0 - k * k)
    return a, err


class Prewhiten:
    """Adaptive linear-prediction (AR) whitening of (channels, n) blocks: e_i = g (y_i - sum_k a_k y_{i-k}).

    Steady tonal lines (machinery, mains) and a coloured background are what the predictor predicts, so
    they leave the prediction error: an STA/LTA of ``e`` sees what is new, an impulsive onset. Each
    channel's coefficients are fitted (Yule-Walker) on the autocorrelation of the last ``fit`` samples,
    accumulated in segments of ``segment`` samples counted from the stream's start (or the last reset), so
    refits fall on the same samples whatever the block sizes. The caller feeds at most one segment at a
    time (:meth:`until_boundary`) and closes each with :meth:`end_segment`, saying whether it was clean (no
    event on): only clean segments enter a fit, and none is made at the end of an unclean one, so an event
    does not whiten itself. ``g`` scales ``e`` to the fitted window's power, so a refit does not step the
    LTA. Until the first fit the filter passes ``y`` through. Cost per block: one short convolution and
    one short correlation per channel.
    """

    def __init__(self, order: int, fit: int, segment: int, channels: int, floor: float = 0.1):
        self.order, self.channels, self.floor = order, channels, floor
        self.segment = max(1, segment)
        self.segments = max(1, round(fit / self.segment))  # segments in the fit window
        self.coef = np.zeros((channels, order + 1))  # the FIR [g, -g a_1, ..., -g a_p] per channel
        self.coef[:, 0] = 1.0
        self.fits = 0
        self.reset()

    def reset(self) -> None:
        """Forget the signal history (after a gap); the fitted coefficients are kept: the site is the same."""
        self._tail = np.zeros((self.channels, self.order))
        self._acc = np.zeros((self.channels, self.order + 1))
        self._in_segment = 0
        self._window: deque[np.ndarray | None] = deque(maxlen=self.segments)  # None: an unclean segment

    def until_boundary(self) -> int:
        """Samples until the current segment ends."""
        return self.segment - self._in_segment

    def __call__(self, y: np.ndarray) -> np.ndarray:
        n = y.shape[1]
        if n == 0:
            return y.copy()
        if n > self.until_boundary():
            raise ValueError(f"{n} samples cross a fit segment boundary ({self.until_boundary()} left)")
        ext = np.concatenate([self._tail, y], axis=1)
        e = np.empty_like(y)
        for c in range(self.channels):
            e[c] = np.convolve(ext[c], self.coef[c], mode="valid")
            # lags order..0 of this block's samples against the ones before them
            self._acc[c] += np.correlate(ext[c], y[c], mode="valid")[::-1]
        self._tail = ext[:, -self.order:]
        self._in_segment += n
        return e

    def end_segment(self, clean: bool) -> None:
        """Close the segment just fed; refit on the clean segments of the window when this one is clean."""
        self._window.append(self._acc if clean else None)
        self._acc = np.zeros((self.channels, self.order + 1))
        self._in_segment = 0
        usable = [s for s in self._window if s is not None]
        if not clean or 2 * len(usable) < self.segments:
            return
        r = np.sum(usable, axis=0)
        a, err = levinson_durbin(r, self.order, self.floor)
        gain = np.sqrt(np.where((err > 0) & (r[:, 0] > 0), r[:, 0] / np.where(err > 0, err, 1.0), 1.0))
        self.coef = np.concatenate([np.ones((self.channels, 1)), -a], axis=1) * gain[:, None]
        self.fits += 1


class DropoutMask:
    """Digitiser dropouts in (channels, n) blocks: runs of exactly repeated samples on every channel.

    A sample that repeats the one before it on every channel, once the run has reached ``min_run``
    repeats (a run of zeros on every channel: from its first repeat), is a dropout; it and the next
    ``guard`` samples (the filters' memory of the run's edges) are masked. Zeros in a run of zeros are
    replaced by the last sample before the run, so the band-pass sees no step to zero and back (the run's
    first zero is then a single-sample spike, which :class:`Despike` removes). Returns the repaired block
    and ``keep`` (n,), 0.0 where the characteristic function must not see the signal. Causal, with state
    carried across blocks.
    """

    def __init__(self, min_run: int, guard: int, channels: int):
        self.min_run, self.guard, self.channels = min_run, guard, channels  # min_run 0: only extend()
        self.masked = 0  # samples masked so far (for tests and health)
        self.reset()

    def reset(self) -> None:
        self._last: np.ndarray | None = None
        self._live: np.ndarray | None = None  # the last sample that was not all zeros
        self._run = 0  # repeats so far in the current run
        self._hold = 0  # guard samples still to mask

    def extend(self, samples: int) -> None:
        """Mask the next ``samples`` as well (e.g. after a concealed gap in the stream)."""
        self._hold = max(self._hold, samples)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = x.shape[1]
        keep = np.ones(n)
        if n == 0:
            return x, keep
        prev = np.concatenate([(x[:, :1] + 1.0) if self._last is None else self._last[:, None], x[:, :-1]], axis=1)
        repeat = np.all(x == prev, axis=0)
        zero = np.all(x == 0.0, axis=0)
        # run length of repeats up to each sample, carried across blocks
        idx = np.arange(n)
        breaks = np.where(~repeat, idx, -1)
        last_break = np.maximum.accumulate(breaks)
        run = np.where(last_break >= 0, idx - last_break, idx + 1 + self._run)
        run = np.where(repeat, run, 0)
        drop = repeat & ((run >= self.min_run) | zero) if self.min_run else np.zeros(n, dtype=bool)
        # mask: dropouts, then `guard` samples after each; the guard carried in from the last block first
        stamp = np.where(drop, idx, -10**18)
        since = idx - np.maximum.accumulate(stamp)
        masked = since <= self.guard
        masked[:self._hold] = True
        keep[masked] = 0.0
        out = x
        fill = drop & zero
        if fill.any():
            live_rows = ~zero
            lives = np.where(live_rows, idx, -1)
            last_live = np.maximum.accumulate(lives)
            out = x.copy()
            src = last_live[fill]
            from_before = src < 0
            vals = x[:, np.maximum(src, 0)]
            if from_before.any() and self._live is not None:
                vals[:, from_before] = self._live[:, None]
            out[:, fill] = vals
        if (~zero).any():
            self._live = x[:, int(np.flatnonzero(~zero)[-1])].copy()
        self._last = x[:, -1].copy()
        self._run = int(run[-1])
        tail_since = int(since[-1]) if drop.any() else 10**18
        self._hold = max(0, self._hold - n, self.guard - tail_since)
        self.masked += int(masked.sum())
        return out, keep


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
