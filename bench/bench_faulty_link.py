"""Event recall through the README's faulty board link, and how short gaps are best concealed.

The README's simulator command: 3 ch x 10 kHz int24, the benchmark's signals (6 events a minute, SNR
-3..30 dB), 1e-4 bit errors, 0.1 % dropped bytes, one 2 s disconnect a minute. The simulator writes the
byte stream to a file (as fast as it can), the daemon's own path decodes it (FrameDecoder, contiguous
frames joined) and runs the pipeline with the real interpreter; edge.devtools.scoring matches triggers to
the injected events (a trigger 0.3 s before to 1.5 s after an onset detects it). Recall is reported at
SNR >= 6 dB, with false triggers per hour and classification macro-F1 on the detected events, for:

- the link's frame size: the simulator's default (a real board's, about 256 payload bytes) and frames
  of 10 ms (the simulator's former default, 940 bytes at this rate),
- the pipeline as shipped (``conceal``: the trigger goes on over gaps of at most ``trigger.conceal_gap_s``
  as if they were not there; the window holds a straight line over them), every gap resetting the
  trigger (``reset``, ``conceal_gap_s = 0``: the behaviour before), and three ways of feeding the
  trigger samples over the gap (``fed-bridge``: that straight line, ``fed-hold``: the last value,
  ``fed-zeros``: zeros in physical units),
- the same stream on a clean link.

Also the link state the daemon's health would report over the run (edge.gateway.link).
Prints a table and writes bench/results/faulty_link.json. Usage:
``python bench/bench_faulty_link.py [--seconds 600] [--seed 1]``
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.devtools.scoring import score_events  # noqa: E402
from edge.gateway.config import TriggerConfig  # noqa: E402
from edge.gateway.link import ArmTracker, LinkCounts, assess_link  # noqa: E402
from edge.gateway.model import Classifier  # noqa: E402
from edge.gateway.pipeline import Pipeline, bridge_gap, fixed_clock  # noqa: E402
from firmware_bridge.decoder import FrameDecoder, SampleBlock, join_contiguous  # noqa: E402
from firmware_bridge.faults import FaultConfig  # noqa: E402
from firmware_bridge.protocol import SampleFormat  # noqa: E402
from firmware_bridge.simulator import BoardSimulator, FilePort, default_samples_per_frame  # noqa: E402
from training.synthetic.stream import StreamSynth  # noqa: E402

OUT = ROOT / "bench" / "results" / "faulty_link.json"
FS, CHANNELS = 10000.0, 3
README_LINK = FaultConfig(bit_error_rate=1e-4, drop_rate=1e-3, disconnect_rate=1 / 60.0, disconnect_seconds=2.0)


def _hold(last: np.ndarray, following: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(last[:, None], n, axis=1).astype(np.float32)


def _zeros(last: np.ndarray, following: np.ndarray, n: int) -> np.ndarray:
    return np.zeros((last.shape[0], n), np.float32)


class FedPipeline(Pipeline):
    """An alternative concealment: the trigger is fed ``fill`` samples over each short gap."""

    fill = staticmethod(bridge_gap)

    def feed(self, block: np.ndarray, start: int) -> list:
        events = []
        if self.position is not None and self._last is not None and 0 < start - self.position <= self.conceal_max:
            self.stats.concealed_gaps += 1
            events += super().feed(self.fill(self._last, block[:, 0], start - self.position), self.position)
        return events + super().feed(block, start)


def variant(name: str) -> tuple[type[Pipeline], float]:
    """(pipeline class, conceal_gap_s) of a variant."""
    if name == "reset":
        return Pipeline, 0.0
    if name == "conceal":
        return Pipeline, TriggerConfig().conceal_gap_s
    fill = {"fed-bridge": bridge_gap, "fed-hold": _hold, "fed-zeros": _zeros}[name]
    return type(name, (FedPipeline,), {"fill": staticmethod(fill)}), TriggerConfig().conceal_gap_s


def simulate(tmp: Path, seconds: float, seed: int, spf: int | None, faults: FaultConfig
             ) -> tuple[list[SampleBlock], list[dict], FrameDecoder, float, int]:
    """Blocks as the daemon's decoder hands them to the pipeline, the injected events, the decoder, the
    counts-per-unit scale and the frame size."""
    source = StreamSynth(fs=FS, channels=CHANNELS, seed=seed)
    scale = 10.0 / float(getattr(source, "noise_rms", 1e-3) or 1e-3)  # as `board simulate`'s default
    sim = BoardSimulator(source, fs=FS, channels=CHANNELS, fmt="int24", scale=scale, samples_per_frame=spf,
                         faults=faults, seed=seed)
    stream, truth = tmp / "stream.bin", tmp / "truth.jsonl"
    truth.unlink(missing_ok=True)
    port = FilePort(stream)
    try:
        sim.run(port, seconds=seconds, speed=0, truth=truth)
    finally:
        port.close()
    decoder, blocks = FrameDecoder(), []
    with open(stream, "rb") as f:
        while data := f.read(65536):  # what the serial reader hands over
            blocks += join_contiguous([b for b in decoder.feed(data) if isinstance(b, SampleBlock)])
    blocks += [b for b in decoder.flush() if isinstance(b, SampleBlock)]
    events = [json.loads(line) for line in truth.read_text().splitlines()]
    return blocks, events, decoder, scale, sim.samples_per_frame


def run_variant(name: str, blocks: list[SampleBlock], events: list[dict], scale: float, seconds: float,
                classifier: Classifier) -> dict:
    cls, conceal = variant(name)
    cfg = replace(TriggerConfig(), conceal_gap_s=conceal)
    pipe = cls(cfg, classifier, FS, ["Z", "N", "E"], fixed_clock(datetime(2026, 1, 1, tzinfo=UTC), FS))
    arm = ArmTracker(FS, cfg.lta_s, cfg.conceal_gap_s)
    out = []
    t0 = time.process_time()
    for b in blocks:
        out += pipe.feed(b.data.astype(np.float32) / np.float32(scale), b.first_sample)
        arm.observe(b.first_sample, b.data.shape[1])
    out += pipe.flush()
    cpu = time.process_time() - t0
    score = score_events(np.array([e["sample"] for e in events]), np.array([e["label"] for e in events]),
                         np.array([e["snr_db"] for e in events]), [e.trigger_sample for e in out],
                         [e.classification.label for e in out], FS, seconds)
    return {"recall_snr_ge_6db": score["recall_snr_ge_6db"], "events_snr_ge_6db": score["events_snr_ge_floor"],
            "recall": score["recall"], "events": score["events"], "detected": score["detected"],
            "false_triggers_per_hour": score["false_triggers_per_hour"],
            "classification_macro_f1": score["classification_macro_f1"],
            "windows_concealed": pipe.stats.windows_concealed, "trigger_resets": pipe.stats.gaps,
            "concealed_gaps": pipe.stats.concealed_gaps, "cpu_s": round(cpu, 1), "arm": arm}


def link_state(decoder: FrameDecoder, arm: ArmTracker, seconds: float) -> dict:
    st = decoder.stats
    counts = LinkCounts(frames_ok=st.sample_frames + st.status_frames, frames_lost=st.frames_missed,
                        crc_errors=st.crc_errors, samples_received=st.samples, samples_missed=st.samples_missed,
                        samples_concealed=arm.samples_concealed, trigger_resets=arm.trigger_resets,
                        armed_samples=arm.armed_samples, warmup_samples=arm.warmup_samples)
    return assess_link(counts, seconds).as_fields()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="stream length per link (default 600)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the signal and of the faults (default 1)")
    ap.add_argument("--out", default=str(OUT), help=f"JSON results (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args()
    classifier = Classifier(ROOT / "models" / "triaxial")
    default_spf = default_samples_per_frame(FS, CHANNELS, SampleFormat.INT24)
    links = [("readme", default_spf, README_LINK, ["conceal", "reset", "fed-bridge", "fed-hold", "fed-zeros"]),
             ("readme", round(0.01 * FS), README_LINK, ["conceal", "reset"]),
             ("clean", default_spf, FaultConfig(), ["conceal"])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for link, spf, faults, names in links:
            t0 = time.monotonic()
            blocks, events, decoder, scale, spf = simulate(Path(tmp), args.seconds, args.seed, spf, faults)
            sim_s = time.monotonic() - t0
            st = decoder.stats
            frames = st.sample_frames + st.status_frames
            for name in names:
                r = run_variant(name, blocks, events, scale, args.seconds, classifier)
                arm = r.pop("arm")
                row = {"link": link, "samples_per_frame": spf, "frame_ms": round(1000 * spf / FS, 1),
                       "frames_arrived_pct": round(100 * frames / (frames + st.frames_missed), 1),
                       "crc_errors": st.crc_errors, "variant": name, **r,
                       "health_link": link_state(decoder, arm, args.seconds), "simulate_s": round(sim_s, 1)}
                rows.append(row)
                print(f"{link:6s} {spf:4d} spf ({row['frame_ms']:4.1f} ms, {row['frames_arrived_pct']:5.1f} % "
                      f"frames arrive)  {name:10s}  recall@>=6dB {r['recall_snr_ge_6db']} "
                      f"({r['events_snr_ge_6db']} events)  false/h {r['false_triggers_per_hour']}  "
                      f"F1 {r['classification_macro_f1']}  resets {r['trigger_resets']}  "
                      f"link {row['health_link']['state']}", flush=True)
    result = {"bench": "faulty_link", "seconds_per_link": args.seconds, "seed": args.seed, "fs": FS,
              "channels": CHANNELS, "format": "int24",
              "faults": {"bit_error_rate": README_LINK.bit_error_rate, "drop_rate": README_LINK.drop_rate,
                         "disconnects_per_min": 60 * README_LINK.disconnect_rate,
                         "disconnect_seconds": README_LINK.disconnect_seconds},
              "conceal_gap_s": TriggerConfig().conceal_gap_s, "machine": platform.machine(),
              "python": platform.python_version(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
