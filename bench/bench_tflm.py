"""Each shipped int8 model under TensorFlow Lite for Microcontrollers (the Python TFLM interpreter from PyPI).

For every models/*/model.tflite: the graph's ops (TFLM must have a kernel for each: the interpreter is built
and invoked), the smallest tensor arena it runs in, the flash it takes (the flatbuffer), its MACs, the largest
int8 output difference from LiteRT over the built-in self-test windows and a synthetic test set, and a
Cortex-M4/M7 latency estimate: the MACs scaled by MLPerf Tiny's keyword-spotting reference (DS-CNN, 2.66 M
MACs: about 182 ms on a Cortex-M4 at 120 MHz, 17 ms on a Cortex-M7 at 280 MHz). Re-runnable: a retrained
model is measured as it stands. Prints a markdown table and saves bench/results/tflm.json.

    python bench/bench_tflm.py [--test-windows 200] [--export DIR [--model triaxial]]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.devtools.mcu import export_c, graph_ops, smallest_arena, tflm_int8_outputs  # noqa: E402
from edge.field.doctor import selftest_windows  # noqa: E402
from edge.gateway.model import Classifier, quantize  # noqa: E402

# MLPerf Tiny's keyword-spotting model (DS-CNN): 49 x 10 MFCC input, a 10 x 4 stride-2 convolution to 25 x 5 x 64,
# four depthwise-separable blocks (3 x 3 depthwise, 64 -> 64 pointwise), average pool, 12-way dense.
DSCNN_MACS = 25 * 5 * 64 * (10 * 4) + 4 * (25 * 5 * 64 * 9 + 25 * 5 * 64 * 64) + 64 * 12
# Its latency in the MLPerf Tiny inference results (v0.5, the reference submissions): ms per inference.
DSCNN_MS = {"cortex_m4_120mhz": 182.0, "cortex_m7_280mhz": 17.0}


def litert_int8_outputs(clf: Classifier, x_int8: np.ndarray) -> np.ndarray:
    """LiteRT's raw int8 outputs for quantized inputs (n, samples, channels), the gateway's interpreter."""
    it = clf.interpreter
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for window in x_int8:
        it.set_tensor(inp["index"], window[None])
        it.invoke()
        rows.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def test_set(clf: Classifier, count: int) -> tuple[np.ndarray, float]:
    """Synthetic labelled windows at the model's rate and length (the training generator, a held-out seed)."""
    from training.data import synthetic

    ws = synthetic(count, seed=90210, sites="heldout", channels=clf.channels, fs=clf.params.fs,
                   samples=clf.params.samples)
    return ws.waveforms, ws.fs


def model_inputs(clf: Classifier, waves: np.ndarray, fs: float) -> np.ndarray:
    """The int8 input tensors (n, samples, channels) the gateway would feed for raw windows."""
    x = np.transpose(clf.prepare(waves, fs), (0, 2, 1))
    q = clf.card["input_quantization"]
    return quantize(x, q["scale"], q["zero_point"])


def bench(model_dir: Path, test_windows: int) -> dict:
    model = (model_dir / "model.tflite").read_bytes()
    clf = Classifier(model_dir)
    ops = graph_ops(model)
    arena = smallest_arena(model)
    waves, labels, fs = selftest_windows(clf.fs)
    if clf.channels == 1 and waves.shape[1] > 1:
        waves = waves[:, :1]
    sets = {"selftest": model_inputs(clf, waves, fs)}
    if test_windows:
        tw, tfs = test_set(clf, test_windows)
        sets["test_set"] = model_inputs(clf, tw, tfs)
    diffs, agree = {}, {}
    for name, x in sets.items():
        a = tflm_int8_outputs(model, x, arena).astype(np.int16)
        b = litert_int8_outputs(clf, x).astype(np.int16)
        diffs[name] = {"windows": int(len(x)), "max_int8_diff": int(np.abs(a - b).max())}
        agree[name] = float(np.mean(a.argmax(1) == b.argmax(1)))
        diffs[name]["same_class"] = agree[name]
    macs = sum(op.macs for op in ops)
    return {"model": clf.identity, "ops": sorted({op.name for op in ops}), "op_sequence": [op.name for op in ops],
            "all_ops_supported": True,  # the interpreter was built and invoked above; it raises otherwise
            "arena_bytes": arena, "flash_model_bytes": len(model), "macs": macs,
            "card_macs": clf.card.get("macs"), "outputs_vs_litert": diffs,
            "est_ms": {k: round(macs / DSCNN_MACS * v, 1) for k, v in DSCNN_MS.items()}}


def table(rows: dict) -> str:
    lines = ["| model | TFLM ops (all supported) | arena | flash (model) | MACs | max int8 diff from LiteRT "
             "(self-test / test set) | est. M4 @120 MHz | est. M7 @280 MHz |", "|" + " --- |" * 8]
    for name, r in rows.items():
        d = r["outputs_vs_litert"]
        diff = " / ".join(f"{v['max_int8_diff']} ({v['windows']} windows)" for v in d.values())
        lines.append(f"| {name} {r['model']['version']} | {', '.join(r['ops'])} | {r['arena_bytes'] / 1024:.1f} KiB | "
                     f"{r['flash_model_bytes'] / 1024:.1f} KiB | {r['macs'] / 1e6:.2f} M | {diff} | "
                     f"{r['est_ms']['cortex_m4_120mhz']:.0f} ms | {r['est_ms']['cortex_m7_280mhz']:.0f} ms |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-windows", type=int, default=200, help="synthetic test windows per model (0: none)")
    ap.add_argument("--export", metavar="DIR", help="also write the model as a C array (stopewatch_model.c/.h)")
    ap.add_argument("--model", default="triaxial", help="the model --export writes")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tflm.json"))
    args = ap.parse_args()
    if args.export:
        d = ROOT / "models" / args.model
        h, c = export_c(d / "model.tflite", json.loads((d / "model_card.json").read_text()), Path(args.export))
        print(f"wrote {h} and {c}")
    rows = {}
    for card in sorted((ROOT / "models").glob("*/model_card.json")):
        rows[card.parent.name] = r = bench(card.parent, args.test_windows)
        print(f"{card.parent.name}: arena {r['arena_bytes']} B, flash {r['flash_model_bytes']} B, "
              f"{r['macs']} MACs, {r['outputs_vs_litert']}", flush=True)
    result = {"tflm": "tflite-micro (PyPI) " + _version("tflite-micro"), "litert": _version("ai-edge-litert"),
              "dscnn_macs": DSCNN_MACS, "dscnn_ms": DSCNN_MS,
              "arena_note": "smallest arena TFLM allocates and invokes in, on this 64-bit host", "models": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}\n")
    print(table(rows))
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    sys.exit(main())
