"""Does magnitude pruning buy anything on the targets? The same small training run with and without it.

Trains one small configuration three times (``stopewatch train``, real TensorFlow and tfmot): with the pruning
stage at ``final_sparsity``, with none (``final_sparsity = 0``), and with none but the pruning stage's epochs
added to dense training (the same training budget), then measures what each target sees: the int8
.tflite size (the gateway's download and the board's flash), its gzip size (what a compressed image would
save), the MACs (from the graph), TFLM's smallest arena, LiteRT's int8 latency per window on one core, the
training time and the in-distribution macro-F1. Prints and saves bench/results/pruning.json.

    python bench/bench_pruning.py [--sparsity 0.55] [--train-count 600] [--epochs 6]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.gateway.model import Classifier  # noqa: E402

CONFIG = """
name = "prune-{tag}"
version = "0.0.1"
seed = 5
[data]
channels = 3
train_count = {train}
val_count = {val}
test_count = {val}
heldout_count = 36
heldout_mechanisms_count = 24
crosscheck_count = 24
lowsnr_count = 36
gateway_cut_count = 24
openset_count = 24
[train]
epochs = {epochs}
batch_size = 32
[prune]
epochs = {prune_epochs}
final_sparsity = {sparsity}
[quantize]
representative = 48
[report]
latency_runs = 100
baselines = false
robustness = false
"""


def latency_ms(clf: Classifier, runs: int = 300) -> float:
    """Median int8 invoke time per window on one core (LiteRT, num_threads=1)."""
    import time

    x = clf.prepare(np.random.default_rng(0).standard_normal((1, clf.channels, clf.samples)).astype(np.float32),
                    clf.params.fs)
    clf.logits_prepared(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        clf.logits_prepared(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def measure(out: Path) -> dict:
    from edge.devtools.mcu import graph_ops, smallest_arena

    model = (out / "model.tflite").read_bytes()
    card = json.loads((out / "model_card.json").read_text())
    return {"sparsity": card["sparsity"], "pruning": card["pruning"], "int8_bytes": len(model),
            "int8_gzip_bytes": len(gzip.compress(model, 9)), "macs": sum(op.macs for op in graph_ops(model)),
            "tflm_arena_bytes": smallest_arena(model), "litert_int8_ms": round(latency_ms(Classifier(out)), 4),
            "training_seconds": card["training_seconds"], "test_macro_f1": card["metrics"]["test_macro_f1"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.55, help="the pruned run's final_sparsity")
    ap.add_argument("--train-count", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--prune-epochs", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pruning.json"))
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = (("pruned", args.sparsity, args.epochs), ("dense", 0.0, args.epochs),
                ("dense_same_epochs", 0.0, args.epochs + args.prune_epochs))
        for tag, sparsity, epochs in runs:
            cfg = Path(tmp) / f"{tag}.toml"
            cfg.write_text(CONFIG.format(tag=tag, train=args.train_count, val=max(60, args.train_count // 4),
                                         epochs=epochs, prune_epochs=args.prune_epochs, sparsity=sparsity))
            out = Path(tmp) / tag
            env = dict(os.environ, STOPEWATCH_CACHE=str(Path(tmp) / "cache"))
            subprocess.run([sys.executable, "-m", "edge.cli", "train", "--config", str(cfg), "--out", str(out),
                            "--allow-missed"], check=True, env=env, stdout=subprocess.DEVNULL)
            rows[tag] = r = measure(out)
            print(f"{tag}: {json.dumps(r)}", flush=True)
    p, d, e = rows["pruned"], rows["dense"], rows["dense_same_epochs"]
    result = {"config": {"train_count": args.train_count, "epochs": args.epochs, "prune_epochs": args.prune_epochs,
                         "sparsity": args.sparsity},
              "runs": rows,
              "pruned_vs_dense": {"int8_bytes": p["int8_bytes"] - d["int8_bytes"], "macs": p["macs"] - d["macs"],
                                  "tflm_arena_bytes": p["tflm_arena_bytes"] - d["tflm_arena_bytes"],
                                  "int8_gzip_bytes": p["int8_gzip_bytes"] - d["int8_gzip_bytes"],
                                  "training_seconds": round(p["training_seconds"] - d["training_seconds"], 1),
                                  "test_macro_f1": round(p["test_macro_f1"] - d["test_macro_f1"], 4)},
              "pruned_vs_dense_same_epochs": {"test_macro_f1": round(p["test_macro_f1"] - e["test_macro_f1"], 4),
                                              "training_seconds": round(p["training_seconds"] - e["training_seconds"],
                                                                        1)}}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("pruned_vs_dense", "pruned_vs_dense_same_epochs")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
