"""Windows cut by the gateway's own trigger from synthetic streams (the ``gateway_cut`` data source).

A synthetic stream (``training.synthetic.stream.StreamSynth``: one recording chain drawn for the whole
stream, events at random times) at a board's rate runs through ``edge.gateway.pipeline.Pipeline`` with
its default ``TriggerConfig``. The pipeline's classifier is a :class:`WindowRecorder`: it keeps every raw
window the pipeline hands it, so each window has the real trigger position, the real pre-trigger
length and merged triggers, exactly as on a gateway. Each window is brought to the model's rate and
length with ``edge.gateway.preprocess`` (as ``Classifier.prepare`` does) and labelled from the stream's
ground truth: a trigger inside an event's span takes that event's label; a trigger with nothing behind
it is ``noise`` (what the gateway must reject); a trigger just before an event whose window holds part
of it is ambiguous and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from edge.formats import WindowSet
from edge.gateway.config import TriggerConfig
from edge.gateway.model import Classification
from edge.gateway.pipeline import Pipeline, fixed_clock
from edge.gateway.preprocess import fit_length, resample
from edge.vocabulary import CLASSES
from firmware_bridge.clock import iso_utc

# Board rates the streams cycle through, per rate regime (the model's rate is the regime's).
BOARD_RATES = {"high": (4000.0, 5000.0, 8000.0, 10000.0), "low": (250.0, 500.0, 1000.0)}
EARLY_S = 0.1  # a trigger this far ahead of an event's onset is the event's (noise lifted the STA first)
EVENTS_PER_MIN = {"high": 40.0, "low": 10.0}  # dense streams: many windows per second of synthesis
STREAM_S = {"high": 240.0, "low": 1200.0}  # length of each stream
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class WindowRecorder:
    """A ``WindowClassifier`` that records the raw windows the pipeline gives it instead of classifying."""

    model_samples: int
    model_fs: float
    windows: list[np.ndarray] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return self.model_samples

    @property
    def fs(self) -> float:
        return self.model_fs

    def classify(self, waveforms: np.ndarray, fs: float) -> list[Classification]:
        """Keep each window; answer a placeholder (nobody reads it)."""
        self.windows.extend(np.array(w, dtype=np.float32) for w in waveforms)
        flat = {c: 1.0 / len(CLASSES) for c in CLASSES}
        return [Classification("noise", 1.0 / len(CLASSES), flat, 1.0) for _ in waveforms]


def label_trigger(trigger: int, window: tuple[int, int], events: list[dict], early: int) -> str | None:
    """The ground-truth label of a window whose trigger is at ``trigger`` (None: ambiguous, drop it).

    ``events`` carry absolute ``sample`` (onset) and ``end``. A trigger within ``[onset - early, end)``
    is the event's; a window overlapping no event is ``noise``; any other window holds part of an event
    its trigger did not come from.
    """
    for e in events:
        if e["sample"] - early <= trigger < e["end"]:
            return str(e["label"])
    if any(e["sample"] < window[1] and e["end"] > window[0] for e in events):
        return None
    return "noise"


def cut_stream(seed: int, board_fs: float, seconds: float, model_fs: float, samples: int, channels: int,
               site: str, regime: str, mechanisms: str, snr_db: tuple[float, float],
               events_per_min: float) -> tuple[WindowSet, dict]:
    """The labelled windows the gateway's trigger cuts from one synthetic stream, and counts of what happened."""
    from training.synthetic.stream import StreamSynth

    synth = StreamSynth(fs=board_fs, channels=channels, site=site, seed=seed, snr_db=snr_db,
                        rate_per_min=events_per_min, regime=regime, mechanisms=mechanisms)
    recorder = WindowRecorder(samples, model_fs)
    names = ["Z", "N", "E"][:channels]
    pipe = Pipeline(TriggerConfig(), recorder, board_fs, names, fixed_clock(START, board_fs))
    block = int(board_fs)  # one second at a time, like the board
    events: list[dict] = []
    cut: list = []
    for at in range(0, int(seconds * board_fs), block):
        x, new = synth.next_block(block)
        events += new
        cut += pipe.feed(x, at)
    cut += pipe.flush()
    early = round(EARLY_S * board_fs)
    waves, labels, snrs, times = [], [], [], []
    dropped = 0
    by_onset = {e["sample"]: e for e in events}
    for ev, raw in zip(cut, recorder.windows, strict=True):
        start = ev.trigger_sample - pipe.pre
        label = label_trigger(ev.trigger_sample, (start, start + pipe.window_len), events, early)
        if label is None:
            dropped += 1
            continue
        src = next((e for o, e in by_onset.items() if o - early <= ev.trigger_sample < e["end"]), None)
        waves.append(raw)
        labels.append(label)
        snrs.append(np.nan if src is None else src["snr_db"])
        times.append(ev.trigger_time)
    counts = {"events": len(events), "triggers": pipe.stats.triggers, "merged_triggers": pipe.stats.merged_triggers,
              "windows": len(cut), "ambiguous_dropped": dropped}
    if not waves:
        return WindowSet(np.zeros((0, channels, samples), np.float32), np.array([], str), model_fs,
                         np.zeros(0, np.float32), np.array([], str), np.array([], str)), counts
    # As Classifier.prepare does: the board's window (with its resampling margins) to the model's rate and length.
    x = fit_length(resample(np.stack(waves), board_fs, model_fs), samples).astype(np.float32)
    sites = np.array([f"{site}@{board_fs:g}Hz"] * len(x), dtype=str)
    return WindowSet(x, np.array(labels, dtype=str), model_fs, np.array(snrs, np.float32), sites,
                     np.array(times, dtype=str)), counts


def gateway_cut_windows(count: int, seed: int, *, fs: float, samples: int, channels: int, site: str = "wide",
                        regime: str = "high", mechanisms: str = "train", snr_db: tuple[float, float] = (-3.0, 30.0),
                        board_rates: tuple[float, ...] | None = None, stream_s: float | None = None,
                        events_per_min: float | None = None) -> tuple[WindowSet, dict]:
    """``count`` gateway-cut windows at the model's ``fs`` x ``samples``: streams seeded (seed, k) at the
    board rates in turn (the regime's by default) until enough windows are cut; returns them (stream
    order, truncated to ``count``) and per-stream counts."""
    rates = tuple(board_rates) if board_rates else BOARD_RATES[regime]
    stream_s = STREAM_S[regime] if stream_s is None else stream_s
    rate = EVENTS_PER_MIN[regime] if events_per_min is None else events_per_min
    parts, log, have, k = [], [], 0, 0
    while have < count:
        board = rates[k % len(rates)]
        stream_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        ws, counts = cut_stream(stream_seed, board, stream_s, fs, samples, channels, site, regime, mechanisms,
                                snr_db, rate)
        parts.append(ws)
        log.append({"stream": k, "board_fs": board, "seconds": stream_s, **counts})
        have += len(ws)
        k += 1
        if k > 50 and have == 0:
            raise RuntimeError("gateway_cut: 50 streams gave no window; the trigger never fired")
    x = np.concatenate([p.waveforms for p in parts])[:count]
    cat = {n: np.concatenate([getattr(p, n) for p in parts])[:count] for n in ("labels", "snr_db", "site", "time")}
    labels, n = np.unique(cat["labels"], return_counts=True)
    info = {"streams": log, "class_counts": {str(a): int(b) for a, b in zip(labels, n, strict=True)},
            "trigger": TriggerConfig().__dict__, "started": iso_utc(START)}
    return WindowSet(x, cat["labels"], fs, cat["snr_db"], cat["site"], cat["time"]), info
