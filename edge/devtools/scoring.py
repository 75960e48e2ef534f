"""Event-level scoring of detections against ground truth (replay, demo, benchmarks).

A true event is detected when a trigger falls between ``before_s`` before and
``after_s`` after its onset (emergent signals trigger late); each trigger matches
at most one event, earliest first. Unmatched triggers are false triggers.
Classification is scored on the matched events only; ``unknown`` counts as wrong.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def macro_f1(truth: list[str], predicted: list[str], classes: list[str]) -> tuple[float, dict]:
    """Macro-averaged F1 over ``classes`` and the per-class precision/recall/F1/support."""
    per = {}
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[c] = {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4), "support": tp + fn}
    present = [c for c in classes if per[c]["support"] > 0]
    score = float(np.mean([per[c]["f1"] for c in present])) if present else 0.0
    return score, per


def score_events(onsets: np.ndarray, labels: np.ndarray, snr_db: np.ndarray | None, triggers: list[int],
                 predicted: list[str], fs: float, duration_s: float, before_s: float = 0.3,
                 after_s: float = 1.5, snr_floor_db: float = 6.0) -> dict:
    """Detection recall (all, and at SNR >= ``snr_floor_db``), false triggers per hour, confusion, macro-F1."""
    order = np.argsort(triggers) if triggers else np.array([], dtype=int)
    trig = np.asarray(triggers, dtype=np.int64)[order] if triggers else np.array([], dtype=np.int64)
    pred = [predicted[i] for i in order]
    used = np.zeros(len(trig), dtype=bool)
    matched: list[int | None] = []
    for onset in np.asarray(onsets, dtype=np.int64):
        lo, hi = onset - before_s * fs, onset + after_s * fs
        cand = np.flatnonzero(~used & (trig >= lo) & (trig <= hi))
        if cand.size:
            used[cand[0]] = True
            matched.append(int(cand[0]))
        else:
            matched.append(None)
    hit = np.array([m is not None for m in matched], dtype=bool)
    snr = np.asarray(snr_db, dtype=float) if snr_db is not None else np.full(len(onsets), np.inf)
    strong = snr >= snr_floor_db
    truth_l = [str(labels[i]) for i in range(len(onsets)) if matched[i] is not None]
    pred_l = [pred[matched[i]] for i in range(len(onsets)) if matched[i] is not None]
    classes = sorted(set(map(str, labels)))
    f1, per_class = macro_f1(truth_l, pred_l, classes)
    confusion: dict[str, Counter] = {c: Counter() for c in classes}
    for t, p in zip(truth_l, pred_l, strict=True):
        confusion[t][p] += 1
    for i, m in enumerate(matched):
        if m is None:
            confusion[str(labels[i])]["(missed)"] += 1
    false = int((~used).sum())
    return {
        "events": int(len(onsets)),
        "detected": int(hit.sum()),
        "recall": round(float(hit.mean()), 4) if len(onsets) else None,
        f"recall_snr_ge_{snr_floor_db:g}db": round(float(hit[strong].mean()), 4) if strong.any() else None,
        "events_snr_ge_floor": int(strong.sum()),
        "triggers": int(len(trig)),
        "false_triggers": false,
        "false_triggers_per_hour": round(false / (duration_s / 3600.0), 3) if duration_s > 0 else None,
        "false_trigger_labels": dict(Counter(pred[i] for i in np.flatnonzero(~used))),
        "classification_macro_f1": round(f1, 4),
        "per_class": per_class,
        "confusion": {k: dict(v) for k, v in confusion.items()},
    }
