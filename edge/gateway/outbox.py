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

Thread safety: one connection shared under a lock; the pipeline thread puts while the MQTT sender thread
reads and acknowledges.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError
from edge.vocabulary import EVICT_FIRST

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


class Outbox:
    """A bounded, durable FIFO of MQTT messages (see the module docstring for the eviction rule)."""

    def __init__(self, path: str | Path, max_events: int = 100_000,
                 evict_first: Sequence[str] = EVICT_FIRST) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be positive, got {max_events}")
        self.path = Path(path)
        self.max_events = int(max_events)
        self.evict_first = tuple(evict_first)
        self.evictions: dict[str, int] = {}
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so a put is exactly one transaction.
            self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._synchronous = "FULL"
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: cannot open the outbox ({exc}); check outbox.path and its "
                            "directory's permissions, or move a damaged file aside") from None
        except OSError as exc:
            raise UserError(f"{self.path}: cannot create the outbox directory ({exc}); check outbox.path "
                            "or node.state_dir") from None
        if str(mode).lower() != "wal":
            raise UserError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); put the outbox on a local "
                            "file system")
        self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def put(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, kind: str = "event",
            label: str = "", historical: bool = False) -> int:
        """Store one message durably and return its id; evicts first when the outbox is full.

        The message is committed (fsynced) before this returns: from here on it survives a crash.
        """
        with self._lock:
            db = self._db
            self._sync("FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                evicted = []
                while self._depth - len(evicted) >= self.max_events:
                    victim = self._victim(exclude=evicted)
                    if victim is None:
                        break
                    evicted.append(victim)
                for row_id, _ in evicted:
                    db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                cur = db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, kind, label, created, historical) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (topic, sqlite3.Binary(payload), int(qos), int(retain), kind, label, time.time(),
                     int(historical)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._depth += 1 - len(evicted)
            for _, victim_label in evicted:
                key = victim_label or "unlabelled"
                self.evictions[key] = self.evictions.get(key, 0) + 1
            return int(cur.lastrowid)

    def _sync(self, level: str) -> None:
        """Per-transaction durability (caller holds the lock): FULL for puts, NORMAL for bookkeeping."""
        if self._synchronous != level:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def _victim(self, exclude: list[tuple[int, str]]) -> tuple[int, str] | None:
        """The next row to evict under the documented rule (caller holds the lock and a transaction)."""
        skip = tuple(row_id for row_id, _ in exclude) or (-1,)
        marks = ",".join("?" * len(skip))
        labels = self.evict_first or ("",)  # "" never matches a label when no class goes first
        rules = [(f"label IN ({','.join('?' * len(labels))})", labels), ("kind = 'waveform'", ()), ("1", ())]
        for where, args in rules:
            row = self._db.execute(f"SELECT id, label FROM outbox WHERE {where} AND id NOT IN ({marks}) "
                                   "ORDER BY id LIMIT 1", (*args, *skip)).fetchone()
            if row is not None:
                return int(row[0]), str(row[1])
        return None

    def pending(self, limit: int = 100, after_id: int = 0) -> list[Row]:
        """Up to ``limit`` queued rows with id greater than ``after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, kind, label, created, attempts, historical FROM outbox "
                "WHERE id > ? ORDER BY id LIMIT ?", (int(after_id), int(limit))).fetchall()
        return [Row(int(r[0]), r[1], bytes(r[2]), int(r[3]), bool(r[4]), r[5], r[6], float(r[7]), int(r[8]),
                    bool(r[9])) for r in rows]

    def mark_sent(self, ids: list[int]) -> None:
        """Count one more delivery attempt for each id (a row sent before may reach subscribers twice)."""
        if not ids:
            return
        with self._lock:
            self._sync("NORMAL")
            self._db.execute(f"UPDATE outbox SET attempts = attempts + 1 WHERE id IN ({','.join('?' * len(ids))})",
                             [int(i) for i in ids])

    def ack(self, ids: int | list[int]) -> int:
        """Delete acknowledged rows; returns how many were still there (evicted rows are simply gone)."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        if not ids:
            return 0
        with self._lock:
            self._sync("NORMAL")
            cur = self._db.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(ids))})",
                                   [int(i) for i in ids])
            self._depth -= cur.rowcount
            return cur.rowcount

    def depth(self) -> int:
        """Number of rows waiting for the broker's acknowledgement."""
        with self._lock:
            return self._depth

    def last_id(self) -> int:
        """The highest id ever assigned (0 for a new outbox); rows up to it predate anything put later."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def dead_letter(self, refused: dict[int, str]) -> int:
        """Move rows the broker refused for good (``{row id: reason}``) to the ``dead_letter`` table.

        They leave the queue but stay on disk with the broker's reason, for an operator to look at and
        resend after fixing the broker's ACL or limits. Returns how many rows were moved.
        """
        if not refused:
            return 0
        with self._lock:
            self._sync("FULL")
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                moved = 0
                for row_id, reason in refused.items():
                    cur = db.execute(
                        "INSERT INTO dead_letter (id, topic, payload, kind, label, created, reason, refused) "
                        "SELECT id, topic, payload, kind, label, created, ?, ? FROM outbox WHERE id = ?",
                        (reason, time.time(), int(row_id)))
                    moved += cur.rowcount
                    db.execute("DELETE FROM outbox WHERE id = ?", (int(row_id),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._depth -= moved
            return moved

    def dead_letters(self) -> int:
        """Rows the broker refused for good, kept in the ``dead_letter`` table."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0])

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # a reader holds the WAL: the next open checkpoints it
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
