"""A shipped int8 model on the ADC board's microcontroller (TensorFlow Lite for Microcontrollers, TFLM).

Reads the model's graph (ops, tensor shapes, multiply-accumulates), finds the smallest tensor arena TFLM can
run it in, runs it with the Python TFLM interpreter from PyPI (``tflite-micro``: TFLM's C++ runtime and
reference kernels), and writes the model as a C array for the board's firmware. Development tooling: the
gateway never imports this (``tflite-micro`` is in the ``mcu`` and ``dev`` extras).
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# TFLM kernels whose MACs follow from the filter and output shapes (the models' Conv1D is a 1 x k CONV_2D).
_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _runtime():
    from tflite_micro.python.tflite_micro import runtime

    return runtime


@dataclass(frozen=True)
class GraphOp:
    """One operator of the model's graph: its builtin name, input and output tensor shapes, and MACs."""

    name: str
    inputs: tuple[tuple[int, ...] | None, ...]
    outputs: tuple[tuple[int, ...], ...]
    macs: int


def _op_macs(name: str, inputs, outputs) -> int:
    if name not in _MAC_OPS:
        return 0
    out = int(np.prod(outputs[0]))
    w = inputs[1]
    if name == "CONV_2D":  # filter (out_c, kh, kw, in_c): each output element sums kh * kw * in_c products
        return out * int(w[1] * w[2] * w[3])
    if name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, out_c)
        return out * int(w[1] * w[2])
    return out * int(w[1])  # FULLY_CONNECTED: weights (units, in)


def graph_ops(model: bytes) -> list[GraphOp]:
    """The operators of a .tflite flatbuffer's main graph, in execution order."""
    rt = _runtime()
    m = rt.convert_bytearray_to_object(bytearray(model))
    names = {v: k for k, v in vars(rt.schema_fb.BuiltinOperator).items() if not k.startswith("_")}
    g = m.subgraphs[0]
    ops = []
    for op in g.operators:
        name = names[rt.get_builtin_code_from_operator_code(m.operatorCodes[op.opcodeIndex])]
        ins = tuple(tuple(int(d) for d in g.tensors[i].shape) if i >= 0 else None for i in op.inputs)
        outs = tuple(tuple(int(d) for d in g.tensors[i].shape) for i in op.outputs)
        ops.append(GraphOp(name, ins, outs, _op_macs(name, ins, outs)))
    return ops


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """TFLM prints every failed allocation to fd 2; the arena search expects most probes to fail."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tflm_interpreter(model: bytes, arena: int):
    """A TFLM interpreter of ``model`` with an ``arena``-byte tensor arena; raises RuntimeError if it does not fit
    or an op has no TFLM kernel."""
    return _runtime().Interpreter.from_bytes(model, arena_size=arena)


def _runs(model: bytes, arena: int) -> bool:
    try:
        it = tflm_interpreter(model, arena)
        d = it.get_input_details(0)
        it.set_input(np.zeros(d["shape"], dtype=d["dtype"]), 0)
        it.invoke()
    except RuntimeError:
        return False
    return True


def smallest_arena(model: bytes, step: int = 16) -> int:
    """The smallest tensor arena (bytes, a multiple of ``step``) in which TFLM allocates and invokes the model.

    Measured with this host's TFLM build (64-bit pointers): a 32-bit Cortex-M's persistent structures are a
    little smaller, so the figure is an upper bound for the board.
    """
    hi = 1 << 16
    with _native_stderr_silenced():
        while not _runs(model, hi):
            hi *= 2
            if hi > 1 << 28:
                raise RuntimeError("TFLM could not run the model with a 256 MB arena")
        lo = 0  # invariant: lo fails (or is 0), hi runs
        while hi - lo > step:
            mid = (lo + hi) // 2 // step * step
            if mid <= lo:
                break
            if _runs(model, mid):
                hi = mid
            else:
                lo = mid
    return hi


def tflm_int8_outputs(model: bytes, x_int8: np.ndarray, arena: int) -> np.ndarray:
    """TFLM's raw int8 outputs (n, classes) for quantized inputs (n, samples, channels), one invoke per window."""
    it = tflm_interpreter(model, arena)
    out = []
    for window in x_int8:
        it.set_input(window[None], 0)
        it.invoke()
        out.append(np.array(it.get_output(0))[0])
    return np.stack(out)


def c_array(model: bytes, symbol: str, card: dict) -> tuple[str, str]:
    """(header, source) holding the model flatbuffer as a 16-byte-aligned C array, with what the firmware needs
    to feed it: the window shape, the input quantization and the class names in output order."""
    q = card["input_quantization"]
    classes = card["classes"]
    guard = f"{symbol.upper()}_H"
    header = "\n".join([
        f"/* {symbol}: {card['name']} {card['version']} (sha256 {card['sha256']}), generated by",
        " * bench/bench_tflm.py --export: do not edit. The flatbuffer TFLM's MicroInterpreter runs. */",
        f"#ifndef {guard}", f"#define {guard}", "", "#include <stddef.h>", "#include <stdint.h>", "",
        f"#define {symbol.upper()}_CHANNELS {card['channels']}",
        f"#define {symbol.upper()}_SAMPLES {card['samples']}",
        f"#define {symbol.upper()}_CLASSES {len(classes)}", "",
        f"extern const unsigned char {symbol}[];", f"extern const size_t {symbol}_len;",
        "/* zlib CRC-32 of the array: sw_model_check() refuses a corrupted flash image. */",
        f"extern const uint32_t {symbol}_crc32;",
        "/* int8 input: q = round(x / scale) + zero_point, saturated (x: the preprocessed window). */",
        f"extern const float {symbol}_input_scale;", f"extern const int32_t {symbol}_input_zero_point;",
        f"extern const char *const {symbol}_classes[{symbol.upper()}_CLASSES];", "", f"#endif /* {guard} */", ""])
    rows = [", ".join(f"0x{b:02x}" for b in model[i:i + 16]) for i in range(0, len(model), 16)]
    names = ", ".join(f'"{c}"' for c in classes)
    source = "\n".join([
        f'#include "{symbol}.h"', "",
        "/* TFLM reads the flatbuffer in place: keep it aligned (16 bytes, as its examples do). */",
        f"__attribute__((aligned(16))) const unsigned char {symbol}[] = {{",
        *(f"    {r}," for r in rows), "};",
        f"const size_t {symbol}_len = {len(model)}u;",
        f"const uint32_t {symbol}_crc32 = 0x{zlib.crc32(model):08x}u;",
        f"const float {symbol}_input_scale = {float(q['scale']):.9g}f;",
        f"const int32_t {symbol}_input_zero_point = {int(q['zero_point'])};",
        f"const char *const {symbol}_classes[{symbol.upper()}_CLASSES] = {{{names}}};", ""])
    return header, source


def export_c(model_path: Path, card: dict, out_dir: Path, symbol: str = "stopewatch_model") -> tuple[Path, Path]:
    """Write ``symbol``.h and ``symbol``.c for the model into ``out_dir``; returns their paths."""
    header, source = c_array(model_path.read_bytes(), symbol, card)
    out_dir.mkdir(parents=True, exist_ok=True)
    h, c = out_dir / f"{symbol}.h", out_dir / f"{symbol}.c"
    h.write_text(header)
    c.write_text(source)
    return h, c
