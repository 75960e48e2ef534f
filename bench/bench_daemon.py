"""The daemon as a process: time to READY, peak memory, and latency from window close to broker ack.

Targets: p99 latency window close -> PUBACK <= 20 ms on loopback; peak RSS <= 80 MB (50 MB stretch);
time to READY (sd_notify) <= 1.5 s. Runs the real `stopewatch run` against a local Mosquitto
and the board simulator on a pseudo-terminal (3 channels x 4 kHz, short events ~20/min of stream). Memory
(RSS, PSS and USS from /proc/PID/smaps_rollup) is read 10 s after READY and at the end; ``--speed 20`` feeds
an hour of stream in 180 s (latency figures are then those of a board 20x faster than real time).
Prints and saves bench/results/daemon.json (``--out`` elsewhere).

    .venv/bin/python bench/bench_daemon.py [--seconds 180] [--speed 1] [--model models/triaxial]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.devtools.broker import start_local_broker
from firmware_bridge.simulator import BoardSimulator, PtyPort
from training.synthetic.stream import StreamSynth

ROOT = Path(__file__).resolve().parents[1]


class Prerendered:
    """A board signal source that serves a stream rendered in advance (``next_block`` like StreamSynth)."""

    def __init__(self, synth: StreamSynth, seconds: float):
        fs = int(synth.fs)
        blocks, self.events = [], []
        for _ in range(int(seconds)):
            x, ev = synth.next_block(fs)
            blocks.append(x)
            self.events += ev
        self.data, self.at = np.concatenate(blocks, axis=1), 0

    def next_block(self, n: int) -> tuple[np.ndarray, list[dict]]:
        start, self.at = self.at, self.at + n
        block = self.data[:, start % self.data.shape[1]:][:, :n]
        if block.shape[1] < n:  # wrap around
            block = np.concatenate([block, self.data[:, :n - block.shape[1]]], axis=1)
        return block, [e for e in self.events if start <= e["sample"] < start + n]


def memory_mb(pid: int) -> dict:
    """RSS, PSS and USS (private clean + dirty) of a process, MB, from /proc/PID/smaps_rollup."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        kb[key] = int(value.split()[0])
    return {"rss": round(kb["Rss"] / 1024, 1), "pss": round(kb["Pss"] / 1024, 1),
            "uss": round((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, 1),
            "anonymous": round(kb["Anonymous"] / 1024, 1)}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--speed", type=float, default=1.0, help="stream seconds per real second")
    parser.add_argument("--model", default=str(ROOT / "models" / "triaxial"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "daemon.json"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    broker = start_local_broker(tmp / "broker")
    pty = PtyPort()
    stop = threading.Event()
    # Short events at a high rate, so that p99 rests on more than a handful of events; rendered
    # beforehand, so that synthesising them does not compete with the daemon for the CPU.
    source = Prerendered(StreamSynth(fs=4000.0, channels=3, site="za-deep-gold", seed=21, snr_db=(6.0, 30.0),
                                     rate_per_min=60, families=["microseismic", "blast", "electrical"]),
                         seconds=min(args.seconds * args.speed + 30, 600))  # longer runs loop over it
    sim = BoardSimulator(source, fs=4000.0, channels=3, fmt="int24", scale=1e9, timestamps=True, seed=21)
    board = threading.Thread(target=sim.run, args=(pty,), daemon=True,
                             kwargs={"seconds": None, "speed": args.speed, "stop": stop})
    board.start()
    config = tmp / "c.toml"
    config.write_text(f'[node]\nsite = "bench"\nnode = "n1"\nstate_dir = "{tmp / "state"}"\n'
                      f'[board]\nport = "{pty.path}"\ncounts_per_unit = 1e9\n[model]\npath = "{args.model}"\n'
                      f'[mqtt]\nport = {broker.port}\n[health]\ninterval_s = 5.0\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify"))
    notify.settimeout(30)
    health: list[dict] = []
    pipeline_ms: list[float] = []  # the part of the latency spent before the outbox (in each event message)

    def on_message(client, userdata, m) -> None:
        body = json.loads(m.payload)
        (health.append(body) if m.topic.endswith("/health") else pipeline_ms.append(body["latency_ms"]))

    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.subscribe([("stopewatch/v1/bench/n1/health", 0), ("stopewatch/v1/bench/n1/event", 1)])
    client.loop_start()
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp / "notify"), STOPEWATCH_LOG="WARNING")
    t0 = time.monotonic()
    daemon = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)], env=env,
                              stderr=subprocess.DEVNULL)
    ready = None
    while ready is None:
        msg = notify.recv(4096).decode()
        if "READY=1" in msg:
            ready = time.monotonic() - t0
    threading.Thread(target=lambda: [notify.recv(4096) for _ in iter(int, 1)], daemon=True).start()  # as systemd
    time.sleep(10)
    mem_start = memory_mb(daemon.pid)
    time.sleep(max(0.0, args.seconds - 10))
    mem_end = memory_mb(daemon.pid)
    rss = peak_rss_mb(daemon.pid)
    time.sleep(6)  # one more health message
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(30)
    stop.set()
    client.loop_stop()
    broker.stop()
    last = health[-1]
    lat = last["mqtt"]["publish_latency_ms"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "run": f"{args.seconds:g} s real time at {args.speed:g}x ({args.seconds * args.speed / 60:.0f} min of stream), "
               "3 ch x 4 kHz int24 over a pty, short events ~20/min, local Mosquitto",
        "time_to_ready_s": round(ready, 3), "peak_rss_mb": round(rss, 1),
        "memory_mb": {"10_s_after_ready": mem_start, "at_end": mem_end, "peak_rss": round(rss, 1)},
        "events": last["events"], "latency_window_close_to_puback_ms": lat,
        "of_which_pipeline_ms": {"p50": round(float(np.percentile(pipeline_ms, 50)), 3),
                                 "p99": round(float(np.percentile(pipeline_ms, 99)), 3), "n": len(pipeline_ms)},
        "daemon_cpu_percent": last["cpu_percent"], "realtime_factor_reported": last["realtime_factor"],
        "targets": {"time_to_ready_s": "<= 1.5", "peak_rss_mb": "<= 80", "latency_p99_ms": "<= 20"},
        "met": {"time_to_ready_s": ready <= 1.5, "peak_rss_mb": rss <= 80,
                "latency_p99_ms": lat["p99"] is not None and lat["p99"] <= 20},
    }
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
