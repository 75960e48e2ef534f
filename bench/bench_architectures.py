"""Architectures compared by their out-of-distribution scores, each trained by the same recipe on the same data.

Every ``[model] arch`` of training/net.py, and logit-averaging ensembles of trained ones (one .tflite each),
is trained by ``training.train.fit_and_export`` (the recipe of ``stopewatch train``: augmentation,
class-balanced training with early stopping, pruning, int8 conversion, calibration, card) on one reduced
training set drawn with a recording chain per window (``sites="wide"``, training mechanisms), then
evaluated through the gateway's ``edge.gateway.model.Classifier`` on:

- ``in_dist``: more windows of the training distribution (other seed);
- ``heldout_sites``: ``sites="wide-heldout"`` (recording chains inside the held-out intervals);
- ``heldout_mechanisms``: wide sites, only the held-out source mechanisms;
- ``crosscheck``: the independent generator (training/crosscheck) at the model's rate and length, onset
  0.256 s after the window start.

Reported per model: parameters, int8 size, LiteRT latency per window (one core, num_threads=1), the ops of
the int8 graph and any computing in float, and per set macro-F1, microseismic recall and the share of
microseismic windows called blast. Prints a table and saves bench/results/architectures.json.

    .venv/bin/python bench/bench_architectures.py [--train 3000 --eval 600 --epochs 12 --out DIR]
    .venv/bin/python bench/bench_architectures.py --quick   # a smoke run: tiny counts, 1 epoch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.formats import WindowSet, read_windows, write_windows  # noqa: E402
from edge.gateway.model import TFLITE, Classifier  # noqa: E402
from training import data as D  # noqa: E402
from training import experiments as X  # noqa: E402
from training import train as T  # noqa: E402
from training.config import load_config  # noqa: E402
from training.net import ARCHS  # noqa: E402

SETS = ("in_dist", "heldout_sites", "heldout_mechanisms", "crosscheck")
# Ensembles: name -> members (arch, seed); each member is a model trained above.
ENSEMBLES = {"ensemble_cnn3": (("cnn", 1), ("cnn", 2), ("cnn", 3)),
             "ensemble_mixed": (("cnn", 1), ("ref_cnn", 1), ("attention", 1))}
BUDGET = {"int8_kbytes": 256.0, "latency_ms": 1.0}


def synthetic_set(count: int, seed: int, sites: str, mechanisms: str, fs: float, samples: int) -> WindowSet:
    """Windows of the synthetic benchmark with a site set and a mechanism set, cached on disk."""
    from training.synthetic.generate import GENERATOR_VERSION, generate_windows
    key = json.dumps(["bench-arch", GENERATOR_VERSION, count, seed, sites, mechanisms, fs, samples])
    path = D.cache_dir() / f"windows-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        return read_windows(path, vocabulary=None)
    t0 = time.perf_counter()
    ws = generate_windows(count, seed, sites=[sites], fs=fs, samples=samples, mechanisms=mechanisms)
    T.log(f"generated {count} windows (seed {seed}, sites {sites}, mechanisms {mechanisms}) "
          f"in {time.perf_counter() - t0:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_windows(path, ws)
    return ws


def crosscheck_set(count: int, seed: int, fs: float, samples: int) -> WindowSet:
    """Windows of the independent generator at the model's rate and length (cached on disk)."""
    from training.crosscheck import generate_windows
    key = json.dumps(["bench-arch-crosscheck", count, seed, fs, samples])
    path = D.cache_dir() / f"windows-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        return read_windows(path, vocabulary=None)
    t0 = time.perf_counter()
    ws = generate_windows(count, seed, fs=fs, samples=samples, pre_s=0.256)
    T.log(f"generated {count} crosscheck windows (seed {seed}) in {time.perf_counter() - t0:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_windows(path, ws)
    return ws


def datasets(n_train: int, n_val: int, n_eval: int, fs: float, samples: int) -> tuple[dict, dict, dict]:
    """(training splits, evaluation sets, how each was drawn); the same for every model."""
    plan = {"train": (n_train, 101, "wide", "train"), "val": (n_val, 202, "wide", "train"),
            "in_dist": (n_eval, 303, "wide", "train"), "heldout_sites": (n_eval, 404, "wide-heldout", "train"),
            "heldout_mechanisms": (n_eval, 707, "wide", "heldout")}
    drawn = {k: synthetic_set(n, seed, sites, mech, fs, samples) for k, (n, seed, sites, mech) in plan.items()}
    drawn["crosscheck"] = crosscheck_set(n_eval, 808, fs, samples)
    how = {k: {"generator": "training.synthetic", "count": n, "seed": s, "sites": si, "mechanisms": m}
           for k, (n, s, si, m) in plan.items()}
    how["crosscheck"] = {"generator": "training.crosscheck", "count": n_eval, "seed": 808, "pre_s": 0.256}
    splits = {"train": drawn["train"], "val": drawn["val"]}
    return splits, {k: drawn[k] for k in SETS}, how


def evaluate_model(model_dir: Path, sets: dict[str, WindowSet], x1: np.ndarray, runs: int) -> dict:
    """Size, latency, int8 ops and the scores on every evaluation set, through the gateway's classifier."""
    from training.evaluate import evaluate_split
    clf = Classifier(model_dir)
    card = json.loads((model_dir / "model_card.json").read_text())
    ops, float_ops = T.tflite_ops((model_dir / TFLITE).read_bytes())
    row = {"parameters": card["parameters"], "macs": card["macs"], "sparsity": card["sparsity"],
           "int8_kbytes": (model_dir / TFLITE).stat().st_size / 1024,
           "latency": X.tflite_latency(model_dir / TFLITE, x1, runs), "ops": ops, "float_ops": float_ops,
           "quantization": card["quantization"]["method"], "training_seconds": card["training_seconds"],
           "scores": {}}
    for name, ws in sets.items():
        rep = evaluate_split(clf, ws).report
        row["scores"][name] = {"macro_f1": rep["macro_f1"], "microseismic_recall": rep["microseismic_recall"],
                               "microseismic_called_blast": rep["microseismic_called_blast"], "n": rep["n"]}
    row["ood_mean_macro_f1"] = float(np.mean([row["scores"][k]["macro_f1"] for k in SETS[1:]]))
    row["within_budget"] = bool(row["int8_kbytes"] <= BUDGET["int8_kbytes"] and not float_ops
                                and row["latency"]["median_ms"] <= BUDGET["latency_ms"])
    return row


def export_ensemble(name: str, members: list, cfg: dict, data: T.Data, out: Path, how: dict) -> Path:
    """One .tflite averaging the members' logits, converted and calibrated by the recipe's own stages."""
    from training.net import ensemble_model
    model = ensemble_model([m.model for m in members], name=f"stopewatch_{name}")
    sparsity = float(np.mean([m.card["sparsity"] for m in members]))
    pruned = T.Pruned(model, (), {"schedule": "members pruned separately"}, sparsity,
                      float(sum(m.card["training_seconds"] for m in members)))
    rng = np.random.default_rng(cfg["seed"])
    exported = T.export(cfg, data, pruned, rng)
    trained = T.write_model(cfg, data, pruned, exported, T.calibrate(cfg, data, exported), out)
    card = trained.card
    card["name"] = f"stopewatch-{name}"
    card["architecture"] = {"ensemble": [m.card["architecture"] | {"seed": m.card["seed"]} for m in members],
                            "combine": "mean of the members' logits"}
    _describe_data(card, how)
    T.write_card(out, card)
    return out


def reload(cfg: dict, splits: dict, out: Path) -> T.Trained:
    """A model trained by an earlier run (its stripped Keras weights and card), for evaluation and ensembles."""
    from edge.vocabulary import CLASSES
    from training.net import build_model
    data = T.prepare_data(cfg, splits)
    model = build_model(cfg["data"]["channels"], data.params.samples, len(CLASSES), cfg["model"])
    model.load_weights(str(out / T.WEIGHTS))
    card = json.loads((out / "model_card.json").read_text())
    return T.Trained(out, card, model, data, (), None)


def _describe_data(card: dict, how: dict) -> None:
    """The card's training data as drawn here (the recipe's own plan would name its default sites)."""
    for split in ("train", "val"):
        if split in card["training_data"]:
            card["training_data"][split]["generator"] = how[split]


def config_for(arch: str, seed: int, args) -> dict:
    """The triaxial recipe, reduced: fewer epochs, no quantization-aware retraining, no report extras."""
    return load_config(ROOT / "training" / "configs" / "triaxial.toml", {
        "name": f"bench-{arch}", "seed": seed,
        "model": {"arch": arch},
        "data": {"train_count": args.train, "val_count": args.val, "test_count": args.eval,
                 "heldout_count": args.eval, "lowsnr_count": 0, "openset_count": 0},
        "train": {"epochs": args.epochs, "patience": max(3, args.epochs // 2)},
        "prune": {"epochs": args.prune_epochs},
        "quantize": {"representative": min(300, args.train), "qat_epochs": 0},
        "report": {"baselines": False, "robustness": False, "label_efficiency": False, "latency_runs": args.runs}})


def table(rows: dict) -> str:
    """The comparison as a Markdown table."""
    head = ("| model | params | int8 KB | ms/window | in-dist | heldout-sites | heldout-mech | crosscheck | "
            "OOD mean | micro recall (OOD mean) | micro called blast (OOD mean) |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, r in rows.items():
        s = r["scores"]
        rec = np.nanmean([np.nan if s[k]["microseismic_recall"] is None else s[k]["microseismic_recall"]
                          for k in SETS[1:]])
        blast = np.nanmean([np.nan if s[k]["microseismic_called_blast"] is None else s[k]["microseismic_called_blast"]
                            for k in SETS[1:]])
        lines.append(f"| {name} | {r['parameters']:,} | {r['int8_kbytes']:.1f} | {r['latency']['median_ms']:.3f} | "
                     + " | ".join(f"{s[k]['macro_f1']:.3f}" for k in SETS)
                     + f" | **{r['ood_mean_macro_f1']:.3f}** | {rec:.3f} | {blast:.3f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=3000, help="training windows (default 3000)")
    ap.add_argument("--val", type=int, default=600)
    ap.add_argument("--eval", type=int, default=600, help="windows in each evaluation set")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--prune-epochs", type=int, default=3)
    ap.add_argument("--runs", type=int, default=300, help="latency runs per model")
    ap.add_argument("--archs", default=",".join(ARCHS), help="comma-separated archs (default: all)")
    ap.add_argument("--ensembles", default=",".join(ENSEMBLES), help="comma-separated ensembles ('' for none)")
    ap.add_argument("--out", default=str(D.cache_dir() / "bench-architectures"), help="where the models go")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "architectures.json"))
    ap.add_argument("--reuse", action="store_true", help="evaluate models already in --out instead of training")
    ap.add_argument("--quick", action="store_true", help="smoke run: 120 training windows, 1 epoch")
    args = ap.parse_args()
    if args.quick:
        args.train, args.val, args.eval, args.epochs, args.prune_epochs, args.runs = 120, 60, 60, 1, 1, 20
    archs = [a for a in args.archs.split(",") if a]
    ensembles = {k: ENSEMBLES[k] for k in args.ensembles.split(",") if k}
    t_start = time.perf_counter()
    fs, samples = 4000.0, 4096
    splits, sets, how = datasets(args.train, args.val, args.eval, fs, samples)
    T.log(f"data ready in {time.perf_counter() - t_start:.0f} s")
    wanted = [(a, 1) for a in archs] + sorted({m for ms in ensembles.values() for m in ms} - {(a, 1) for a in archs})
    trained, rows = {}, {}
    out_root = Path(args.out)
    path = Path(args.results)
    x1 = None

    def result() -> dict:
        best = max((n for n, r in rows.items() if r["within_budget"]), key=lambda n: rows[n]["ood_mean_macro_f1"],
                   default=None)
        return {"machine": f"{platform.machine()} {os.cpu_count()} cores, latency on one core, num_threads=1",
                "budget": BUDGET, "data": how,
                "recipe": {"config": "training/configs/triaxial.toml", "epochs": args.epochs,
                           "prune_epochs": args.prune_epochs, "qat_epochs": 0, "train": args.train, "val": args.val,
                           "eval_per_set": args.eval},
                "models": rows, "best_ood_within_budget": best,
                "total_seconds": round(time.perf_counter() - t_start, 1)}

    def save() -> None:  # after every model: a long run that stops still leaves its figures
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result(), indent=2, sort_keys=True) + "\n")

    for arch, seed in wanted:
        name = arch if seed == 1 else f"{arch}_seed{seed}"
        cfg = config_for(arch, seed, args)
        out = out_root / name
        t0 = time.perf_counter()
        T.log(f"=== {name}")
        if args.reuse and (out / "model_card.json").is_file():  # evaluate (and ensemble) what is there
            trained[(arch, seed)] = tr = reload(cfg, splits, out)
        else:
            if out.exists():
                shutil.rmtree(out)
            trained[(arch, seed)] = tr = T.fit_and_export(cfg, splits, out)
            _describe_data(tr.card, how)
            T.write_card(out, tr.card)
        x1 = tr.data.x_val[:1]
        rows[name] = evaluate_model(out, sets, x1, args.runs)
        rows[name].update(arch=arch, seed=seed, wall_seconds=round(time.perf_counter() - t0, 1))
        T.log(f"{name}: " + ", ".join(f"{k} {v['macro_f1']:.3f}" for k, v in rows[name]["scores"].items()))
        save()
    for name, members in ensembles.items():
        t0 = time.perf_counter()
        T.log(f"=== {name}")
        ms = [trained[m] for m in members]
        out = out_root / name
        export_ensemble(name, ms, config_for("cnn", 1, args), ms[0].data, out, how)
        rows[name] = evaluate_model(out, sets, x1, args.runs)
        rows[name].update(arch="ensemble", members=[f"{a}@seed{s}" for a, s in members],
                          wall_seconds=round(time.perf_counter() - t0, 1))
        save()
    save()
    best = result()["best_ood_within_budget"]
    print(table(rows))
    print(f"best out-of-distribution mean macro-F1 within budget: {best}; total {time.perf_counter() - t_start:.0f} s")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
