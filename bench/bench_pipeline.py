"""Pipeline throughput on one core, and streaming STA/LTA against ObsPy.

Targets: the whole pipeline (trigger + window extraction + int8 classification +
features) runs >= 500x real time on 3 channels x 10 kHz, the DSP alone >= 1000x; streaming
STA/LTA is compared with ObsPy on the whole array and with recomputing ObsPy over a rolling
buffer on every packet (how rsudp does it). Prints and saves bench/results/pipeline.json.

    .venv/bin/python bench/bench_pipeline.py [--seconds 600] [--model models/triaxial]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as on a weak gateway

import numpy as np  # noqa: E402
from bench_generate import cpu_model  # noqa: E402  (bench/ is the script's directory)
from obspy.signal.trigger import classic_sta_lta, recursive_sta_lta  # noqa: E402

from edge.gateway.config import TriggerConfig  # noqa: E402
from edge.gateway.dsp import RecursiveStaLta  # noqa: E402
from edge.gateway.model import Classifier  # noqa: E402
from edge.gateway.pipeline import Detector, Pipeline, fixed_clock  # noqa: E402
from training.synthetic.stream import StreamSynth  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FS = 10_000.0
PACKET_S = 0.1  # a board frame burst as the daemon reads it


def stream(seconds: float) -> tuple[np.ndarray, int]:
    synth = StreamSynth(fs=FS, channels=3, site="za-deep-gold", seed=5, snr_db=(6.0, 30.0), rate_per_min=10)
    data, events = [], 0
    for _ in range(int(seconds)):
        block, ev = synth.next_block(int(FS))
        data.append(block)
        events += len(ev)
    return np.concatenate(data, axis=1), events


def timed(fn) -> float:
    """CPU seconds of ``fn`` (process time: other work on the machine does not inflate it)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--model", default=str(ROOT / "models" / "triaxial"))
    args = parser.parse_args()
    data, injected = stream(args.seconds)
    n = data.shape[1]
    packet = int(PACKET_S * FS)
    cfg = TriggerConfig()
    classifier = Classifier(args.model)

    def dsp_only():
        det = Detector(cfg, FS, 3)
        for at in range(0, n, packet):
            det(data[:, at:at + packet])

    events = []

    def whole():
        pipe = Pipeline(cfg, classifier, FS, ["Z", "N", "E"], fixed_clock(datetime(2026, 1, 1, tzinfo=UTC), FS))
        for at in range(0, n, packet):
            events.extend(pipe.feed(data[:, at:at + packet], at))
        events.extend(pipe.flush())

    t_dsp, t_whole = timed(dsp_only), timed(whole)

    # STA/LTA alone on one channel: ours streamed, ObsPy on the whole array, ObsPy recomputed per packet.
    x = data[0].astype(np.float64)
    nsta, nlta = round(cfg.sta_s * FS), round(cfg.lta_s * FS)

    def ours():
        s = RecursiveStaLta(nsta, nlta, 1)
        for at in range(0, n, packet):
            s(x[None, at:at + packet])

    rolling_n = min(n, int(120 * FS))  # rsudp-style recomputation is slow: time 2 minutes of it
    buffer = 2 * nlta

    def rolling():
        for end in range(packet, rolling_n + 1, packet):
            recursive_sta_lta(x[max(0, end - buffer):end], nsta, nlta)

    t_ours, t_obspy = timed(ours), timed(lambda: recursive_sta_lta(x, nsta, nlta))
    t_obspy_classic = timed(lambda: classic_sta_lta(x, nsta, nlta))
    t_rolling = timed(rolling) * n / rolling_n
    seconds = n / FS
    result = {
        "machine": f"{platform.machine()}, {cpu_model()}, one core (sched_setaffinity), CPU time, Python "
                   f"{platform.python_version()}",
        "stream": {"channels": 3, "fs": FS, "seconds": seconds, "packet_s": PACKET_S, "events_injected": injected,
                   "events_classified": len(events), "model": classifier.card["name"]},
        "dsp_only_x_real_time": round(seconds / t_dsp, 1),
        "whole_pipeline_x_real_time": round(seconds / t_whole, 1),
        "targets": {"whole_pipeline": ">= 500x", "dsp_only": ">= 1000x"},
        "met": {"whole_pipeline": seconds / t_whole >= 500, "dsp_only": seconds / t_dsp >= 1000},
        "per_window_ms": round(1000 * (t_whole - t_dsp) / max(len(events), 1), 3),
        "sta_lta_one_channel_x_real_time": {
            "stopewatch_streaming_recursive": round(seconds / t_ours, 1),
            "obspy_recursive_whole_array": round(seconds / t_obspy, 1),
            "obspy_classic_whole_array": round(seconds / t_obspy_classic, 1),
            "obspy_recursive_recomputed_per_packet_over_2xLTA_buffer": round(seconds / t_rolling, 1),
        },
    }
    out = ROOT / "bench" / "results" / "pipeline.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
