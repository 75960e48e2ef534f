"""The shipped model under TensorFlow Lite for Microcontrollers (the PyPI `tflite-micro` interpreter), and its C
export built with gcc beside the board's fb_encoder.c."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="tflite-micro not installed (pip install '.[mcu]')")

import firmware_bridge  # noqa: E402
from edge.devtools import mcu  # noqa: E402
from edge.gateway.model import Classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "triaxial"
SRC = Path(firmware_bridge.__file__).resolve().parent
CC = shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def bench():
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_tflm

    return bench_tflm


def test_every_op_runs_and_outputs_match_litert(bench):
    r = bench.bench(MODEL, test_windows=0)
    card = json.loads((MODEL / "model_card.json").read_text())
    assert r["macs"] == card["macs"], "MACs from the TFLite graph agree with the card's (from Keras)"
    assert set(r["ops"]) <= set(card["tflite_ops"]), "the ops TFLM ran are the ones the card lists"
    d = r["outputs_vs_litert"]["selftest"]
    assert d["windows"] == 6
    # TFLM's reference kernels round a few accumulators differently from LiteRT's optimised ones, never by more.
    assert d["max_int8_diff"] <= 2
    assert d["same_class"] == 1.0


def test_arena_is_the_smallest_that_runs():
    model = (MODEL / "model.tflite").read_bytes()
    arena = mcu.smallest_arena(model)
    with mcu._native_stderr_silenced():
        assert mcu._runs(model, arena)
        assert not mcu._runs(model, arena - 64)
    ops = mcu.graph_ops(model)
    # The input tensor alone (int8) must fit in the arena.
    assert arena > int(np.prod(ops[0].inputs[0]))


@pytest.mark.skipif(CC is None, reason="no C compiler")
def test_c_export_builds_beside_fb_encoder_and_quantizes_like_the_gateway(tmp_path):
    card = json.loads((MODEL / "model_card.json").read_text())
    h, c = mcu.export_c(MODEL / "model.tflite", card, tmp_path)
    model = (MODEL / "model.tflite").read_bytes()
    assert f"0x{zlib.crc32(model):08x}u" in c.read_text()
    exe = tmp_path / "model_example"

    def build(source: Path, out: Path) -> None:
        subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{tmp_path}",
                        f"-I{SRC}", str(SRC / "fb_encoder.c"), str(SRC / "model_image.c"),
                        str(SRC / "model_example.c"), str(source), "-lm", "-o", str(out)], check=True)

    build(c, exe)
    clf = Classifier(MODEL)
    from edge.field.doctor import selftest_windows

    waves, _, fs = selftest_windows(clf.fs)
    x = clf.prepare(waves[:1], fs)[0]  # (channels, samples) float32, as the gateway hands it to the model
    x[0, :5] = [0.0627451, -0.0627451, 0.18823530, 200.0, -200.0]  # half-steps and saturation
    done = subprocess.run([str(exe)], input=x.astype("<f4").tobytes(), capture_output=True, check=True)
    q = np.frombuffer(done.stdout, dtype=np.int8).reshape(clf.samples, clf.channels)
    from edge.gateway.model import quantize

    want = quantize(x.T, card["input_quantization"]["scale"], card["input_quantization"]["zero_point"])
    np.testing.assert_array_equal(q, want)
    assert f"model ok: {len(model)} bytes".encode() in done.stderr

    # A corrupted flash image (one byte changed) is refused before the interpreter sees it.
    bad = tmp_path / "bad.c"
    text = c.read_text()
    first = text.index("0x", text.index("= {"))
    bad.write_text(text[:first] + ("0x00" if text[first:first + 4] != "0x00" else "0x01") + text[first + 4:])
    build(bad, tmp_path / "bad_example")
    refused = subprocess.run([str(tmp_path / "bad_example")], input=b"", capture_output=True)
    assert refused.returncode == 2 and b"refused (-2)" in refused.stderr
