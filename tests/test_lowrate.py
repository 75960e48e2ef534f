"""The board rates a model serves: the card key (written by training, inferred on old cards), and the
refusal of a model that does not serve the board in `stopewatch model install` and `stopewatch doctor`;
the low-rate configs; a replay of a 500 Hz stream through the low-rate model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from field_support import REPO, model_variant, shipped_model, write_config

from edge.cli import main
from edge.errors import UserError
from edge.field.doctor import FAIL, PASS, check_model
from edge.field.model_store import Board, ModelStore, write_board
from edge.gateway.config import load_config as load_gateway_config
from edge.gateway.model import board_rates_hz, rate_refusal, read_card

LOWRATE = REPO / "models" / "lowrate_triaxial"


@pytest.fixture
def low_card_model(tmp_path):
    """The shipped weights under a low-rate model's card: 500 Hz, a 1-200 Hz band, 250-1000 Hz boards."""
    card = read_card(shipped_model() / "model_card.json")
    pre = dict(card["preprocessing"], fs=500.0, highpass_hz=1.0, lowpass_hz=200.0)
    return model_variant(shipped_model(), tmp_path / "low", board_rates_hz=[250, 1000], version="low", fs=500.0,
                         preprocessing=pre, name="lowrate-variant")


def test_old_cards_infer_their_board_rates_from_fs():
    card = read_card(shipped_model() / "model_card.json")
    card.pop("board_rates_hz", None)  # as a card from before the key: the rates follow from fs
    assert board_rates_hz(card) == (2000.0, 20000.0)
    assert board_rates_hz({"fs": 500.0}) == (250.0, 1000.0)
    assert board_rates_hz({"fs": 500.0, "board_rates_hz": [200, 800]}) == (200.0, 800.0)
    assert rate_refusal(card, 4000.0) is None and rate_refusal(card, 20000.0) is None
    low = rate_refusal(card, 500.0)
    assert "500 Hz" in low and "2000-20000 Hz" in low and "models/lowrate_triaxial" in low
    between = rate_refusal(card, 1500.0)
    assert "1500 Hz" in between and "between" in between and "field guide" in between
    assert "at most 20000 Hz" in rate_refusal(card, 48000.0)


@pytest.mark.parametrize("rates", [[1000, 250], [0, 1000], [250], "250-1000", [True, 1000]])
def test_a_bad_board_rates_key_is_one_clear_error(tmp_path, rates):
    variant = model_variant(shipped_model(), tmp_path / "bad", board_rates_hz=rates)
    with pytest.raises(UserError, match="board_rates_hz"):
        read_card(variant / "model_card.json")


def test_model_install_refuses_a_model_that_does_not_serve_the_board(tmp_path, low_card_model):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(UserError) as err:
        store.install(low_card_model, board=Board(4000.0, 3, "measured"))
    text = str(err.value)
    assert "4000 Hz" in text and "250-1000 Hz" in text and "models/triaxial" in text, text
    assert store.current_sha() is None
    # it fits a 500 Hz board; only its self-test fails (4 kHz weights under a 500 Hz card), forced here
    forced = store.install(low_card_model, board=Board(500.0, 3, "measured"), force=True).warnings
    assert [w for w in forced if not w.startswith("forced: self-test")] == []
    # the old 4 kHz card, inferred 2-20 kHz, refused for a 500 Hz board, naming the low-rate family
    with pytest.raises(UserError, match="500 Hz.*2000-20000 Hz.*lowrate"):
        ModelStore(tmp_path / "other").install(shipped_model(), board=Board(500.0, 3, "measured"))


def test_model_install_cli_uses_the_measured_board(tmp_path, low_card_model, capsys):
    state = tmp_path / "state"
    write_board(state, Board(4000.0, 3, "measured by stopewatch doctor"))
    cfg = write_config(tmp_path / "c.toml", state)
    assert main(["model", "install", str(low_card_model), "--config", str(cfg), "--no-reload"]) == 2
    err = capsys.readouterr().err
    assert "4000 Hz" in err and "250-1000 Hz" in err


def test_doctor_fails_a_model_for_another_board_rate_with_the_fix(tmp_path, low_card_model):
    state = tmp_path / "state"
    ModelStore(state / "models").install(low_card_model, force=True)  # its self-test fails (see above)
    cfg = load_gateway_config(write_config(tmp_path / "c.toml", state))
    r = check_model(cfg, Board(4000.0, 3, "measured"))
    assert r.status == FAIL and "4000 Hz" in r.detail and "250-1000 Hz" in r.detail, r
    assert "stopewatch model install models/triaxial" in r.fix, r
    ModelStore(state / "models").install(shipped_model())
    assert check_model(cfg, Board(4000.0, 3, "measured")).status == PASS
    r = check_model(cfg, Board(1500.0, 3, "measured"))
    assert r.status == FAIL and "between" in r.fix and "field guide" in r.fix, r


def test_lowrate_configs_plan_the_low_regime_on_wide_sites():
    from training.config import load_config
    from training.data import synthetic_plan

    for name, channels in (("lowrate_triaxial", 3), ("lowrate_uniaxial", 1)):
        cfg = load_config(REPO / "training" / "configs" / f"{name}.toml")
        assert cfg["board_rates_hz"] == [250, 1000] and cfg["data"]["channels"] == channels
        assert (cfg["preprocess"]["fs"], cfg["preprocess"]["samples"]) == (500.0, 4096)
        plan = synthetic_plan(cfg)

        def regimes(entry: dict) -> set[str]:  # a mix's regime is its parts'
            return set().union(*map(regimes, entry["parts"])) if "parts" in entry else {entry["regime"]}

        assert set().union(*map(regimes, plan.values())) == {"low"}
        train = plan["train"]  # a mix of sources, or the benchmark alone
        synthetic = next(p for p in train.get("parts", [train]) if p["source"] == "synthetic")
        assert synthetic["sites"] == ["wide"] and plan["heldout_sites"]["sites"] == ["wide-heldout"]
    plan = synthetic_plan(load_config(REPO / "training" / "configs" / "triaxial.toml"))
    assert plan["test"]["regime"] == "high" and plan["test"]["fs"] == 4000.0


def test_training_config_rejects_bad_board_rates(tmp_path):
    from training.config import load_config

    bad = tmp_path / "bad.toml"
    bad.write_text("board_rates_hz = [1000, 250]\n")
    with pytest.raises(UserError, match="board_rates_hz"):
        load_config(bad)
    bad.write_text("[data]\nregime = 'medium'\n")
    with pytest.raises(UserError, match="data.regime"):
        load_config(bad)


@pytest.mark.skipif(not (LOWRATE / "model_card.json").is_file(), reason="models/lowrate_triaxial not trained yet")
def test_lowrate_card_and_replay_of_a_500_hz_stream(tmp_path, capsys):
    from training.synthetic.generate import write_stream_file

    card = read_card(LOWRATE / "model_card.json")
    assert card["board_rates_hz"] == [250.0, 1000.0] and card["fs"] == 500.0 and card["onset_s"] == 2.0
    # 10 minutes, about 20 events: enough that one open-set rejection does not decide the share
    stream = write_stream_file(tmp_path / "low.npz", 600, 9901, site="wide", channels=3, rate_per_min=3.0,
                               regime="low", families=("microseismic", "blast"), snr_db=(15.0, 30.0))
    cfg = tmp_path / "low.toml"
    text = (REPO / "edge" / "stopewatch.lowrate.example.toml").read_text()
    cfg.write_text(text.replace('path = "/var/lib/stopewatch/models/current"', f'path = "{LOWRATE}"'))
    out = tmp_path / "events.jsonl"
    assert main(["replay", "--config", str(cfg), str(stream), "--events-out", str(out)]) == 0
    messages = [json.loads(line) for line in out.read_text().splitlines()]
    truth = np.load(stream, allow_pickle=False)
    assert len(messages) >= 0.8 * len(truth["event_onsets"]) > 0
    assert all(m["window"]["fs"] == 500.0 for m in messages)
    right = sum(m["label"] in ("microseismic", "blast") for m in messages)
    assert right >= 0.8 * len(messages), [m["label"] for m in messages]
    assert "score against the stream's ground truth" in capsys.readouterr().out


@pytest.mark.skipif(not (LOWRATE / "model_card.json").is_file(), reason="models/lowrate_triaxial not trained yet")
def test_doctor_passes_the_lowrate_model_on_a_500_hz_board_with_its_own_test_windows(tmp_path):
    from edge.field.doctor import run_selftest, selftest_windows
    from edge.gateway.model import Classifier

    waves, _, fs = selftest_windows(500.0)
    assert fs == 500.0 and waves.shape[-1] == 4096
    test = run_selftest(Classifier(LOWRATE))
    assert test["right"] == test["total"] == 6, test
    state = tmp_path / "state"
    ModelStore(state / "models").install(LOWRATE, board=Board(500.0, 3, "measured"), pre_s=2.0)
    cfg_path = write_config(tmp_path / "c.toml", state, trigger={"pre_s": 2.0})
    r = check_model(load_gateway_config(cfg_path), Board(500.0, 3, "measured"))
    assert r.status == PASS and "6/6 test windows right" in r.detail, r
    r = check_model(load_gateway_config(cfg_path), Board(4000.0, 3, "measured"))
    assert r.status == FAIL and "models/triaxial" in r.fix, r
