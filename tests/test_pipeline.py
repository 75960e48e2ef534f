"""The event pipeline over recorded streams: block-size independence, gaps, refractory merging.

The classifier is a stand-in (tests/fakes.py): what is tested here is the trigger and the windows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from fakes import EnergyClassifier

from edge.gateway.config import TriggerConfig
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
def classifier():
    return EnergyClassifier()


def run(data: np.ndarray, classifier, sizes, cfg: TriggerConfig | None = None, skip: tuple[int, int] | None = None):
    """(events, pipeline, samples lost on the line) of one pass over ``data`` in blocks of ``sizes``."""
    pipe = Pipeline(cfg or TriggerConfig(), classifier, FS, ["Z", "N", "E"],
                    fixed_clock(datetime(2026, 1, 1, tzinfo=UTC), FS))
    events, at, k, lost = [], 0, 0, 0
    while at < data.shape[1]:
        n = sizes[k % len(sizes)]
        k += 1
        if skip and skip[0] <= at < skip[1]:  # samples lost on the line
            lost += skip[1] - at
            at = skip[1]
            continue
        events += pipe.feed(data[:, at:at + n], at)
        at += n
    return events + pipe.flush(), pipe, lost


def test_events_do_not_depend_on_block_sizes(stream, classifier):
    data, truth = stream
    a, _, _ = run(data, classifier, [400])
    b, _, _ = run(data, classifier, [37, 1000, 4000, 1, 250])
    assert len(a) >= 8 and len(truth) >= 8
    assert [e.trigger_sample for e in a] == [e.trigger_sample for e in b]
    assert [e.classification.label for e in a] == [e.classification.label for e in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.samples, y.samples)
        np.testing.assert_allclose(list(x.classification.probabilities.values()),
                                   list(y.classification.probabilities.values()), atol=1e-6)
        assert x.trigger_time == y.trigger_time and x.window == y.window
        assert x.features == y.features


def test_each_injected_event_is_one_event_near_its_onset(stream, classifier):
    data, truth = stream
    events, pipe, _ = run(data, classifier, [400])
    triggers = np.array([e.trigger_sample for e in events])
    for t in truth:
        near = triggers[(triggers >= t["sample"] - 0.3 * FS) & (triggers <= t["sample"] + 1.5 * FS)]
        assert len(near) == 1, t
    assert len(events) == len(truth)  # nothing triggered on the background between events
    assert pipe.stats.samples_in == data.shape[1]


def test_a_gap_resets_state_and_zero_fills_the_window(stream, classifier):
    data, truth = stream
    onset = truth[2]["sample"]
    events, pipe, lost = run(data, classifier, [400], skip=(onset + 2000, onset + 2800))
    assert pipe.stats.gaps == 1 and pipe.stats.windows_with_gaps >= 1
    hit = [e for e in events if abs(e.trigger_sample - onset) < 0.3 * FS]
    assert lost > 0 and len(hit) == 1 and hit[0].missing_samples == lost


def test_window_is_placed_around_the_trigger(stream, classifier):
    data, _ = stream
    events, _, _ = run(data, classifier, [400])
    for e in events:
        assert e.window.samples == 4096 and e.samples.shape == (3, 4096)
        start = datetime.fromisoformat(e.window.start.replace("Z", "+00:00"))
        trig = datetime.fromisoformat(e.trigger_time.replace("Z", "+00:00"))
        assert abs((trig - start).total_seconds() - TriggerConfig().pre_s) < 1e-3


def run_dropping(data: np.ndarray, classifier, cfg: TriggerConfig, frame: int, dropped) -> tuple[list, Pipeline]:
    """Feed ``data`` in frames of ``frame`` samples, leaving out the frames whose index is in ``dropped``."""
    pipe = Pipeline(cfg, classifier, FS, ["Z", "N", "E"], fixed_clock(datetime(2026, 1, 1, tzinfo=UTC), FS))
    events = []
    for k, at in enumerate(range(0, data.shape[1], frame)):
        if k not in dropped:
            events += pipe.feed(data[:, at:at + frame], at)
    return events + pipe.flush(), pipe


def test_a_short_gap_is_concealed_without_resetting_the_trigger(stream, classifier):
    data, truth = stream
    onset = truth[2]["sample"]
    frame = 40  # 10 ms at 4 kHz
    lost = {(onset + 400) // frame, (onset + 400) // frame + 1}  # 20 ms just after the onset
    events, pipe = run_dropping(data, classifier, TriggerConfig(), frame, lost)
    clean, _ = run_dropping(data, classifier, TriggerConfig(), frame, set())
    assert pipe.stats.gaps == 0 and pipe.stats.concealed_gaps == 1 and pipe.stats.concealed_samples == 2 * frame
    assert [e.trigger_sample for e in events] == [e.trigger_sample for e in clean]
    hit = [e for e in events if abs(e.trigger_sample - onset) < 0.3 * FS]
    assert len(hit) == 1 and hit[0].concealed_samples == 2 * frame and hit[0].missing_samples == 0
    assert pipe.stats.windows_concealed == 1
    fields = hit[0].signal_fields()
    assert fields["concealed_samples"] == 2 * frame and fields["missing_samples"] == 0
    # The window holds a straight line over the gap, from the last sample before it to the first after it.
    a = min(lost) * frame - (hit[0].trigger_sample - round(TriggerConfig().pre_s * FS))
    w = hit[0].samples
    line = np.linspace(w[:, a - 1], w[:, a + 2 * frame], 2 * frame + 2, axis=1)[:, 1:-1]
    np.testing.assert_allclose(w[:, a:a + 2 * frame], line, rtol=1e-5, atol=1e-9)
    assert all(e.concealed_samples == 0 for e in events if e is not hit[0])


def test_a_link_losing_a_frame_in_three_still_detects_every_event(stream, classifier):
    """Every third 10 ms frame lost: concealed, every event is found; resetting at each gap finds none."""
    data, truth = stream
    dropped = set(range(2, data.shape[1] // 40 - 1, 3))  # the last frame arrives: every drop is a gap
    events, pipe = run_dropping(data, classifier, TriggerConfig(), 40, dropped)
    triggers = np.array([e.trigger_sample for e in events])
    found = [t for t in truth if ((triggers >= t["sample"] - 0.3 * FS) & (triggers <= t["sample"] + 1.5 * FS)).any()]
    assert len(found) == len(truth) and pipe.stats.gaps == 0 and pipe.stats.concealed_gaps == len(dropped)
    assert len(events) == len(truth)  # no false triggers from the concealed gaps
    reset, rpipe = run_dropping(data, classifier, TriggerConfig(conceal_gap_s=0.0), 40, dropped)
    assert rpipe.stats.gaps == len(dropped) and len(reset) < len(truth) // 2


def test_a_gap_longer_than_conceal_gap_s_resets(stream, classifier):
    data, truth = stream
    cfg = TriggerConfig(conceal_gap_s=0.01)  # 40 samples
    events, pipe = run_dropping(data, classifier, cfg, 40, {100, 101})
    assert pipe.stats.gaps == 1 and pipe.stats.concealed_gaps == 0
    events, pipe = run_dropping(data, classifier, cfg, 40, {100})
    assert pipe.stats.gaps == 0 and pipe.stats.concealed_gaps == 1
