"""Per-window latency of the shipped models on one core, through the gateway's own code.

For each model in models/: int8 LiteRT vs float TFLite inference (set_tensor + invoke +
get_tensor, num_threads=1, process pinned to one CPU), plus the preprocessing the gateway
runs before it (resample/detrend/band-pass/normalise). Targets: int8 <= 1 ms per
window and faster than float. Prints and saves bench/results/model.json.

    .venv/bin/python bench/bench_model.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.gateway.model import Classifier  # noqa: E402
from edge.gateway.preprocess import preprocess  # noqa: E402
from training.experiments import timed  # noqa: E402


def bench(model_dir: Path, runs: int) -> dict:
    q = Classifier(model_dir)
    f = Classifier(model_dir / "model_float.tflite")
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((1, q.channels, q.samples)).astype(np.float32)
    x = q.prepare(raw, q.params.fs)
    out = {"model": q.identity, "channels": q.channels, "bytes": (model_dir / "model.tflite").stat().st_size,
           "int8_inference": timed(lambda: q.logits_prepared(x), runs),
           "float_inference": timed(lambda: f.logits_prepared(x), runs),
           "preprocess": timed(lambda: preprocess(raw, q.params.fs, q.params), max(100, runs // 10)),
           "classify_end_to_end": timed(lambda: q.classify(raw, q.params.fs), max(100, runs // 10))}
    out["int8_faster_than_float"] = out["int8_inference"]["median_ms"] < out["float_inference"]["median_ms"]
    out["int8_within_1ms"] = out["int8_inference"]["median_ms"] <= 1.0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    models = sorted(p.parent for p in (ROOT / "models").glob("*/model_card.json"))
    result = {"machine": f"{platform.machine()} {os.cpu_count()} cores ({platform.processor() or 'cpu'}), "
                         "one core pinned, num_threads=1",
              "python": platform.python_version(), "models": {}}
    for m in models:
        result["models"][m.name] = r = bench(m, args.runs)
        print(f"{m.name}: int8 {r['int8_inference']['median_ms']:.3f} ms, "
              f"float {r['float_inference']['median_ms']:.3f} ms, "
              f"preprocess {r['preprocess']['median_ms']:.3f} ms, classify end-to-end "
              f"{r['classify_end_to_end']['median_ms']:.3f} ms per window")
    out = ROOT / "bench" / "results" / "model.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
