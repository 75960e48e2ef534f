"""Classification metrics: per-class P/R/F1, macro-F1, balanced accuracy, confusion and AUROC from
scikit-learn; the mine-cost shares, calibration (ECE), the temperature fit, the ``unknown`` thresholds
and the open-set comparison are ours.

This is the one place training turns logits into figures: :func:`evaluate_logits` (a labelled test set)
and :func:`open_set` (windows of a family the model never saw).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from edge.gateway.model import OPEN_SET_SCORES, is_unknown, novelty, softmax
from edge.vocabulary import CLASSES, UNKNOWN

SNR_BUCKETS: tuple[tuple[float, float], ...] = ((-3.0, 0.0), (0.0, 6.0), (6.0, 12.0), (12.0, 20.0), (20.0, 31.0))
MINE_COST = ("microseismic_recall", "microseismic_called_blast", "nonseismic_called_microseismic")
TPR_FOR_FPR = 0.95


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes=CLASSES) -> dict:
    """Per-class precision/recall/F1/support, macro-F1 (over classes present), accuracy, balanced
    accuracy, the confusion matrix and the mine-cost shares. A prediction of -1 (``unknown``) counts
    as wrong and is left out of the confusion matrix."""
    k = len(classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    labels = list(range(k))
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = [c for c in labels if support[c] > 0]
    n = len(y_true)
    with warnings.catch_warnings():  # an `unknown` column (-1) has no true windows: sklearn says so
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(y_true, y_pred)) if n else 0.0
    per_class = {c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i, c in enumerate(classes)}
    return {
        "n": n,
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
        if present else 0.0,
        "accuracy": float(accuracy_score(y_true, y_pred)) if n else 0.0,
        "balanced_accuracy": balanced,
        "per_class": per_class,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist() if n else np.zeros((k, k), int).tolist(),
        **mine_cost(y_true, y_pred, classes),
    }


def mine_cost(y_true: np.ndarray, y_pred: np.ndarray, classes=CLASSES) -> dict:
    """What a wrong answer costs a mine: the share of rock fractures found (``microseismic_recall``),
    the share of them answered blast (``microseismic_called_blast``: missed hazard, filed as production),
    and the share of windows of every other class answered microseismic (``nonseismic_called_microseismic``:
    false alarms). Shares of true windows; None where the set has no such windows."""
    classes = list(classes)
    if "microseismic" not in classes:
        return dict.fromkeys(MINE_COST)
    ms = classes.index("microseismic")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    is_ms, other = y_true == ms, (y_true >= 0) & (y_true != ms)
    blast = classes.index("blast") if "blast" in classes else -2
    return {
        "microseismic_recall": float(np.mean(y_pred[is_ms] == ms)) if is_ms.any() else None,
        "microseismic_called_blast": float(np.mean(y_pred[is_ms] == blast)) if is_ms.any() else None,
        "nonseismic_called_microseismic": float(np.mean(y_pred[other] == ms)) if other.any() else None,
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
    """Confidence below which a card without an ``open_set`` rule answers ``unknown``: the
    ``reject_fraction`` quantile of the calibrated confidence of correctly classified validation windows."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    if not correct.any() or reject_fraction <= 0:
        return 0.0
    return float(np.quantile(conf[correct], reject_fraction))


# --------------------------------------------------------------------------- decision costs
def cost_matrix(costs: dict, classes=CLASSES) -> np.ndarray:
    """The cost of answering column j for a window of row i: 0 on the diagonal, ``other`` off it, except a
    microseismic window answered anything else (``microseismic_missed``), answered blast
    (``microseismic_called_blast``: the fracture leaves the rock-burst catalogue), and a non-seismic window
    answered microseismic (``false_microseismic``: a false alarm)."""
    classes = list(classes)
    ms, blast = classes.index("microseismic"), classes.index("blast")
    c = np.full((len(classes), len(classes)), float(costs["other"]))
    c[ms, :] = float(costs["microseismic_missed"])
    c[ms, blast] = float(costs["microseismic_called_blast"])
    c[:, ms] = float(costs["false_microseismic"])
    np.fill_diagonal(c, 0.0)
    return c


@dataclass(frozen=True)
class DecisionBias:
    """Per-class offsets added to the logits (the card's ``decision_bias``), chosen on validation windows to
    minimise the mean cost of ``cost_matrix``; the costs and the validation cost before and after."""

    bias: tuple[float, ...]
    costs: dict
    val_cost_before: float
    val_cost_after: float

    def card(self) -> dict:
        """The card's ``decision`` entry (the bias itself goes to ``decision_bias``)."""
        return {"costs": dict(self.costs), "val_cost_before": self.val_cost_before,
                "val_cost_after": self.val_cost_after,
                "rule": "argmax of logits + decision_bias; the bias minimises the mean cost of the errors on "
                        "validation windows"}


def fit_decision_bias(logits: np.ndarray, y: np.ndarray, costs: dict, shift: tuple[str, ...] = ("microseismic",
                      "blast"), span: float = 4.0, step: float = 0.1, classes=CLASSES) -> DecisionBias:
    """Offsets for the ``shift`` classes (the others stay 0) on a grid of +-``span`` in logit units, minimising
    the mean validation cost; ties go to the smallest offsets."""
    classes = list(classes)
    keep = y >= 0
    z, y = np.asarray(logits, np.float64)[keep], np.asarray(y)[keep]
    cmat = cost_matrix(costs, classes)
    idx = [classes.index(c) for c in shift]
    grid = np.round(np.arange(-span, span + step / 2, step), 6)

    def mean_cost(b: np.ndarray) -> float:
        return float(cmat[y, (z + b).argmax(axis=1)].mean())

    zero = np.zeros(len(classes))
    best, best_cost = zero, mean_cost(zero)
    for values in np.array(np.meshgrid(*[grid] * len(idx))).reshape(len(idx), -1).T:
        b = zero.copy()
        b[idx] = values
        c = mean_cost(b)
        if c < best_cost - 1e-12 or (abs(c - best_cost) <= 1e-12 and np.abs(b).sum() < np.abs(best).sum()):
            best, best_cost = b, c
    return DecisionBias(tuple(float(v) for v in best), dict(costs), mean_cost(zero), best_cost)


# --------------------------------------------------------------------------- open set
@dataclass(frozen=True)
class OpenSetRule:
    """A novelty score of the logits (``edge.gateway.model.novelty``) and the threshold above which the answer
    is ``unknown``, fitted so that ``reject_fraction`` of known validation windows are rejected."""

    score: str
    threshold: float
    temperature: float
    reject_fraction: float
    means: tuple[tuple[float, ...], ...] | None = None  # mahalanobis: class means of validation logits
    precision: tuple[tuple[float, ...], ...] | None = None  # and the inverse of their shared covariance

    def card(self) -> dict:
        """The model card's ``open_set`` entry (what the gateway's Classifier reads)."""
        d = {"score": self.score, "threshold": self.threshold, "temperature": self.temperature,
             "reject_fraction": self.reject_fraction,
             "rule": f"label 'unknown' when the {self.score} novelty of the logits > threshold "
                     f"({self.reject_fraction:.0%} of known validation windows rejected)"}
        if self.means is not None:
            d["means"], d["precision"] = [list(m) for m in self.means], [list(r) for r in self.precision]
        return d


def fit_open_set(logits: np.ndarray, y: np.ndarray, score: str, reject_fraction: float,
                 temperature: float) -> OpenSetRule:
    """The ``score`` rule fitted on known validation windows: its parameters (class means and shared
    covariance for mahalanobis) and the threshold rejecting ``reject_fraction`` of them."""
    if score not in OPEN_SET_SCORES:
        raise ValueError(f"open-set score {score!r}; allowed: {', '.join(OPEN_SET_SCORES)}")
    keep = y >= 0
    z, y = np.asarray(logits, np.float64)[keep], y[keep]
    means = precision = None
    if score == "mahalanobis":
        k = z.shape[1]
        mu = np.stack([z[y == c].mean(axis=0) if (y == c).any() else z.mean(axis=0) for c in range(k)])
        resid = z - mu[y]
        cov = resid.T @ resid / max(1, len(z) - k)
        cov += np.eye(k) * 1e-6 * max(np.trace(cov) / k, 1e-12)  # logits are nearly collinear: keep it invertible
        means = tuple(tuple(float(v) for v in row) for row in mu)
        precision = tuple(tuple(float(v) for v in row) for row in np.linalg.inv(cov))
    draft = OpenSetRule(score, 0.0, float(temperature), float(reject_fraction), means, precision)
    nov = novelty(z, draft.card())
    threshold = float(np.quantile(nov, 1.0 - reject_fraction)) if len(nov) else float("inf")
    return OpenSetRule(score, threshold, float(temperature), float(reject_fraction), means, precision)


def auroc_fpr(known_novelty: np.ndarray, unknown_novelty: np.ndarray, tpr: float = TPR_FOR_FPR) -> dict:
    """How well a novelty score separates unknown from known windows: AUROC (unknown = positive, higher
    novelty = more unknown; 0.5 is chance) and ``fpr_at_95_tpr``, the share of unknown windows still
    accepted as known at the threshold that accepts ``tpr`` (95 %) of the known ones."""
    known, unknown = np.asarray(known_novelty, float), np.asarray(unknown_novelty, float)
    if not len(known) or not len(unknown):
        return {"auroc": None, "fpr_at_95_tpr": None}
    truth = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    scores = np.r_[known, unknown]
    auroc = float(roc_auc_score(truth, scores))
    # accepting as known = the positive decision here: known windows are true positives
    fpr, tp_rate, _ = roc_curve(1 - truth, -scores, drop_intermediate=False)
    return {"auroc": auroc, "fpr_at_95_tpr": float(fpr[np.searchsorted(tp_rate, tpr - 1e-12, side="left")])}


def open_set(unknown_logits: np.ndarray, known_logits: np.ndarray | None, temperature: float,
             unknown_threshold: float, rule: dict | None, candidates: dict[str, dict] | None = None,
             classes=CLASSES) -> dict:
    """How a model answers windows of a family it never saw, under its own rule (``rule``: the card's
    ``open_set``; None: calibrated confidence below ``unknown_threshold``): share called ``unknown``, share
    of each label; with ``known_logits`` (known-class test windows) also the share of those rejected, and
    AUROC / FPR at 95 % TPR of every score in ``candidates`` (name -> rule parameters)."""
    classes = list(classes)
    pt = softmax(unknown_logits, temperature)
    unk = is_unknown(unknown_logits, temperature, unknown_threshold, rule)
    names = [UNKNOWN if u else classes[i] for i, u in zip(pt.argmax(axis=1), unk, strict=True)]
    counts = {c: names.count(c) / max(1, len(names)) for c in [*classes, UNKNOWN]}
    rep = {"n": len(names), "unknown_fraction": counts[UNKNOWN], "labels": counts,
           "mean_confidence": float(pt.max(axis=1).mean()) if len(pt) else 0.0,
           "confident_microseismic_fraction": counts.get("microseismic", 0.0),
           "rule": dict(rule) if rule is not None else {"score": "msp_legacy", "threshold": unknown_threshold}}
    rep["rule"].pop("means", None)
    rep["rule"].pop("precision", None)
    if known_logits is not None and len(known_logits):
        rep["n_known"] = int(len(known_logits))
        rep["known_rejected_fraction"] = float(np.mean(is_unknown(known_logits, temperature, unknown_threshold,
                                                                  rule)))
        rep["scores"] = {name: auroc_fpr(novelty(known_logits, c), novelty(unknown_logits, c))
                         for name, c in (candidates or {}).items()}
    return rep


def candidate_rules(temperature: float, card_rule: dict | None) -> dict[str, dict]:
    """The scores a model can be compared on from its card alone: msp at the calibration temperature,
    energy and max logit, and the card's own rule (mahalanobis needs its fitted means)."""
    out = {"msp": {"score": "msp", "temperature": temperature, "threshold": 0.0},
           "energy": {"score": "energy", "temperature": 1.0, "threshold": 0.0},
           "max_logit": {"score": "max_logit", "temperature": 1.0, "threshold": 0.0}}
    if card_rule is not None:
        out[card_rule["score"]] = card_rule
    return out


# --------------------------------------------------------------------------- the evaluation report
def _brief(m: dict) -> dict:
    return {"n": m["n"], "macro_f1": m["macro_f1"], "accuracy": m["accuracy"], **{k: m[k] for k in MINE_COST}}


def evaluate_logits(logits: np.ndarray, y: np.ndarray, temperature: float, threshold: float,
                    snr_db: np.ndarray | None = None, site: np.ndarray | None = None,
                    classes=CLASSES, rule: dict | None = None) -> dict:
    """The evaluation report of logits: closed-set metrics (argmax; the headline figures) with the
    mine-cost shares, calibration before/after temperature, decisions with ``unknown`` (the card's
    ``rule``, else confidence below ``threshold``; counted as wrong), and breakdowns by SNR bucket and site."""
    p1 = softmax(logits, 1.0)
    pt = softmax(logits, temperature)
    pred = pt.argmax(axis=1)
    rep = classification_metrics(y, pred, classes)
    rep["classes"] = list(classes)
    rep["ece_before"] = ece(p1[y >= 0], y[y >= 0])
    rep["ece"] = ece(pt[y >= 0], y[y >= 0])
    rep["temperature"] = float(temperature)
    dec = np.where(is_unknown(logits, temperature, threshold, rule), -1, pred)
    with_unknown = classification_metrics(y, dec, classes)
    rep["with_unknown"] = {"threshold": float(threshold if rule is None else rule["threshold"]),
                           "score": "msp_legacy" if rule is None else rule["score"],
                           "unknown_fraction": float(np.mean(dec == -1)),
                           "macro_f1": with_unknown["macro_f1"], "accuracy": with_unknown["accuracy"]}
    if snr_db is not None:
        rep["by_snr"] = {}
        snr = np.asarray(snr_db, dtype=np.float64)
        for lo, hi in SNR_BUCKETS:
            sel = (snr >= lo) & (snr < hi)
            if sel.sum():
                rep["by_snr"][f"{lo:g}..{hi:g} dB"] = _brief(classification_metrics(y[sel], pred[sel], classes))
        sel = np.isnan(snr)
        if sel.sum():
            rep["by_snr"]["no event (noise)"] = _brief(classification_metrics(y[sel], pred[sel], classes))
    if site is not None:
        rep["by_site"] = {}
        for s in sorted(set(np.asarray(site).tolist())):
            sel = np.asarray(site) == s
            rep["by_site"][s] = _brief(classification_metrics(y[sel], pred[sel], classes))
    return rep
