"""``stopewatch demo``: the whole chain on one machine, with nothing to configure.

A simulated ADC board streams synthetic mine signals (with injected events whose
truth is known) over a pseudo-terminal; the real daemon reads it, classifies and
publishes to a local MQTT broker (Mosquitto, or a pure-Python broker where it is
not installed); a subscriber prints each event as it arrives and, at the end,
scores the run against the injected ground truth.

With ``--surface`` the node also publishes its waveforms, and the surface collector archives everything
(SQLite in the demo's temporary directory) and serves the review page with a demo login; the demo then
runs until Ctrl-C (or ``--seconds``).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.devtools.scoring import score_events
from edge.errors import UserError
from edge.topics import DEFAULT_PREFIX, NodeTopics
from firmware_bridge.clock import parse_utc

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "triaxial"
FS = 4000.0
COUNTS_PER_UNIT = 1.0e9  # the simulated board's sensitivity; the daemon's config says the same
LOG_TAIL = 20  # lines of the daemon's log shown when it failed
ROW = "{:<12} {:>4}  {:<13} {:>5}  {:>9}  {:>7}  {:>6}  {:>8}"


def _seconds(iso: str) -> float:
    return parse_utc(iso).timestamp()


DEMO_NODE = NodeTopics(DEFAULT_PREFIX, "demo-mine", "gateway-1")


def _config(path: Path, port: str, broker_port: int, model: Path, state: Path, waveforms: bool = False) -> None:
    path.write_text(f"""[node]
prefix = "{DEMO_NODE.prefix}"
site = "{DEMO_NODE.site}"
node = "{DEMO_NODE.node}"
state_dir = "{state}"

[board]
port = "{port}"
counts_per_unit = {COUNTS_PER_UNIT}

[model]
path = "{model}"

[mqtt]
host = "127.0.0.1"
port = {broker_port}
publish_waveforms = {"true" if waveforms else "false"}

[health]
interval_s = 10.0

[log]
level = "warning"
""")


class Subscriber:
    """Prints events and status as they arrive and keeps them for scoring."""

    def __init__(self, port: int, topics: NodeTopics):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics, self.events, self.status, self.health = topics, [], [], []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="stopewatch-demo-viewer")
        self.client.on_connect = lambda c, *_: c.subscribe(topics.all, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            if msg.topic == self.topics.event:
                self.events.append(body)
                f = body["features"]
                print(ROW.format(body["trigger_time"][11:23], body["seq"], body["label"], f"{body['confidence']:.2f}",
                                 f"{f['ppv']:.2e}", f"{f['dominant_hz']:.0f}", f"{f['snr_db']:.1f}",
                                 f"{body['latency_ms']:.1f}"), flush=True)
            elif msg.topic == self.topics.status:
                self.status.append(body)
                print(f"-- node status: {body['state']} (model {body['model']['name']})", flush=True)
            elif msg.topic == self.topics.health:
                self.health.append(body)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _print_score(truth: list[dict], events: list[dict]) -> dict:
    t0 = min([_seconds(t["time"]) for t in truth] + [_seconds(e["trigger_time"]) for e in events] or [0.0])
    onsets = np.array([round((_seconds(t["time"]) - t0) * FS) for t in truth], dtype=np.int64)
    duration = max([o / FS for o in onsets] + [0.0]) + 2.0
    score = score_events(onsets, np.array([t["label"] for t in truth]), np.array([t["snr_db"] for t in truth]),
                         [round((_seconds(e["trigger_time"]) - t0) * FS) for e in events],
                         [e["label"] for e in events], FS, duration)
    print(f"\ninjected {score['events']} events; detected {score['detected']} "
          f"(recall {score['recall']}, at SNR >= 6 dB {score['recall_snr_ge_6db']}); "
          f"{score['false_triggers']} false triggers; classification macro-F1 {score['classification_macro_f1']}")
    print("confusion (injected -> published label):")
    for label, row in score["confusion"].items():
        print(f"  {label:<13} " + ", ".join(f"{k} {v}" for k, v in sorted(row.items())))
    return score


def demo_source(site: str, seed: int, events_per_min: float):
    """The simulated board's signal: every event family in shuffled rounds at regular times, so that
    a one-minute run shows each class (Poisson times and independent draws often leave one out)."""
    from training.synthetic.stream import StreamSynth  # the benchmark's waveform physics (numpy/scipy)

    return StreamSynth(fs=FS, channels=3, site=site, seed=seed, snr_db=(3.0, 30.0), rate_per_min=events_per_min,
                       cycle=True, regular=True)


def _check_site(site: str) -> None:
    from training.synthetic.sites import SITES, WIDE_SITES

    if site not in SITES and site not in WIDE_SITES:
        raise UserError(f"--site = {site!r}; allowed: {', '.join((*SITES, *WIDE_SITES))}")


def _print_classes(truth: list[dict], events: list[dict]) -> None:
    """One line per class of the vocabulary, those never seen included: injected and published counts."""
    from edge.vocabulary import CLASSES, UNKNOWN

    print("per class (injected / published):")
    for label in (*CLASSES, UNKNOWN):
        injected = sum(t["label"] == label for t in truth)
        published = sum(e["label"] == label for e in events)
        print(f"  {label:<13} {injected:>3} / {published:<3}"
              + ("  (the background: shown by triggers on noise)" if label == "noise" else ""))


# Starts something more on the demo's broker (the CLI passes the surface's collector and review page, which
# edge does not import): called with the demo's ExitStack, its temporary directory and the broker's port.
BrokerHook = Callable[[contextlib.ExitStack, Path, int], None]


def run_demo(seconds: float | None = None, model: str | None = None, site: str = "za-deep-gold", seed: int = 1,
             events_per_min: float = 12.0, surface: BrokerHook | None = None) -> int:
    """Run the demo for ``seconds`` (Ctrl-C ends it early) and print the score; returns the exit code.

    ``surface`` starts the collector and the review page on the demo's broker, and the node then publishes
    its waveforms. ``seconds`` None is 60 s, or with ``surface`` until Ctrl-C. Every exit path (bad arguments, Ctrl-C at
    any moment, an error) stops what was started (broker, board, daemon, collector and page) and removes
    the temporary directory; when the daemon failed, the end of its log is printed first."""
    if seconds is None:
        seconds = math.inf if surface else 60.0
    if not (seconds > 0 and (math.isfinite(seconds) or surface is not None)):
        raise UserError(f"--seconds = {seconds!r}; expected a positive number of seconds")
    if not (math.isfinite(events_per_min) and events_per_min > 0):
        raise UserError(f"--events-per-min = {events_per_min!r}; expected a positive rate")
    model_dir = Path(model) if model else DEFAULT_MODEL
    if not (model_dir / "model_card.json").is_file():
        raise UserError(f"--model {model_dir}: no model_card.json there; train one with 'make models' "
                        "or pass --model DIR")
    _check_site(site)  # all checks before anything is started: a refusal leaves nothing behind
    work = Path(tempfile.mkdtemp(prefix="stopewatch-demo-"))
    try:
        with contextlib.ExitStack() as stack:
            code, truth, events, board_stopped = _run(stack, work, seconds, model_dir, site, seed, events_per_min,
                                                      surface)
        if code != 0:  # the daemon failed: its last words, before its directory goes
            log = (work / "daemon.log").read_text(errors="replace").splitlines()[-LOG_TAIL:]
            print("daemon log (last lines):\n" + "\n".join(f"  {line}" for line in log))
    finally:
        shutil.rmtree(work, ignore_errors=True)  # every exit path: nothing left in the temp directory
    late = [t for t in truth if _seconds(t["time"]) > board_stopped - 1.5]
    truth = [t for t in truth if t not in late]
    if late:
        print(f"({len(late)} event(s) injected in the last 1.5 s before the board stopped are not scored)")
    events = [e for e in events if _seconds(e["trigger_time"]) <= board_stopped - 1.5]
    _print_score(truth, events)
    _print_classes(truth, events)
    return code


def _run(stack: contextlib.ExitStack, work: Path, seconds: float, model_dir: Path, site: str, seed: int,
         events_per_min: float, surface: BrokerHook | None = None) -> tuple[int, list[dict], list[dict], float]:
    """Start broker, board, daemon and viewer (each registered on ``stack`` to be stopped), run, stop.
    With ``surface`` also what it starts on the broker. Returns (exit code, injected truth,
    received events, when the board stopped)."""
    from edge.devtools.broker import start_local_broker
    from firmware_bridge.simulator import BoardSimulator, PtyPort

    try:
        broker = start_local_broker(work / "broker")
    except RuntimeError as exc:
        raise UserError(f"demo: {exc}") from None
    stack.callback(broker.stop)
    print(f"broker: {broker.kind} on 127.0.0.1:{broker.port}")
    if surface is not None:
        surface(stack, work, broker.port)
    stop = threading.Event()
    pty = PtyPort()
    stack.callback(pty.close)
    truth_path = work / "truth.jsonl"
    source = demo_source(site, seed, events_per_min)
    sim = BoardSimulator(source, fs=FS, channels=3, fmt="int24", scale=COUNTS_PER_UNIT, timestamps=True, seed=seed)
    board = threading.Thread(target=sim.run, args=(pty,), daemon=True,
                             kwargs={"seconds": None, "speed": 1.0, "truth": truth_path, "stop": stop})
    board.start()
    stack.callback(board.join, 5)
    stack.callback(pty.stop.set)  # a write waiting for a reader that is gone returns, then the join ends
    stack.callback(stop.set)
    print(f"board: simulated {site}, 3 channels x {FS:g} Hz int24 on {pty.path}")
    config = work / "stopewatch.toml"
    _config(config, pty.path, broker.port, model_dir.resolve(), work / "state", waveforms=surface is not None)
    log = stack.enter_context(open(work / "daemon.log", "w"))  # noqa: SIM115 (closed by the stack)
    daemon = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                              stderr=log, stdout=log)
    stack.callback(_stop_daemon, daemon)
    viewer = Subscriber(broker.port, DEMO_NODE)
    stack.callback(viewer.close)
    print(f"daemon: pid {daemon.pid}; " + ("running until Ctrl-C\n" if math.isinf(seconds)
                                          else f"running {seconds:g} s (Ctrl-C to end)\n"))
    print(ROW.format("trigger UTC", "seq", "label", "conf", "PPV", "dom Hz", "SNR dB", "lat ms"))
    code = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                print(f"daemon exited with {daemon.returncode} (the end of its log follows the score)")
                code = 1
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("\n(interrupted)")
    stop.set()
    pty.stop.set()
    board.join(5)
    board_stopped = time.time()
    time.sleep(1.5)  # the last windows close, then the daemon drains and says 'stopped'
    _stop_daemon(daemon)
    time.sleep(0.5)  # the 'stopped' status reaches the viewer
    truth = [json.loads(line) for line in truth_path.read_text().splitlines()] if truth_path.exists() else []
    print(f"final node status: {viewer.status[-1]['state'] if viewer.status else 'none seen'}")
    return code, truth, list(viewer.events), board_stopped


def _stop_daemon(daemon: subprocess.Popen) -> None:
    """SIGTERM (the daemon drains and says 'stopped'), then SIGKILL if it does not end within 20 s."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
