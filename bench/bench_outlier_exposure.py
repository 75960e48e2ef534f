"""Outlier exposure against the open set: the same recipe trained with and without it, on the same data.

``[train] outlier_share`` (training/outliers.py) adds, each epoch, windows no class makes (transients
reversed, phase-scrambled or frequency-shifted, components from different classes) trained toward the
uniform answer. This bench trains the triaxial recipe (training/configs/triaxial.toml, reduced counts,
no pruning) once per share on one data draw and scores each through the gateway's Classifier with
``training.suites.score_model``: every suite's macro-F1 and mine-cost shares, and on the open set (the
unseen classes of both generators: rockfall, orepass, raise_boring, scaling, test_pulse) the share
answered ``unknown``, the rule's AUROC and FPR at 95 % TPR, and the known test windows rejected.
None of the transforms draws or imitates an evaluation-only family.

Prints a table and saves bench/results/outlier_exposure.json.

    .venv/bin/python bench/bench_outlier_exposure.py [--train 3000 --eval 400 --epochs 10 --shares 0,0.2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import data as D  # noqa: E402
from training import train as T  # noqa: E402
from training.config import load_config  # noqa: E402
from training.suites import score_model  # noqa: E402

SUITES = ("test", "heldout_sites", "heldout_mechanisms", "crosscheck", "lowsnr")


def config(args: argparse.Namespace, share: float) -> dict:
    """The triaxial recipe at the bench's sizes, with ``share`` of outlier windows per epoch."""
    n = args.eval
    overrides = {
        "data": {"train_count": args.train, "val_count": args.val, "test_count": n, "heldout_count": n,
                 "heldout_mechanisms_count": n, "crosscheck_count": n, "lowsnr_count": n, "gateway_cut_count": 0,
                 "openset_count": args.openset,
                 # the recipe's mix without its gateway-cut share (minutes of stream synthesis per run)
                 "mix": {"synthetic": 0.8, "gateway_cut": 0.0, "crosscheck": 0.2}},
        "model": {"arch": args.arch},
        "train": {"epochs": args.epochs, "outlier_share": share, "outlier_weight": args.weight},
        "prune": {"final_sparsity": 0.0},
        "report": {"baselines": False, "robustness": False, "label_efficiency": False, "seeds": 1},
    }
    return load_config(ROOT / "training/configs/triaxial.toml", overrides)


def row(share: float, scores: dict, seconds: float) -> dict:
    s = scores["suites"]
    o = scores["openset"]
    return {"outlier_share": share, "train_s": round(seconds, 1),
            **{f"{k}_macro_f1": round(s[k]["macro_f1"], 4) for k in SUITES if k in s},
            "ms_recall_min": round(min(s[k]["microseismic_recall"] for k in SUITES if k in s), 4),
            "ms_called_blast_max": round(max(s[k]["microseismic_called_blast"] for k in SUITES if k in s), 4),
            "openset_unknown": round(o["unknown_fraction"], 4),
            "known_unknown": round(o["known_unknown_fraction"], 4),
            "auroc": round(o["auroc"], 4), "fpr95": round(o["fpr_at_95_tpr"], 4), "suites": s, "openset": o}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--eval", type=int, default=400)
    ap.add_argument("--openset", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--arch", default="wide_cnn")
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--shares", default="0,0.2")
    ap.add_argument("--out", default=str(ROOT / "bench/results/outlier_exposure.json"))
    args = ap.parse_args()
    shares = [float(s) for s in args.shares.split(",")]
    rows = []
    t_all = time.perf_counter()
    for share in shares:
        cfg = config(args, share)
        splits = D.load_splits(cfg, names=("train", "val"))
        with tempfile.TemporaryDirectory(prefix="bench-oe-") as tmp:
            t0 = time.perf_counter()
            T.fit_and_export(cfg, splits, Path(tmp) / "model")
            seconds = time.perf_counter() - t0
            rows.append(row(share, score_model(Path(tmp) / "model", cfg), seconds))
        r = rows[-1]
        print(f"share {share}: " + ", ".join(f"{k} {v}" for k, v in r.items() if not isinstance(v, dict)),
              flush=True)
    result = {
        "machine": f"{platform.machine()}, {platform.python_version()}, 2 cores shared with other jobs",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": {"train": args.train, "val": args.val, "eval_per_suite": args.eval, "openset": args.openset,
                  "epochs": args.epochs, "arch": args.arch, "outlier_weight": args.weight, "pruning": False,
                  "mix": "synthetic 0.8, crosscheck 0.2"},
        "minutes": round((time.perf_counter() - t_all) / 60, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    cols = ["outlier_share", *[f"{k}_macro_f1" for k in SUITES], "ms_recall_min", "ms_called_blast_max",
            "openset_unknown", "known_unknown", "auroc", "fpr95"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
