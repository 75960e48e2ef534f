"""Fault injection on the outbox and the broker's answers, with the real daemon (`python -m edge.cli run`),
a simulated board on a real pty, and a real Mosquitto (or a fake broker where Mosquitto cannot be made to
misbehave).

Each case keeps an :class:`faults.EventLedger`: events produced, stored, delivered, dead-lettered, evicted,
unstored, still queued and reported lost by a salvage. ``lost`` (what no counter explains) must be 0. The
ledgers are printed (``pytest -s``) as the rows of the README's "Outbox and broker faults" table.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from faults import (
    LEDGER_HEADER,
    EventLedger,
    FakeBroker,
    NotifyListener,
    fill,
    outbox_counts,
    oversized_publish,
    small_disk,
)
from mqtt_broker import Collector, wait_until
from test_daemon import Board, Daemon, write_config

from edge.gateway.messages import join_waveform
from edge.gateway.outbox_repair import inspect_wal

TOPIC = "stopewatch/v1/testmine/gw1"
T = 120.0
LEDGERS: list[EventLedger] = []


@pytest.fixture(scope="module", autouse=True)
def _print_ledgers():
    yield
    if LEDGERS:
        print("\n" + LEDGER_HEADER + "\n" + "\n".join(ledger.row() for ledger in LEDGERS))


@pytest.fixture
def things():
    """Register boards, daemons, collectors and brokers; all are stopped after the test, in reverse order."""
    items: list = []
    yield items.append
    for thing in reversed(items):
        if isinstance(thing, Daemon):
            if thing.proc.poll() is None:
                thing.proc.kill()
                thing.proc.wait()
        elif isinstance(thing, Board):
            thing.stop()
        else:  # Collector, FakeBroker, NotifyListener
            thing.close()


def config(tmp: Path, board: Board, port: int, *, waveforms: bool = False, state: Path | None = None,
           extra: str = "") -> Path:
    cfg = write_config(tmp, board, port, waveforms=waveforms)
    text = cfg.read_text()
    if state is not None:
        text = text.replace(f'state_dir = "{tmp / "state"}"', f'state_dir = "{state}"')
    cfg.write_text(text + extra)
    return cfg


def events(col: Collector) -> list[dict]:
    return col.first_payloads(f"{TOPIC}/event")


def last_health(col: Collector) -> dict:
    got = col.payloads(f"{TOPIC}/health")
    return got[-1] if got else {}


def produced(daemon: Daemon) -> int:
    """Events classified, from the daemon's last line ("stopped after N events ...")."""
    line = [ln for ln in daemon.text().splitlines() if "stopped after" in ln][-1]
    return int(line.split("stopped after ")[1].split()[0])


def final_counts(daemon: Daemon, key: str) -> dict[str, int]:
    """The outbox's ``evicted`` or ``unstored`` counts by kind from the daemon's last line, which also counts the
    windows its SIGTERM drain classified after the last health message ({} when it names none)."""
    line = [ln for ln in daemon.text().splitlines() if "stopped after" in ln][-1]
    if f"{key} {{" not in line:
        return {}
    return ast.literal_eval("{" + line.split(f"{key} {{", 1)[1].split("}", 1)[0] + "}")


def settle(col: Collector, daemon: Daemon, board: Board) -> dict:
    """Stop the board, wait for a health message that has seen every event, and return it."""
    board.stop()
    time.sleep(1.0)
    n = [0]

    def stable(c: Collector) -> bool:
        h = last_health(c)
        if not h:
            return False
        done = h.get("events") == n[0] and h.get("backlog", 1) == 0
        n[0] = h.get("events", 0)
        return done

    assert col.wait_for(stable, T), daemon.text()[-3000:]
    return last_health(col)


@pytest.mark.parametrize(("waveforms", "free_kb", "until"), [
    (True, 700, "cannot write"),  # waveforms are evicted first, the events stay
    (False, 400, "evicted {'event'"),  # only events: the oldest go to make room for the newest
    (False, 200, "unstored {'event'"),  # no room for the reserve: what does not fit is counted, acks held in memory
], ids=["waveforms", "events-only", "no-reserve"])
def test_disk_full_classification_goes_on_eviction_frees_room_and_the_backlog_drains(make_broker, tmp_path, things,
                                                                                     waveforms, free_kb, until):
    with small_disk(3072) as disk:
        broker = make_broker()
        broker.stop()  # the broker is down: the backlog grows until the disk is full
        board = Board(tmp_path, speed=8.0, rate_per_min=90, seed=21)
        things(board)
        cfg = config(tmp_path, board, broker.port, waveforms=waveforms, state=disk / "state",
                     extra="[outbox]\nreserve_kb = 128\n")
        (disk / "state").mkdir()
        fill(disk, leave_bytes=free_kb * 1024)  # logs or a core dump took the rest
        notify = NotifyListener()
        things(notify)
        daemon = Daemon(cfg, tmp_path, env={"NOTIFY_SOCKET": notify.path})
        things(daemon)
        assert wait_until(lambda: "cannot write" in daemon.text(), 3 * T), daemon.text()[-3000:]
        # Classification goes on behind the full disk, and the periodic line says the outbox is degraded.
        assert wait_until(lambda: "degraded: outbox cannot write" in daemon.text().split("cannot write", 1)[1]
                          and until in daemon.text(), 3 * T), daemon.text()[-3000:]
        assert daemon.proc.poll() is None
        assert wait_until(lambda: any("degraded: outbox cannot write" in st for st in notify.statuses), T), \
            notify.statuses[-3:]  # systemctl status says it too
        broker.start()
        col = Collector(broker.port, f"{TOPIC}/#")
        things(col)
        health = settle(col, daemon, board)
        assert daemon.signal(signal.SIGTERM) == 0, daemon.text()[-3000:]
        outbox = health["outbox"]
        assert "Traceback" not in daemon.text()
        # With the reserve, eviction makes the room; without it even a deletion may not fit, and what does not
        # fit is counted.
        assert outbox["write_faults"] >= 1, outbox
        assert sum(outbox["unstored"].values() if free_kb < 256 else outbox["evicted"].values()) > 0, outbox
        ledger = EventLedger(f"disk full (3 MB tmpfs, {free_kb} kB free, broker down then up, waveforms "
                             f"{'on' if waveforms else 'off'})", produced=produced(daemon), delivered=len(events(col)),
                             evicted=final_counts(daemon, "evicted").get("event", 0),
                             unstored=final_counts(daemon, "unstored").get("event", 0),
                             **outbox_counts(disk / "state" / "outbox.sqlite", {m["event_id"] for m in events(col)}))
        ledger.stored = ledger.produced - ledger.unstored
        ledger.notes.append(f"rows evicted {outbox['evicted']}")
        LEDGERS.append(ledger)
        assert ledger.lost == 0, (ledger, daemon.text()[-3000:])
        assert ledger.delivered > 0 and ledger.queued == 0
        assert daemon.text().count(" not stored (") == ledger.unstored  # a journal line for each refused event
        if not waveforms and free_kb >= 256:
            assert ledger.evicted > 0


def test_disk_already_full_at_start_the_daemon_starts_and_drains(make_broker, tmp_path, things):
    with small_disk(3072) as disk:
        broker = make_broker()
        broker.stop()
        board = Board(tmp_path, speed=6.0, rate_per_min=60, seed=22)
        things(board)
        cfg = config(tmp_path, board, broker.port, state=disk / "state", extra="[outbox]\nreserve_kb = 256\n")
        first = Daemon(cfg, tmp_path, "first")
        things(first)
        path = disk / "state" / "outbox.sqlite"
        assert wait_until(lambda: outbox_counts(path)["queued"] >= 10, 2 * T), first.text()[-3000:]
        assert first.signal(signal.SIGTERM) == 0
        board.stop()
        backlog = outbox_counts(path)["queued"]
        fill(disk)
        assert shutil.disk_usage(disk).free == 0
        broker.start()
        col = Collector(broker.port, f"{TOPIC}/#")
        things(col)
        board2 = Board(tmp_path, speed=1.0, rate_per_min=0.1, seed=23)
        things(board2)
        second = Daemon(config(tmp_path, board2, broker.port, state=disk / "state",
                               extra="[outbox]\nreserve_kb = 256\n"), tmp_path, "second")
        things(second)
        assert col.wait_for(lambda c: len(events(c)) >= backlog, T), second.text()[-3000:]
        assert "released the 256 kB reserve" in second.text()
        assert second.signal(signal.SIGTERM) == 0
        ledger = EventLedger("disk 100 % full at start (backlog from the last run)", produced=produced(first),
                             stored=backlog, delivered=len(events(col)), **outbox_counts(path))
        LEDGERS.append(ledger)
        assert ledger.lost == 0 and ledger.delivered == backlog, ledger


def _first_run_killed(tmp_path: Path, broker, things, seed: int, n: int = 30) -> tuple[Path, int]:
    """A daemon queues >= ``n`` events with the broker down and is SIGKILLed: its rows are in the WAL."""
    board = Board(tmp_path, speed=6.0, rate_per_min=60, seed=seed)
    things(board)
    first = Daemon(config(tmp_path, board, broker.port), tmp_path, "first")
    things(first)
    path = tmp_path / "state" / "outbox.sqlite"
    assert wait_until(lambda: outbox_counts(path)["queued"] >= n, 2 * T), first.text()[-3000:]
    first.proc.kill()
    first.proc.wait()
    board.stop()
    copy = tmp_path / "copy.sqlite"  # what the outbox held, read from an untouched copy
    shutil.copyfile(path, copy)
    shutil.copyfile(f"{path}-wal", f"{copy}-wal")
    return path, outbox_counts(copy)["queued"]


def _second_run(tmp_path: Path, broker, things, backlog_floor: int, env: dict | None = None
                ) -> tuple[Daemon, Collector]:
    col = Collector(broker.port, f"{TOPIC}/#")
    things(col)
    board = Board(tmp_path, speed=1.0, rate_per_min=0.1, seed=99)
    things(board)
    second = Daemon(config(tmp_path, board, broker.port), tmp_path, "second", env=env)
    things(second)
    assert col.wait_for(lambda c: len(events(c)) >= backlog_floor and last_health(c).get("backlog") == 0, T), \
        second.text()[-3000:]
    return second, col


def test_a_damaged_wal_is_salvaged_and_counted(make_broker, tmp_path, things):
    broker = make_broker()
    broker.stop()
    path, before = _first_run_killed(tmp_path, broker, things, seed=24)
    wal = Path(f"{path}-wal")
    raw = bytearray(wal.read_bytes())
    frames = inspect_wal(wal).frames  # the log's live frames (after them: frames of earlier generations)
    at = 32 + (frames // 3) * (24 + 4096) + 24 + 600
    raw[at:at + 256] = os.urandom(256)  # a torn write a third of the way into the live log
    wal.write_bytes(bytes(raw))
    broker.start()
    notify = NotifyListener()
    things(notify)
    second, col = _second_run(tmp_path, broker, things, backlog_floor=1, env={"NOTIFY_SOCKET": notify.path})
    health = last_health(col)
    rec = health["outbox"]["recovery"]
    assert rec is not None and "write-ahead log is damaged" in rec["problem"], second.text()[-3000:]
    assert "salvaged" in second.text() and Path(rec["set_aside"]).exists()
    assert any(f"outbox salvaged at start: {rec['recovered']} recovered, {rec['lost']} lost" in st
               for st in notify.statuses), notify.statuses[:3]
    assert second.signal(signal.SIGTERM) == 0
    first_boot = [m for m in events(col) if m["seq"] <= before and m["historical"]]
    ledger = EventLedger("damaged WAL (256 random bytes a third into the live log), SIGKILLed run", produced=before,
                         stored=before, delivered=len(first_boot), salvage_lost=rec["lost"],
                         **outbox_counts(tmp_path / "state" / "outbox.sqlite"))
    ledger.notes.append(rec["problem"].split("; ", 1)[1])  # what SQLite alone would have done
    LEDGERS.append(ledger)
    assert rec["recovered"] + rec["lost"] == before and ledger.lost == 0, (ledger, rec)
    assert ledger.delivered == rec["recovered"]  # every salvaged row went out


def test_a_damaged_main_file_is_salvaged_and_counted(make_broker, tmp_path, things):
    broker = make_broker()
    broker.stop()
    path, before = _first_run_killed(tmp_path, broker, things, seed=25)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(path.read_bytes())
    leaves = [p for p in range(1, len(raw) // 4096) if raw[p * 4096] == 0x0D]
    for page in leaves[len(leaves) // 2:len(leaves) // 2 + 2]:
        raw[page * 4096:(page + 1) * 4096] = bytes(4096)  # two pages lost to a bad sector
    path.write_bytes(bytes(raw))
    broker.start()
    second, col = _second_run(tmp_path, broker, things, backlog_floor=1)
    rec = last_health(col)["outbox"]["recovery"]
    assert rec is not None and rec["lost"] > 0, second.text()[-3000:]
    assert second.signal(signal.SIGTERM) == 0
    first_boot = [m for m in events(col) if m["seq"] <= before and m["historical"]]
    ledger = EventLedger("damaged main file (two b-tree leaf pages zeroed), SIGKILLed run", produced=before,
                         stored=before, delivered=len(first_boot), salvage_lost=rec["lost"],
                         **outbox_counts(tmp_path / "state" / "outbox.sqlite"))
    LEDGERS.append(ledger)
    assert rec["recovered"] + rec["lost"] == before and ledger.lost == 0, (ledger, rec)


def test_a_broker_acl_that_refuses_the_event_topic_dead_letters_every_event(make_broker, tmp_path, things):
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {TOPIC}/status\ntopic readwrite {TOPIC}/health\ntopic read #\n")
    broker = make_broker(acl_file=acl)
    col = Collector(broker.port, f"{TOPIC}/#")
    things(col)
    board = Board(tmp_path, speed=4.0, rate_per_min=60, seed=26)
    things(board)
    daemon = Daemon(config(tmp_path, board, broker.port), tmp_path)
    things(daemon)
    assert col.wait_for(lambda c: last_health(c).get("mqtt", {}).get("dead_lettered", 0) >= 5, T), daemon.text()
    health = settle(col, daemon, board)
    assert daemon.signal(signal.SIGTERM) == 0
    ledger = EventLedger("broker ACL denies the event topic", produced=produced(daemon), delivered=len(events(col)),
                         **outbox_counts(tmp_path / "state" / "outbox.sqlite"))
    ledger.stored = ledger.produced
    LEDGERS.append(ledger)
    assert ledger.delivered == 0 and ledger.dead_lettered == ledger.produced == health["events"], ledger
    assert ledger.lost == 0
    refusals = [ln for ln in daemon.text().splitlines() if "refused a message" in ln]
    assert len(refusals) == 1 and "0x87" in refusals[0]


def test_a_small_max_packet_size_splits_waveforms_and_every_event_goes(make_broker, tmp_path, things):
    broker = make_broker(max_packet_size=20_000)
    col = Collector(broker.port, f"{TOPIC}/#")
    things(col)
    board = Board(tmp_path, speed=4.0, rate_per_min=60, seed=27)
    things(board)
    daemon = Daemon(config(tmp_path, board, broker.port, waveforms=True), tmp_path)
    things(daemon)
    assert col.wait_for(lambda c: len(events(c)) >= 8, T), daemon.text()[-3000:]
    health = settle(col, daemon, board)
    assert daemon.signal(signal.SIGTERM) == 0
    mqtt = health["mqtt"]
    assert mqtt["max_packet"] == 20_000 and mqtt["reconnects"] == 0 and mqtt["waveform_parts"] > 0, mqtt
    parts: dict[str, list[dict]] = {}
    for msg in col.payloads(f"{TOPIC}/waveform"):
        parts.setdefault(msg["event_id"], []).append(msg)
    got = events(col)
    for msg in got:  # every event's window arrives, in parts, and joins into the window the model saw
        window = join_waveform(parts[msg["event_id"]])
        assert window.shape == (3, msg["window"]["samples"]) and np.isfinite(window).all()
    ledger = EventLedger("broker max_packet_size 20 000 B, waveforms on (about 33 kB each)",
                         produced=produced(daemon), delivered=len(got),
                         **outbox_counts(tmp_path / "state" / "outbox.sqlite"))
    ledger.stored = ledger.produced
    LEDGERS.append(ledger)
    assert ledger.lost == 0 and ledger.dead_lettered == 0, ledger


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_a_broker_sending_an_oversized_packet_is_dropped_and_memory_stays_flat(tmp_path, things):
    fake = FakeBroker(after_connack=oversized_publish(2**28 - 1, 200 * 2**20))  # announces 256 MB, sends 200
    things(fake)
    board = Board(tmp_path, speed=4.0, rate_per_min=60, seed=28)
    things(board)
    daemon = Daemon(config(tmp_path, board, fake.port), tmp_path)
    things(daemon)
    assert wait_until(lambda: "max_inbound_kb" in daemon.text() and fake.connects >= 3, T), daemon.text()[-3000:]
    peak = _rss_mb(daemon.proc.pid)
    path = tmp_path / "state" / "outbox.sqlite"
    assert wait_until(lambda: outbox_counts(path)["queued"] >= 5, T)
    peak = max(peak, _rss_mb(daemon.proc.pid))
    board.stop()
    assert daemon.signal(signal.SIGTERM) == 0
    assert peak < 400, peak  # the daemon's own working set; without the limit it would add the 200 MB sent
    lines = [ln for ln in daemon.text().splitlines() if "max_inbound_kb" in ln]
    assert len(lines) == 1 and "268435455 bytes" in lines[0]
    ledger = EventLedger("fake broker sends a 256 MB PUBLISH after every CONNACK", produced=produced(daemon),
                         delivered=0, **outbox_counts(path))
    ledger.stored = ledger.produced
    ledger.notes.append(f"daemon RSS peak {peak:.0f} MB; one ERROR line")
    LEDGERS.append(ledger)
    assert ledger.lost == 0 and ledger.queued == ledger.produced, ledger
