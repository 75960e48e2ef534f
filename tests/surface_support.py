"""Real databases and real node messages for the surface tests.

PostgreSQL: the server on 127.0.0.1:5432 (trust auth) when it answers, with a throwaway database per
test; else a throwaway cluster made with initdb on a free port (as the ``postgres`` user when run as
root); else the test is skipped with the reason. ``STOPEWATCH_TEST_PG`` names another server URL.
"""

from __future__ import annotations

import base64
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from edge.devtools.broker import free_port
from edge.vocabulary import CLASSES
from firmware_bridge.clock import iso_utc

PG_URL = os.environ.get("STOPEWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_answers(url: str) -> str | None:
    """None when a connection works, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install '.[surface]')"
    try:
        psycopg.connect(url, connect_timeout=3, autocommit=True).close()
        return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


class ThrowawayCluster:
    """A PostgreSQL cluster made with initdb in a temporary directory, on a free loopback port."""

    def __init__(self) -> None:
        self.initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))),
                                                       None)
        if self.initdb is None:
            raise FileNotFoundError("no initdb (apt-get install postgresql)")
        self.bindir = Path(self.initdb).parent
        self.dir = Path(tempfile.mkdtemp(prefix="stopewatch-pg-"))
        self.port = free_port()
        self.user = ["runuser", "-u", "postgres", "--"] if getpass.getuser() == "root" else []
        if self.user:
            shutil.chown(self.dir, "postgres")
        subprocess.run([*self.user, str(self.initdb), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)
        subprocess.run([*self.user, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                        str(self.dir / "log"), "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                        "-w", "start"], check=True, capture_output=True)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run([*self.user, str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


_cluster: ThrowawayCluster | None = None


def pg_server() -> str:
    """A PostgreSQL server URL for the tests, or pytest.skip with the reason."""
    global _cluster
    why = _pg_answers(PG_URL)
    if why is None:
        return PG_URL
    if _cluster is None:
        try:
            _cluster = ThrowawayCluster()
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"no PostgreSQL: {PG_URL} says {why!r}, and a throwaway cluster failed ({exc})")
    return _cluster.url


def stop_cluster() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


class ThrowawayDatabase:
    """A fresh database on a server, dropped afterwards."""

    def __init__(self, server_url: str) -> None:
        import psycopg

        self.server_url = server_url
        self.name = f"stopewatch_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = server_url.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --------------------------------------------------------------------------- node messages
def event_message(site: str = "kloof-4", node: str = "l29-east", boot_id: str = "b0000000000000001",
                  seq: int = 1, label: str = "blast", confidence: float = 0.9, entropy: float = 0.2,
                  t0: float = 1_767_225_600.0, historical: bool = False, snr_db: float = 15.0,
                  fs: float = 4000.0, samples: int = 512, channels: tuple[str, ...] = ("Z", "N", "E")) -> dict:
    """A ``stopewatch.event/1`` message as a node publishes it (valid against edge's schema)."""
    trigger = t0 + seq * 10.0
    others = [c for c in CLASSES if c != label]
    rest = (1.0 - confidence) / len(others) if label in CLASSES else (1.0 - confidence) / (len(CLASSES) - 1)
    probs = {c: round(rest, 6) for c in others}
    if label in CLASSES:
        probs[label] = round(confidence, 6)
    else:
        probs[others[0]] = round(confidence, 6)
    return {
        "schema": "stopewatch.event/1", "event_id": f"{site}.{node}.{boot_id}.{seq}", "site": site, "node": node,
        "boot_id": boot_id, "seq": seq, "trigger_time": iso_utc(trigger * 1e9),
        "window": {"start": iso_utc((trigger - 0.064) * 1e9), "fs": fs, "samples": samples, "channels": list(channels)},
        "label": label, "confidence": confidence, "probabilities": probs, "entropy": entropy,
        "model": {"name": "stopewatch-triaxial", "version": "1.0.0", "sha256": "ab" * 32},
        "features": {"ppv": 0.01 * seq, "dominant_hz": 40.0, "duration_s": 0.3, "snr_db": snr_db,
                     "sta_lta_max": 6.0, "energy": 1e-6, "band_energy": {"0-25": 0.5, "25-75": 0.5}, "clipped": False},
        "latency_ms": 5.0, "historical": historical,
    }


def waveform_message(event: dict, seed: int = 0) -> dict:
    """The ``stopewatch.waveform/1`` message of ``event`` (random samples, exact float32)."""
    w = event["window"]
    data = np.random.default_rng(seed).normal(0, 1e-3, (len(w["channels"]), w["samples"])).astype("<f4")
    return {"schema": "stopewatch.waveform/1", "event_id": event["event_id"], "site": event["site"],
            "node": event["node"], "boot_id": event["boot_id"], "start": w["start"], "fs": w["fs"],
            "channels": w["channels"], "samples": w["samples"], "units": "m/s", "dtype": "float32-le",
            "encoding": "base64", "data": base64.b64encode(data.tobytes()).decode()}


def status_message(state: str, boot_id: str = "b0000000000000001", ts: float | None = None) -> dict:
    return {"state": state, "ts": iso_utc((ts if ts is not None else time.time()) * 1e9), "boot_id": boot_id,
            "version": "0.1.0", "model": {"name": "stopewatch-triaxial", "sha256": "ab" * 32}}


def health_message(boot_id: str = "b0000000000000001", ts: float | None = None, **over) -> dict:
    m = {"ts": iso_utc((ts if ts is not None else time.time()) * 1e9), "boot_id": boot_id, "uptime_s": 3600.0,
         "serial": "connected", "samples_in": 1000, "frames_ok": 990, "crc_errors": 10, "gaps": 2,
         "samples_missed": 40, "backlog": 3, "realtime_factor": 25.0,
         "board": {"temperature_c": 31.5, "supply_v": 12.1}}
    m.update(over)
    return m


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# --------------------------------------------------------------------------- the review page
def ingest_messages(store, events: list[dict], waveforms: bool = False, health=(), status=()) -> None:
    """Store node messages through the collector's own parsers and ``Store.ingest`` (one batch).

    ``health`` and ``status`` are (site, node, message) triples."""
    import json

    from surface.records import parse_event, parse_health, parse_status, parse_waveform

    items = []
    for i, m in enumerate(events):
        items.append(parse_event(json.dumps(m).encode(), m["site"], m["node"]))
        if waveforms:
            items.append(parse_waveform(json.dumps(waveform_message(m, seed=i)).encode(), m["site"], m["node"]))
    items += [parse_health(json.dumps(h).encode(), site, node) for site, node, h in health]
    items += [parse_status(json.dumps(s).encode(), site, node) for site, node, s in status]
    store.ingest(items)


def web_opener():
    """A urllib opener with a cookie jar (the page's session cookie)."""
    import http.cookiejar
    import urllib.request

    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def web_login(opener, base: str, username: str, password: str) -> None:
    """Log in through the page's form (its CSRF token included); AssertionError if refused."""
    import re
    import urllib.parse

    page = opener.open(base + "/login", timeout=10).read().decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": username, "password": password, "csrf_token": token}).encode()
    resp = opener.open(base + "/login", data=data, timeout=30)
    assert not resp.geturl().endswith("/login"), "login refused"
