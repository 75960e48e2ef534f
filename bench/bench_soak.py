"""Soak: the pipeline over many hours of stream, checking that memory and CPU per hour stay flat.

An STA/LTA recomputed over a rolling buffer, or objects that grow, make CPU and memory
creep over days. This feeds a 10-minute generated stream (3 ch x 4 kHz, events) again and again with
continuous sample indices through the real pipeline and classifier, and records RSS and CPU seconds
per simulated hour. Prints and saves bench/results/soak.json.

    .venv/bin/python bench/bench_soak.py [--hours 12] [--model models/triaxial]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge.gateway.config import TriggerConfig
from edge.gateway.daemon import rss_mb
from edge.gateway.model import Classifier
from edge.gateway.pipeline import Pipeline, fixed_clock
from training.synthetic.stream import StreamSynth

ROOT = Path(__file__).resolve().parents[1]
FS = 4000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--model", default=str(ROOT / "models" / "triaxial"))
    args = parser.parse_args()
    synth = StreamSynth(fs=FS, channels=3, site="cl-block-cave", seed=31, rate_per_min=6)
    loop = np.concatenate([synth.next_block(int(FS))[0] for _ in range(600)], axis=1)  # 10 minutes
    pipe = Pipeline(TriggerConfig(), Classifier(args.model), FS, ["Z", "N", "E"],
                    fixed_clock(datetime(2026, 1, 1, tzinfo=UTC), FS))
    block, per_hour = int(0.1 * FS), int(3600 * FS)
    hours, position, events = [], 0, 0
    cpu0 = time.process_time()
    while position < args.hours * per_hour:
        for at in range(0, loop.shape[1], block):
            events += len(pipe.feed(loop[:, at:at + block], position))
            position += block
            if position % per_hour == 0:
                cpu = time.process_time()
                hours.append({"hour": position // per_hour, "rss_mb": round(rss_mb(), 1),
                              "cpu_s": round(cpu - cpu0, 2), "events": events})
                cpu0 = cpu
                print(json.dumps(hours[-1]), flush=True)
    rss = [h["rss_mb"] for h in hours]
    cpu = [h["cpu_s"] for h in hours]
    result = {
        "stream": "3 ch x 4 kHz, a 10-minute generated stream (events 6/min) repeated, 0.1 s blocks",
        "hours": hours,
        "rss_growth_mb_after_first_hour": round(rss[-1] - rss[0], 1),
        "cpu_s_per_hour_first_last": [cpu[0], cpu[-1]],
    }
    (ROOT / "bench" / "results" / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "hours"}, indent=2))


if __name__ == "__main__":
    main()
