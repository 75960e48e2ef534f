"""Memory of the MQTT publisher when a broker sends an oversized packet, with and without the inbound limit.

A fake broker (tests/faults.py) answers CONNECT and then announces a PUBLISH of 256 MB and sends
``--send-mb`` of it. Each run is a fresh process with one :class:`edge.gateway.mqtt.Publisher`:
``mqtt.max_inbound_kb`` at its default (64 kB), then at the MQTT maximum (no limit in effect). The growth
of resident memory over the first ``--seconds`` is recorded (peak minus the RSS before connecting).

    python bench/bench_inbound_limit.py [--send-mb 96] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "inbound_limit.json"

_CHILD = """
import sys, time
sys.path[:0] = [{root!r}, {tests!r}]
from faults import FakeBroker, oversized_publish
from edge.gateway.config import parse_config
from edge.gateway.health import rss_mb
from edge.gateway.mqtt import Publisher
broker = FakeBroker(after_connack=oversized_publish(2**28 - 1, {send}))
cfg = parse_config({{"node": {{"state_dir": {state!r}}}, "mqtt": {{"port": broker.port, "max_inbound_kb": {kb}}}}}, "b")
before = rss_mb()
pub = Publisher(cfg, "bench", "0", {{}})
pub.start()
peak, t0 = 0.0, time.monotonic()
while time.monotonic() - t0 < {seconds}:
    peak = max(peak, rss_mb() - before)
    time.sleep(0.05)
print(peak, pub.stats()["inbound_refused"], pub.stats()["connects"])
pub.stop(0)
broker.close()
"""


def run(kb: int, send_mb: int, seconds: float) -> dict:
    """One publisher process against the fake broker; its peak RSS growth and refused connections."""
    with tempfile.TemporaryDirectory() as tmp:
        code = _CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), send=send_mb * 2**20, state=tmp, kb=kb,
                             seconds=seconds)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise SystemExit(f"bench child failed: {out.stderr[-2000:]}")
    peak, refused, connects = out.stdout.split()[-3:]
    return {"max_inbound_kb": kb, "rss_growth_mb": round(float(peak), 1), "inbound_refused": int(refused),
            "connects": int(connects)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--send-mb", type=int, default=96, help="bytes of the oversized packet actually sent (MB)")
    ap.add_argument("--seconds", type=float, default=15.0, help="how long each run samples its RSS")
    args = ap.parse_args()
    runs = [run(64, args.send_mb, args.seconds), run(262_144, args.send_mb, args.seconds)]
    result = {"announced_bytes": 2**28 - 1, "sent_mb": args.send_mb, "seconds": args.seconds, "runs": runs,
              "machine": platform.machine(), "python": platform.python_version()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    for r in runs:
        print(f"max_inbound_kb {r['max_inbound_kb']:>7}: RSS +{r['rss_growth_mb']:.1f} MB, "
              f"{r['inbound_refused']} connections refused the packet, {r['connects']} connects")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
