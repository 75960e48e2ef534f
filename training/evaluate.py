"""The one evaluation path of a written model: ``stopewatch evaluate`` and the training report.

The .tflite runs through ``edge.gateway.model.Classifier`` (the gateway's code, no TensorFlow).
Windows whose label is outside the model's classes (e.g. the generator's evaluation-only
``rockfall``) are reported as an open-set test instead of being scored.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.formats import WindowSet, read_windows
from edge.gateway.model import Classifier
from training import metrics as M


@dataclass(frozen=True)
class SplitEvaluation:
    """A classifier's evaluation report on the known-class windows of a set, with their logits and labels."""

    report: dict
    logits: np.ndarray
    y: np.ndarray


def logits_of(clf: Classifier, ws: WindowSet) -> np.ndarray:
    """Dequantized logits of raw windows, preprocessed as on the gateway."""
    return clf.logits_prepared(clf.prepare(ws.waveforms, ws.fs))


def evaluate_split(clf: Classifier, ws: WindowSet) -> SplitEvaluation:
    """Metrics of a classifier on the windows of ``ws`` whose label it knows (others are ignored)."""
    ws = ws.subset(np.isin(ws.labels, clf.classes))
    logits = logits_of(clf, ws)
    y = np.array([clf.classes.index(str(v)) for v in ws.labels], dtype=np.int64)
    rep = M.evaluate_logits(logits, y, clf.temperature, clf.threshold, ws.snr_db, ws.site, tuple(clf.classes),
                            rule=clf.open_set)
    rep["model"] = {"path": str(clf.tflite_path), **clf.identity, "input_dtype": clf.input_dtype.name}
    return SplitEvaluation(rep, logits, y)


def open_set_split(clf: Classifier, unknown: WindowSet, known_logits: np.ndarray | None,
                   candidates: dict[str, dict] | None = None) -> dict:
    """How a classifier answers windows of families it never saw; with the logits of known-class test
    windows, AUROC / FPR at 95 % TPR of each candidate score (default: those its card allows)."""
    if candidates is None:
        candidates = M.candidate_rules(clf.temperature, clf.open_set)
    rep = M.open_set(logits_of(clf, unknown), known_logits, clf.temperature, clf.threshold, clf.open_set,
                     candidates, tuple(clf.classes))
    rep["family"] = sorted(set(unknown.labels.tolist()))
    return rep


def evaluate(model: str | Path, data: str | Path, out: str | Path | None = None) -> dict:
    """Evaluate ``model`` on the dataset ``data``; write ``out`` (JSON) and a confusion PNG beside it."""
    clf = Classifier(model)
    ws = read_windows(data, vocabulary=None)
    refusal, warning = clf.analysis_refusal(ws.waveforms.shape[-1], ws.fs)
    if refusal is not None:
        raise UserError(f"{data}: {refusal}")
    warnings = [f"{data}: {warning}"] if warning else []
    if warning:
        print(f"warning: {warnings[0]}", file=sys.stderr)
    known = np.isin(ws.labels, clf.classes)
    report: dict = {"data": str(data), "n_windows": len(ws), **({"warnings": warnings} if warnings else {})}
    known_logits = None
    if known.any():
        ev = evaluate_split(clf, ws.subset(known))
        report.update(ev.report)
        known_logits = ev.logits
    if (~known).any():
        report["open_set"] = open_set_split(clf, ws.subset(~known), known_logits)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        if "confusion" in report:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig = confusion_figure(report["confusion"], report["classes"],
                                   f"{Path(data).name}: macro-F1 {report['macro_f1']:.4f}")
            fig.tight_layout()
            fig.savefig(out.with_name(out.stem + "_confusion.png"), dpi=90, metadata={"Software": None})
            plt.close(fig)
    return report


def share(v: float | None) -> str:
    """A share as a percentage, or '-' where the set had no such windows."""
    return "-" if v is None else f"{v:.1%}"


def mine_cost_text(m: dict) -> str:
    """The mine-cost shares of a report (or breakdown entry) in one phrase."""
    return (f"microseismic recall {share(m['microseismic_recall'])}, called blast "
            f"{share(m['microseismic_called_blast'])}; other classes called microseismic "
            f"{share(m['nonseismic_called_microseismic'])}")


def summary(report: dict) -> str:
    """A few human lines for the terminal."""
    lines = []
    if "macro_f1" in report:
        lines.append(f"{report['n']} windows: macro-F1 {report['macro_f1']:.4f}, accuracy {report['accuracy']:.4f}, "
                     f"balanced accuracy {report['balanced_accuracy']:.4f}, ECE {report['ece_before']:.4f} -> "
                     f"{report['ece']:.4f} (T={report['temperature']:.3f}), "
                     f"unknown {report['with_unknown']['unknown_fraction']:.1%}")
        lines.append(f"mine cost: {mine_cost_text(report)}")
        for c, m in report["per_class"].items():
            if m["support"]:
                lines.append(f"  {c:<13} precision {m['precision']:.3f} recall {m['recall']:.3f} "
                             f"f1 {m['f1']:.3f} (n={m['support']})")
        for key, title in (("by_snr", "SNR"), ("by_site", "site")):
            for name, m in report.get(key, {}).items():
                lines.append(f"  {title} {name:<18} n={m['n']:<5} macro-F1 {m['macro_f1']:.3f}; {mine_cost_text(m)}")
    if "open_set" in report:
        o = report["open_set"]
        lines.append(f"open set {', '.join(o['family'])}: {o['n']} windows, {o['unknown_fraction']:.1%} unknown "
                     f"({o['rule']['score']} rule), {o['labels'].get('microseismic', 0.0):.1%} called microseismic")
        for name, s in o.get("scores", {}).items():
            if s["auroc"] is not None:
                lines.append(f"  {name:<12} AUROC {s['auroc']:.3f}, FPR at 95% TPR {s['fpr_at_95_tpr']:.3f}")
    return "\n".join(lines)


def confusion_figure(cm, classes, title):
    """A confusion-matrix figure (rows true, columns predicted) with counts."""
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return fig
