"""training.metrics and training.config: numbers a seismic engineer can check by hand."""

import numpy as np
import pytest

from edge.errors import UserError
from edge.gateway.model import dequantize, normalised_entropy, quantize, softmax
from training import metrics as M
from training.config import load_config


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


def test_unknown_threshold_and_decision():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
    y = np.array([0, 0, 1, 1])
    th = M.unknown_threshold(probs, y, 0.25)
    assert 0.55 <= th <= 0.9
    assert M.decide(probs, 0.7).tolist() == [0, -1, 1, -1]
    o = M.open_set(np.log(probs), 1.0, 0.7, ("a", "b"))
    assert o["unknown_fraction"] == 0.5 and o["labels"]["a"] == 0.25


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
