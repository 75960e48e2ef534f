"""Classification metrics (numpy only): per-class P/R/F1, macro-F1, balanced accuracy,
confusion, calibration (ECE), temperature fitting and the ``unknown`` threshold."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from edge.gateway.model import softmax
from edge.vocabulary import CLASSES, UNKNOWN

SNR_BUCKETS: tuple[tuple[float, float], ...] = ((-3.0, 0.0), (0.0, 6.0), (6.0, 12.0), (12.0, 20.0), (20.0, 31.0))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Counts (true class rows, predicted class columns); predictions outside 0..k-1 are dropped."""
    m = np.zeros((k, k), dtype=np.int64)
    ok = (y_pred >= 0) & (y_pred < k) & (y_true >= 0)
    np.add.at(m, (y_true[ok], y_pred[ok]), 1)
    return m


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes=CLASSES) -> dict:
    """Per-class precision/recall/F1/support, macro-F1 (over classes present), accuracy,
    balanced accuracy and the confusion matrix. A prediction of -1 (``unknown``) counts as wrong."""
    k = len(classes)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    cm = confusion(y_true, y_pred, k)
    support = np.bincount(y_true[y_true >= 0], minlength=k)
    tp = np.diag(cm)
    predicted = np.bincount(y_pred[(y_pred >= 0) & (y_pred < k)], minlength=k)
    prec = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    rec = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    present = support > 0
    per_class = {c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i, c in enumerate(classes)}
    n = int(support.sum())
    return {
        "n": n,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(rec[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def ece(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence (equal-width bins)."""
    probs = np.asarray(probs)
    if len(probs) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true class at ``temperature``."""
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-300))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising validation NLL (searched on log T in [-3, 3])."""
    keep = y >= 0
    logits, y = logits[keep], y[keep]
    res = minimize_scalar(lambda t: nll(logits, y, float(np.exp(t))), bounds=(-3.0, 3.0), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def unknown_threshold(probs: np.ndarray, y: np.ndarray, reject_fraction: float) -> float:
    """Confidence below which the answer is ``unknown``: the ``reject_fraction`` quantile of the
    calibrated confidence of correctly classified validation windows (so that about that fraction
    of known, correct answers are given up)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    if not correct.any() or reject_fraction <= 0:
        return 0.0
    return float(np.quantile(conf[correct], reject_fraction))


def decide(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Predicted class index, or -1 (``unknown``) where confidence < threshold."""
    pred = probs.argmax(axis=1)
    return np.where(probs.max(axis=1) >= threshold, pred, -1)


def evaluate_logits(logits: np.ndarray, y: np.ndarray, temperature: float, threshold: float,
                    snr_db: np.ndarray | None = None, site: np.ndarray | None = None,
                    classes=CLASSES) -> dict:
    """The SPEC.md evaluation report of logits: closed-set metrics (argmax; the headline figures),
    calibration before/after temperature, open-set decisions (``unknown`` counted as wrong),
    and breakdowns by SNR bucket and by site."""
    p1 = softmax(logits, 1.0)
    pt = softmax(logits, temperature)
    pred = pt.argmax(axis=1)
    rep = classification_metrics(y, pred, classes)
    rep["classes"] = list(classes)
    rep["ece_before"] = ece(p1[y >= 0], y[y >= 0])
    rep["ece"] = ece(pt[y >= 0], y[y >= 0])
    rep["temperature"] = float(temperature)
    dec = decide(pt, threshold)
    with_unknown = classification_metrics(y, dec, classes)
    rep["with_unknown"] = {"threshold": float(threshold), "unknown_fraction": float(np.mean(dec == -1)),
                           "macro_f1": with_unknown["macro_f1"], "accuracy": with_unknown["accuracy"]}
    if snr_db is not None:
        rep["by_snr"] = {}
        snr = np.asarray(snr_db, dtype=np.float64)
        for lo, hi in SNR_BUCKETS:
            sel = (snr >= lo) & (snr < hi)
            if sel.sum():
                m = classification_metrics(y[sel], pred[sel], classes)
                rep["by_snr"][f"{lo:g}..{hi:g} dB"] = {"n": m["n"], "macro_f1": m["macro_f1"],
                                                        "accuracy": m["accuracy"]}
        sel = np.isnan(snr)
        if sel.sum():
            m = classification_metrics(y[sel], pred[sel], classes)
            rep["by_snr"]["no event (noise)"] = {"n": m["n"], "macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
    if site is not None:
        rep["by_site"] = {}
        for s in sorted(set(np.asarray(site).tolist())):
            sel = np.asarray(site) == s
            m = classification_metrics(y[sel], pred[sel], classes)
            rep["by_site"][s] = {"n": m["n"], "macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
    return rep


def open_set(logits: np.ndarray, temperature: float, threshold: float, classes=CLASSES) -> dict:
    """How a model answers windows of a family it never saw: share called ``unknown``
    (below threshold), and the share of each confident label."""
    pt = softmax(logits, temperature)
    dec = decide(pt, threshold)
    names = [classes[i] if i >= 0 else UNKNOWN for i in dec]
    counts = {c: names.count(c) / max(1, len(names)) for c in [*classes, UNKNOWN]}
    return {"n": len(names), "unknown_fraction": counts[UNKNOWN], "labels": counts,
            "mean_confidence": float(pt.max(axis=1).mean()) if len(pt) else 0.0,
            "confident_microseismic_fraction": counts.get("microseismic", 0.0)}
