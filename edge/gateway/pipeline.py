"""samples -> triggers -> event windows -> classified events: one pipeline for run, replay and demo.

The trigger runs on the board's own rate: 3-point despike (ADC glitches), causal
band-pass, STA/LTA per channel, on/off hysteresis, multi-channel coincidence.
Each trigger opens an event window (``pre_s`` before the trigger, the model's
duration long, with a small margin for resampling); once the stream has passed
the window's end the raw window is taken from a ring buffer, classified and
described by its features. A trigger within the refractory time after the last
event's window or trigger-off belongs to that event, so a delay-fired blast
sequence is one event. Results do not depend on how the stream is cut into blocks.

A gap in the stream (frames lost on the board link) of at most ``conceal_gap_s`` is concealed: the
trigger goes on from the last sample before it as if the gap were not there (its filters and STA/LTA
keep their state, so a link losing a frame in three does not reset it and make it wait out the LTA at
every lost frame), and the ring holds a straight line from the last sample before the gap to the first
after it, so the classifier sees no step; events whose window holds concealed samples say how many.
A longer gap resets the trigger. Of the ways to conceal that were measured on the README's faulty link
(bench/bench_faulty_link.py), this one detected the most events with the fewest false triggers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from edge.gateway.config import NYQUIST_MARGIN, TriggerConfig
from edge.gateway.dsp import STA_LTA, Despike, DropoutMask, Prewhiten, SosFilter, StaLta, bandpass_sos
from edge.gateway.features import event_features
from edge.gateway.model import Classification
from firmware_bridge.clock import iso_utc

TRIGGER_ORDER = 2  # Butterworth order of the trigger's band-pass
PREWHITEN_SEGMENTS = 4  # the whitening refits every quarter of trigger.prewhiten_s
# The whitening flattens the band's spectrum down to this floor (re its power) and no further: below it lies
# the ADC's quantisation noise, whose level follows the signal's slope and would fire the trigger (measured:
# 0.01 fired on wide-heldout chains' event streams, 0.1 did not).
PREWHITEN_FLOOR = 0.1
PREWHITEN_GUARD_S = 0.002  # masked after a dropout beyond the whitening order (the band-pass's ring-down)


class WindowClassifier(Protocol):
    """What the pipeline needs of a classifier (edge.gateway.model.Classifier; a fake one in tests)."""

    @property
    def samples(self) -> int: ...  # window length at the model's rate

    @property
    def fs(self) -> float: ...  # the model's rate

    def classify(self, waveforms: np.ndarray, fs: float) -> list[Classification]: ...


@dataclass(frozen=True)
class WindowInfo:
    """The event message's ``window``: where the classified window starts, its rate, length and channels."""

    start: str  # ISO-8601 UTC of the first sample
    fs: float  # the board's rate
    samples: int
    channels: tuple[str, ...]

    def as_fields(self) -> dict:
        return {"start": self.start, "fs": self.fs, "samples": self.samples, "channels": list(self.channels)}


@dataclass(frozen=True, eq=False)
class PipelineEvent:
    """One classified event as the pipeline emits it: what the message carries, and what the daemon needs."""

    trigger_sample: int  # absolute sample index of the trigger
    trigger_time: str  # ISO-8601 UTC of that sample
    window: WindowInfo
    classification: Classification
    features: dict  # the message's ``features`` (units in docs/mqtt.md)
    samples: np.ndarray  # the raw window (channels, samples) at the board's rate, physical units
    missing_samples: int  # samples of the window that never arrived (zero-filled)
    concealed_samples: int  # samples of the window bridged over short link gaps (see the module docstring)
    closed_at: float  # time.monotonic() when the pipeline started the block that completed the window
    latency_ms: float  # from closed_at until the event was classified and described
    inference_ms: float = 0.0  # of that, the classifier's time

    def signal_fields(self) -> dict:
        """The event message's signal fields (identity, sequence and model are the messenger's)."""
        return {"trigger_time": self.trigger_time, "window": self.window.as_fields(),
                **self.classification.as_fields(), "features": self.features, "latency_ms": self.latency_ms,
                "missing_samples": self.missing_samples, "concealed_samples": self.concealed_samples}


def fixed_clock(start: datetime, fs: float) -> Callable[[int], datetime]:
    """Sample index -> UTC for a record with a known start time and exact rate (replay)."""
    return lambda index: start + timedelta(seconds=index / fs)


def bridge_gap(last: np.ndarray, following: np.ndarray, n: int) -> np.ndarray:
    """``n`` samples (channels, n) on the straight line from ``last`` to ``following`` (both excluded):
    what the event window holds over a concealed gap."""
    t = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
    return (last[:, None] + (following - last)[:, None] * t[None, :]).astype(np.float32)


class SampleRing:
    """The last ``capacity`` samples by absolute index; samples never received read as zeros."""

    def __init__(self, channels: int, capacity: int):
        self.capacity = capacity
        self._data = np.zeros((channels, capacity), dtype=np.float32)
        self._stamp = np.full(capacity, -1, dtype=np.int64)  # absolute index held in each slot
        self._concealed = np.zeros(capacity, dtype=bool)  # the slot holds a concealed (bridged) sample

    def write(self, block: np.ndarray, start: int, concealed: bool = False) -> None:
        n = block.shape[1]
        if n > self.capacity:
            block, start, n = block[:, -self.capacity:], start + n - self.capacity, self.capacity
        slots = np.arange(start, start + n) % self.capacity
        self._data[:, slots] = block
        self._stamp[slots] = np.arange(start, start + n)
        self._concealed[slots] = concealed

    def concealed(self, start: int, stop: int) -> int:
        """How many of samples ``start..stop`` are concealed ones."""
        idx = np.arange(start, stop)
        slots = idx % self.capacity
        return int(np.count_nonzero((self._stamp[slots] == idx) & self._concealed[slots]))

    def read(self, start: int, stop: int) -> tuple[np.ndarray, int]:
        """Samples ``start..stop`` (channels, stop-start) and how many of them were missing (zero-filled)."""
        idx = np.arange(start, stop)
        slots = idx % self.capacity
        valid = self._stamp[slots] == idx
        out = np.where(valid[None, :], self._data[:, slots], np.float32(0.0))
        return out, int(np.count_nonzero(~valid))


class Detector:
    """Streaming trigger over (channels, n) blocks: despike, band-pass, STA/LTA, coincidence, hysteresis.

    An event starts when at least ``coincidence`` channels have STA/LTA above ``on``. From then on
    the LTA of that moment is held as the background (a long event must not become its own
    background, or hours of drilling would re-trigger on every loud blow), and the event lasts
    while at least ``coincidence`` channels keep their STA above ``off`` times that background.
    """

    def __init__(self, cfg: TriggerConfig, fs: float, channels: int):
        self.cfg, self.fs = cfg, fs
        nsta, nlta = max(1, round(cfg.sta_s * fs)), max(2, round(cfg.lta_s * fs))
        self._despike = Despike(channels)
        band = bandpass_sos(fs, cfg.highpass_hz, min(cfg.lowpass_hz, NYQUIST_MARGIN * fs), TRIGGER_ORDER)
        self._band = SosFilter(band, channels)
        self._stalta: StaLta = STA_LTA[cfg.method](nsta, nlta, channels)
        self._background: np.ndarray | None = None  # held LTA while an event is on
        order = cfg.prewhiten_order
        # The mask's guard: the whitening filter's memory plus the band-pass's ring-down of a small step.
        guard = order + max(1, round(PREWHITEN_GUARD_S * fs))
        self._dropouts = DropoutMask(cfg.dropout_min_run, guard, channels) \
            if cfg.dropout_min_run or order else None
        self._whiten: Prewhiten | None = None
        self._reband: SosFilter | None = None
        if order:
            fit = max(4 * order, round(cfg.prewhiten_s * fs))
            self._whiten = Prewhiten(order, fit, max(1, fit // PREWHITEN_SEGMENTS), channels, PREWHITEN_FLOOR)
            # The whitening lifts the band's edges (where the band-passed background is faint) as much as a
            # line's notch: the band-pass again keeps the whitened signal in the trigger's band.
            self._reband = SosFilter(band, channels)
        self._dirty = 0  # fit segments still to treat as unclean (the one with an event, and the next)

    @property
    def active(self) -> bool:
        return self._background is not None

    def reset(self) -> None:
        """Forget all state (after a gap in the stream)."""
        for part in (self._despike, self._band, self._stalta, self._dropouts, self._whiten, self._reband):
            if part is not None:
                part.reset()
        self._background = None
        self._dirty = 0

    def conceal(self) -> None:
        """The stream goes on after a concealed gap: the step at its edges is masked like a dropout's
        (with prewhitening only: the predictor would see it as new)."""
        if self._whiten is not None:
            self._dropouts.extend(self._dropouts.guard)

    def release(self) -> None:
        """End the current event now (maximum duration reached); a new one needs a new 'on' crossing."""
        self._background = None

    def __call__(self, block: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
        """(on offsets, off offsets, per-sample max STA/LTA over channels) of one block.

        While an event is on, the ratio reported is the STA over the held background.
        """
        x = block.astype(np.float64, copy=False)
        keep = None
        if self._dropouts is not None:
            x, keep = self._dropouts(x)
        y = self._band(self._despike(x))
        if self._whiten is None:
            return self._trigger(y if keep is None else y * keep)
        # Prewhitened: in pieces that end on the fit segments' boundaries, so that whether a segment was
        # clean (no event on) is known when it closes, whatever the block sizes.
        ons: list[int] = []
        offs: list[int] = []
        ratios = []
        at, n = 0, y.shape[1]
        while at < n or not ratios:
            m = min(n - at, self._whiten.until_boundary())
            e = self._reband(self._whiten(y[:, at:at + m]))
            if keep is not None:
                e *= keep[at:at + m]
            on, off, ratio = self._trigger(e)
            ons += [at + i for i in on]
            offs += [at + i for i in off]
            ratios.append(ratio)
            if on or off or self.active:
                self._dirty = 2
            at += m
            if m and self._whiten.until_boundary() == 0:
                self._whiten.end_segment(clean=self._dirty == 0)
                self._dirty = max(0, self._dirty - 1) if not self.active else 2
        return ons, offs, ratios[0] if len(ratios) == 1 else np.concatenate(ratios)

    def _trigger(self, x: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
        """STA/LTA and the on/off logic over the characteristic function's input ``x`` (channels, n)."""
        sl = self._stalta(x)
        ratio = sl.ratio
        k = self.cfg.coincidence
        ons: list[int] = []
        offs: list[int] = []
        at, n = 0, ratio.shape[1]
        while at < n:  # a few state changes per block at most
            if self._background is None:
                hits = np.flatnonzero((ratio[:, at:] > self.cfg.on).sum(axis=0) >= k)
                if not hits.size:
                    break
                at += int(hits[0])
                ons.append(at)
                self._background = np.maximum(sl.lta[:, max(at - 1, 0)], 1e-300)
            else:
                held = sl.sta[:, at:] / self._background[:, None]
                ratio[:, at:] = held
                ends = np.flatnonzero((held > self.cfg.off).sum(axis=0) < k)
                if not ends.size:
                    break
                at += int(ends[0])
                offs.append(at)
                self._stalta.restart_lta(sl, at, self._background)  # the event never becomes background
                ratio[:, at:] = sl.sta[:, at:] / sl.lta[:, at:]
                self._background = None
        return ons, offs, ratio.max(axis=0)


@dataclass
class Detection:
    """One event in the making: its trigger, its window, and what the trigger saw."""

    on: int
    window_start: int
    window_stop: int
    peak_ratio: float = 0.0  # the trigger's highest STA/LTA while the event was on, within its window
    off: int | None = None
    counted_to: int = -1  # samples before this one are folded into peak_ratio

    def observe(self, ratio: np.ndarray, block_start: int, until: int) -> None:
        """Fold the trigger's ratio of one block (from ``block_start``) into ``peak_ratio`` up to ``until``.

        Only the window's span counts: the event is classified when its window is complete, whatever the
        trigger does later, so the peak must not depend on how far the stream had got by then.
        """
        a = max(self.counted_to, self.on, block_start) - block_start
        b = min(until, self.window_stop) - block_start
        if b > a:
            self.peak_ratio = max(self.peak_ratio, float(ratio[a:b].max()))
        self.counted_to = max(self.counted_to, until)

    def rearm_at(self, refractory: int) -> float:
        """First sample at which a new trigger makes a new event."""
        return max(self.window_stop, self.off if self.off is not None else np.inf) + refractory


@dataclass
class PipelineStats:
    """Counters for the health message."""

    samples_in: int = 0
    triggers: int = 0
    merged_triggers: int = 0
    short_triggers: int = 0
    events: int = 0
    gaps: int = 0  # gaps that reset the trigger
    concealed_gaps: int = 0  # gaps bridged without a reset (at most conceal_gap_s)
    concealed_samples: int = 0
    windows_with_gaps: int = 0
    windows_concealed: int = 0  # event windows holding concealed samples
    processing_s: float = 0.0
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=1000))  # recent only: flat memory


class Pipeline:
    """Turns a sample stream into classified events (:class:`PipelineEvent`).

    ``clock`` maps an absolute sample index to UTC.
    """

    def __init__(self, cfg: TriggerConfig, classifier: WindowClassifier, fs: float, channel_names: list[str],
                 clock: Callable[[int], datetime]):
        self.cfg, self.classifier, self.fs, self.clock = cfg, classifier, fs, clock
        self.channel_names = list(channel_names)
        channels = len(channel_names)
        self.window_len = round(classifier.samples / classifier.fs * fs)
        self.margin = 0 if abs(fs - classifier.fs) < 1e-9 else round(0.02 * fs)  # resampling edges
        self.pre = round(cfg.pre_s * fs)
        self.refractory = round(cfg.refractory_s * fs)
        self.min_len, self.max_len = round(cfg.min_duration_s * fs), round(cfg.max_duration_s * fs)
        self.conceal_max = round(cfg.conceal_gap_s * fs)
        self.detector = Detector(cfg, fs, channels)
        self.ring = SampleRing(channels, self.pre + self.window_len + 2 * self.margin + int(2 * fs))
        self.position: int | None = None
        self._last: np.ndarray | None = None  # the last sample fed (channels,), where a bridge starts
        self.current: Detection | None = None
        self.pending: list[Detection] = []
        self.stats = PipelineStats()

    def gap(self, resume_at: int) -> None:
        """The stream jumps to ``resume_at``: reset filter state; open windows are zero-filled over the gap."""
        self.detector.reset()
        if self.current is not None and self.current.off is None:
            self.current.off = self.position
        self.stats.gaps += 1
        self.position = resume_at

    def feed(self, block: np.ndarray, start: int) -> list[PipelineEvent]:
        """Process samples ``start..start+n`` (channels, n) in physical units; return finished events."""
        t0 = time.perf_counter()
        if self.position is not None and start != self.position:
            if 0 < start - self.position <= self.conceal_max and self._last is not None and block.shape[1]:
                self._conceal(block, start)
                self.detector.conceal()
            else:
                self.gap(start)
        n = block.shape[1]
        self.ring.write(block, start)
        if n:
            self._last = np.asarray(block[:, -1], dtype=np.float64)
        ons, offs, ratio = self.detector(block)
        # In sample order; at the same sample an event's end comes before the next one's start.
        for offset, is_on in sorted([(i, False) for i in offs] + [(i, True) for i in ons]):
            if is_on:
                self._trigger_on(start + offset)
            else:
                self._trigger_off(start + offset, ratio, start)
        cur = self.current
        if cur is not None and cur.off is None:
            cur.observe(ratio, start, start + n)
            if start + n - cur.on >= self.max_len:  # e.g. hours of drilling: close, re-arm on a new onset
                cur.off = start + n
                self.detector.release()
        self.position = start + n
        self.stats.samples_in += n
        done = [d for d in self.pending if d.window_stop + self.margin <= self.position]
        self.pending = [d for d in self.pending if d.window_stop + self.margin > self.position]
        events = [e for e in (self._finish(d, t0) for d in done) if e is not None]
        self.stats.processing_s += time.perf_counter() - t0
        return events

    def _conceal(self, block: np.ndarray, start: int) -> None:
        """Bridge the samples missing between the stream's position and ``block`` (which starts at ``start``)
        in the ring; the trigger's state is kept as it is."""
        missing = start - self.position
        self.stats.concealed_gaps += 1
        self.stats.concealed_samples += missing
        self.ring.write(bridge_gap(self._last, block[:, 0], missing), self.position, concealed=True)
        self.position = start

    def flush(self) -> list[PipelineEvent]:
        """Finish the windows still open at the end of a record (zero-filled past its end)."""
        t0 = time.perf_counter()
        done, self.pending = self.pending, []
        return [e for e in (self._finish(d, t0) for d in done) if e is not None]

    def _trigger_off(self, at: int, ratio: np.ndarray, block_start: int) -> None:
        cur = self.current
        if cur is not None and cur.off is None:
            cur.observe(ratio, block_start, at)
            cur.off = at

    def _trigger_on(self, at: int) -> None:
        cur = self.current
        self.stats.triggers += 1
        if cur is not None and at < cur.rearm_at(self.refractory):
            self.stats.merged_triggers += 1  # part of the same event (blast delays, coda re-triggers)
            cur.off = None
            cur.counted_to = at  # the peak is over the trigger's on-time; the pause before this is not counted
            return
        start = at - self.pre
        self.current = Detection(on=at, window_start=start, window_stop=start + self.window_len)
        self.pending.append(self.current)

    def _finish(self, det: Detection, t0: float) -> PipelineEvent | None:
        if det.off is not None and det.off - det.on < self.min_len:
            self.stats.short_triggers += 1
            return None
        raw, missing = self.ring.read(det.window_start - self.margin, det.window_stop + self.margin)
        if missing:
            self.stats.windows_with_gaps += 1
        concealed = self.ring.concealed(det.window_start, det.window_stop)
        if concealed:
            self.stats.windows_concealed += 1
        t_inf = time.perf_counter()
        result = self.classifier.classify(raw[None], self.fs)[0]
        inference_ms = 1000 * (time.perf_counter() - t_inf)
        self.stats.inference_ms.append(inference_ms)
        window = raw[:, self.margin:raw.shape[1] - self.margin]
        # The trigger's own peak, not a recomputation over the window.
        features = event_features(window, self.fs, sta_lta_max=round(det.peak_ratio, 3))
        self.stats.events += 1
        latency_s = time.perf_counter() - t0
        return PipelineEvent(
            trigger_sample=det.on,
            trigger_time=iso_utc(self.clock(det.on)),
            window=WindowInfo(iso_utc(self.clock(det.window_start)), self.fs, self.window_len,
                              tuple(self.channel_names)),
            classification=result,
            features=features,
            samples=window,
            missing_samples=missing,
            concealed_samples=concealed,
            closed_at=time.monotonic() - latency_s,
            latency_ms=round(1000 * latency_s, 3),
            inference_ms=round(inference_ms, 3),
        )
