"""Do the unseen classes stand apart in the classical features, where the CNN's softmax does not see them?

The open set (rockfall, orepass, raise_boring, scaling, test_pulse: evaluation-only families of both
generators) is answered `unknown` far less often than the target asks. This bench asks whether a novelty
score outside the network would do better: the classical feature vector of every window
(``edge.gateway.features.baseline_vector``: duration, rise, envelope shape, spectral shape, mains ratio,
channel correlation, band energies), standardised by the validation windows' median and interquartile
range, scored as

- ``feature_mahalanobis``: the least Mahalanobis distance to a known class's mean (shared covariance);
- ``feature_mahalanobis_answered``: the distance to the mean of the class the model answered;
- ``feature_knn``: the distance to the 10th nearest validation window;

each alone and each combined with the model's own ``msp`` (the larger of the two validation ranks), against
``msp`` alone. Known windows are the config's test suite, the threshold of each score rejects 5 % of the
validation windows. Prints a table and saves bench/results/openset_features.json.

    .venv/bin/python bench/bench_openset_features.py [--model models/triaxial] [--config training/configs/triaxial.toml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.formats import WindowSet  # noqa: E402
from edge.gateway.features import baseline_vector  # noqa: E402
from edge.gateway.model import Classifier, softmax  # noqa: E402
from edge.gateway.preprocess import PreprocessParams  # noqa: E402
from edge.vocabulary import CLASSES  # noqa: E402
from training import data as D  # noqa: E402
from training.config import load_config  # noqa: E402
from training.evaluate import logits_of  # noqa: E402

REJECT = 0.05  # share of known validation windows each threshold rejects


def features(ws: WindowSet, params: PreprocessParams, channels: int, policy: str) -> np.ndarray:
    """Classical feature vectors of the windows, preprocessed as for the model."""
    x = D.prepare(ws, params, channels, policy).x
    return np.nan_to_num(np.stack([baseline_vector(w, params.fs) for w in x]), nan=0.0, posinf=0.0, neginf=0.0)


def validation_rank(ref: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Share of the validation scores below each score (so that two scores can be combined)."""
    return np.searchsorted(np.sort(ref), s) / len(ref)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/triaxial"))
    ap.add_argument("--config", default=str(ROOT / "training/configs/triaxial.toml"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/openset_features.json"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    params = PreprocessParams.from_dict(cfg["preprocess"], "preprocess")
    splits = D.load_splits(cfg, names=("val", "test", "openset"))
    clf = Classifier(args.model)
    policy = cfg["model"]["channel_policy"]
    sets = {}
    for name in ("val", "test", "openset"):
        ws = splits[name]
        if name != "openset":
            ws = ws.subset(np.isin(ws.labels, CLASSES))
        sets[name] = (logits_of(clf, ws), features(ws, params, cfg["data"]["channels"], policy), ws.labels)
    lv, fv, yv = sets["val"]
    mid = np.median(fv, axis=0)
    iqr = np.percentile(fv, 75, axis=0) - np.percentile(fv, 25, axis=0) + 1e-9

    def z(f: np.ndarray) -> np.ndarray:
        return np.clip((f - mid) / iqr, -20, 20)

    zv, yi = z(fv), np.array([CLASSES.index(c) for c in yv])
    means = np.stack([zv[yi == c].mean(axis=0) for c in range(len(CLASSES))])
    precision = np.linalg.inv(np.cov((zv - means[yi]).T) + 0.05 * np.eye(zv.shape[1]))

    def mahalanobis(f: np.ndarray, centre: np.ndarray) -> np.ndarray:
        d = z(f) - centre
        return np.einsum("ij,jk,ik->i", d, precision, d)

    def msp(logits: np.ndarray, _f: np.ndarray) -> np.ndarray:
        return -softmax(logits / clf.temperature).max(axis=1)

    def least(logits: np.ndarray, f: np.ndarray) -> np.ndarray:
        return np.stack([mahalanobis(f, m) for m in means], axis=1).min(axis=1)

    def answered(logits: np.ndarray, f: np.ndarray) -> np.ndarray:
        return mahalanobis(f, means[logits.argmax(axis=1)])

    def knn(logits: np.ndarray, f: np.ndarray, k: int = 10) -> np.ndarray:
        d = ((z(f)[:, None, :] - zv[None, :, :]) ** 2).sum(axis=-1)
        return np.sort(d, axis=1)[:, k]

    scores = {"msp": msp, "feature_mahalanobis": least, "feature_mahalanobis_answered": answered,
              "feature_knn": knn}
    raw = {name: tuple(fn(*sets[s][:2]) for s in ("val", "test", "openset")) for name, fn in scores.items()}
    for name in ("feature_mahalanobis", "feature_mahalanobis_answered", "feature_knn"):
        raw[f"max(msp, {name})"] = tuple(
            np.maximum(validation_rank(raw["msp"][0], raw["msp"][i]), validation_rank(raw[name][0], raw[name][i]))
            for i in range(3))
    family = sets["openset"][2]
    rows = {}
    for name, (sv, st, so) in raw.items():
        threshold = np.quantile(sv, 1 - REJECT)
        rows[name] = {
            "auroc": round(float(roc_auc_score(np.r_[np.zeros(len(st)), np.ones(len(so))], np.r_[st, so])), 4),
            "unseen_answered_unknown": round(float(np.mean(so > threshold)), 4),
            "known_test_rejected": round(float(np.mean(st > threshold)), 4),
            "by_family": {f: round(float(np.mean(so[family == f] > threshold)), 3) for f in sorted(set(family))},
        }
    result = {"model": clf.identity, "config": str(Path(args.config).relative_to(ROOT)),
              "windows": {k: int(len(v[2])) for k, v in sets.items()}, "reject_on_validation": REJECT, "scores": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| score | AUROC | unseen answered unknown | known test rejected |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['auroc']:.3f} | {r['unseen_answered_unknown']:.3f} | {r['known_test_rejected']:.3f} |")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
