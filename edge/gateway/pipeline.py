"""samples -> triggers -> event windows -> classified events: one pipeline for run, replay and demo.

The trigger runs on the board's own rate: 3-point despike (ADC glitches), causal
band-pass, STA/LTA per channel, on/off hysteresis, multi-channel coincidence.
Each trigger opens an event window (``pre_s`` before the trigger, the model's
duration long, with a small margin for resampling); once the stream has passed
the window's end the raw window is taken from a ring buffer, classified and
described by its features. A trigger within the refractory time after the last
event's window or trigger-off belongs to that event, so a delay-fired blast
sequence is one event. Results do not depend on how the stream is cut into blocks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from edge.gateway.config import TriggerConfig
from edge.gateway.dsp import ClassicStaLta, Despike, RecursiveStaLta, SosFilter, bandpass_sos
from edge.gateway.features import event_features


def iso_utc(t: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, as in every message."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fixed_clock(start: datetime, fs: float) -> Callable[[int], datetime]:
    """Sample index -> UTC for a record with a known start time and exact rate (replay)."""
    return lambda index: start + timedelta(seconds=index / fs)


class SampleRing:
    """The last ``capacity`` samples by absolute index; samples never received read as zeros."""

    def __init__(self, channels: int, capacity: int):
        self.capacity = capacity
        self._data = np.zeros((channels, capacity), dtype=np.float32)
        self._stamp = np.full(capacity, -1, dtype=np.int64)  # absolute index held in each slot

    def write(self, block: np.ndarray, start: int) -> None:
        n = block.shape[1]
        if n > self.capacity:
            block, start, n = block[:, -self.capacity:], start + n - self.capacity, self.capacity
        slots = np.arange(start, start + n) % self.capacity
        self._data[:, slots] = block
        self._stamp[slots] = np.arange(start, start + n)

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
        self._band = SosFilter(bandpass_sos(fs, cfg.highpass_hz, cfg.lowpass_hz), channels)
        self._stalta = (RecursiveStaLta if cfg.method == "recursive" else ClassicStaLta)(nsta, nlta, channels)
        self._background: np.ndarray | None = None  # held LTA while an event is on

    @property
    def active(self) -> bool:
        return self._background is not None

    def reset(self) -> None:
        """Forget all state (after a gap in the stream)."""
        for part in (self._despike, self._band, self._stalta):
            part.reset()
        self._background = None

    def release(self) -> None:
        """End the current event now (maximum duration reached); a new one needs a new 'on' crossing."""
        self._background = None

    def __call__(self, block: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
        """(on offsets, off offsets, per-sample max STA/LTA over channels) of one block."""
        stalta = self._stalta
        ratio = stalta(self._band(self._despike(block.astype(np.float64, copy=False))))
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
                self._background = np.maximum(stalta.lta[:, max(at - 1, 0)], 1e-300)
            else:
                held = ratio[:, at:] = stalta.sta[:, at:] / self._background[:, None]
                ends = np.flatnonzero((held > self.cfg.off).sum(axis=0) < k)
                if not ends.size:
                    break
                at += int(ends[0])
                offs.append(at)
                stalta.restart_lta(at, self._background)  # the event never becomes background
                ratio[:, at:] = stalta.sta[:, at:] / stalta.lta[:, at:]
                self._background = None
        return ons, offs, ratio.max(axis=0)


@dataclass
class Detection:
    """One event in the making: its trigger, its window, and what the trigger saw."""

    on: int
    window_start: int
    window_stop: int
    peak_ratio: float = 0.0
    off: int | None = None

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
    gaps: int = 0
    windows_with_gaps: int = 0
    processing_s: float = 0.0
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=1000))  # recent only: flat memory


class Pipeline:
    """Turns a sample stream into classified events (dicts of the event message's signal fields).

    ``classifier`` needs ``classify(windows, fs)``, ``samples`` and ``params.fs`` (edge.gateway.model.Classifier).
    ``clock`` maps an absolute sample index to UTC.
    """

    def __init__(self, cfg: TriggerConfig, classifier, fs: float, channel_names: list[str],
                 clock: Callable[[int], datetime]):
        self.cfg, self.classifier, self.fs, self.clock = cfg, classifier, fs, clock
        self.channel_names = list(channel_names)
        channels = len(channel_names)
        self.window_len = round(classifier.samples / classifier.params.fs * fs)
        self.margin = 0 if abs(fs - classifier.params.fs) < 1e-9 else round(0.02 * fs)  # resampling edges
        self.pre = round(cfg.pre_s * fs)
        self.refractory = round(cfg.refractory_s * fs)
        self.min_len, self.max_len = round(cfg.min_duration_s * fs), round(cfg.max_duration_s * fs)
        self.detector = Detector(cfg, fs, channels)
        self.ring = SampleRing(channels, self.pre + self.window_len + 2 * self.margin + int(2 * fs))
        self.position: int | None = None
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

    def feed(self, block: np.ndarray, start: int) -> list[dict]:
        """Process samples ``start..start+n`` (channels, n) in physical units; return finished events."""
        t0 = time.perf_counter()
        if self.position is not None and start != self.position:
            self.gap(start)
        n = block.shape[1]
        self.ring.write(block, start)
        ons, offs, ratio = self.detector(block)
        for offset, kind in sorted([(i, "on") for i in ons] + [(i, "off") for i in offs]):
            self._edge(start + offset, kind)
        cur = self.current
        if cur is not None and cur.off is None:
            seg = ratio[max(cur.on - start, 0):]
            if seg.size:
                cur.peak_ratio = max(cur.peak_ratio, float(seg.max()))
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

    def flush(self) -> list[dict]:
        """Finish the windows still open at the end of a record (zero-filled past its end)."""
        t0 = time.perf_counter()
        done, self.pending = self.pending, []
        return [e for e in (self._finish(d, t0) for d in done) if e is not None]

    def _edge(self, at: int, kind: str) -> None:
        cur = self.current
        if kind == "off":
            if cur is not None and cur.off is None:
                cur.off = at
            return
        self.stats.triggers += 1
        if cur is not None and at < cur.rearm_at(self.refractory):
            self.stats.merged_triggers += 1  # part of the same event (blast delays, coda re-triggers)
            cur.off = None
            return
        start = at - self.pre
        self.current = Detection(on=at, window_start=start, window_stop=start + self.window_len)
        self.pending.append(self.current)

    def _finish(self, det: Detection, t0: float) -> dict | None:
        if det.off is not None and det.off - det.on < self.min_len:
            self.stats.short_triggers += 1
            return None
        raw, missing = self.ring.read(det.window_start - self.margin, det.window_stop + self.margin)
        if missing:
            self.stats.windows_with_gaps += 1
        t_inf = time.perf_counter()
        result = self.classifier.classify(raw[None], self.fs)[0]
        self.stats.inference_ms.append(1000 * (time.perf_counter() - t_inf))
        window = raw[:, self.margin:raw.shape[1] - self.margin]
        features = event_features(window, self.fs)
        features["sta_lta_max"] = round(det.peak_ratio, 3)  # the trigger's own peak, not a recomputation
        self.stats.events += 1
        # Keys starting with "_" are for the daemon (waveform publishing, scoring), not for the message.
        return {
            "trigger_time": iso_utc(self.clock(det.on)),
            "window": {"start": iso_utc(self.clock(det.window_start)), "fs": self.fs,
                       "samples": self.window_len, "channels": self.channel_names},
            **result,
            "features": features,
            "latency_ms": round(1000 * (time.perf_counter() - t0), 3),
            "_trigger_sample": det.on,
            "_missing_samples": missing,
            "_window": window,
        }
