"""``stopewatch evaluate``: metrics of a shipped model on a labelled window dataset.

The .tflite runs through ``edge.gateway.model.Classifier`` (the gateway's code, no TensorFlow).
Windows whose label is outside the model's classes (e.g. the generator's evaluation-only
``rockfall``) are reported as an open-set test instead of being scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.formats import read_windows
from edge.gateway.model import Classifier
from training import metrics as M
from training.report import confusion_figure, evaluate_split


def evaluate(model: str | Path, data: str | Path, out: str | Path | None = None) -> dict:
    """Evaluate ``model`` on the dataset ``data``; write ``out`` (JSON) and a confusion PNG beside it."""
    clf = Classifier(model)
    ws = read_windows(data, vocabulary=None)
    known = np.isin(ws.labels, clf.classes)
    report: dict = {"data": str(data), "n_windows": len(ws)}
    if known.any():
        rep, _, _ = evaluate_split(clf, ws.subset(known))
        report.update(rep)
    if (~known).any():
        other = ws.subset(~known)
        logits = clf.logits_prepared(clf.prepare(other.waveforms, other.fs))
        report["open_set"] = M.open_set(logits, clf.temperature, clf.threshold, tuple(clf.classes))
        report["open_set"]["family"] = sorted(set(other.labels.tolist()))
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


def summary(report: dict) -> str:
    """A few human lines for the terminal."""
    lines = []
    if "macro_f1" in report:
        lines.append(f"{report['n']} windows: macro-F1 {report['macro_f1']:.4f}, accuracy {report['accuracy']:.4f}, "
                     f"balanced accuracy {report['balanced_accuracy']:.4f}, ECE {report['ece_before']:.4f} -> "
                     f"{report['ece']:.4f} (T={report['temperature']:.3f}), "
                     f"unknown {report['with_unknown']['unknown_fraction']:.1%}")
        for c, m in report["per_class"].items():
            if m["support"]:
                lines.append(f"  {c:<13} precision {m['precision']:.3f} recall {m['recall']:.3f} "
                             f"f1 {m['f1']:.3f} (n={m['support']})")
    if "open_set" in report:
        o = report["open_set"]
        lines.append(f"open set {', '.join(o['family'])}: {o['n']} windows, {o['unknown_fraction']:.1%} unknown")
    return "\n".join(lines)
