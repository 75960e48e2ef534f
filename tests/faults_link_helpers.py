"""Parts of the board-link fault tests (tests/test_faults_link.py): a pty board that can be made hostile,
the real daemon as a subprocess (optionally with a worker fault armed, tests/fault_hooks), and the ledger
of events classified, stored, delivered and lost."""

from __future__ import annotations

import json
import os
import queue
import re
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from field_support import shipped_model
from mqtt_broker import Collector

from firmware_bridge.faults import FaultConfig
from firmware_bridge.simulator import BoardSimulator, PtyPort
from training.synthetic.stream import StreamSynth

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "fault_hooks"
TOPIC = "stopewatch/v1/testmine/gw1"
SHORT = ["microseismic", "blast", "electrical"]  # short events: many fit in a test's minute


class HostilePty(PtyPort):
    """A pty board whose stream can carry extra bytes (nonsense frames, a boot banner) between frames."""

    def __init__(self, link: Path | None = None) -> None:
        super().__init__(link)
        self.extra: queue.Queue[bytes] = queue.Queue()

    def write(self, data: bytes) -> None:
        while True:
            try:
                super().write(self.extra.get_nowait())
            except queue.Empty:
                break
        super().write(data)


class NanFrames:
    """A signal source whose every ``every``-th block (one frame) is NaN: a board's float32 fault."""

    def __init__(self, source, every: int):
        self.source, self.every, self.blocks, self.injected = source, every, 0, 0

    def next_block(self, n: int):
        x, events = self.source.next_block(n)
        self.blocks += 1
        if self.blocks % self.every == 0:
            x = np.full_like(x, np.nan)
            self.injected += 1
        return x, events


class Board:
    """The board simulator (the benchmark's physics) streaming to a :class:`HostilePty` in a thread, from
    :meth:`start` on (pyserial flushes what waits in the pty when the daemon opens it: start the board after)."""

    def __init__(self, tmp: Path, *, fs: float = 4000.0, speed: float = 2.0, rate_per_min: float = 20.0,
                 seed: int = 3, fmt: str = "int24", faults: FaultConfig | None = None, text: bool = False,
                 samples_per_frame: int | None = None, nan_every: int = 0, snr_db=(15.0, 30.0),
                 families=SHORT, link: bool = False, scale: float = 1e9, banner: bytes = b""):
        self.pty = HostilePty(tmp / f"ttyBOARD{seed}" if link else None)
        if banner:
            self.pty.extra.put(banner)  # what the board prints at power-up, before its first samples
        self.stop_event = threading.Event()
        self.truth = tmp / f"truth-{seed}.jsonl"
        self.truth.unlink(missing_ok=True)
        source = StreamSynth(fs=fs, channels=3, site="za-deep-gold", seed=seed, families=families,
                             snr_db=snr_db, rate_per_min=rate_per_min)
        self.source = NanFrames(source, nan_every) if nan_every else source
        self.sim = BoardSimulator(self.source, fs=fs, channels=3, fmt=fmt, scale=scale, timestamps=True,
                                  seed=seed, faults=faults, text=text, samples_per_frame=samples_per_frame)
        self.report = None
        self.thread = threading.Thread(target=self._run, args=(speed,), daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self, speed: float) -> None:
        self.report = self.sim.run(self.pty, seconds=None, speed=speed, truth=self.truth, stop=self.stop_event,
                                   keep_log=True)

    def unplugged(self) -> list[tuple[int, int]]:
        """Sample spans [start, stop) the simulated USB unplugs took away (after :meth:`stop`)."""
        spans: list[tuple[int, int]] = []
        for rec in self.report.log if self.report else []:
            if rec.kind == "samples" and not rec.delivered:
                if spans and spans[-1][1] == rec.first_sample:
                    spans[-1] = (spans[-1][0], rec.first_sample + rec.n)
                else:
                    spans.append((rec.first_sample, rec.first_sample + rec.n))
        return spans

    def injected(self) -> list[dict]:
        """The events the board has sent so far (ground truth)."""
        return [json.loads(line) for line in self.truth.read_text().splitlines()] if self.truth.exists() else []

    def stop(self) -> None:
        self.stop_event.set()
        self.pty.stop.set()  # a write blocked on a full pty (nobody reading) returns
        if self.thread.ident is not None:
            self.thread.join(10)
        self.pty.close()


def write_config(tmp: Path, port: str, broker_port: int, **sections: dict) -> Path:
    """A daemon config for the test node; ``sections`` add or override keys, e.g. board={"text_mode": True}."""
    base = {"node": {"site": "testmine", "node": "gw1", "state_dir": str(tmp / "state")},
            "board": {"port": port, "counts_per_unit": 1e9}, "model": {"path": str(shipped_model())},
            "mqtt": {"port": broker_port}, "health": {"interval_s": 2.0}}
    for name, keys in sections.items():
        base.setdefault(name, {}).update(keys)
    lines = []
    for name, keys in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    cfg = tmp / "stopewatch.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


class Daemon:
    """``python -m edge.cli run`` as a subprocess; ``fault=(worker, trigger file)`` arms a worker fault."""

    def __init__(self, config: Path, tmp: Path, name: str = "daemon", fault: tuple[str, Path] | None = None):
        self.log = tmp / f"{name}.log"
        self._f = open(self.log, "w")  # noqa: SIM115 - closed in wait()
        env = dict(os.environ)
        if fault is not None:
            env["STOPEWATCH_TEST_FAULT"] = f"{fault[0]}:{fault[1]}"
            env["PYTHONPATH"] = os.pathsep.join([str(HOOKS), str(ROOT), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                                     stdout=self._f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def wait(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        self._f.close()
        return code

    def stop(self) -> int:
        self.proc.terminate()
        return self.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._f.close()

    def text(self) -> str:
        return self.log.read_text()

    def opened(self, board: Board, timeout: float = 60.0) -> None:
        """Wait until this daemon has opened the board's port, then start the board."""
        from mqtt_broker import wait_until

        assert wait_until(lambda: f"serial {board.pty.path} connected" in self.text(), timeout), self.text()
        board.start()

    def classified(self) -> int | None:
        """Events this run handed to the outbox, from its stop line (None while it runs)."""
        found = re.findall(r"stopped after (\d+) events", self.text())
        return int(found[-1]) if found else None


def outbox_rows(tmp: Path, table: str = "outbox", kind: str | None = "event") -> int:
    path = tmp / "state" / "outbox.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            where = " WHERE kind = ?" if kind else ""
            return db.execute(f"SELECT COUNT(*) FROM {table}{where}", (kind,) if kind else ()).fetchone()[0]
        except sqlite3.OperationalError:  # no such table (yet)
            return 0


def events(col: Collector) -> list[dict]:
    """Event messages by first arrival (at-least-once redelivery dropped)."""
    return col.first_payloads(f"{TOPIC}/event")


def healths(col: Collector) -> list[dict]:
    return col.payloads(f"{TOPIC}/health")


@dataclass(frozen=True)
class Ledger:
    """Where every event the daemon classified went. ``lost`` must be 0."""

    case: str
    injected: int  # events the board sent (ground truth; some may be below the trigger or in lost data)
    classified: int  # events the daemon's runs handed to the outbox (their stop lines)
    delivered: int  # distinct event ids that reached the broker
    stored: int  # still in the outbox
    dead_lettered: int
    evicted: int  # by the last health message of each boot

    @property
    def lost(self) -> int:
        return self.classified - self.delivered - self.stored - self.dead_lettered - self.evicted

    def row(self) -> str:
        """One Markdown row of the README's board-link fault table."""
        return (f"| {self.case} | {self.injected} | {self.classified} | {self.delivered} | {self.stored} | "
                f"{self.dead_lettered} | {self.evicted} | {self.lost} |")


LINK_LEDGER_HEADER = ("| case | injected | classified | delivered | still stored | dead-lettered | evicted | lost |\n"
                      "|---|---|---|---|---|---|---|---|")
LINK_LEDGERS: list[Ledger] = []  # every ledger of the module's run, printed at its end (``pytest -s``)


def ledger(case: str, board: Board, daemons: list[Daemon], col: Collector, tmp: Path) -> Ledger:
    """The ledger of ``case`` after every daemon in ``daemons`` has stopped (kept in :data:`LINK_LEDGERS`);
    also checks each boot's ``seq`` has no hole."""
    got = events(col)
    for boot in {m["boot_id"] for m in got}:
        seqs = sorted(m["seq"] for m in got if m["boot_id"] == boot)
        assert seqs == list(range(1, len(seqs) + 1)), f"boot {boot}: a hole in seq {seqs}"
    last_health: dict[str, dict] = {}
    for h in healths(col):
        last_health[h["boot_id"]] = h
    evicted = sum(sum(h.get("evicted", {}).values()) for h in last_health.values())
    classified = [d.classified() for d in daemons]
    assert None not in classified, "a daemon has not written its stop line"
    book = Ledger(case, len(board.injected()), sum(classified), len(got), outbox_rows(tmp),
                  outbox_rows(tmp, "dead_letter", kind=None), evicted)
    LINK_LEDGERS.append(book)
    return book


def detected(injected: list[dict], published: list[dict], before_s: float = 0.3, after_s: float = 1.5) -> list[bool]:
    """For each injected event: did a published event's trigger fall within ``before_s`` before to ``after_s``
    after its onset (the scoring rule of edge.devtools.scoring), each trigger matching one event at most."""
    from firmware_bridge.clock import parse_iso_utc

    triggers = sorted(parse_iso_utc(m["trigger_time"]) for m in published)
    used = [False] * len(triggers)
    out = []
    for ev in sorted(injected, key=lambda e: e["sample"]):
        onset = parse_iso_utc(ev["time"])
        hit = next((i for i, t in enumerate(triggers)
                    if not used[i] and onset - before_s * 1e9 <= t <= onset + after_s * 1e9), None)
        if hit is not None:
            used[hit] = True
        out.append(hit is not None)
    return out
