"""The real daemon in mqtt.mode "both": Sparkplug B and JSON from one board, death through the will on SIGKILL,
bdSeq kept across the restart, and every event in both forms (simulated board on a pty, real Mosquitto)."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
from mqtt_broker import Collector, read_retained, wait_until
from test_daemon import TOPIC, Board, Daemon, events, write_config

pytest.importorskip("pysparkplug")

from test_sparkplug import ddata_events, hosts, values  # noqa: E402, F401 (hosts: fixture)

T = 90.0


def both_config(tmp: Path, board: Board, port: int) -> Path:
    path = write_config(tmp, board, port)
    path.write_text(path.read_text().replace("[mqtt]\n", '[mqtt]\nmode = "both"\n'))
    return path


def depth(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_both_forms_death_by_will_and_bdseq_across_a_restart(make_broker, hosts, tmp_path, cleanup):  # noqa: F811
    broker = make_broker()
    host = hosts(broker.port)
    col = Collector(broker.port, f"{TOPIC}/#")
    cleanup(col)
    board = Board(tmp_path, speed=4.0, rate_per_min=60, seed=11)
    cleanup(board)
    config = both_config(tmp_path, board, broker.port)
    first = Daemon(config, tmp_path, "first")
    cleanup(first)
    assert host.wait_for(lambda h: len(ddata_events(h)) >= 3, T), first.text()[-3000:]
    assert [k for k, _ in host.messages()][:2] == ["NBIRTH", "DBIRTH"]
    nbirth = host.of("NBIRTH")[0]
    assert values(nbirth)["bdSeq"] == 0 and values(nbirth)["Properties/model_name"]
    assert col.wait_for(lambda c: len(events(c)) >= 3, T)
    # the same events in both forms, field for field
    json_events = {e["event_id"]: e for e in events(col)}
    for e in ddata_events(host)[:3]:
        assert e["Event/event_id"] in json_events or col.wait_for(
            lambda c, e=e: e["Event/event_id"] in {m["event_id"] for m in events(c)}, T)
        j = {m["event_id"]: m for m in events(col)}[e["Event/event_id"]]
        assert e["Event/label"] == j["label"] and e["Event/confidence"] == pytest.approx(j["confidence"])
        assert e["Event/ppv"] == pytest.approx(j["features"]["ppv"]) and e["Event/seq"] == j["seq"]
    # health as NDATA, and the session in the JSON health message
    assert host.wait_for(lambda h: h.of("NDATA"), T)
    assert col.wait_for(lambda c: any((m.get("sparkplug") or {}).get("births") for m in c.payloads(f"{TOPIC}/health")))
    health = [m for m in col.payloads(f"{TOPIC}/health") if (m.get("sparkplug") or {}).get("births")][-1]
    assert health["sparkplug"]["bdseq"] == 0 and health["sparkplug"]["connected"] is True
    assert health["sparkplug"]["mqtt"]["connected"] is True and health["mqtt"]["connected"] is True

    first.proc.kill()  # SIGKILL: only the broker can say the node died, through the wills
    first.proc.wait()
    assert host.wait_for(lambda h: h.of("NDEATH"), T)
    assert host.of("NDEATH")[0].bd_seq_metric.value == values(nbirth)["bdSeq"] == 0
    assert wait_until(lambda: (read_retained(broker.port, f"{TOPIC}/status") or {}).get("state") == "offline", T)

    # the restart: the next session's bdSeq, read from disk
    second = Daemon(config, tmp_path, "second")
    cleanup(second)
    assert host.wait_for(lambda h: len(h.of("NBIRTH")) == 2, T), second.text()[-3000:]
    assert values(host.of("NBIRTH")[1])["bdSeq"] == 1
    n = len(ddata_events(host))
    assert host.wait_for(lambda h: len(ddata_events(h)) >= n + 2, T)
    board.stop()
    assert second.signal(signal.SIGTERM) == 0
    assert host.wait_for(lambda h: len(h.of("NDEATH")) == 2, T)  # a clean stop says NDEATH itself
    assert host.of("NDEATH")[1].bd_seq_metric.value == 1
    # nothing lost in either form: both outboxes drained, every event in both
    state = tmp_path / "state"
    assert depth(state / "outbox.sqlite") == 0 and depth(state / "outbox-sparkplug.sqlite") == 0
    in_json = {e["event_id"] for e in events(col)}
    in_spb = {e["Event/event_id"] for e in ddata_events(host)}
    assert in_json == in_spb and len(in_json) >= 5
    assert "Traceback" not in first.text() + second.text()
