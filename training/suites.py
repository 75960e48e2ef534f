"""Score any written model on a config's evaluation suites, through the gateway's classifier.

The same suites and code as the training report (``training.evaluate``), for a model trained
elsewhere or earlier (e.g. the previous shipped model, as a baseline):

    python -m training.suites --model models/triaxial --config training/configs/triaxial.toml [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.errors import UserError
from edge.gateway.model import Classifier
from training import data as D
from training import metrics as M
from training.evaluate import evaluate_split, open_set_split, share


def score_model(model: str | Path, cfg: dict) -> dict:
    """Per suite: n, macro-F1, per-class recall and the mine-cost shares; and the open-set figures
    (share of unseen windows answered unknown, AUROC / FPR95 of the model's rule, share of known test
    windows answered unknown)."""
    clf = Classifier(model)
    splits = D.load_splits(cfg, names=(*D.SUITES, "openset"))
    out: dict = {"model": clf.identity, "suites": {}}
    test_logits = None
    for name in D.SUITES:
        if name not in splits:
            continue
        ev = evaluate_split(clf, splits[name])
        r = ev.report
        out["suites"][name] = {"n": r["n"], "macro_f1": r["macro_f1"],
                               "recall": {c: m["recall"] for c, m in r["per_class"].items()},
                               **{k: r[k] for k in M.MINE_COST}}
        if name == "test":
            test_logits = ev.logits
    if "openset" in splits:
        o = open_set_split(clf, splits["openset"], test_logits)
        # a card without an open-set rule answers unknown by calibrated confidence: its AUROC is msp's
        scored = o["rule"]["score"] if o["rule"]["score"] in o.get("scores", {}) else "msp"
        chosen = o.get("scores", {}).get(scored, {})
        out["openset"] = {"n": o["n"], "family": o["family"], "unknown_fraction": o["unknown_fraction"],
                          "known_unknown_fraction": o.get("known_rejected_fraction"), "rule": o["rule"]["score"],
                          "auroc_score": scored, "auroc": chosen.get("auroc"),
                          "fpr_at_95_tpr": chosen.get("fpr_at_95_tpr")}
    return out


def table(scores: dict) -> str:
    """A markdown table of :func:`score_model`'s result."""
    lines = ["| suite | n | macro-F1 | ms recall | ms -> blast | other -> ms |", "|---|---|---|---|---|---|"]
    for name, s in scores["suites"].items():
        lines.append(f"| {name} | {s['n']} | {s['macro_f1']:.4f} | {share(s['microseismic_recall'])} | "
                     f"{share(s['microseismic_called_blast'])} | {share(s['nonseismic_called_microseismic'])} |")
    o = scores.get("openset")
    if o:
        auroc = "-" if o["auroc"] is None else f"{o['auroc']:.3f}"
        fpr = "-" if o["fpr_at_95_tpr"] is None else f"{o['fpr_at_95_tpr']:.3f}"
        lines.append(f"\nopen set ({', '.join(o['family'])}; {o['n']} windows): {share(o['unknown_fraction'])} "
                     f"answered unknown by the {o['rule']} rule, AUROC {auroc}, FPR95 {fpr} ({o['auroc_score']}); "
                     f"known test windows answered unknown {share(o['known_unknown_fraction'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table, optionally write the JSON."""
    from training.config import load_config

    ap = argparse.ArgumentParser(prog="python -m training.suites", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory (or .tflite beside its card)")
    ap.add_argument("--config", required=True, help="training config whose [data] defines the suites")
    ap.add_argument("--out", help="write the scores as JSON here")
    args = ap.parse_args(argv)
    try:
        scores = score_model(args.model, load_config(args.config))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(scores))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
