"""Each committed model in models/ scores, on a freshly generated test set from its card's seeds,
the macro-F1 its card claims (the same interpreter and code as the gateway)."""

from pathlib import Path

import numpy as np
import pytest

from edge.gateway.model import Classifier, read_card, sha256_file

MODELS = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "models").glob("*/model_card.json"))
TOLERANCE = 0.002  # float rounding across CPUs/libm may flip a borderline window or two

pytestmark = pytest.mark.slow


def test_models_are_shipped():
    names = {read_card(m / "model_card.json")["channels"] for m in MODELS}
    assert names == {1, 3}, f"expected a uniaxial and a triaxial model in models/, found {MODELS}"


CLAIMS = ("test", "crosscheck")  # the in-distribution set and the independent generator's held-out site types
# Every claim a card makes on one of those sets is checked; each card must at least claim "test".
CASES = [(m, s) for m in MODELS for s in CLAIMS if s in read_card(m / "model_card.json")["metrics_test_set"]]


def test_every_card_claims_an_in_distribution_score():
    assert {m for m, s in CASES if s == "test"} == set(MODELS)


@pytest.mark.parametrize("model_dir, suite", CASES, ids=[f"{m.name}-{s}" for m, s in CASES])
def test_card_claim_on_fresh_test_set(model_dir, suite, tmp_path, monkeypatch):
    from training import data as D
    from training import metrics as M

    monkeypatch.setenv("STOPEWATCH_CACHE", str(tmp_path))  # regenerated here, never read from a cache
    card = read_card(model_dir / "model_card.json")
    assert card["sha256"] == sha256_file(model_dir / "model.tflite")
    assert (model_dir / "model.tflite").stat().st_size <= 256 * 1024  # the per-model int8 budget on the gateway
    gen = card["metrics_test_set"][suite]["generator"]
    assert gen["seed"] not in (card["config"]["data"]["train_seed"], card["config"]["data"]["val_seed"])
    if suite == "crosscheck" and card["config"]["data"].get("mix", {}).get("crosscheck", 0) > 0:
        assert not set(gen["sites"]) & set(card["config"]["data"]["crosscheck_train_sites"])
    ws = D.generate(gen)
    assert len(ws) == card["metrics_test_set"][suite]["count"]
    clf = Classifier(model_dir)
    assert clf.is_quantized
    logits = clf.logits_prepared(clf.prepare(ws.waveforms, ws.fs))
    y = np.array([clf.classes.index(str(v)) for v in ws.labels])
    f1 = M.classification_metrics(y, logits.argmax(1))["macro_f1"]
    assert f1 == pytest.approx(card["metrics"][f"{suite}_macro_f1"], abs=TOLERANCE)
