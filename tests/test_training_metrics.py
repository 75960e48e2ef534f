"""training.metrics and training.config: numbers a seismic engineer can check by hand."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.errors import UserError
from edge.gateway.model import Classifier, dequantize, is_unknown, normalised_entropy, novelty, quantize, softmax
from edge.vocabulary import CLASSES
from training import metrics as M
from training.config import load_config
from training.train import target_summary

ROOT = Path(__file__).resolve().parents[1]


def windows_of(cm: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) with exactly the counts of a confusion matrix (rows true, columns predicted)."""
    pairs = [(i, j) for i, row in enumerate(cm) for j, n in enumerate(row) for _ in range(n)]
    y, p = np.array(pairs).T
    return y, p


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, -1])  # -1 = unknown, counted as wrong
    m = M.classification_metrics(y, p, ("a", "b", "c"))
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                   "support": 3}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.8 + 0.8 + 0.0) / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)


def test_ece_and_temperature_fit():
    rng = np.random.default_rng(0)
    n, k = 4000, 4
    y = rng.integers(0, k, n)
    true_logits = rng.normal(0, 1, (n, k))
    true_logits[np.arange(n), y] += 1.5
    # labels drawn from softmax(true_logits) are calibrated at T=1; the model reports logits x 3
    probs = softmax(true_logits)
    y = np.array([rng.choice(k, p=row) for row in probs])
    over = 3.0 * true_logits
    t = M.fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.15)
    assert M.ece(softmax(over, t), y) < 0.03 < M.ece(softmax(over), y)


def test_mine_cost_from_a_hand_counted_confusion():
    # classes: microseismic, blast, drilling, electrical, mechanical, noise
    cm = [[40, 6, 1, 0, 2, 1],   # 50 microseismic: 40 found, 6 called blast
          [3, 27, 0, 0, 0, 0],   # 30 blast: 3 called microseismic
          [0, 0, 20, 0, 0, 0],
          [1, 0, 0, 19, 0, 0],   # 1 electrical called microseismic
          [0, 0, 0, 0, 20, 0],
          [0, 0, 0, 0, 0, 20]]
    y, p = windows_of(cm)
    m = M.classification_metrics(y, p, CLASSES)
    assert m["confusion"] == cm
    assert m["microseismic_recall"] == pytest.approx(40 / 50)
    assert m["microseismic_called_blast"] == pytest.approx(6 / 50)
    assert m["nonseismic_called_microseismic"] == pytest.approx(4 / 110)  # (3 + 1) of the 110 other windows
    assert m["per_class"]["microseismic"]["precision"] == pytest.approx(40 / 44)
    # an `unknown` answer (-1) is neither found nor blast, and a set with no microseismic has no recall
    y2, p2 = np.array([0, 0, 1, 5]), np.array([-1, 1, 0, 5])
    m2 = M.classification_metrics(y2, p2, CLASSES)
    assert (m2["microseismic_recall"], m2["microseismic_called_blast"]) == (0.0, 0.5)
    assert m2["nonseismic_called_microseismic"] == 0.5
    assert M.classification_metrics(np.array([5, 5]), np.array([0, 5]), CLASSES)["microseismic_recall"] is None


def test_report_breaks_mine_cost_down_by_snr_and_site():
    y = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 1, 0, 0, 0, 1])
    logits = np.eye(6)[pred] * 10.0
    snr = np.array([-1.0, -2.0, 15.0, 16.0, -1.0, 15.0])
    site = np.array(["a", "a", "b", "b", "b", "a"])
    rep = M.evaluate_logits(logits, y, 1.0, 0.5, snr, site)
    low, high = rep["by_snr"]["-3..0 dB"], rep["by_snr"]["12..20 dB"]
    assert (low["microseismic_recall"], low["microseismic_called_blast"]) == (0.5, 0.5)
    assert low["nonseismic_called_microseismic"] == 1.0 and high["nonseismic_called_microseismic"] == 0.0
    assert rep["by_site"]["a"]["microseismic_called_blast"] == 0.5 and rep["by_site"]["b"]["microseismic_recall"] == 1
    assert rep["microseismic_recall"] == 0.75


def test_auroc_and_fpr95_by_hand():
    known = np.arange(20.0)  # novelty of 20 known windows
    unknown = np.array([5.0, 15.0, 25.0, 30.0])
    r = M.auroc_fpr(known, unknown)
    # pairs (unknown above known): 5 -> 5 + tie/2, 15 -> 15 + tie/2, 25 -> 20, 30 -> 20; of 4 x 20
    assert r["auroc"] == pytest.approx((5.5 + 15.5 + 20 + 20) / 80)
    # 95 % of known accepted = novelty <= 18: unknown 5 and 15 slip through
    assert r["fpr_at_95_tpr"] == pytest.approx(0.5)
    assert M.auroc_fpr(known, known + 100)["auroc"] == 1.0


def test_novelty_scores_and_fitted_thresholds():
    z = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert novelty(z, {"score": "energy", "temperature": 1.0}) == pytest.approx(
        [-np.log(np.exp(2) + 2), -np.log(3)])
    assert novelty(z, {"score": "energy", "temperature": 2.0})[1] == pytest.approx(-2 * np.log(3))
    assert novelty(z, {"score": "max_logit", "temperature": 1.0}).tolist() == [-2.0, 0.0]
    assert novelty(z, {"score": "msp", "temperature": 1.0})[1] == pytest.approx(-1 / 3)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3)) + 6 * np.eye(3)[y]
    for score in ("msp", "energy", "max_logit", "mahalanobis"):
        rule = M.fit_open_set(logits, y, score, 0.05, 1.0)
        rejected = is_unknown(logits, 1.0, 0.0, rule.card()).mean()
        assert rejected == pytest.approx(0.05, abs=0.01), score
    maha = M.fit_open_set(logits, y, "mahalanobis", 0.05, 1.0).card()
    assert np.allclose(maha["means"], 6 * np.eye(3), atol=0.3)
    far = np.array([[-6.0, -6.0, 12.0]])  # confident softmax, but unlike any validation window
    assert is_unknown(far, 1.0, 0.5, maha)[0] and not is_unknown(far, 1.0, 0.5, None)[0]


def test_legacy_threshold_and_open_set_answers():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
    y = np.array([0, 0, 1, 1])
    th = M.unknown_threshold(probs, y, 0.25)
    assert 0.55 <= th <= 0.9
    assert is_unknown(np.log(probs), 1.0, 0.7).tolist() == [False, True, False, True]
    o = M.open_set(np.log(probs), None, 1.0, 0.7, None, classes=("a", "b"))
    assert o["unknown_fraction"] == 0.5 and o["labels"]["a"] == 0.25 and "scores" not in o
    known = np.log(np.array([[0.99, 0.01], [0.02, 0.98]]))
    o = M.open_set(np.log(probs), known, 1.0, 0.7, None, M.candidate_rules(1.0, None), ("a", "b"))
    assert o["known_rejected_fraction"] == 0.0 and set(o["scores"]) == {"msp", "energy", "max_logit"}
    assert o["scores"]["msp"]["auroc"] == 1.0  # every unknown is less confident than both known windows


def _shipped_with(tmp_path: Path, open_set: dict | None) -> Classifier:
    model = tmp_path / "m"
    model.mkdir(parents=True)
    shutil.copy(ROOT / "models" / "triaxial" / "model.tflite", model)
    card = json.loads((ROOT / "models" / "triaxial" / "model_card.json").read_text())
    card.pop("open_set", None)  # None: a card from before open-set rules (confidence below unknown_threshold)
    if open_set is not None:
        card["open_set"] = open_set
    (model / "model_card.json").write_text(json.dumps(card))
    return Classifier(model)


def test_classifier_answers_by_the_cards_open_set_rule(tmp_path):
    legacy = _shipped_with(tmp_path / "a", None)
    energy = _shipped_with(tmp_path / "b", {"score": "energy", "temperature": 1.0, "threshold": -5.0})
    close_call = np.array([[8.0, 7.9, 7.9, 0, 0, 0]])  # three classes nearly tied, strong evidence: energy -9.0
    weak = np.array([[2.0, -5, -5, -5, -5, -5]])  # softmax sure of class 0 from weak logits: energy -2.0
    for z, old, new in ((close_call, "unknown", "microseismic"), (weak, "microseismic", "unknown")):
        p = softmax(z, legacy.temperature)
        assert legacy.decide(p)[0].label == old  # the card without `open_set`: confidence < unknown_threshold
        assert legacy.decide(p, z)[0].label == old
        assert energy.decide(p, z)[0].label == new
    with pytest.raises(ValueError, match="logits"):
        energy.decide(softmax(weak))
    # classify goes through the rule: a threshold below any energy answers every window unknown
    wave = np.random.default_rng(0).standard_normal((2, 3, 4096)).astype(np.float32)
    always = _shipped_with(tmp_path / "c", {"score": "energy", "temperature": 1.0, "threshold": -1e9})
    assert [r.label for r in always.classify(wave, 4000.0)] == ["unknown", "unknown"]
    assert [r.probabilities for r in always.classify(wave, 4000.0)] == \
        [r.probabilities for r in legacy.classify(wave, 4000.0)]
    bad = json.loads((tmp_path / "c" / "m" / "model_card.json").read_text())
    bad["open_set"] = {"score": "entropy", "temperature": 1.0, "threshold": 0.0}
    (tmp_path / "c" / "m" / "model_card.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"open_set.*score = 'entropy'.*allowed: msp, energy"):
        Classifier(tmp_path / "c" / "m")


def test_target_summary_names_each_missed_target():
    cfg = load_config(None, {"targets": {"test_macro_f1": 0.95}})
    card = {"config": cfg, "metrics": {
        "test_n": 600, "test_macro_f1": 0.96, "test_microseismic_recall": 0.97, "test_microseismic_called_blast": 0.01,
        "crosscheck_n": 300, "crosscheck_macro_f1": 0.85, "crosscheck_microseismic_recall": 0.96,
        "crosscheck_microseismic_called_blast": 0.03, "openset_unknown_fraction": 0.85,
        "openset_known_unknown_fraction": 0.05, "int8_f1_loss": 0.001, "ece_after": 0.01, "int8_kbytes": 60.0,
        "int8_latency_ms": 0.04, "int8_faster_than_float": True, "sparsity": 0.55}}
    text, missed = target_summary(card)
    # 0.96 meets the config's 0.95; the crosscheck suite misses the default 0.90 and 2 % called blast;
    # suites that were not evaluated (no `<suite>_n`) have no per-suite lines
    assert missed == ["crosscheck_macro_f1", "crosscheck_microseismic_called_blast"]
    line = next(t for t in text.splitlines() if "independent generator macro-F1" in t)
    assert "MISSED" in line and "0.8500" in line and ">= 0.9" in line
    assert "heldout_sites" not in text and "held-out sites" not in text
    assert "11 of 13 targets met; MISSED: crosscheck_macro_f1, crosscheck_microseismic_called_blast" in text
    card["metrics"]["crosscheck_macro_f1"] = 0.97
    card["metrics"]["crosscheck_microseismic_called_blast"] = 0.02
    assert target_summary(card)[1] == []


def test_entropy_and_quantization_helpers():
    assert normalised_entropy(np.array([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3]])).tolist() == pytest.approx([0.0, 1.0])
    x = np.array([-20.0, -1.0, 0.0, 0.5, 20.0], np.float32)
    q = quantize(x, 0.125, -1)
    assert q.dtype == np.int8 and q[0] == -128 and q[-1] == 127
    np.testing.assert_allclose(dequantize(q, 0.125, -1)[1:4], x[1:4], atol=0.0625)


def test_config_errors_name_key_value_and_allowed(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nclass_weight = "sometimes"\n')
    with pytest.raises(UserError, match=r"train\.class_weight.*'sometimes'.*allowed: 'balanced', 'none'"):
        load_config(bad)
    bad.write_text('[prune]\nfinal_sparsity = 1.5\n')
    with pytest.raises(UserError, match=r"prune\.final_sparsity"):
        load_config(bad)
    bad.write_text('[model]\nfilterz = [1]\n')
    with pytest.raises(UserError, match=r"unknown key 'model\.filterz'"):
        load_config(bad)
    bad.write_text('[data\n')
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(UserError, match="no such config"):
        load_config(tmp_path / "missing.toml")
    cfg = load_config("training/configs/triaxial.toml")
    assert cfg["data"]["channels"] == 3 and cfg["model"]["channel_policy"] == "zero_fill"
    assert load_config("training/configs/uniaxial.toml")["model"]["channel_policy"] == "first"
    bad.write_text('[open_set]\nscore = "entropy"\n')
    with pytest.raises(UserError, match=r"open_set\.score.*allowed: 'msp', 'energy'"):
        load_config(bad)
    bad.write_text('[targets]\ntest_macro_f1 = "high"\n')
    with pytest.raises(UserError, match=r"targets\.test_macro_f1"):
        load_config(bad)
    for line, key in (("l2_sp = -1.0", "l2_sp"), ("site_noise = 1.5", "site_noise"), ("augment_copies = 0",
                      "augment_copies"), ("lp_epochs = -2", "lp_epochs"), ("lp_learning_rate = 0.0",
                      "lp_learning_rate"), ("mixup = -0.2", "mixup"), ("patience = -1", "patience"),
                      ("self_training_rounds = -1", "self_training_rounds"), ("pseudo_per_class = 0",
                      "pseudo_per_class"), ("pseudo_confidence = 1.0", "pseudo_confidence"),
                      ("pseudo_weight = 0.0", "pseudo_weight")):
        bad.write_text(f"[finetune]\n{line}\n")
        with pytest.raises(UserError, match=rf"finetune\.{key}"):
            load_config(bad)
    for line, key in (("outlier_share = 1.5", "outlier_share"), ("outlier_weight = -1.0", "outlier_weight"),
                      ("outlier_share = nan", "outlier_share"), ("label_smoothing = 1.0", "label_smoothing")):
        bad.write_text(f"[train]\n{line}\n")
        with pytest.raises(UserError, match=rf"train\.{key}"):
            load_config(bad)


def test_decision_bias_trades_false_alarms_for_missed_fractures():
    ms, blast, noise = CLASSES.index("microseismic"), CLASSES.index("blast"), CLASSES.index("noise")
    costs = {"microseismic_missed": 8.0, "microseismic_called_blast": 20.0, "false_microseismic": 2.0, "other": 1.0}
    c = M.cost_matrix(costs)
    assert c[ms, blast] == 20 and c[ms, noise] == 8 and c[noise, ms] == 2 and c[blast, noise] == 1
    assert np.all(np.diag(c) == 0)
    # 10 fractures whose logits lean to blast by 0.5, and 10 blasts leaning to blast by 2: a bias of at
    # least +0.5 on microseismic (or -0.5 on blast) recovers every fracture without costing a blast
    z = np.zeros((20, len(CLASSES)))
    z[:10, ms], z[:10, blast] = 1.0, 1.5
    z[10:, ms], z[10:, blast] = 1.0, 3.0
    y = np.array([ms] * 10 + [blast] * 10)
    d = M.fit_decision_bias(z, y, costs)
    assert d.val_cost_before == pytest.approx(10 * 20 / 20) and d.val_cost_after == 0.0
    b = np.asarray(d.bias)
    assert (z + b).argmax(1).tolist() == y.tolist()
    assert 0.5 <= b[ms] - b[blast] < 2.0  # a tie goes to microseismic, the first class
    assert [v for i, v in enumerate(b) if i not in (ms, blast)] == [0.0] * (len(CLASSES) - 2)
    # already right: the smallest bias (none) is kept
    assert M.fit_decision_bias(z[10:], y[10:], costs).bias == (0.0,) * len(CLASSES)


def test_classifier_adds_the_cards_decision_bias(tmp_path):
    plain = _shipped_with(tmp_path / "a", None)
    wave = np.random.default_rng(1).standard_normal((3, 3, 4096)).astype(np.float32)
    x = plain.prepare(wave, 4000.0)
    bias = [0.0] * len(CLASSES)
    bias[CLASSES.index("microseismic")] = 50.0  # overwhelms any logit: every window becomes a fracture
    card_path = tmp_path / "b" / "m" / "model_card.json"
    shutil.copytree(tmp_path / "a" / "m", tmp_path / "b" / "m")
    card = json.loads(card_path.read_text())
    card["decision_bias"] = bias
    card_path.write_text(json.dumps(card))
    biased = Classifier(tmp_path / "b" / "m")
    raw = plain.logits_prepared(x) - plain.decision_bias  # the shipped card's own bias, replaced by this one
    np.testing.assert_allclose(biased.logits_prepared(x), raw + np.asarray(bias), atol=1e-4)
    assert {r.label for r in biased.classify(wave, 4000.0)} == {"microseismic"}
    card["decision_bias"] = [1.0, 2.0]
    card_path.write_text(json.dumps(card))
    with pytest.raises(UserError, match=r"decision_bias.*expected 6 finite numbers"):
        Classifier(tmp_path / "b" / "m")
