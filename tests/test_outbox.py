"""The durable outbox: order, acknowledgement, the eviction rule, threads, and a SIGKILLed writer."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.errors import UserError
from edge.gateway.outbox import Outbox

ROOT = Path(__file__).resolve().parents[1]


def test_put_pending_ack_in_order(tmp_path):
    with Outbox(tmp_path / "o.sqlite", max_events=100) as box:
        ids = [box.put("t/event", f"m{i}".encode(), label="blast") for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert box.depth() == 5
        rows = box.pending(3)
        assert [r.payload for r in rows] == [b"m0", b"m1", b"m2"]
        assert rows[0].qos == 1 and rows[0].retain is False and rows[0].label == "blast" and rows[0].attempts == 0
        assert [r.id for r in box.pending(10, after_id=ids[2])] == ids[3:]
        box.mark_sent(ids[:2])
        assert [r.attempts for r in box.pending(3)] == [1, 1, 0]
        assert box.ack(ids[1]) == 1 and box.ack(ids[1]) == 0  # a second PUBACK deletes nothing
        assert [r.id for r in box.pending(10)] == [ids[0], *ids[2:]]
        box.ack([ids[0], ids[4]])
        assert box.depth() == 2
        # ids are never reused, even after the newest row is deleted: order survives a replay
        assert box.put("t/event", b"late") > ids[-1]


def test_rows_survive_reopen_and_file_is_wal(tmp_path):
    path = tmp_path / "state" / "o.sqlite"  # the directory is created
    with Outbox(path) as box:
        first = box.put("t/event", b"\x00binary\xff", historical=True, label="noise")
        box.put("t/waveform", b"w", kind="waveform")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Outbox(path) as box:
        assert box.depth() == 2 and box.last_id() == first + 1
        row = box.pending(1)[0]
        assert (row.payload, row.historical, row.label, row.kind) == (b"\x00binary\xff", True, "noise", "event")
        assert box.depth_by_label() == {"noise": 1, "": 1}


def test_eviction_noise_first_then_waveforms_then_oldest(tmp_path):
    with Outbox(tmp_path / "o.sqlite", max_events=4) as box:
        a = box.put("e", b"a", label="blast")
        n1 = box.put("e", b"n1", label="noise")
        w = box.put("w", b"w", kind="waveform", label="microseismic")
        n2 = box.put("e", b"n2", label="noise")
        box.put("e", b"b", label="drilling")  # full: the oldest noise row goes
        assert [r.payload for r in box.pending(10)] == [b"a", b"w", b"n2", b"b"]
        box.put("e", b"c", label="blast")  # the remaining noise row goes
        assert n1 not in {r.id for r in box.pending(10)} and n2 not in {r.id for r in box.pending(10)}
        box.put("e", b"d", label="electrical")  # no noise left: the waveform goes before any event
        assert w not in {r.id for r in box.pending(10)}
        box.put("e", b"f", label="mechanical")  # only events left: the oldest one goes
        assert a not in {r.id for r in box.pending(10)}
        assert [r.payload for r in box.pending(10)] == [b"b", b"c", b"d", b"f"]
        assert box.depth() == 4
        assert box.evictions == {"noise": 2, "microseismic": 1, "blast": 1}


def test_two_threads_put_and_ack(tmp_path):
    with Outbox(tmp_path / "o.sqlite", max_events=10_000) as box:
        n = 300
        done = threading.Event()
        acked: list[int] = []
        errors: list[BaseException] = []

        def producer():
            try:
                for i in range(n):
                    box.put("e", str(i).encode())
            except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
                errors.append(exc)
            finally:
                done.set()

        def consumer():
            try:
                while len(acked) < n:
                    rows = box.pending(50)
                    if rows:
                        box.ack([r.id for r in rows])
                        acked.extend(int(r.payload) for r in rows)
                    elif done.is_set() and box.depth() == 0:
                        break
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        assert acked == list(range(n))  # each exactly once, in order
        assert box.depth() == 0


_CHILD = """
import sys
from edge.gateway.outbox import Outbox
box = Outbox(sys.argv[1], max_events=1_000_000)
i = 0
while True:
    row_id = box.put("t/event", b"x" * 2000 + str(i).encode(), label="blast")
    print(row_id, flush=True)  # printed only after the commit: this row must survive SIGKILL
    i += 1
"""


def test_committed_rows_survive_sigkill_mid_write(tmp_path):
    path = tmp_path / "o.sqlite"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    committed = []
    try:
        for line in child.stdout:
            committed.append(int(line))
            if len(committed) >= 200:
                break
    finally:
        child.send_signal(signal.SIGKILL)  # in the middle of a later put
        child.wait(30)
        child.stdout.close()
    assert len(committed) == 200
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with Outbox(path) as box:
        ids = [r.id for r in box.pending(100_000)]
        assert set(committed) <= set(ids)
        assert ids == sorted(ids)
        assert box.put("t/event", b"after") > max(ids)


def test_unusable_path_is_one_clear_error(tmp_path):
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(UserError, match="dir.sqlite: cannot open the outbox"):
        Outbox(tmp_path / "dir.sqlite")
