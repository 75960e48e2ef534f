"""The durable outbox: order, acknowledgement, the eviction rule, threads, and a SIGKILLed writer."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from faults import fill, small_disk

from edge.errors import UserError
from edge.gateway.outbox import Outbox
from edge.gateway.outbox_repair import inspect_wal, salvage

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


def test_eviction_follows_the_policy_it_is_given(tmp_path):
    with Outbox(tmp_path / "o.sqlite", max_events=2, evict_first=("drilling",)) as box:
        box.put("e", b"n", label="noise")
        box.put("e", b"d", label="drilling")
        box.put("e", b"b", label="blast")  # full: drilling goes first under this policy, noise stays
        assert [r.payload for r in box.pending(10)] == [b"n", b"b"]
        assert box.evictions == {"drilling": 1}


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


# ----------------------------------------------------------------------------- disk full, damaged files
def _event(i: int, pad: int = 2500) -> bytes:
    return json.dumps({"schema": "stopewatch.event/1", "event_id": f"s.n.b.{i}", "pad": "x" * pad}).encode()


def test_a_full_disk_evicts_by_the_rule_counts_what_it_cannot_store_and_drains(tmp_path):
    with small_disk(2048) as disk:
        box = Outbox(disk / "o.sqlite", reserve_kb=256)
        assert box.reserve_path.exists() and box.state() == "ok"
        fill(disk, leave_bytes=300_000)  # something else fills the disk, as logs would
        ids = [box.put("t/event", _event(i), label="noise" if i % 3 == 0 else "blast") for i in range(400)]
        stored = [i for i in ids if i is not None]
        assert box.state().startswith("degraded: outbox cannot write (database or disk is full")
        assert not box.reserve_path.exists()  # given back to make room
        assert box.evictions.get("noise", 0) > 0  # noise goes first ...
        assert sum(box.evictions.values()) + box.depth() + sum(box.unstored.values()) == 400  # ... none unaccounted
        # The newest event is kept: eviction made room for it.
        assert stored[-1] == max(r.id for r in box.pending(10_000))
        # The broker comes back: every queued row drains (acknowledgements are written, or held in memory).
        drained = 0
        while rows := box.pending(50):
            drained += box.ack([r.id for r in rows])
        assert drained + sum(box.evictions.values()) + sum(box.unstored.values()) == 400 and box.depth() == 0
        assert box.put("t/event", _event(1000)) is not None  # room again inside the file
        box.close()


def test_a_disk_full_before_start_still_opens_and_drains(tmp_path):
    with small_disk(2048) as disk:
        with Outbox(disk / "o.sqlite", reserve_kb=256) as box:
            for i in range(50):
                box.put("t/event", _event(i))
        fill(disk)  # 0 bytes free, the reserve from the last run is still held
        assert shutil.disk_usage(disk).free == 0
        box = Outbox(disk / "o.sqlite", reserve_kb=256)  # gives the reserve back before opening
        assert box.depth() == 50 and not box.reserve_path.exists()
        drained = 0
        while rows := box.pending(10):
            drained += box.ack([r.id for r in rows])
        assert drained == 50 and box.depth() == 0
        box.close()

    with small_disk(2048) as disk:  # no reserve at all: acknowledgements are held in memory, nothing is resent
        with Outbox(disk / "o.sqlite", reserve_kb=0) as box:
            for i in range(20):
                box.put("t/event", _event(i))
        fill(disk)
        box = Outbox(disk / "o.sqlite", reserve_kb=0)
        sent = []
        while rows := box.pending(5):
            sent += [r.id for r in rows]
            box.ack([r.id for r in rows])
        assert len(sent) == len(set(sent)) == 20 and box.depth() == 0
        assert box.put("t/event", _event(99)) is None and box.unstored == {"event": 1}
        assert box.state().startswith("degraded: outbox cannot write")
        box.close()


def _killed_writer(path: Path, n: int, pad: int = 1500) -> None:
    """Put ``n`` events in a child process that dies without closing: the rows stay in the WAL."""
    code = ("import json, os, sys\nfrom edge.gateway.outbox import Outbox\n"
            "box = Outbox(sys.argv[1], reserve_kb=0)\n"
            "for i in range(int(sys.argv[2])):\n"
            "    box.put('t/event', json.dumps({'schema': 'stopewatch.event/1', 'event_id': f's.n.b.{i}', "
            "'pad': 'x' * int(sys.argv[3])}).encode(), label='blast')\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(path), str(n), str(pad)], check=True, cwd=ROOT, timeout=120)


def test_a_damaged_wal_is_detected_set_aside_and_salvaged(tmp_path):
    path = tmp_path / "o.sqlite"
    _killed_writer(path, 300)
    wal = Path(f"{path}-wal")
    assert inspect_wal(wal).damaged is False
    raw = bytearray(wal.read_bytes())
    frame = 24 + 4096
    raw[32 + 100 * frame + 100:32 + 100 * frame + 164] = b"\xff" * 64  # frame 101's page header: a torn write
    wal.write_bytes(bytes(raw))
    report = inspect_wal(wal)
    assert report.damaged and report.valid_frames == 100 and report.lost_commits > 50  # SQLite would drop these
    with Outbox(path, reserve_kb=0) as box:
        rec = box.recovery
        assert rec is not None and "write-ahead log is damaged" in rec.problem
        assert rec.recovered + rec.lost == 300 and rec.recovered >= 290  # nearly all of it, and the rest counted
        assert box.depth() == rec.recovered
        ids = [r.id for r in box.pending(1000)]
        assert ids == sorted(ids)  # the backlog keeps its order
        assert box.put("t/event", _event(1)) > 300  # ids are not reused
        assert box.health()["recovery"]["recovered"] == rec.recovered
    aside = Path(rec.set_aside)
    assert aside.exists() and Path(f"{aside}-wal").read_bytes() == bytes(raw)  # kept as it was, never deleted


def test_a_damaged_main_file_is_set_aside_and_salvaged_row_by_row(tmp_path):
    path = tmp_path / "o.sqlite"
    _killed_writer(path, 300)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(path.read_bytes())
    leaves = [p for p in range(1, len(raw) // 4096) if raw[p * 4096] == 0x0D]  # table b-tree leaf pages
    for page in leaves[5:8]:  # three pages of rows lost to a bad sector
        raw[page * 4096:(page + 1) * 4096] = bytes(4096)
    path.write_bytes(bytes(raw))
    with Outbox(path, reserve_kb=0) as box:
        rec = box.recovery
        assert rec is not None and "malformed" in rec.problem
        assert rec.recovered + rec.lost == 300 and 0 < rec.lost <= 12  # the rows on the three pages, counted
        assert box.depth() == rec.recovered
    assert Path(rec.set_aside).read_bytes() == bytes(raw)


def test_a_file_that_is_not_a_database_is_set_aside_not_a_refusal_to_start(tmp_path):
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not sqlite" * 500)
    with Outbox(path, reserve_kb=0) as box:
        assert box.recovery is not None and box.recovery.recovered == 0 and box.depth() == 0
        assert box.put("t/event", _event(1)) == 1
    assert Path(box.recovery.set_aside).read_bytes() == b"this is not sqlite" * 500


def test_a_wal_header_or_salt_damage_and_a_sound_wal(tmp_path):
    path = tmp_path / "o.sqlite"
    _killed_writer(path, 20, pad=100)
    wal = Path(f"{path}-wal")
    sound = wal.read_bytes()
    assert inspect_wal(wal) == inspect_wal(wal) and not inspect_wal(wal).damaged
    bad = bytearray(sound)
    bad[4] ^= 0xFF  # the header's version field: the header checksum fails, SQLite would ignore the whole log
    wal.write_bytes(bytes(bad))
    assert inspect_wal(wal).damaged and "header" in inspect_wal(wal).problem


def _sound_outbox_with_dead_letters(path: Path) -> list[int]:
    with Outbox(path, reserve_kb=0) as box:
        ids = [box.put("t/event", _event(i, pad=50), label="blast") for i in range(40)]
        box.dead_letter({ids[3]: "Not authorized (0x87)", ids[7]: "Not authorized (0x87)"})
    return ids


def test_salvage_row_by_row_reads_every_row_and_dead_letter_of_a_sound_file(tmp_path):
    ids = _sound_outbox_with_dead_letters(tmp_path / "o.sqlite")
    found = salvage(tmp_path / "o.sqlite", sqlite3_cli="")  # no CLI: the Python path
    assert found.method == "row by row" and found.damaged_rows == 0 and found.counted == 38
    assert [r["id"] for r in found.rows] == [i for i in ids if i not in (ids[3], ids[7])]
    assert [d["id"] for d in found.dead] == [ids[3], ids[7]]


def test_salvage_with_sqlite3_recover_where_the_cli_supports_it(tmp_path):
    cli = shutil.which("sqlite3")
    probe = cli and subprocess.run([cli, ":memory:", "SELECT count(*) FROM sqlite_dbpage"], capture_output=True)
    if not probe or probe.returncode != 0:
        pytest.skip("the sqlite3 CLI here lacks the sqlite_dbpage table that .recover needs (Debian builds it so)")
    ids = _sound_outbox_with_dead_letters(tmp_path / "o.sqlite")
    found = salvage(tmp_path / "o.sqlite", sqlite3_cli=cli)
    assert found.method == "sqlite3 .recover" and found.damaged_rows == 0
    assert [r["id"] for r in found.rows] == [i for i in ids if i not in (ids[3], ids[7])]
    assert [d["id"] for d in found.dead] == [ids[3], ids[7]]
