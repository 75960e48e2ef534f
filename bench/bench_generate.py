"""Generation throughput of the synthetic benchmark on one core.

Targets: 10,000 three-component 4096-sample windows in <= 60 s with peak
memory < 2 GB (shards are written as they are made), and a 10-minute stream in < 30 s.
Prints and saves bench/results/generate.json.

    .venv/bin/python bench/bench_generate.py [--count 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_CORE = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def timed_child(code: str) -> dict:
    """Run ``code`` in a fresh interpreter pinned to one core; return wall time and peak RSS so far.

    RUSAGE_CHILDREN reports the largest child yet, so run the bigger job first.
    """
    env = os.environ | ONE_CORE
    pin = ["taskset", "-c", "0"] if os.path.exists("/usr/bin/taskset") else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([*pin, sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(wall, 2), "peak_rss_mb": round(max(peak_kb, before) / 1024, 1)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--stream-seconds", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        windows = timed_child(
            "from training.synthetic.generate import write_window_dataset\n"
            f"write_window_dataset({str(Path(tmp) / 'ds')!r}, count={args.count}, seed=1, progress=False)")
        stream = timed_child(
            "from training.synthetic.generate import write_stream_file\n"
            f"write_stream_file({str(Path(tmp) / 's.npz')!r}, seconds={args.stream_seconds}, seed=1)")
        size_mb = sum(f.stat().st_size for f in (Path(tmp) / "ds").iterdir()) / 2**20
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}; one core used",
        "python": platform.python_version(),
        "windows": {"count": args.count, "channels": 3, "samples": 4096, "fs": 4000.0, **windows,
                    "windows_per_s": round(args.count / windows["seconds"], 1), "dataset_mb": round(size_mb, 1),
                    "target": "<= 60 s, peak RSS < 2048 MB"},
        "stream": {"seconds_of_signal": args.stream_seconds, **stream,
                   "x_real_time": round(args.stream_seconds / stream["seconds"], 1), "target": "< 30 s"},
    }
    result["windows"]["met"] = windows["seconds"] <= 60 and windows["peak_rss_mb"] < 2048
    result["stream"]["met"] = stream["seconds"] < 30
    out = ROOT / "bench" / "results" / "generate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
