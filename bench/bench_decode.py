"""Decode throughput of firmware_bridge.FrameDecoder, against a heavy real stream (8 ch x 20 kHz x int32).

Builds 20 s of that stream (frames of 5, 10 and 25 ms), feeds it to the decoder in serial-sized
chunks (4 KiB) and in large chunks (64 KiB), on one core, and reports MB/s and the multiple of the
stream's real-time wire rate (target: at least 100x). Also a 3 ch x 10 kHz int24 stream with
1e-4 bit errors and 0.1% dropped bytes (the end-to-end test's line), to show resync cost.
Prints a table and writes bench/results/decode.json.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from firmware_bridge.decoder import FrameDecoder
from firmware_bridge.fuzz import FaultRates, Frame, corrupt
from firmware_bridge.protocol import encode_samples

OUT = Path(__file__).resolve().parent / "results" / "decode.json"


def build(fs: float, channels: int, fmt: str, frame_s: float, seconds: float, seed: int = 0) -> tuple[bytes, list]:
    rng = np.random.default_rng(seed)
    spf = int(round(fs * frame_s))
    bits = {"int16": 16, "int24": 24, "int32": 32}[fmt]
    frames = []
    for i in range(int(seconds * fs) // spf):
        counts = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (channels, spf))
        frames.append(Frame(encode_samples(counts, fmt=fmt, fs=fs, first_sample=i * spf, seq=i), i, i * spf,
                            spf, None))
    return b"".join(f.data for f in frames), frames


def decode_rate(data: bytes, chunk: int, dtype, repeats: int = 3) -> tuple[float, int]:
    best = float("inf")
    samples = 0
    for _ in range(repeats):
        dec = FrameDecoder(dtype)
        t = time.perf_counter()
        for k in range(0, len(data), chunk):
            dec.feed(data[k:k + chunk])
        dec.flush()
        best = min(best, time.perf_counter() - t)
        samples = dec.stats.samples
    return len(data) / best, samples


def main() -> None:
    rows = []
    seconds = 20.0
    for frame_ms in (5, 10, 25):
        data, _ = build(20000.0, 8, "int32", frame_ms / 1000.0, seconds)
        wire_rate = len(data) / seconds  # bytes per second of the real stream, framing included
        for chunk in (4096, 65536):
            for dtype in ("float64", "float32"):
                rate, samples = decode_rate(data, chunk, np.dtype(dtype))
                rows.append({"stream": "8ch x 20kHz int32", "frame_ms": frame_ms, "chunk": chunk, "dtype": dtype,
                             "mb_per_s": round(rate / 1e6, 1), "x_realtime": round(rate / wire_rate, 1),
                             "samples_ok": samples == int(seconds * 20000)})
    # The end-to-end test's faulty line: 3 ch x 10 kHz int24, 1e-4 BER, 0.1% drops.
    _, frames = build(10000.0, 3, "int24", 0.0032, seconds)
    wire, _, _ = corrupt(np.random.default_rng(1), frames, FaultRates(1e-4, 1e-3, 0.0, 0.0, 0.0))
    rate, _ = decode_rate(wire, 4096, np.dtype("float64"))
    faulty = {"stream": "3ch x 10kHz int24, 1e-4 BER, 0.1% drops", "frame_ms": 3.2, "chunk": 4096,
              "dtype": "float64", "mb_per_s": round(rate / 1e6, 1),
              "x_realtime": round(rate / (sum(len(f.data) for f in frames) / seconds), 1)}
    rows.append(faulty)
    print(f"{'stream':42s} {'frame':>6s} {'chunk':>6s} {'dtype':>8s} {'MB/s':>8s} {'x real time':>12s}")
    for r in rows:
        print(f"{r['stream']:42s} {r['frame_ms']:>4g}ms {r['chunk']:>6d} {r['dtype']:>8s} {r['mb_per_s']:>8.1f} "
              f"{r['x_realtime']:>11.0f}x")
    heavy = [r for r in rows if r["stream"].startswith("8ch")]
    summary = {"min_x_realtime_heavy": min(r["x_realtime"] for r in heavy), "target_x": 100,
               "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
               "one_core": True, "rows": rows}
    print(f"slowest heavy-stream case: {summary['min_x_realtime_heavy']:.0f}x real time (target 100x)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
