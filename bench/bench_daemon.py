"""The daemon as a process: time to READY, peak memory, and latency from window close to broker ack.

Targets: p99 latency window close -> PUBACK <= 20 ms on loopback; peak RSS <= 80 MB (50 MB stretch);
time to READY (sd_notify) <= 1.5 s. Runs the real `stopewatch run` against a local Mosquitto
and the board simulator on a pseudo-terminal (3 channels x 4 kHz, short events ~20/min of stream). Memory
(RSS, PSS and USS from /proc/PID/smaps_rollup) is read 10 s after READY and at the end; ``--speed 20`` feeds
an hour of stream in 180 s (latency figures are then those of a board 20x faster than real time).
Prints and saves bench/results/daemon.json (``--out`` elsewhere). Every run also records the daemon
process's CPU seconds (user + system, /proc/PID/stat) per stream second, from 10 s after READY to the end.

``--archive off`` runs the daemon with ``[archive] enabled = false`` (default ``on``: the Steim-2 ring
archive in service, as shipped); ``--archive both`` runs ``--repeat`` pairs with the same stream and seed,
in ABBA order (off, on, on, off, ...) so that a drift in the machine's load falls on both sides, and saves
every run, the medians and the difference to bench/results/daemon_archive_cpu.json.

    .venv/bin/python bench/bench_daemon.py [--seconds 180] [--speed 1] [--model models/triaxial]
    .venv/bin/python bench/bench_daemon.py --archive both --repeat 3 --seconds 180 --speed 4
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat utime and stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    utime, stime = stat[stat.rindex(")") + 2:].split()[11:13]  # fields 14 and 15; the name may hold spaces
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> int:
    """Bytes in the files under ``path`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run(args: argparse.Namespace, archive: bool) -> dict:
    """One run of the daemon against the simulated board; the result as saved."""
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
                      f'[mqtt]\nport = {broker.port}\n[health]\ninterval_s = 5.0\n'
                      f'[archive]\nenabled = {str(archive).lower()}\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify"))
    notify.settimeout(30)
    health: list[dict] = []
    health_at: list[float] = []  # arrival times (monotonic) of the health messages
    pipeline_ms: list[float] = []  # the part of the latency spent before the outbox (in each event message)

    def on_message(client, userdata, m) -> None:
        body = json.loads(m.payload)
        if m.topic.endswith("/health"):
            health.append(body)
            health_at.append(time.monotonic())
        else:
            pipeline_ms.append(body["latency_ms"])

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
    notify.settimeout(None)  # from here on drained as systemd would, for as long as the daemon runs
    threading.Thread(target=lambda: [notify.recv(4096) for _ in iter(int, 1)], daemon=True).start()
    time.sleep(10)
    mem_start = memory_mb(daemon.pid)
    cpu_start, t_start, load_start = cpu_seconds(daemon.pid), time.monotonic(), os.getloadavg()[0]
    time.sleep(max(0.0, args.seconds - 10))
    mem_end = memory_mb(daemon.pid)
    cpu_end, t_end, load_end = cpu_seconds(daemon.pid), time.monotonic(), os.getloadavg()[0]
    rss = peak_rss_mb(daemon.pid)
    time.sleep(6)  # one more health message
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(30)
    stop.set()
    client.loop_stop()
    broker.stop()
    archive_bytes = dir_bytes(tmp / "state" / "archive")
    # The pace the daemon really received (samples_in between the health messages of the measured span), so
    # that a simulator slowed by a busy machine does not inflate the stream seconds.
    inside = [(t, h) for t, h in zip(health_at, health, strict=True) if t_start <= t <= t_end]
    (t0_in, h0), (t1_in, h1) = (inside[0], inside[-1]) if inside else ((0.0, {}), (0.0, {}))
    received_s = (h1.get("samples_in", 0) - h0.get("samples_in", 0)) / 4000.0
    speed = received_s / (t1_in - t0_in) if len(inside) > 1 and t1_in > t0_in else args.speed
    stream_s = (t_end - t_start) * speed
    # The archive's own CPU as the daemon counts it (health's archive.cpu_s, the writing thread's CPU time in
    # RingArchive.write) over the same health messages: a direct figure, unlike the difference of two runs.
    archive_cpu = ((h1["archive"]["cpu_s"] - h0["archive"]["cpu_s"]) / received_s
                   if len(inside) > 1 and received_s > 0 and h0.get("archive") and h1.get("archive") else None)
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
        "archive": {"enabled": archive, "encoding": "steim2" if archive else None, "bytes": archive_bytes,
                    "records": (last.get("archive") or {}).get("records")},
        "daemon_cpu": {"cpu_s": round(cpu_end - cpu_start, 2), "stream_s": round(stream_s, 1),
                       "speed_received": round(speed, 3), "load_average_1min": [load_start, load_end],
                       "cpu_s_per_stream_s": round((cpu_end - cpu_start) / stream_s, 5),
                       "archive_write_cpu_s_per_stream_s": None if archive_cpu is None else round(archive_cpu, 5)},
        "targets": {"time_to_ready_s": "<= 1.5", "peak_rss_mb": "<= 80", "latency_p99_ms": "<= 20"},
        "met": {"time_to_ready_s": ready <= 1.5, "peak_rss_mb": rss <= 80,
                "latency_p99_ms": lat["p99"] is not None and lat["p99"] <= 20},
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--speed", type=float, default=1.0, help="stream seconds per real second")
    parser.add_argument("--model", default=str(ROOT / "models" / "triaxial"))
    parser.add_argument("--archive", choices=("on", "off", "both"), default="on",
                        help="the ring archive in service (on), not (off), or one run of each (both)")
    parser.add_argument("--repeat", type=int, default=1, help="with --archive both: pairs of runs")
    parser.add_argument("--out", default=None, help="default bench/results/daemon.json, or "
                        "daemon_archive_cpu.json with --archive both")
    args = parser.parse_args()
    if args.archive != "both":
        result = run(args, args.archive == "on")
        out = Path(args.out or ROOT / "bench" / "results" / "daemon.json")
    else:
        order = [archive for i in range(args.repeat) for archive in ((False, True) if i % 2 == 0 else (True, False))]
        runs = [run(args, archive) for archive in order]
        per = {archive: [r["daemon_cpu"]["cpu_s_per_stream_s"] for r in runs if r["archive"]["enabled"] == archive]
               for archive in (False, True)}
        off, on = float(np.median(per[False])), float(np.median(per[True]))
        last_on = [r for r in runs if r["archive"]["enabled"]][-1]
        result = {
            "machine": runs[0]["machine"],
            "run": runs[0]["run"] + f"; {args.repeat} pair(s), archive off and on (Steim-2, 4096-byte records) "
                   "in ABBA order, same stream and seed",
            "stream": "3 channels x 4000 Hz int24 (36 kB/s as int24 on the wire)",
            "cpu_s_per_stream_s": {"archive_off": per[False], "archive_on": per[True],
                                   "median_off": round(off, 5), "median_on": round(on, 5),
                                   "difference_of_medians": round(on - off, 5),
                                   "increase_percent": round(100 * (on - off) / off, 1),
                                   "pair_differences": [round(b - a, 5) for a, b in zip(per[False], per[True],
                                                                                        strict=True)]},
            "archive_write_cpu_s_per_stream_s": {
                "runs": [r["daemon_cpu"]["archive_write_cpu_s_per_stream_s"] for r in runs if r["archive"]["enabled"]],
                "median": round(float(np.median([r["daemon_cpu"]["archive_write_cpu_s_per_stream_s"]
                                                 for r in runs if r["archive"]["enabled"]])), 5),
                "share_of_daemon_cpu_percent": round(100 * float(np.median(
                    [r["daemon_cpu"]["archive_write_cpu_s_per_stream_s"] / r["daemon_cpu"]["cpu_s_per_stream_s"]
                     for r in runs if r["archive"]["enabled"]])), 1),
                "what": "health's archive.cpu_s (the daemon thread's CPU time in RingArchive.write) per stream "
                        "second, in the archive-on runs"},
            "archive_bytes_per_stream_s": round(last_on["archive"]["bytes"] / last_on["daemon_cpu"]["stream_s"], 1),
            "note": "CPU (user + system) of the daemon process only (the board simulator runs in the bench "
                    "process, the broker in its own), from 10 s after READY to the end of each run; the machine "
                    "was shared with other jobs (see each run's load average), so the spread between runs of "
                    "one setting is part of the result",
            "runs": runs,
        }
        out = Path(args.out or ROOT / "bench" / "results" / "daemon_archive_cpu.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
