"""The surface collector under a mine's load: 200 nodes at 10 events per minute each, with waveforms.

For each archive (PostgreSQL, then SQLite) it measures:

- **steady**: every node publishes an event and its waveform (3 x 4096 float32) on its own MQTT 5
  client, at 10 per minute with a random phase. Reported: the committed rate, and publish -> committed
  row latency p50/p99 (the publish call in the simulator to the collector's commit of that event's
  batch, same clock).
- **drain**: the collector is stopped, the nodes publish a backlog that the broker queues in the
  collector's persistent session, and the collector is started again. Reported: the rate at which it
  stores the backlog, which is its capacity.
- the collector process's RSS: sampled every second, and its peak (VmHWM).

The collector runs in its own process (``--child``); the broker is a Mosquitto on a free loopback
port. Prints and saves bench/results/collector.json.

    .venv/bin/python bench/bench_collector.py [--nodes 200] [--per-min 10] [--seconds 120] [--backlog 3000]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.devtools.broker import MosquittoBroker
from edge.topics import NodeTopics
from edge.vocabulary import CLASSES
from firmware_bridge.clock import iso_utc

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("STOPEWATCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SAMPLES, FS, CHANNELS = 4096, 4000.0, ["Z", "N", "E"]


# --------------------------------------------------------------------------- the collector process
def child(url: str, port: int, out: str) -> int:
    """Run a Collector; on SIGTERM write (event_id, commit time) of every new event to ``out``."""
    from surface.collector import Collector
    from surface.config import parse_surface_config

    commits: list[tuple[str, float]] = []
    cfg = parse_surface_config({"database": {"url": url}, "broker": {"port": port, "client_id": "bench-collector"},
                                "alerts": {"gap_grace_s": 3600.0}}, "bench")
    col = Collector(cfg, on_commit=lambda ids, t: commits.extend((i, t) for i in ids))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    col.start()
    while not done.wait(0.2):
        pass
    col.stop()
    Path(out).write_text(json.dumps({"commits": commits, "stats": col.summary()}))
    return 0


def rss_mb(pid: int, key: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


class CollectorProcess:
    def __init__(self, url: str, port: int, workdir: Path) -> None:
        self.out = workdir / f"commits-{uuid.uuid4().hex[:6]}.json"
        self.log = open(workdir / "collector.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, __file__, "--child", url, str(port), str(self.out)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.rss: list[float] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.rss.append(rss_mb(self.proc.pid))
            except OSError:
                return

    def stop(self) -> tuple[dict[str, float], str, float]:
        peak = rss_mb(self.proc.pid, "VmHWM:")
        self._stop.set()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.log.close()
        data = json.loads(self.out.read_text())
        return dict(data["commits"]), data["stats"], peak


# --------------------------------------------------------------------------- the simulated nodes
class Node:
    """One simulated gateway: its own MQTT 5 client, will, retained online status, events and waveforms."""

    def __init__(self, i: int, port: int, prefix: str = "stopewatch/v1") -> None:
        self.site, self.node = f"site-{i % 4}", f"node-{i:03d}"
        self.topics = NodeTopics(prefix, self.site, self.node)
        self.boot_id = uuid.uuid4().hex[:16]
        self.seq = 0
        rng = np.random.default_rng(i)
        self.wave = [base64.b64encode(rng.normal(0, 1e-3, (3, SAMPLES)).astype("<f4").tobytes()).decode()
                     for _ in range(2)]
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{self.site}-{self.node}",
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(40)
        self.client.max_queued_messages_set(0)
        self.client.will_set(self.topics.status, self._status("offline"), qos=1, retain=True)
        self.client.connect("127.0.0.1", port, keepalive=60, clean_start=True)
        self.client.loop_start()
        self.client.publish(self.topics.status, self._status("online"), qos=1, retain=True)

    def _status(self, state: str) -> bytes:
        return json.dumps({"state": state, "ts": iso_utc(time.time_ns()), "boot_id": self.boot_id,
                           "version": "0.1.0", "model": {"name": "stopewatch-triaxial", "sha256": "ab" * 32}}).encode()

    def publish_event(self, rng: np.random.Generator) -> tuple[str, float]:
        self.seq += 1
        label = str(rng.choice(CLASSES))
        conf = float(rng.uniform(0.3, 1.0))
        now = time.time_ns()
        event_id = f"{self.site}.{self.node}.{self.boot_id}.{self.seq}"
        probs = {c: round((1 - conf) / 5, 6) for c in CLASSES}
        probs[label] = round(conf, 6)
        ev = {"schema": "stopewatch.event/1", "event_id": event_id, "site": self.site, "node": self.node,
              "boot_id": self.boot_id, "seq": self.seq, "trigger_time": iso_utc(now),
              "window": {"start": iso_utc(now - 256_000_000), "fs": FS, "samples": SAMPLES, "channels": CHANNELS},
              "label": label, "confidence": round(conf, 6), "probabilities": probs,
              "entropy": round(float(rng.uniform(0, 1)), 6),
              "model": {"name": "stopewatch-triaxial", "version": "1.0.0", "sha256": "ab" * 32},
              "features": {"ppv": float(rng.uniform(1e-4, 1e-1)), "dominant_hz": float(rng.uniform(5, 1500)),
                           "duration_s": 0.4, "snr_db": float(rng.uniform(-3, 30)), "sta_lta_max": 5.0,
                           "energy": 1e-6, "band_energy": {"0-25": 0.5, "25-75": 0.5}, "clipped": False},
              "latency_ms": 7.0, "historical": False}
        wf = {"schema": "stopewatch.waveform/1", "event_id": event_id, "site": self.site, "node": self.node,
              "boot_id": self.boot_id, "start": ev["window"]["start"], "fs": FS, "channels": CHANNELS,
              "samples": SAMPLES, "units": "m/s", "dtype": "float32-le", "encoding": "base64",
              "data": self.wave[self.seq % 2]}
        t = time.time()
        self.client.publish(self.topics.event, json.dumps(ev, separators=(",", ":")), qos=1)
        self.client.publish(self.topics.waveform, json.dumps(wf, separators=(",", ":")), qos=1)
        return event_id, t

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def validate_once(node: Node) -> None:
    """The simulated messages are real ones: they pass edge's JSON Schemas (when jsonschema is installed)."""
    try:
        import jsonschema
    except ImportError:
        return
    sent: dict[str, bytes] = {}
    orig = node.client.publish
    node.client.publish = lambda topic, payload, qos=0: sent.setdefault(topic, payload)  # capture, do not send
    node.publish_event(np.random.default_rng(0))
    node.client.publish = orig
    node.seq -= 1
    for kind in ("event", "waveform"):
        schema = json.loads((ROOT / "edge" / "schemas" / f"{kind}.schema.json").read_text())
        jsonschema.validate(json.loads(sent[node.topics.topic(kind)]), schema)


def run_steady(nodes: list[Node], per_min: float, seconds: float, seed: int) -> dict[str, float]:
    """Publish at ``per_min`` per node for ``seconds``; returns event_id -> publish time."""
    rng = np.random.default_rng(seed)
    period = 60.0 / per_min
    t0 = time.monotonic() + 1.0
    schedule = sorted((t0 + rng.uniform(0, period) + k * period, i) for i in range(len(nodes))
                      for k in range(int(seconds / period) + 1) if k * period < seconds)
    sent: dict[str, float] = {}
    for at, i in schedule:
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        eid, t = nodes[i].publish_event(rng)
        sent[eid] = t
    return sent


def wait_count(url: str, want: int, timeout: float) -> tuple[int, float]:
    from surface.store import open_store

    deadline = time.monotonic() + timeout
    with open_store(url) as store:
        while True:
            n = store.count_events()
            if n >= want or time.monotonic() > deadline:
                return n, time.monotonic()
            time.sleep(0.5)


def bench_backend(name: str, url: str, args: argparse.Namespace, workdir: Path) -> dict:
    broker = MosquittoBroker(workdir / f"broker-{name}")
    with open(broker.conf, "a") as f:  # the backlog of the drain phase waits in the collector's session
        f.write("max_queued_messages 0\n")
    broker.start()
    try:
        col = CollectorProcess(url, broker.port, workdir)
        time.sleep(3.0)
        nodes = [Node(i, broker.port) for i in range(args.nodes)]
        validate_once(nodes[0])
        time.sleep(2.0)
        print(f"[{name}] steady: {args.nodes} nodes x {args.per_min}/min for {args.seconds:g} s", flush=True)
        t_start = time.monotonic()
        sent = run_steady(nodes, args.per_min, args.seconds, args.seed)
        t_pub = time.monotonic() - t_start
        stored, _ = wait_count(url, len(sent), 120)
        commits, stats, peak = col.stop()
        lat = np.array([(commits[e] - t) * 1000 for e, t in sent.items() if e in commits])
        rss = np.array(col.rss)
        steady = {"events_published": len(sent), "events_stored": stored, "publish_seconds": round(t_pub, 1),
                  "offered_events_per_s": round(len(sent) / t_pub, 2),
                  "committed_events_per_s": round(len(lat) / t_pub, 2),
                  "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                                 "p99": round(float(np.percentile(lat, 99)), 1),
                                 "max": round(float(lat.max()), 1), "n": int(lat.size)},
                  "collector_rss_mb": {"median": round(float(np.median(rss)), 1), "peak": round(peak, 1)},
                  "collector_stats": stats}
        print(f"[{name}] steady: {json.dumps(steady)}", flush=True)

        # drain: the backlog waits in the persistent session while no collector runs
        rng = np.random.default_rng(args.seed + 1)
        for k in range(args.backlog):
            nodes[k % len(nodes)].publish_event(rng)
        time.sleep(5.0)  # let the nodes' clients hand everything to the broker
        before = stored
        col = CollectorProcess(url, broker.port, workdir)
        t0 = time.monotonic()
        n, t1 = wait_count(url, before + args.backlog, 600)
        commits, stats, peak = col.stop()
        times = sorted(commits.values())
        span = times[-1] - times[0] if len(times) > 1 else float("nan")
        drain = {"backlog_events": args.backlog, "stored": n - before, "seconds_to_store": round(t1 - t0, 1),
                 "events_per_s": round(len(times) / span, 1) if span == span else None,
                 "collector_rss_mb": {"peak": round(peak, 1)}, "collector_stats": stats}
        print(f"[{name}] drain: {json.dumps(drain)}", flush=True)
        for node in nodes:
            node.close()
        return {"url": url.split("@")[-1] if "@" in url else "sqlite (temporary file)", "steady": steady,
                "drain": drain}
    finally:
        broker.close()


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        return child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--per-min", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--backlog", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=("postgresql", "sqlite"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "collector.json"))
    args = ap.parse_args()
    import psycopg

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "postgresql"):
            db = f"stopewatch_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_SERVER, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
            try:
                results["postgresql"] = bench_backend("postgresql", PG_SERVER.rsplit("/", 1)[0] + f"/{db}",
                                                      args, workdir)
            finally:
                with psycopg.connect(PG_SERVER, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if args.only in (None, "sqlite"):
            results["sqlite"] = bench_backend("sqlite", f"sqlite:///{workdir / 'surface.db'}", args, workdir)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work), "
                   f"Python {platform.python_version()}, {platform.platform()}",
        "load": {"nodes": args.nodes, "events_per_min_per_node": args.per_min, "seconds": args.seconds,
                 "waveform": f"{len(CHANNELS)} x {SAMPLES} float32 (base64 in JSON)", "backlog": args.backlog},
        "broker": "Mosquitto on loopback (default max_inflight_messages; max_queued_messages 0)",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
