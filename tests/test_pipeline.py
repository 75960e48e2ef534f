"""The event pipeline over recorded streams: block-size independence, gaps, refractory merging."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from edge.gateway.config import TriggerConfig
from edge.gateway.model import Classifier
from edge.gateway.pipeline import Pipeline, fixed_clock
from training.synthetic.stream import StreamSynth

FS = 4000.0


@pytest.fixture(scope="module")
def stream():
    synth = StreamSynth(fs=FS, channels=3, site="za-deep-gold", seed=12, snr_db=(10.0, 30.0), rate_per_min=12)
    blocks, truth = [], []
    for _ in range(90):
        x, ev = synth.next_block(int(FS))
        blocks.append(x)
        truth += ev
    return np.concatenate(blocks, axis=1), truth


@pytest.fixture(scope="module")
def classifier(triaxial_model):
    return Classifier(triaxial_model)


def run(data: np.ndarray, classifier, sizes, cfg: TriggerConfig | None = None, skip: tuple[int, int] | None = None):
    pipe = Pipeline(cfg or TriggerConfig(), classifier, FS, ["Z", "N", "E"],
                    fixed_clock(datetime(2026, 1, 1, tzinfo=UTC), FS))
    events, at, k = [], 0, 0
    pipe.lost = 0
    while at < data.shape[1]:
        n = sizes[k % len(sizes)]
        k += 1
        if skip and skip[0] <= at < skip[1]:  # samples lost on the line
            pipe.lost += skip[1] - at
            at = skip[1]
            continue
        events += pipe.feed(data[:, at:at + n], at)
        at += n
    return events + pipe.flush(), pipe


def test_events_do_not_depend_on_block_sizes(stream, classifier):
    data, truth = stream
    a, _ = run(data, classifier, [400])
    b, _ = run(data, classifier, [37, 1000, 4000, 1, 250])
    assert len(a) >= 8 and len(truth) >= 8
    assert [e["_trigger_sample"] for e in a] == [e["_trigger_sample"] for e in b]
    assert [e["label"] for e in a] == [e["label"] for e in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose([x["probabilities"][c] for c in x["probabilities"]],
                                   [y["probabilities"][c] for c in y["probabilities"]], atol=1e-6)
        assert x["trigger_time"] == y["trigger_time"] and x["window"] == y["window"]


def test_each_injected_event_is_one_event_near_its_onset(stream, classifier):
    data, truth = stream
    events, pipe = run(data, classifier, [400])
    triggers = np.array([e["_trigger_sample"] for e in events])
    for t in truth:
        near = triggers[(triggers >= t["sample"] - 0.3 * FS) & (triggers <= t["sample"] + 1.5 * FS)]
        assert len(near) == 1, t
    assert len(events) == len(truth)  # nothing triggered on the background between events
    assert pipe.stats.samples_in == data.shape[1]


def test_a_gap_resets_state_and_zero_fills_the_window(stream, classifier):
    data, truth = stream
    onset = truth[2]["sample"]
    events, pipe = run(data, classifier, [400], skip=(onset + 2000, onset + 2800))
    assert pipe.stats.gaps == 1 and pipe.stats.windows_with_gaps >= 1
    hit = [e for e in events if abs(e["_trigger_sample"] - onset) < 0.3 * FS]
    assert pipe.lost > 0 and len(hit) == 1 and hit[0]["_missing_samples"] == pipe.lost


def test_window_is_placed_around_the_trigger(stream, classifier):
    data, _ = stream
    events, _ = run(data, classifier, [400])
    for e in events:
        assert e["window"]["samples"] == 4096 and e["_window"].shape == (3, 4096)
        start = datetime.fromisoformat(e["window"]["start"].replace("Z", "+00:00"))
        trig = datetime.fromisoformat(e["trigger_time"].replace("Z", "+00:00"))
        assert abs((trig - start).total_seconds() - TriggerConfig().pre_s) < 1e-3
