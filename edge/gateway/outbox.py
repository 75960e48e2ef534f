"""Durable outbox: every message is on disk before it is published and leaves only on the broker's PUBACK.

One SQLite file in WAL mode with ``synchronous=FULL``: when :meth:`Outbox.put` returns, the row is in the
fsynced write-ahead log and survives a killed process or a power cut. Acknowledgements and attempt counts
are committed with ``synchronous=NORMAL`` (no fsync of their own; the next put's fsync covers them): a power
cut can at worst undo the last few deletions, which means a redelivery (consumers deduplicate on
``event_id``), never a loss, and the pipeline thread's puts do not wait behind the sender's fsyncs.

Rows carry a monotonically increasing ``id`` (``AUTOINCREMENT``: never reused, even after the newest row is
deleted), so "oldest first" is id order and a backlog replays in the order the events were classified.

Bound and eviction rule: the outbox holds at most ``max_events`` rows (events and, if enabled, waveforms).
When it is full, :meth:`Outbox.put` makes room before inserting, choosing the victim in this order:

1. the oldest row whose label is in ``evict_first`` (default :data:`edge.vocabulary.EVICT_FIRST`, i.e.
   ``noise``: background is of least value to the central server);
2. otherwise the oldest waveform row (the classification message is worth more than its samples);
3. otherwise the oldest row of any class.

Every eviction is counted by label in :attr:`Outbox.evictions` (since this process opened the outbox) so
that health messages show what was lost and why. The new row is always kept.

Refusals: a row the broker refuses for good (not authorised, topic invalid, packet too large) is moved
to the ``dead_letter`` table with the broker's reason: counted, kept, never silently deleted.

Disk full (or a write the disk refuses): classification goes on. A file ``<outbox>.reserve`` of
``reserve_kb`` is kept beside the outbox; when a write fails for lack of space it is given back, the
write-ahead log is checkpointed, and rows are evicted under the rule above until the new row fits. A row
that still cannot be stored is counted in :attr:`Outbox.unstored` (by kind) and its put returns None.
Acknowledgements and dead-letter moves that cannot be written are kept in memory (the rows are not sent
again) and written when the disk has room; meanwhile :attr:`Outbox.write_fault` says why, for health and
``systemctl status``. The reserve is taken again once there is twice its size free. At start, a full disk
gets the reserve back before the file is opened, so a backlog can still drain.

At start the file is checked (:mod:`edge.gateway.outbox_repair`): a damaged WAL or main file is set aside,
salvaged row by row into a fresh outbox (ids and order kept), and :attr:`Outbox.recovery` reports the
recovered and lost counts.

Thread safety: one connection shared under a lock; the pipeline thread puts while the MQTT sender thread
reads and acknowledges.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError
from edge.gateway import outbox_repair
from edge.gateway.outbox_repair import Recovery
from edge.vocabulary import EVICT_FIRST

log = logging.getLogger(__name__)
PAGE = 4096  # SQLite's default page size (the WAL's autocheckpoint is set in pages)
RESERVE_RETRY_S = 60.0  # how often to try to take the reserve again after a full disk
# SQLite's answers that mean "the disk would not take this write" (as opposed to a damaged file): the outbox
# degrades and recovers from these; anything else (corruption) is raised and the daemon restarts into the
# start-up check.
_WRITE_FAULTS = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)


def is_write_fault(exc: BaseException) -> bool:
    """True for SQLite errors that mean the disk refused a write (full, or an I/O error)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF in _WRITE_FAULTS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    retain INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'event',
    label TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    historical INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_label ON outbox (label, id);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    created REAL NOT NULL,
    reason TEXT NOT NULL,
    refused REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Row:
    """One queued message as stored."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str
    label: str
    created: float  # wall-clock time (UNIX seconds) when it was put
    attempts: int  # times handed to the MQTT client before this read
    historical: bool  # queued while the broker was unreachable


class _Damaged(Exception):
    """The outbox file is damaged (SQLite says corrupt, or not a database)."""


class Outbox:
    """A bounded, durable FIFO of MQTT messages (see the module docstring for the eviction rule)."""

    def __init__(self, path: str | Path, max_events: int = 100_000,
                 evict_first: Sequence[str] = EVICT_FIRST, reserve_kb: int = 1024) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be positive, got {max_events}")
        self.path = Path(path)
        self.max_events = int(max_events)
        self.evict_first = tuple(evict_first)
        self.evictions: dict[str, int] = {}
        self.evicted_kinds: dict[str, int] = {}  # the same evictions by kind (event, waveform)
        self.unstored: dict[str, int] = {}  # rows that could not be stored, by kind (since this process opened it)
        self.write_fault: str | None = None  # why writes fail right now (None: they do not)
        self.write_faults = 0  # times writes started failing
        self.recovery: Recovery | None = None  # what the start-up check set aside and salvaged, if anything
        self.reserve_path = self.path.with_name(self.path.name + ".reserve")
        self.reserve_bytes = int(reserve_kb) * 1024
        self._reserve_tried = -1e9
        self._capped = False  # the disk filled: the main file may not grow, the freed reserve is the WAL's
        self._last_fault = ""
        self._hidden: dict[int, str | None] = {}  # acked (None) or refused (reason) rows not yet written so
        self._sent: set[int] = set()  # rows handed to the client whose attempt count could not be written
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot create the outbox directory ({exc}); check outbox.path "
                            "or node.state_dir") from None
        if self.reserve_path.exists() and self._free() < self.reserve_bytes:
            self._release_reserve("the disk is full at start")
        elif self.reserve_path.exists() and not self.reserve_bytes:
            self._release_reserve("outbox.reserve_kb is 0")
        # The WAL is read before SQLite opens the file: opening would apply its sound frames, drop the rest
        # and, on close, delete the evidence.
        self._db: sqlite3.Connection | None = None
        problem = outbox_repair.inspect_wal(Path(f"{self.path}-wal")).problem
        if problem is None:
            try:
                self._db = self._connect()
                problem = outbox_repair.quick_check(self._db, self.path.name)
            except _Damaged as exc:
                problem = str(exc)
        if problem is not None:
            self._rebuild(problem)
        self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self._take_reserve()

    # ----------------------------------------------------------------- opening, checking, salvaging
    def _connect(self, exclusive: bool = False) -> sqlite3.Connection:
        db: sqlite3.Connection | None = None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so a put is exactly one transaction.
            new = not self.path.exists() or self.path.stat().st_size == 0
            db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
            if exclusive:  # no shared-memory file to create: the WAL index lives in this process's memory
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
            if new:  # set before the first table (it cannot change later): freed pages can go back to the disk
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.execute("PRAGMA synchronous=FULL")
            self._synchronous = "FULL"
            if self.reserve_bytes:  # keep the log small enough that it fits in the reserve, twice over
                db.execute(f"PRAGMA wal_autocheckpoint={max(16, self.reserve_bytes // PAGE // 4)}")
            with contextlib.suppress(sqlite3.OperationalError):  # on a full disk the tables are already there
                db.executescript(_SCHEMA)
            db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise _Damaged(f"{self.path.name}: SQLite cannot read it ({exc})") from None
            if is_write_fault(exc) and not exclusive:  # a full disk cannot take the -shm file: do without it
                if db is not None:
                    db.close()
                self._fault(exc)
                log.warning("outbox %s: opening without its shared-memory file (%s); other processes cannot read "
                            "the outbox until the daemon restarts", self.path, exc)
                return self._connect(exclusive=True)
            raise UserError(f"{self.path}: cannot open the outbox ({exc}); check outbox.path and its "
                            "directory's permissions and free space") from None
        if str(mode).lower() != "wal":
            raise UserError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the outbox on a local "
                            "file system")
        return db

    def _rebuild(self, problem: str) -> None:
        """Set the damaged file aside, start a new outbox and copy into it what can be read (ids kept)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        aside = outbox_repair.set_aside(self.path)
        log.error("outbox %s is damaged: %s; set aside as %s, salvaging what can be read", self.path, problem,
                  aside.name)
        found = outbox_repair.salvage(aside)
        self._db = self._connect()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for row in found.rows:
                db.execute(f"INSERT OR IGNORE INTO outbox ({', '.join(outbox_repair._COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(outbox_repair._COLUMNS))})",
                           tuple(sqlite3.Binary(v) if k == "payload" else v for k, v in row.items()))
            for row in found.dead:
                db.execute(f"INSERT OR IGNORE INTO dead_letter ({', '.join(outbox_repair._DEAD_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(outbox_repair._DEAD_COLUMNS))})", tuple(row.values()))
            if found.max_seq:  # ids are never reused: new rows come after everything the old file gave out
                db.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'")
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (found.max_seq,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        recovered = len(found.rows)
        lost = max(found.damaged_rows, (found.counted or 0) - recovered)
        self.recovery = Recovery(problem, str(aside), recovered, lost, len(found.dead), found.method)
        (log.error if lost else log.warning)(
            "outbox salvaged (%s): %d rows recovered, %d lost, %d dead letters kept; the damaged file stays "
            "as %s", found.method, recovered, lost, len(found.dead), aside)

    # ----------------------------------------------------------------- disk space
    def _free(self) -> int:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return 0

    def _take_reserve(self) -> None:
        """Hold ``reserve_bytes`` beside the outbox, when there is twice that free (tried once a minute)."""
        if not self.reserve_bytes or self.reserve_path.exists():
            return
        now = time.monotonic()
        if now - self._reserve_tried < RESERVE_RETRY_S:
            return
        self._reserve_tried = now
        if self._free() < 2 * self.reserve_bytes:
            return
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()
            log.warning("outbox: cannot hold %d kB in reserve at %s (%s)", self.reserve_bytes // 1024,
                        self.reserve_path, exc.strerror or exc)

    def _release_reserve(self, why: str) -> bool:
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("outbox: cannot release the reserve %s (%s)", self.reserve_path, exc.strerror or exc)
            return False
        log.warning("outbox: %s; released the %d kB reserve at %s", why, self.reserve_bytes // 1024,
                    self.reserve_path)
        return True

    def _fault(self, exc: BaseException) -> None:
        """Writes fail (caller holds the lock): say so once per episode, and remember why for health."""
        reason = str(exc)
        if self.write_fault is None and not self._capped:
            self.write_faults += 1
            log.error("outbox %s cannot write (%s): classifying goes on; rows are evicted to make room, and "
                      "events that still do not fit are counted as unstored", self.path, reason)
        self.write_fault = reason
        self._last_fault = reason

    def _writable(self) -> None:
        """A write went through (caller holds the lock). After a full disk: give free pages back, and once
        the disk has room again lift the cap and take the reserve again."""
        self.write_fault = None
        if self._capped:
            with contextlib.suppress(sqlite3.Error):
                self._db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page only
                self._checkpoint()  # the main file shrinks when the WAL is folded in
            if self._free() >= 2 * self.reserve_bytes + PAGE * 64:
                self._cap(False)
                log.info("outbox %s writes again: the disk has room (after: %s)", self.path, self._last_fault)
        if not self._capped:
            self._take_reserve()

    def _cap(self, on: bool) -> None:
        """On a full disk the main file stops growing (rows reuse what evictions and acks free) and what the
        reserve gave back serves the WAL, so that checkpoints, deletions and acknowledgements still work."""
        with contextlib.suppress(sqlite3.Error):
            pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
            self._db.execute(f"PRAGMA max_page_count={pages if on else 0xFFFFFFFE}")
            self._capped = on

    def _checkpoint(self) -> None:
        """Fold the WAL into the main file and empty it (frees its disk space); may fail on a full disk."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite may already have rolled back after a full disk
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    # ----------------------------------------------------------------- writing
    def put(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, kind: str = "event",
            label: str = "", historical: bool = False) -> int | None:
        """Store one message durably and return its id; evicts first when the outbox is full.

        The message is committed (fsynced) before this returns: from here on it survives a crash. When the
        disk refuses it even after giving back the reserve and evicting, returns None (counted in
        :attr:`unstored`).
        """
        row = (topic, sqlite3.Binary(payload), int(qos), int(retain), kind, label, time.time(), int(historical))
        with self._lock:
            self._flush_hidden()
            try:
                row_id = self._insert(row)
            except sqlite3.OperationalError as exc:
                if not is_write_fault(exc):
                    raise
                self._fault(exc)
                row_id = self._insert_when_full(row)
                if row_id is None:
                    self.unstored[kind] = self.unstored.get(kind, 0) + 1
                    return None
            self._writable()
            return row_id

    def _insert(self, row: tuple, bound: int | None = None) -> int:
        """One transaction: evict down to ``bound`` rows (default ``max_events``) and insert ``row``."""
        db = self._db
        bound = self.max_events if bound is None else bound
        self._sync("FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            evicted = []
            while self._depth - len(evicted) >= bound:
                victim = self._victim(exclude=evicted)
                if victim is None:
                    break
                evicted.append(victim)
            for row_id, _, _ in evicted:
                db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            cur = db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, kind, label, created, historical) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._depth += 1 - len(evicted)
        self._count_evictions(evicted)
        return int(cur.lastrowid)

    def _count_evictions(self, evicted: list[tuple[int, str, str]]) -> None:
        for row_id, victim_label, kind in evicted:
            self._hidden.pop(row_id, None)
            key = victim_label or "unlabelled"
            self.evictions[key] = self.evictions.get(key, 0) + 1
            self.evicted_kinds[kind] = self.evicted_kinds.get(kind, 0) + 1

    def _insert_when_full(self, row: tuple) -> int | None:
        """The disk refused ``row``: give back the reserve, checkpoint, stop the file growing, then evict (by
        the rule) until it fits in the pages the evictions free."""
        self._release_reserve("the disk is full")
        self._checkpoint()
        if not self._capped:
            self._cap(True)
        for _ in range(64):  # a big waveform may need several small rows' room
            self._checkpoint()
            try:
                return self._insert(row, bound=self.max_events)
            except sqlite3.OperationalError as exc:
                if not is_write_fault(exc):
                    raise
            if not self._evict_one():
                return None
        return None

    def _evict_one(self) -> bool:
        """Delete the next victim in its own transaction (to make room on a full disk); False if it cannot."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            victim = self._victim(exclude=[])
            if victim is None:
                self._rollback()
                return False
            db.execute("DELETE FROM outbox WHERE id = ?", (victim[0],))
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            if not is_write_fault(exc):
                raise
            return False
        self._depth -= 1
        self._count_evictions([victim])
        return True

    def _sync(self, level: str) -> None:
        """Per-transaction durability (caller holds the lock): FULL for puts, NORMAL for bookkeeping."""
        if self._synchronous != level:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def _victim(self, exclude: list[tuple[int, str, str]]) -> tuple[int, str, str] | None:
        """The next row to evict under the documented rule, as (id, label, kind) (caller holds the lock)."""
        skip = tuple(v[0] for v in exclude) + tuple(self._hidden) or (-1,)  # hidden: already gone
        marks = ",".join("?" * len(skip))
        labels = self.evict_first or ("",)  # "" never matches a label when no class goes first
        rules = [(f"label IN ({','.join('?' * len(labels))})", labels), ("kind = 'waveform'", ()), ("1", ())]
        for where, args in rules:
            row = self._db.execute(f"SELECT id, label, kind FROM outbox WHERE {where} AND id NOT IN ({marks}) "
                                   "ORDER BY id LIMIT 1", (*args, *skip)).fetchone()
            if row is not None:
                return int(row[0]), str(row[1]), str(row[2])
        return None

    def pending(self, limit: int = 100, after_id: int = 0) -> list[Row]:
        """Up to ``limit`` queued rows with id greater than ``after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, kind, label, created, attempts, historical FROM outbox "
                "WHERE id > ? ORDER BY id LIMIT ?", (int(after_id), int(limit) + len(self._hidden))).fetchall()
            rows = [r for r in rows if r[0] not in self._hidden][:limit]
            sent = self._sent
        return [Row(int(r[0]), r[1], bytes(r[2]), int(r[3]), bool(r[4]), r[5], r[6], float(r[7]),
                    max(int(r[8]), int(r[0] in sent)), bool(r[9])) for r in rows]

    def mark_sent(self, ids: list[int]) -> None:
        """Count one more delivery attempt for each id (a row sent before may reach subscribers twice)."""
        if not ids:
            return
        with self._lock:
            self._sync("NORMAL")
            try:
                self._db.execute(f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN "
                                 f"({','.join('?' * len(ids))})", [int(i) for i in ids])
            except sqlite3.OperationalError as exc:
                if not is_write_fault(exc):
                    raise
                self._fault(exc)
                self._sent.update(int(i) for i in ids)  # kept in memory: the row is marked historical on resend

    def ack(self, ids: int | list[int]) -> int:
        """Delete acknowledged rows; returns how many were still there (evicted rows are simply gone)."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        if not ids:
            return 0
        with self._lock:
            return self._remove({int(i): None for i in ids})

    def dead_letter(self, refused: dict[int, str]) -> int:
        """Move rows the broker refused for good (``{row id: reason}``) to the ``dead_letter`` table.

        They leave the queue but stay on disk with the broker's reason, for an operator to look at and
        resend after fixing the broker's ACL or limits. Returns how many rows were moved.
        """
        if not refused:
            return 0
        with self._lock:
            return self._remove({int(k): v for k, v in refused.items()})

    def _remove(self, rows: dict[int, str | None]) -> int:
        """Delete acknowledged (None) and dead-letter (reason) rows; when the disk refuses, keep them hidden
        in memory (not sent again) until :meth:`_flush_hidden` can write them. Returns the rows that were queued."""
        try:
            moved = self._write_removal(rows)
        except sqlite3.OperationalError as exc:
            if not is_write_fault(exc):
                raise
            self._fault(exc)
            marks = ",".join("?" * len(rows))
            present = [int(r[0]) for r in self._db.execute(f"SELECT id FROM outbox WHERE id IN ({marks})",
                                                           list(rows))]
            moved = sum(1 for i in present if i not in self._hidden)
            self._hidden.update({i: rows[i] for i in present})
            self._depth -= moved
            return moved
        self._depth -= sum(1 for i in rows if i not in self._hidden and moved.get(i))
        for i in rows:
            self._hidden.pop(i, None)
        self._writable()
        return sum(moved.values())

    def _write_removal(self, rows: dict[int, str | None]) -> dict[int, int]:
        db = self._db
        dead = any(reason is not None for reason in rows.values())
        self._sync("FULL" if dead else "NORMAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            moved = {}
            for row_id, reason in rows.items():
                if reason is not None:
                    db.execute("INSERT OR IGNORE INTO dead_letter (id, topic, payload, kind, label, created, reason, "
                               "refused) SELECT id, topic, payload, kind, label, created, ?, ? FROM outbox "
                               "WHERE id = ?", (reason, time.time(), row_id))
                moved[row_id] = db.execute("DELETE FROM outbox WHERE id = ?", (row_id,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return moved

    def _flush_hidden(self) -> None:
        """Write acknowledgements and refusals kept in memory while the disk was full (caller holds the lock)."""
        if not self._hidden:
            return
        pending = dict(self._hidden)
        self._checkpoint()
        try:
            self._write_removal(pending)
        except sqlite3.OperationalError as exc:
            if not is_write_fault(exc):
                raise
            return
        for i in pending:
            self._hidden.pop(i, None)
        self._sent.difference_update(pending)

    def depth(self) -> int:
        """Number of rows waiting for the broker's acknowledgement."""
        with self._lock:
            return self._depth

    def last_id(self) -> int:
        """The highest id ever assigned (0 for a new outbox); rows up to it predate anything put later."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def dead_letters(self) -> int:
        """Rows the broker refused for good, kept in the ``dead_letter`` table (or in memory, disk full)."""
        with self._lock:
            held = sum(1 for reason in self._hidden.values() if reason is not None)
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]) + held

    def state(self) -> str:
        """``ok``, or ``degraded: outbox cannot write (<why>)`` from a refused write until the disk has room."""
        if self.write_fault is not None or self._capped:
            return f"degraded: outbox cannot write ({self.write_fault or self._last_fault})"
        return "ok"

    def health(self) -> dict:
        """The outbox's part of the health message: state, unstored rows, reserve, start-up salvage."""
        return {"state": self.state(), "unstored": dict(self.unstored), "evicted": dict(self.evicted_kinds),
                "write_faults": self.write_faults,
                "reserve": self.reserve_path.exists(), "dead_letters": self.dead_letters(),
                "recovery": self.recovery.as_dict() if self.recovery else None}

    def close(self) -> None:
        """Write what the disk refused before if it can, checkpoint the WAL and close the file."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._flush_hidden()
            with contextlib.suppress(sqlite3.Error):  # a reader holds the WAL: the next open checkpoints it
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
