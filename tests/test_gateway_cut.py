"""Gateway-cut windows: the gateway's own trigger and window extraction on synthetic streams, labelled from
the streams' ground truth; and the data recipe of the config ([data] mix, sites, regime)."""

import numpy as np
import pytest

from edge.errors import UserError
from edge.gateway.config import TriggerConfig
from edge.gateway.preprocess import PreprocessParams, filter_windows
from training.config import load_config
from training.gateway_cut import WindowRecorder, cut_stream, gateway_cut_windows, label_trigger


def test_label_trigger_event_noise_and_ambiguous():
    events = [{"sample": 1000, "end": 5000, "label": "blast"}]
    assert label_trigger(1200, (200, 4200), events, early=50) == "blast"
    assert label_trigger(960, (0, 4000), events, early=50) == "blast"  # noise lifted the STA just before
    assert label_trigger(4999, (4000, 8000), events, early=50) == "blast"  # a re-trigger in a long event
    assert label_trigger(20000, (19000, 23000), events, early=50) == "noise"  # nothing behind the trigger
    assert label_trigger(500, (0, 4000), events, early=50) is None  # holds part of an event it did not see


def test_recorder_keeps_raw_windows_and_answers_every_one():
    rec = WindowRecorder(4096, 4000.0)
    out = rec.classify(np.ones((2, 3, 8000), np.float32), 8000.0)
    assert len(out) == 2 and len(rec.windows) == 2 and rec.windows[0].shape == (3, 8000)
    assert (rec.samples, rec.fs) == (4096, 4000.0)


@pytest.fixture(scope="module")
def cut():
    return cut_stream(11, 8000.0, 90.0, 4000.0, 4096, 3, "wide", "high", "train", (10.0, 30.0), 40.0)


def test_windows_cut_from_a_stream_carry_the_real_trigger_position(cut):
    ws, counts = cut
    assert counts["events"] > 5 and counts["windows"] >= len(ws) > 0
    assert ws.waveforms.shape[1:] == (3, 4096) and ws.fs == 4000.0  # resampled as Classifier.prepare does
    labels = set(ws.labels.tolist())
    assert labels - {"noise"}, "a stream with events gives event windows"
    assert labels <= {"microseismic", "blast", "drilling", "electrical", "mechanical", "noise"}
    # the trigger fired pre_s into the window: the energy before it is the background, after it the event
    pre = round(TriggerConfig().pre_s * 4000.0)
    # (in the trigger's band: the raw background is dominated by low-frequency ground noise)
    impulsive = np.isin(ws.labels, ["microseismic", "blast", "electrical"])
    assert impulsive.any()
    w = filter_windows(ws.waveforms[impulsive], PreprocessParams(4000.0, 4096, 20.0, 1500.0, 4, 16.0))
    before = np.sqrt(np.mean(w[:, :, pre - 600:pre - 100] ** 2, axis=(1, 2)))
    after = np.sqrt(np.mean(w[:, :, pre:pre + 500] ** 2, axis=(1, 2)))
    assert np.median(after / before) > 2.0


def test_same_seed_same_windows_and_count_honoured():
    a, info = gateway_cut_windows(12, 5, fs=4000.0, samples=4096, channels=1, stream_s=60.0, board_rates=(5000.0,))
    b, _ = gateway_cut_windows(12, 5, fs=4000.0, samples=4096, channels=1, stream_s=60.0, board_rates=(5000.0,))
    assert len(a) == 12 and a.waveforms.shape[1:] == (1, 4096)
    np.testing.assert_array_equal(a.waveforms, b.waveforms)
    assert list(a.labels) == list(b.labels)
    assert all(s["board_fs"] == 5000.0 for s in info["streams"])


def test_config_mix_sites_and_regime():
    cfg = load_config(None, {"data": {"mix": {"synthetic": 0.7, "gateway_cut": 0.3}}})
    assert cfg["data"]["mix"] == {"synthetic": 0.7, "gateway_cut": 0.3, "crosscheck": 0.0}
    assert cfg["data"]["sites"] == "wide" and cfg["preprocess"]["fs"] == 4000.0
    low = load_config(None, {"data": {"regime": "low"}})
    assert low["preprocess"]["fs"] == 500.0 and low["preprocess"]["lowpass_hz"] < 250.0
    kept = load_config(None, {"data": {"regime": "low"}, "preprocess": {"fs": 1000.0, "lowpass_hz": 400.0}})
    assert kept["preprocess"]["fs"] == 1000.0  # the config's own choice wins over the regime's default
    with pytest.raises(UserError, match=r"data\.mix.*sum to 1"):
        load_config(None, {"data": {"mix": {"synthetic": 0.5}}})
    with pytest.raises(UserError, match=r"data\.mix\.field.*allowed: synthetic, gateway_cut, crosscheck"):
        load_config(None, {"data": {"mix": {"field": 1.0}}})
    with pytest.raises(UserError, match=r"data\.sites.*'nowhere'"):
        load_config(None, {"data": {"sites": ["nowhere"]}})
    with pytest.raises(UserError, match=r"data\.crosscheck_train_sites.*bolted_wall_28hz"):
        load_config(None, {"data": {"crosscheck_train_sites": ["moon"]}})


def test_plan_holds_out_crosscheck_site_types_and_keys_every_parameter():
    from training import data as D
    cfg = load_config(None, {"data": {"mix": {"synthetic": 0.6, "gateway_cut": 0.25, "crosscheck": 0.15}}})
    plan = D.synthetic_plan(cfg)
    train_sites = set(cfg["data"]["crosscheck_train_sites"])
    xc_train = next(p for p in plan["train"]["parts"] if p["source"] == "crosscheck")
    assert set(xc_train["sites"]) == train_sites and not set(plan["crosscheck"]["sites"]) & train_sites
    assert sum(p["count"] for p in plan["train"]["parts"]) == cfg["data"]["train_count"]
    assert plan["heldout_sites"]["sites"] == ["wide-heldout"] and plan["heldout_mechanisms"]["mechanisms"] == "heldout"
    assert {p["source"] for p in plan["openset"]["parts"]} == {"synthetic", "crosscheck"}
