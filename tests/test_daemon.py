"""The gateway daemon end to end: simulated board on a real pty -> `stopewatch run` -> real Mosquitto.

Each test runs the real daemon as a subprocess, the board simulator (synthetic physics, real
frames) on a pseudo-terminal, and a real broker on a free port. Waits are on conditions with
generous timeouts; the outage test keeps the issue's own figures (30 s, 50 events).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from field_support import model_variant, shipped_model
from jsonschema import Draft202012Validator
from mqtt_broker import Collector, read_retained, wait_until

from edge.gateway.messages import decode_waveform
from edge.gateway.model import Classifier
from firmware_bridge.clock import parse_iso_utc
from firmware_bridge.simulator import BoardSimulator, PtyPort
from training.synthetic.stream import StreamSynth

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "stopewatch/v1/testmine/gw1"
SHORT = ["microseismic", "blast", "electrical"]  # short events, so many fit in a test's minute
T = 90.0




class Board:
    """The board simulator streaming to a pty in a thread; ``stop()`` ends it."""

    def __init__(self, tmp: Path, speed: float, rate_per_min: float, seed: int = 3, families=SHORT):
        self.pty = PtyPort()
        self.stop_event = threading.Event()
        self.truth = tmp / f"truth-{seed}.jsonl"
        source = StreamSynth(fs=4000.0, channels=3, site="za-deep-gold", seed=seed, families=families,
                             snr_db=(15.0, 30.0), rate_per_min=rate_per_min)
        self.sim = BoardSimulator(source, fs=4000.0, channels=3, fmt="int24", scale=1e9, timestamps=True,
                                  seed=seed)
        self.thread = threading.Thread(target=self.sim.run, args=(self.pty,), daemon=True,
                                       kwargs={"seconds": None, "speed": speed, "truth": self.truth,
                                               "stop": self.stop_event})
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.pty.stop.set()  # a write blocked on a full pty (nobody reading) returns
        self.thread.join(10)
        self.pty.close()


def write_config(tmp: Path, board: Board, port: int, waveforms: bool = False) -> Path:
    cfg = tmp / "stopewatch.toml"
    cfg.write_text(f"""
[node]
site = "testmine"
node = "gw1"
state_dir = "{tmp / 'state'}"
[board]
port = "{board.pty.path}"
counts_per_unit = 1e9
[model]
path = "{shipped_model()}"
[mqtt]
port = {port}
publish_waveforms = {str(waveforms).lower()}
[health]
interval_s = 2.0
""")
    return cfg


class Daemon:
    def __init__(self, config: Path, tmp: Path, name: str = "daemon", env: dict | None = None):
        self.log = tmp / f"{name}.log"
        self._f = open(self.log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                                     stdout=self._f, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=dict(os.environ, **(env or {})))

    def signal(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self._f.close()
        return code

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        """Kill the daemon if it still runs (a test's clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def outbox_depth(tmp: Path) -> int:
    path = tmp / "state" / "outbox.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'event'").fetchone()[0]
        except sqlite3.OperationalError:  # the daemon has created the file but not yet its table
            return 0


def events(col: Collector) -> list[dict]:
    """Event messages by first arrival (at-least-once redelivery dropped)."""
    return col.first_payloads(f"{TOPIC}/event")


def test_events_arrive_with_the_spec_fields_and_validate(mqtt_broker, tmp_path, cleanup):
    board = Board(tmp_path, speed=3.0, rate_per_min=30)
    cleanup(board)
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    cleanup(col)
    daemon = Daemon(write_config(tmp_path, board, mqtt_broker.port, waveforms=True), tmp_path)
    cleanup(daemon)
    assert col.wait_for(lambda c: len(events(c)) >= 4, T), daemon.text()
    validator = Draft202012Validator(json.loads((ROOT / "edge/schemas/event.schema.json").read_text()))
    got = events(col)
    for msg in got:
        validator.validate(msg)
        assert msg["site"] == "testmine" and msg["node"] == "gw1"
        assert msg["window"]["fs"] == 4000.0 and msg["window"]["channels"] == ["Z", "N", "E"]
        assert msg["model"]["sha256"] == json.loads((shipped_model() / "model_card.json").read_text())["sha256"]
        assert abs(sum(msg["probabilities"].values()) - 1.0) < 1e-3
    assert [m["seq"] for m in got] == list(range(1, len(got) + 1))
    assert len({m["event_id"] for m in got}) == len(got) and len({m["boot_id"] for m in got}) == 1
    # Live once connected: only events queued before the first connection (a loaded machine) are historical.
    flags = [m["historical"] for m in got]
    assert flags == sorted(flags, reverse=True) and not flags[-1], flags
    status = read_retained(mqtt_broker.port, f"{TOPIC}/status")
    assert status["state"] == "online" and status["boot_id"] == got[0]["boot_id"]
    assert col.wait_for(lambda c: c.payloads(f"{TOPIC}/health"), T)
    health = col.payloads(f"{TOPIC}/health")[-1]
    assert health["samples_in"] > 0 and health["frames_ok"] > 0 and health["events"] >= 1
    # The board's status frames reach health: the simulator reports 35 +- 0.5 degC, 5.02 V, its gain per channel.
    board_status = health["board"]
    assert abs(board_status["temperature_c"] - 35.0) <= 0.6 and board_status["supply_v"] == 5.02
    assert len(board_status["gain"]) == 3 and len(board_status["clipped"]) == 3
    # What the gateway classified is what it published: its waveform, classified again by the same model
    # (the board runs at the model's rate, so the window is exactly the model's input), gives the same answer.
    assert col.wait_for(lambda c: len(c.payloads(f"{TOPIC}/waveform")) >= len(got), T)
    waves = {w["event_id"]: w for w in col.payloads(f"{TOPIC}/waveform")}
    clf = Classifier(shipped_model())
    for msg in got:
        again = clf.classify(decode_waveform(waves[msg["event_id"]])[None], msg["window"]["fs"])[0]
        assert again.label == msg["label"] and abs(again.confidence - msg["confidence"]) < 1e-5, msg["seq"]
    # And it is mostly what was injected (a sanity check of the whole chain, not a model benchmark).
    truth = [json.loads(line) for line in board.truth.read_text().splitlines()]
    onsets = [(parse_iso_utc(t["time"]), t["label"]) for t in truth]
    matched = []
    for msg in got:  # each event to the injected one whose onset is within 0.5 s of its trigger
        at = parse_iso_utc(msg["trigger_time"])
        near = [label for ns, label in onsets if abs(ns - at) < 5e8]
        matched.append(bool(near) and near[0] == msg["label"])
    assert sum(matched) >= len(got) / 2, list(zip([m["label"] for m in got], matched, strict=True))


def test_broker_outage_of_30_s_with_50_events_loses_none(make_broker, tmp_path, cleanup):
    broker = make_broker(persistence=True)
    col = Collector(broker.port, f"{TOPIC}/#", persistent=True, client_id="central-archive")
    cleanup(col)
    board = Board(tmp_path, speed=8.0, rate_per_min=60, seed=4)
    cleanup(board)
    daemon = Daemon(write_config(tmp_path, board, broker.port), tmp_path)
    cleanup(daemon)
    assert col.wait_for(lambda c: len(events(c)) >= 1, T), daemon.text()
    broker.stop()
    down = time.monotonic()
    # The board keeps streaming: at least 50 events are classified and queued on disk while it is down.
    assert wait_until(lambda: outbox_depth(tmp_path) >= 50 and time.monotonic() - down >= 30, 4 * T), \
        f"outbox depth {outbox_depth(tmp_path)}; {daemon.text()[-2000:]}"
    board.stop()
    queued = outbox_depth(tmp_path)
    broker.start()
    assert wait_until(lambda: outbox_depth(tmp_path) == 0, T), daemon.text()[-2000:]
    assert daemon.signal(signal.SIGTERM) == 0
    got = events(col)
    assert [m["seq"] for m in got] == list(range(1, len(got) + 1))  # in order, no gap
    # Every queued event went out from the backlog, marked historical (one sent live just before the outage
    # whose PUBACK was lost arrives first live, then again as historical: count copies, not first arrivals).
    resent = {m["event_id"] for m in col.payloads(f"{TOPIC}/event") if m["historical"]}
    assert len(resent) >= queued >= 50
    # The journal has a line per event, rate-limited: the lines held back are counted, none is lost silently.
    log_lines = daemon.text().splitlines()
    lines = [ln for ln in log_lines if " event " in ln and ": " in ln and " at " in ln]
    stop_line = [ln for ln in log_lines if "stopped after" in ln]
    held = sum(int(ln.split("(+")[1].split()[0]) for ln in lines + stop_line if "(+" in ln)
    assert lines and stop_line and len(lines) + held == len(got)


def test_sigkill_with_a_backlog_then_restart_delivers_it(make_broker, tmp_path, cleanup):
    broker = make_broker(persistence=True)
    broker.stop()  # no broker at all: the daemon must start, classify and queue to disk
    board = Board(tmp_path, speed=4.0, rate_per_min=60, seed=5)
    cleanup(board)
    config = write_config(tmp_path, board, broker.port)
    first = Daemon(config, tmp_path, "first")
    cleanup(first)
    assert wait_until(lambda: outbox_depth(tmp_path) >= 5, 2 * T), first.text()
    first.proc.kill()  # SIGKILL: no chance to flush anything
    first.proc.wait()
    backlog = outbox_depth(tmp_path)
    board.stop()
    broker.start()
    col = Collector(broker.port, f"{TOPIC}/#")
    cleanup(col)
    board2 = Board(tmp_path, speed=1.0, rate_per_min=0.1, seed=6)
    cleanup(board2)
    second = Daemon(write_config(tmp_path, board2, broker.port), tmp_path, "second")
    cleanup(second)
    assert col.wait_for(lambda c: len(events(c)) >= backlog, T), second.text()
    got = events(col)[:backlog]
    assert all(m["historical"] for m in got)
    assert [m["seq"] for m in got] == list(range(1, backlog + 1))  # the first boot's events, in order
    assert len({m["boot_id"] for m in got}) == 1
    assert second.signal(signal.SIGTERM) == 0


def test_sigterm_publishes_stopped_and_loses_nothing(mqtt_broker, tmp_path, cleanup):
    board = Board(tmp_path, speed=4.0, rate_per_min=60, seed=7)
    cleanup(board)
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    cleanup(col)
    daemon = Daemon(write_config(tmp_path, board, mqtt_broker.port), tmp_path)
    cleanup(daemon)
    assert col.wait_for(lambda c: len(events(c)) >= 3, T), daemon.text()
    assert daemon.signal(signal.SIGTERM) == 0
    assert outbox_depth(tmp_path) == 0
    status = read_retained(mqtt_broker.port, f"{TOPIC}/status")
    assert status["state"] == "stopped"
    got = events(col)
    assert [m["seq"] for m in got] == list(range(1, len(got) + 1))
    assert "Traceback" not in daemon.text()


def test_sighup_with_a_broken_model_keeps_the_running_one(mqtt_broker, tmp_path, cleanup):
    board = Board(tmp_path, speed=3.0, rate_per_min=30, seed=8)
    cleanup(board)
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    cleanup(col)
    config = write_config(tmp_path, board, mqtt_broker.port)
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    assert col.wait_for(lambda c: len(events(c)) >= 1, T), daemon.text()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.tflite").write_bytes(b"not a model")
    (broken / "model_card.json").write_text((shipped_model() / "model_card.json").read_text())
    config.write_text(config.read_text().replace(f'path = "{shipped_model()}"', f'path = "{broken}"'))
    n = len(events(col))
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload refused" in daemon.text(), T)
    assert col.wait_for(lambda c: len(events(c)) >= n + 2, T)  # still classifying with the old model
    assert daemon.proc.poll() is None


def test_a_model_for_another_board_rate_is_refused_until_the_right_one_is_loaded(mqtt_broker, tmp_path, cleanup):
    """A 250-1000 Hz model on a 4 kHz board: one ERROR line, nothing classified, the refusal in health;
    the daemon keeps running, and a SIGHUP to a model that serves the board starts classification."""
    board = Board(tmp_path, speed=3.0, rate_per_min=30, seed=10)
    cleanup(board)
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    cleanup(col)
    low = model_variant(shipped_model(), tmp_path / "low", board_rates_hz=[250, 1000], name="low-variant")
    config = write_config(tmp_path, board, mqtt_broker.port)
    config.write_text(config.read_text().replace(f'path = "{shipped_model()}"', f'path = "{low}"'))
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    refused = lambda c: any(h.get("model_refused") for h in c.payloads(f"{TOPIC}/health"))  # noqa: E731
    assert col.wait_for(refused, T), daemon.text()
    health = [h for h in col.payloads(f"{TOPIC}/health") if h.get("model_refused")][-1]
    assert "4000 Hz" in health["model_refused"] and "250-1000 Hz" in health["model_refused"]
    assert col.wait_for(lambda c: any(h.get("samples_refused", 0) > 8000 for h in c.payloads(f"{TOPIC}/health")), T)
    errors = [line for line in daemon.text().splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "4000 Hz" in errors[0], daemon.text()
    assert events(col) == [] and daemon.proc.poll() is None
    config.write_text(config.read_text().replace(f'path = "{low}"', f'path = "{shipped_model()}"'))
    daemon.proc.send_signal(signal.SIGHUP)
    assert col.wait_for(lambda c: len(events(c)) >= 2, T), daemon.text()
    assert "serves the board at 4000 Hz: classifying" in daemon.text()


def test_gateway_commands_never_load_tensorflow(tmp_path):
    stream = tmp_path / "s.npz"
    subprocess.run([sys.executable, "-m", "edge.cli", "dataset", "generate", "--stream", "20", "--out",
                    str(stream), "--seed", "1"], check=True, capture_output=True)
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\npath = "{shipped_model()}"\n')
    events_out = tmp_path / "e.jsonl"
    code = f"""
import sys
from edge.cli import main
assert main(["replay", "--config", {str(config)!r}, {str(stream)!r}, "--events-out", {str(events_out)!r}]) == 0
import edge.gateway.daemon, edge.gateway.mqtt, edge.gateway.archive, edge.gateway.metrics, edge.field.stationxml
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "training"))
assert not [m for m in loaded if not m.startswith("training.synthetic")] and not any(
    m.startswith(("tensorflow", "keras", "tf_keras")) for m in loaded), loaded
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
    validator = Draft202012Validator(json.loads((ROOT / "edge/schemas/event.schema.json").read_text()))
    for line in (tmp_path / "e.jsonl").read_text().splitlines():
        validator.validate(json.loads(line))


def test_systemd_notify_ready_watchdog_and_stopping(mqtt_broker, tmp_path, cleanup):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(T)
    board = Board(tmp_path, speed=1.0, rate_per_min=6, seed=9)
    cleanup(board)
    daemon = Daemon(write_config(tmp_path, board, mqtt_broker.port), tmp_path,
                    env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"})
    cleanup(daemon)
    seen: list[str] = []
    while sum("WATCHDOG=1" in m for m in seen) < 3:  # READY first, then a keep-alive every second
        seen.append(sock.recv(4096).decode())
    ready = [i for i, m in enumerate(seen) if "READY=1" in m]
    assert len(ready) == 1 and "STATUS=" in seen[ready[0]], seen
    # The serial thread starts just before READY and may say its state first: status lines only, no keep-alive.
    assert all(m.startswith("STATUS=") and "WATCHDOG=1" not in m for m in seen[:ready[0]]), seen
    assert daemon.signal(signal.SIGTERM) == 0
    rest = []
    with contextlib.suppress(TimeoutError):
        sock.settimeout(2)
        while True:
            rest.append(sock.recv(4096).decode())
    assert any("STOPPING=1" in m for m in rest)
