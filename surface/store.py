"""The surface archive: one schema, in SQLite (the embedded default) or PostgreSQL (production).

Opened by URL (:func:`open_store`): ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
``postgresql://user@host:port/db``. The schema is applied by ordered migration steps recorded in
``schema_version``; the SQL is the same for both databases except for the few words in
:class:`Dialect` (identity keys, binary columns, floats, the migration lock).

Writes come from the collector (:meth:`Store.ingest`, one transaction per batch, committed before the
batch's PUBACKs go out) and the review page (:meth:`Store.relabel`, the users); everything else reads.
Times are stored as ISO-8601 UTC text with microseconds (``iso_utc``), which sorts as time does in both
databases. Events are keyed by ``event_id``: a redelivered event is an insert that does nothing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.vocabulary import LABELS
from firmware_bridge.clock import utc_now
from surface.records import EventRecord, HealthRecord, StatusRecord, WaveformRecord
from surface.uncertainty import doubt

log = logging.getLogger(__name__)
ROLES = ("viewer", "reviewer", "admin")
# A first event of a boot at seq 10**6 would otherwise write a million missing rows: beyond this many the
# oldest seqs of the gap are not listed one by one (the alert still states the whole gap).
MAX_MISSING_ROWS = 100_000


# --------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class NodeSummary:
    """A node as the node list shows it: state, last seen, model and the latest health figures."""

    site: str
    node: str
    state: str | None
    state_ts: str | None
    first_seen: str
    last_seen: str
    boot_id: str | None
    version: str | None
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    last_health: str | None
    silent_since: str | None
    boots: int
    events: int
    missing_open: int
    backlog: int | None
    realtime_factor: float | None
    crc_rate: float | None  # crc_errors / (frames_ok + crc_errors) since the node's start
    gap_rate_per_h: float | None  # sample-stream gaps per hour of uptime
    board: dict | None


@dataclass(frozen=True)
class EventRow(EventRecord):
    """One archived event: the message's fields, and what the archive adds. ``label`` is the model's,
    ``reviewed_label`` a reviewer's latest."""

    received: str
    doubt: float
    doubt_reasons: tuple[str, ...]
    reviewed_label: str | None
    reviewed_by: str | None
    reviewed_at: str | None
    has_waveform: bool

    @property
    def current_label(self) -> str:
        """The reviewer's label when there is one, else the model's."""
        return self.reviewed_label or self.label


@dataclass(frozen=True)
class Waveform:
    """An event's window: float32 (channels, samples) in ``units``."""

    event_id: str
    start: str
    fs: float
    channels: tuple[str, ...]
    units: str
    data: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class LabelChange:
    """One relabel: who, when, from what to what, and why."""

    id: int
    event_id: str
    username: str
    at: str
    old_label: str
    new_label: str
    note: str


@dataclass(frozen=True)
class EventDetail:
    event: EventRow
    waveform: Waveform | None
    labels: tuple[LabelChange, ...]


@dataclass(frozen=True)
class EventQuery:
    """Filters of the event list; None means any. ``label`` matches the current label."""

    site: str | None = None
    node: str | None = None
    since: str | None = None  # trigger_time >= since
    until: str | None = None  # trigger_time < until
    label: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    historical: bool | None = None
    reviewed: bool | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class CountRow:
    bucket: str  # "YYYY-MM-DD" or "YYYY-MM-DDTHH"
    key: str  # a label, or "site/node"
    count: int


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str = field(repr=False)
    role: str
    created: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    username: str
    action: str
    detail: str


@dataclass(frozen=True)
class Alert:
    """Something the surface noticed: kind is ``gap``, ``recovered``, ``offline``, ``silent``, ``resumed``,
    ``restart``."""

    at: str
    site: str
    node: str
    kind: str
    severity: str  # "warning" or "info"
    message: str
    detail: dict = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class MissingRange:
    """Consecutive missing seqs of one boot: ``first_seq``..``last_seq`` inclusive."""

    site: str
    node: str
    boot_id: str
    first_seq: int
    last_seq: int
    noticed: str
    closed: str | None

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True)
class Rejected:
    """A message the collector could not parse: kept, with the reason, instead of dropped."""

    topic: str
    reason: str
    payload: bytes


@dataclass(frozen=True)
class BootSeen:
    """A boot_id stored for the first time; ``previous`` is the node's latest earlier boot, if any.

    ``live`` is false when the first sighting was a historical event (a late message of an old boot, not a
    restart happening now)."""

    site: str
    node: str
    boot_id: str
    previous: str | None
    live: bool = True


@dataclass
class IngestResult:
    """What one :meth:`Store.ingest` batch changed (the noticer turns some of it into alerts)."""

    events_new: int = 0
    events_duplicate: int = 0
    waveforms_new: int = 0
    waveforms_duplicate: int = 0
    health: int = 0
    rejected: int = 0
    statuses: list[StatusRecord] = field(default_factory=list)  # new ones only, not retained repeats
    boots: list[BootSeen] = field(default_factory=list)
    missing_new: int = 0
    filled: list[tuple[str, str, str, int, bool]] = field(default_factory=list)  # (..., seq, was alerted)
    resumed: list[tuple[str, str]] = field(default_factory=list)  # silent nodes whose health came back
    new_event_ids: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- dialects
@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases: a few type words, placeholders, the migration lock."""

    name: str
    pk: str  # an auto-numbered primary key column
    blob: str
    real: str

    def sql(self, text: str) -> str:
        text = text.replace("{pk}", self.pk).replace("{blob}", self.blob).replace("{real}", self.real)
        return text.replace("?", "%s") if self.name == "postgresql" else text


SQLITE = Dialect("sqlite", "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB", "REAL")
POSTGRES = Dialect("postgresql", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "BYTEA",
                   "DOUBLE PRECISION")

# --------------------------------------------------------------------------- schema
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "initial schema", (
        """CREATE TABLE nodes (site TEXT NOT NULL, node TEXT NOT NULL, first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL, state TEXT, state_ts TEXT, boot_id TEXT, version TEXT, model_name TEXT,
            model_version TEXT, model_sha256 TEXT, last_health TEXT, silent_since TEXT,
            PRIMARY KEY (site, node))""",
        """CREATE TABLE boots (site TEXT NOT NULL, node TEXT NOT NULL, boot_id TEXT NOT NULL,
            first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, PRIMARY KEY (site, node, boot_id))""",
        """CREATE TABLE events (event_id TEXT PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL,
            boot_id TEXT NOT NULL, seq INTEGER NOT NULL, trigger_time TEXT NOT NULL, window_start TEXT NOT NULL,
            fs {real} NOT NULL, samples INTEGER NOT NULL, channels TEXT NOT NULL, label TEXT NOT NULL,
            confidence {real} NOT NULL, entropy {real} NOT NULL, probabilities TEXT NOT NULL,
            features TEXT NOT NULL, ppv {real}, dominant_hz {real}, duration_s {real}, snr_db {real},
            model_name TEXT NOT NULL, model_version TEXT NOT NULL, model_sha256 TEXT NOT NULL,
            latency_ms {real} NOT NULL, historical INTEGER NOT NULL, received TEXT NOT NULL,
            doubt {real} NOT NULL, doubt_reasons TEXT NOT NULL, reviewed_label TEXT, reviewed_by TEXT,
            reviewed_at TEXT)""",
        "CREATE INDEX events_time ON events (trigger_time)",
        "CREATE INDEX events_node_time ON events (site, node, trigger_time)",
        "CREATE INDEX events_boot_seq ON events (site, node, boot_id, seq)",
        "CREATE INDEX events_doubt ON events (doubt)",
        """CREATE TABLE waveforms (event_id TEXT PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL,
            start TEXT NOT NULL, fs {real} NOT NULL, channels TEXT NOT NULL, samples INTEGER NOT NULL,
            units TEXT NOT NULL, data {blob} NOT NULL, received TEXT NOT NULL)""",
        """CREATE TABLE status_history (id {pk}, site TEXT NOT NULL, node TEXT NOT NULL, state TEXT NOT NULL,
            ts TEXT NOT NULL, boot_id TEXT NOT NULL, version TEXT NOT NULL, model_name TEXT NOT NULL,
            model_sha256 TEXT NOT NULL, received TEXT NOT NULL, UNIQUE (site, node, ts, state))""",
        """CREATE TABLE health_samples (id {pk}, site TEXT NOT NULL, node TEXT NOT NULL, boot_id TEXT NOT NULL,
            ts TEXT NOT NULL, received TEXT NOT NULL, uptime_s {real} NOT NULL, backlog INTEGER NOT NULL,
            realtime_factor {real}, frames_ok INTEGER NOT NULL, crc_errors INTEGER NOT NULL,
            gaps INTEGER NOT NULL, samples_missed INTEGER NOT NULL, board TEXT, payload TEXT NOT NULL,
            UNIQUE (site, node, boot_id, ts))""",
        "CREATE INDEX health_node ON health_samples (site, node, id)",
        """CREATE TABLE missing (site TEXT NOT NULL, node TEXT NOT NULL, boot_id TEXT NOT NULL,
            seq INTEGER NOT NULL, noticed TEXT NOT NULL, alerted TEXT, closed TEXT,
            PRIMARY KEY (site, node, boot_id, seq))""",
        "CREATE INDEX missing_open ON missing (closed, noticed)",
        """CREATE TABLE labels (id {pk}, event_id TEXT NOT NULL, username TEXT NOT NULL, at TEXT NOT NULL,
            old_label TEXT NOT NULL, new_label TEXT NOT NULL, note TEXT NOT NULL)""",
        "CREATE INDEX labels_event ON labels (event_id, id)",
        """CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL,
            created TEXT NOT NULL)""",
        """CREATE TABLE audit (id {pk}, at TEXT NOT NULL, username TEXT NOT NULL, action TEXT NOT NULL,
            detail TEXT NOT NULL)""",
        """CREATE TABLE alerts (id {pk}, at TEXT NOT NULL, site TEXT NOT NULL, node TEXT NOT NULL,
            kind TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX alerts_at ON alerts (at)",
        """CREATE TABLE rejected (id {pk}, received TEXT NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
            payload {blob} NOT NULL)""",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_EVENT_COLS = ("event_id, site, node, boot_id, seq, trigger_time, window_start, fs, samples, channels, label, "
               "confidence, entropy, probabilities, features, model_name, model_version, model_sha256, "
               "latency_ms, historical, received, doubt, doubt_reasons, reviewed_label, reviewed_by, reviewed_at")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _check_label(label: str) -> None:
    if label not in LABELS:
        raise ValueError(f"label {label!r} is not allowed; allowed: {', '.join(LABELS)}")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not allowed; allowed: {', '.join(ROLES)}")


# --------------------------------------------------------------------------- the store
class Store:
    """The archive over one DB-API connection; safe to share between threads (one lock)."""

    def __init__(self, conn: Any, dialect: Dialect, url: str, reconnect: Any = None) -> None:
        self._conn, self.dialect, self.url = conn, dialect, url
        self._reconnect = reconnect  # PostgreSQL: a new connection after the server dropped ours
        self._lock = threading.RLock()
        self._migrate()

    # ----------------------------------------------------------------- plumbing
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _x(self, cur: Any, sql: str, params: Sequence = ()) -> Any:
        cur.execute(self.dialect.sql(sql), tuple(params))
        return cur

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One write transaction; retried by the caller on a deadlock or a busy database."""
        with self._lock:
            if self.dialect is SQLITE:
                cur = self._conn.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    self._conn.rollback()
                    raise
                self._conn.commit()
            else:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur

    def _retry(self, fn: Any, *args: Any) -> Any:
        """Run a write transaction, again after a deadlock / serialization failure / locked database."""
        for attempt in range(5):
            try:
                with self._tx() as cur:
                    return fn(cur, *args)
            except Exception as exc:
                lost = self._connection_lost()
                if attempt == 4 or not (lost or self._transient(exc)):
                    raise
                time.sleep(0.05 * 2 ** attempt)
                if lost:
                    self._reopen()
        raise AssertionError("unreachable")

    def _connection_lost(self) -> bool:
        return self._reconnect is not None and bool(getattr(self._conn, "broken", False) or self._conn.closed)

    def _reopen(self) -> None:
        """Replace a connection the server dropped (restart, failover); a failure leaves the old one."""
        with self._lock:
            try:
                self._conn = self._reconnect()
            except Exception as exc:
                log.warning("archive %s: reconnecting failed (%s)", self.url, exc)

    def _transient(self, exc: Exception) -> bool:
        if isinstance(exc, sqlite3.OperationalError):
            return "locked" in str(exc) or "busy" in str(exc)
        try:
            import psycopg
        except ImportError:
            return False
        return isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)

    def _rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        for attempt in range(2):  # once more on a fresh connection when the server dropped ours
            with self._lock:
                cur = self._conn.cursor()
                try:
                    return list(self._x(cur, sql, params).fetchall())
                except Exception:
                    if attempt or not self._connection_lost():
                        raise
                finally:
                    cur.close()
            self._reopen()
        raise AssertionError("unreachable")

    def _one(self, sql: str, params: Sequence = ()) -> tuple | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _migrate(self) -> None:
        def step(cur: Any) -> None:
            self._x(cur, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "name TEXT NOT NULL, applied TEXT NOT NULL)")
            if self.dialect is POSTGRES:  # two collectors starting together: one migrates, the other waits
                self._x(cur, "SELECT pg_advisory_xact_lock(7140561)")
            current = self._x(cur, "SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                raise UserError(f"{self.url}: database schema version {current} is newer than this stopewatch "
                                f"understands ({SCHEMA_VERSION}); upgrade stopewatch")
            for version, name, statements in MIGRATIONS:
                if version > current:
                    for statement in statements:
                        self._x(cur, statement)
                    self._x(cur, "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                            (version, name, utc_now()))
        self._retry(step)

    def schema_version(self) -> int:
        """The schema version the database is at."""
        return int(self._one("SELECT MAX(version) FROM schema_version")[0])

    # ----------------------------------------------------------------- ingest (the collector)
    def ingest(self, items: Sequence[EventRecord | WaveformRecord | StatusRecord | HealthRecord | Rejected],
               received: str | None = None) -> IngestResult:
        """Store one batch of messages in one transaction; redelivered events and waveforms change nothing.

        Returns when the transaction is committed (durable: SQLite runs with ``synchronous=FULL``), so the
        caller may acknowledge every message of the batch.
        """
        received = received or utc_now()
        return self._retry(self._ingest, items, received)

    def _ingest(self, cur: Any, items: Sequence, received: str) -> IngestResult:
        res = IngestResult()
        for item in items:
            if isinstance(item, Rejected):
                self._x(cur, "INSERT INTO rejected (received, topic, reason, payload) VALUES (?, ?, ?, ?)",
                        (received, item.topic, item.reason, item.payload))
                res.rejected += 1
                continue
            self._touch_node(cur, item.site, item.node, received)
            if isinstance(item, EventRecord):
                self._touch_boot(cur, item.site, item.node, item.boot_id, received, res, not item.historical)
                self._event(cur, item, received, res)
            elif isinstance(item, WaveformRecord):
                n = self._x(cur, "INSERT INTO waveforms (event_id, site, node, start, fs, channels, samples, units, "
                                 "data, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                                 "ON CONFLICT (event_id) DO NOTHING",
                            (item.event_id, item.site, item.node, item.start, item.fs, _dumps(list(item.channels)),
                             item.samples, item.units, np.ascontiguousarray(item.data, "<f4").tobytes(),
                             received)).rowcount
                res.waveforms_new += n
                res.waveforms_duplicate += 1 - n
            elif isinstance(item, StatusRecord):
                self._touch_boot(cur, item.site, item.node, item.boot_id, received, res)
                self._status(cur, item, received, res)
            elif isinstance(item, HealthRecord):
                self._touch_boot(cur, item.site, item.node, item.boot_id, received, res)
                self._health(cur, item, received, res)
            else:
                raise TypeError(f"cannot store {type(item).__name__}")
        return res

    def _touch_node(self, cur: Any, site: str, node: str, received: str) -> None:
        self._x(cur, "INSERT INTO nodes (site, node, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (site, node) DO NOTHING", (site, node, received, received))
        self._x(cur, "UPDATE nodes SET last_seen = ? WHERE site = ? AND node = ? AND last_seen < ?",
                (received, site, node, received))

    def _touch_boot(self, cur: Any, site: str, node: str, boot_id: str, received: str, res: IngestResult,
                    live: bool = True) -> None:
        if self._x(cur, "INSERT INTO boots (site, node, boot_id, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (site, node, boot_id) DO NOTHING",
                   (site, node, boot_id, received, received)).rowcount:
            prev = self._x(cur, "SELECT boot_id FROM boots WHERE site = ? AND node = ? AND boot_id <> ? "
                                "ORDER BY first_seen DESC, boot_id LIMIT 1", (site, node, boot_id)).fetchone()
            res.boots.append(BootSeen(site, node, boot_id, prev[0] if prev else None, live))
        else:
            self._x(cur, "UPDATE boots SET last_seen = ? WHERE site = ? AND node = ? AND boot_id = ? "
                         "AND last_seen < ?", (received, site, node, boot_id, received))

    def _event(self, cur: Any, e: EventRecord, received: str, res: IngestResult) -> None:
        d = doubt(e.label, e.confidence, e.entropy, e.features)
        f = e.features
        n = self._x(cur, f"INSERT INTO events ({_EVENT_COLS}, ppv, dominant_hz, duration_s, snr_db) VALUES "
                         f"({', '.join(['?'] * 30)}) ON CONFLICT (event_id) DO NOTHING",
                    (e.event_id, e.site, e.node, e.boot_id, e.seq, e.trigger_time, e.window_start, e.fs, e.samples,
                     _dumps(list(e.channels)), e.label, e.confidence, e.entropy, _dumps(e.probabilities),
                     _dumps(f), e.model_name, e.model_version, e.model_sha256, e.latency_ms, int(e.historical),
                     received, d.score, _dumps(list(d.reasons)), None, None, None, float(f["ppv"]),
                     float(f["dominant_hz"]), float(f["duration_s"]), float(f["snr_db"]))).rowcount
        if not n:
            res.events_duplicate += 1
            return
        res.events_new += 1
        res.new_event_ids.append(e.event_id)
        key = (e.site, e.node, e.boot_id)
        # This seq may fill a gap noticed earlier ...
        row = self._x(cur, "SELECT alerted FROM missing WHERE site = ? AND node = ? AND boot_id = ? AND seq = ? "
                           "AND closed IS NULL", (*key, e.seq)).fetchone()
        if row is not None:
            self._x(cur, "UPDATE missing SET closed = ? WHERE site = ? AND node = ? AND boot_id = ? AND seq = ?",
                    (received, *key, e.seq))
            res.filled.append((*key, e.seq, row[0] is not None))
        # ... or open one: every seq between the highest stored below it and itself is missing.
        below = self._x(cur, "SELECT MAX(seq) FROM events WHERE site = ? AND node = ? AND boot_id = ? AND seq < ?",
                        (*key, e.seq)).fetchone()[0] or 0
        if e.seq - below > 1:
            first = max(below + 1, e.seq - MAX_MISSING_ROWS)
            rows = [(*key, s, received) for s in range(first, e.seq)]
            cur.executemany(self.dialect.sql("INSERT INTO missing (site, node, boot_id, seq, noticed) "
                                             "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"), rows)
            res.missing_new += len(rows)
        if not e.historical:
            self._x(cur, "UPDATE nodes SET model_name = ?, model_version = ?, model_sha256 = ? "
                         "WHERE site = ? AND node = ?", (e.model_name, e.model_version, e.model_sha256, e.site, e.node))

    def _status(self, cur: Any, s: StatusRecord, received: str, res: IngestResult) -> None:
        if not self._x(cur, "INSERT INTO status_history (site, node, state, ts, boot_id, version, model_name, "
                            "model_sha256, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (s.site, s.node, s.state, s.ts, s.boot_id, s.version, s.model_name, s.model_sha256,
                        received)).rowcount:
            return  # a retained status seen before (e.g. after the collector reconnects)
        res.statuses.append(s)
        # The latest new status wins, by arrival: a will's ts is when it was set (at the node's connect), so
        # an offline will is older by ts than the online status it overrides.
        self._x(cur, "UPDATE nodes SET state = ?, state_ts = ?, boot_id = ?, version = ?, model_name = ?, "
                     "model_sha256 = ? WHERE site = ? AND node = ?",
                (s.state, s.ts, s.boot_id, s.version, s.model_name, s.model_sha256, s.site, s.node))

    def _health(self, cur: Any, h: HealthRecord, received: str, res: IngestResult) -> None:
        self._x(cur, "INSERT INTO health_samples (site, node, boot_id, ts, received, uptime_s, backlog, "
                     "realtime_factor, frames_ok, crc_errors, gaps, samples_missed, board, payload) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (h.site, h.node, h.boot_id, h.ts, received, h.uptime_s, h.backlog, h.realtime_factor, h.frames_ok,
                 h.crc_errors, h.gaps, h.samples_missed, None if h.board is None else _dumps(h.board),
                 _dumps(h.payload)))
        res.health += 1
        row = self._x(cur, "SELECT silent_since FROM nodes WHERE site = ? AND node = ?", (h.site, h.node)).fetchone()
        if row and row[0] is not None:
            res.resumed.append((h.site, h.node))
        self._x(cur, "UPDATE nodes SET last_health = ?, silent_since = NULL WHERE site = ? AND node = ?",
                (received, h.site, h.node))

    # ----------------------------------------------------------------- noticing support
    def reconcile_missing(self, now: str | None = None) -> list[tuple[str, str, str, int, bool]]:
        """Close missing rows whose event is stored after all (two collectors racing on one boot)."""
        now = now or utc_now()

        def step(cur: Any) -> list:
            rows = self._x(cur, "SELECT m.site, m.node, m.boot_id, m.seq, m.alerted FROM missing m WHERE "
                                "m.closed IS NULL AND EXISTS (SELECT 1 FROM events e WHERE e.site = m.site AND "
                                "e.node = m.node AND e.boot_id = m.boot_id AND e.seq = m.seq)").fetchall()
            for r in rows:
                self._x(cur, "UPDATE missing SET closed = ? WHERE site = ? AND node = ? AND boot_id = ? AND seq = ?",
                        (now, *r[:4]))
            return [(*r[:4], r[4] is not None) for r in rows]
        return self._retry(step)

    def claim_gaps(self, noticed_before: str, now: str | None = None) -> list[MissingRange]:
        """Open missing seqs noticed before ``noticed_before`` and not yet alerted, as ranges; marks them
        alerted, so each gap is alerted once even with several collectors."""
        now = now or utc_now()

        def step(cur: Any) -> list[MissingRange]:
            rows = self._x(cur, "SELECT site, node, boot_id, seq, noticed FROM missing WHERE closed IS NULL AND "
                                "alerted IS NULL AND noticed < ? ORDER BY site, node, boot_id, seq",
                           (noticed_before,)).fetchall()
            claimed = []
            for r in rows:
                if self._x(cur, "UPDATE missing SET alerted = ? WHERE site = ? AND node = ? AND boot_id = ? "
                                "AND seq = ? AND alerted IS NULL", (now, *r[:4])).rowcount:
                    claimed.append(r)
            return _ranges(claimed, closed=None)
        return self._retry(step)

    def silent_nodes(self, health_before: str, now: str | None = None) -> list[NodeSummary]:
        """Online nodes with no health since ``health_before`` and not yet marked silent; marks them."""
        now = now or utc_now()

        def step(cur: Any) -> list[tuple[str, str]]:
            rows = self._x(cur, "SELECT site, node FROM nodes WHERE state = 'online' AND silent_since IS NULL "
                                "AND COALESCE(last_health, first_seen) < ? AND COALESCE(state_ts, first_seen) < ?",
                           (health_before, health_before)).fetchall()
            out = []
            for site, node in rows:
                if self._x(cur, "UPDATE nodes SET silent_since = ? WHERE site = ? AND node = ? AND "
                                "silent_since IS NULL", (now, site, node)).rowcount:
                    out.append((site, node))
            return out
        picked = set(self._retry(step))
        return [n for n in self.list_nodes() if (n.site, n.node) in picked]

    def add_alert(self, alert: Alert) -> Alert:
        """Store an alert; returns it with its id."""
        def step(cur: Any) -> int:
            return self._x(cur, "INSERT INTO alerts (at, site, node, kind, severity, message, detail) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                           (alert.at, alert.site, alert.node, alert.kind, alert.severity, alert.message,
                            _dumps(alert.detail))).fetchone()[0]
        new_id = self._retry(step)
        return Alert(alert.at, alert.site, alert.node, alert.kind, alert.severity, alert.message, alert.detail,
                     int(new_id))

    def list_alerts(self, since: str | None = None, site: str | None = None, node: str | None = None,
                    kind: str | None = None, limit: int = 200) -> list[Alert]:
        """Alerts, newest first."""
        where, params = _where({"at >= ?": since, "site = ?": site, "node = ?": node, "kind = ?": kind})
        rows = self._rows(f"SELECT at, site, node, kind, severity, message, detail, id FROM alerts{where} "
                          "ORDER BY id DESC LIMIT ?", (*params, int(limit)))
        return [Alert(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), int(r[7])) for r in rows]

    def list_missing(self, open_only: bool = True, site: str | None = None,
                     node: str | None = None) -> list[MissingRange]:
        """Missing events as ranges of consecutive seqs per boot (open ones only by default)."""
        conds = {"site = ?": site, "node = ?": node}
        where, params = _where(conds)
        if open_only:
            where += (" AND" if where else " WHERE") + " closed IS NULL"
        rows = self._rows(f"SELECT site, node, boot_id, seq, noticed, closed FROM missing{where} "
                          "ORDER BY site, node, boot_id, seq", params)
        return _ranges([r[:5] for r in rows], closed=[r[5] for r in rows])

    # ----------------------------------------------------------------- reads (the review page)
    def list_nodes(self) -> list[NodeSummary]:
        """Every node seen, with its state, model and latest health figures."""
        nodes = self._rows("SELECT site, node, state, state_ts, first_seen, last_seen, boot_id, version, model_name, "
                           "model_version, model_sha256, last_health, silent_since FROM nodes ORDER BY site, node")
        events = {(r[0], r[1]): int(r[2]) for r in
                  self._rows("SELECT site, node, COUNT(*) FROM events GROUP BY site, node")}
        missing = {(r[0], r[1]): int(r[2]) for r in
                   self._rows("SELECT site, node, COUNT(*) FROM missing WHERE closed IS NULL GROUP BY site, node")}
        boots = {(r[0], r[1]): int(r[2]) for r in
                 self._rows("SELECT site, node, COUNT(*) FROM boots GROUP BY site, node")}
        out = []
        for r in nodes:
            key = (r[0], r[1])
            h = self._one("SELECT backlog, realtime_factor, frames_ok, crc_errors, gaps, uptime_s, board "
                          "FROM health_samples WHERE site = ? AND node = ? ORDER BY id DESC LIMIT 1", key)
            crc = gap = None
            if h is not None:
                frames = h[2] + h[3]
                crc = h[3] / frames if frames else 0.0
                gap = h[4] / (h[5] / 3600.0) if h[5] > 0 else None
            out.append(NodeSummary(
                site=r[0], node=r[1], state=r[2], state_ts=r[3], first_seen=r[4], last_seen=r[5], boot_id=r[6],
                version=r[7], model_name=r[8], model_version=r[9], model_sha256=r[10], last_health=r[11],
                silent_since=r[12], boots=boots.get(key, 0), events=events.get(key, 0),
                missing_open=missing.get(key, 0), backlog=None if h is None else int(h[0]),
                realtime_factor=None if h is None else h[1], crc_rate=crc, gap_rate_per_h=gap,
                board=None if h is None or h[6] is None else json.loads(h[6])))
        return out

    def _event_where(self, q: EventQuery) -> tuple[str, list]:
        conds: dict[str, Any] = {"site = ?": q.site, "node = ?": q.node, "trigger_time >= ?": q.since,
                                 "trigger_time < ?": q.until, "COALESCE(reviewed_label, label) = ?": q.label,
                                 "confidence >= ?": q.min_confidence, "confidence <= ?": q.max_confidence,
                                 "historical = ?": None if q.historical is None else int(q.historical)}
        where, params = _where(conds)
        if q.reviewed is not None:
            where += (" AND" if where else " WHERE") + \
                     (" reviewed_label IS NOT NULL" if q.reviewed else " reviewed_label IS NULL")
        return where, params

    def query_events(self, q: EventQuery = EventQuery()) -> list[EventRow]:
        """Events matching ``q``, newest trigger first."""
        where, params = self._event_where(q)
        return self._event_rows(f"{where} ORDER BY trigger_time DESC, event_id LIMIT ? OFFSET ?",
                                (*params, int(q.limit), int(q.offset)))

    def count_events(self, q: EventQuery = EventQuery()) -> int:
        """How many events match ``q`` (limit and offset ignored)."""
        where, params = self._event_where(q)
        return int(self._one(f"SELECT COUNT(*) FROM events{where}", params)[0])

    def _event_rows(self, tail: str, params: Sequence) -> list[EventRow]:
        rows = self._rows(f"SELECT {_EVENT_COLS}, (SELECT COUNT(*) FROM waveforms w WHERE w.event_id = "
                          f"events.event_id) FROM events{tail}", params)
        return [_event_row(r) for r in rows]

    def get_event(self, event_id: str) -> EventDetail | None:
        """One event with its waveform (None if it never arrived) and its relabel history, or None."""
        rows = self._event_rows(" WHERE event_id = ?", (event_id,))
        if not rows:
            return None
        return EventDetail(rows[0], self.get_waveform(event_id), tuple(self.label_history(event_id)))

    def get_waveform(self, event_id: str) -> Waveform | None:
        r = self._one("SELECT event_id, start, fs, channels, units, samples, data FROM waveforms WHERE event_id = ?",
                      (event_id,))
        if r is None:
            return None
        channels = tuple(json.loads(r[3]))
        data = np.frombuffer(bytes(r[6]), dtype="<f4").reshape(len(channels), int(r[5])).astype(np.float32)
        return Waveform(r[0], r[1], float(r[2]), channels, r[4], data)

    def waveform_units(self, event_id: str) -> str | None:
        """The physical units of an event's waveform (None when it has none)."""
        r = self._one("SELECT units FROM waveforms WHERE event_id = ?", (event_id,))
        return None if r is None else r[0]

    def label_history(self, event_id: str) -> list[LabelChange]:
        rows = self._rows("SELECT id, event_id, username, at, old_label, new_label, note FROM labels "
                          "WHERE event_id = ? ORDER BY id", (event_id,))
        return [LabelChange(int(r[0]), *r[1:]) for r in rows]

    def review_queue(self, limit: int = 50, site: str | None = None, node: str | None = None,
                     include_reviewed: bool = False) -> list[EventRow]:
        """Events not yet reviewed, most doubtful first (surface/uncertainty.py defines the score)."""
        where, params = _where({"site = ?": site, "node = ?": node})
        if not include_reviewed:
            where += (" AND" if where else " WHERE") + " reviewed_label IS NULL"
        return self._event_rows(f"{where} ORDER BY doubt DESC, trigger_time DESC, event_id LIMIT ?",
                                (*params, int(limit)))

    def counts(self, by: str = "label", bucket: str = "day", since: str | None = None,
               until: str | None = None) -> list[CountRow]:
        """Events per (time bucket, label or node): ``by`` is ``label`` or ``node``, ``bucket`` ``hour`` or
        ``day``; the label is the current one (a reviewer's, else the model's)."""
        keys = {"label": "COALESCE(reviewed_label, label)", "node": "site || '/' || node"}
        widths = {"hour": 13, "day": 10}
        if by not in keys:
            raise ValueError(f"by = {by!r}; allowed: {', '.join(keys)}")
        if bucket not in widths:
            raise ValueError(f"bucket = {bucket!r}; allowed: {', '.join(widths)}")
        where, params = _where({"trigger_time >= ?": since, "trigger_time < ?": until})
        b = f"SUBSTR(trigger_time, 1, {widths[bucket]})"
        rows = self._rows(f"SELECT {b}, {keys[by]}, COUNT(*) FROM events{where} GROUP BY {b}, {keys[by]} "
                          f"ORDER BY 1, 2", params)
        return [CountRow(r[0], r[1], int(r[2])) for r in rows]

    def status_history(self, site: str, node: str, limit: int = 100) -> list[StatusRecord]:
        """A node's status changes, newest first."""
        rows = self._rows("SELECT site, node, state, ts, boot_id, version, model_name, model_sha256 FROM "
                          "status_history WHERE site = ? AND node = ? ORDER BY id DESC LIMIT ?",
                          (site, node, int(limit)))
        return [StatusRecord(*r) for r in rows]

    def health_history(self, site: str, node: str, limit: int = 100) -> list[dict]:
        """A node's health messages as published (newest first)."""
        rows = self._rows("SELECT payload FROM health_samples WHERE site = ? AND node = ? ORDER BY id DESC LIMIT ?",
                          (site, node, int(limit)))
        return [json.loads(r[0]) for r in rows]

    def boots(self, site: str, node: str) -> list[tuple[str, str, str]]:
        """(boot_id, first_seen, last_seen) of a node, oldest first: each new one is a restart."""
        return [tuple(r) for r in self._rows("SELECT boot_id, first_seen, last_seen FROM boots WHERE site = ? AND "
                                             "node = ? ORDER BY first_seen, boot_id", (site, node))]

    def rejected(self, limit: int = 100) -> list[tuple[str, str, str, bytes]]:
        """(received, topic, reason, payload) of messages that could not be parsed, newest first."""
        return [(r[0], r[1], r[2], bytes(r[3])) for r in
                self._rows("SELECT received, topic, reason, payload FROM rejected ORDER BY id DESC LIMIT ?",
                           (int(limit),))]

    def iter_export(self, reviewed_only: bool = True, since: str | None = None,
                    batch: int = 500) -> Iterator[tuple[EventRow, Waveform]]:
        """Events that have a waveform, oldest first (``since``: trigger_time >= since), with the waveform."""
        last = ""
        while True:
            q = EventQuery(since=since, reviewed=True if reviewed_only else None)
            where, params = self._event_where(q)
            where += (" AND" if where else " WHERE") + \
                " event_id > ? AND EXISTS (SELECT 1 FROM waveforms w WHERE w.event_id = events.event_id)"
            rows = self._event_rows(f"{where} ORDER BY event_id LIMIT ?", (*params, last, batch))
            if not rows:
                return
            for row in rows:
                wf = self.get_waveform(row.event_id)
                if wf is not None:
                    yield row, wf
            last = rows[-1].event_id

    # ----------------------------------------------------------------- relabel
    def relabel(self, event_id: str, new_label: str, username: str, note: str = "") -> LabelChange:
        """Set an event's reviewed label; the change is kept in ``labels`` and in the audit trail.

        Raises KeyError for an unknown event and ValueError for a label outside the vocabulary.
        """
        _check_label(new_label)
        at = utc_now()

        def step(cur: Any) -> LabelChange:
            row = self._x(cur, "SELECT COALESCE(reviewed_label, label) FROM events WHERE event_id = ?",
                          (event_id,)).fetchone()
            if row is None:
                raise KeyError(f"no event {event_id!r}")
            old = row[0]
            new_id = self._x(cur, "INSERT INTO labels (event_id, username, at, old_label, new_label, note) "
                                  "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                             (event_id, username, at, old, new_label, note)).fetchone()[0]
            self._x(cur, "UPDATE events SET reviewed_label = ?, reviewed_by = ?, reviewed_at = ? WHERE event_id = ?",
                    (new_label, username, at, event_id))
            self._audit(cur, username, "relabel", f"{event_id}: {old} -> {new_label}" + (f" ({note})" if note else ""),
                        at)
            return LabelChange(int(new_id), event_id, username, at, old, new_label, note)
        return self._retry(step)

    # ----------------------------------------------------------------- users and audit
    def _audit(self, cur: Any, username: str, action: str, detail: str, at: str | None = None) -> None:
        self._x(cur, "INSERT INTO audit (at, username, action, detail) VALUES (?, ?, ?, ?)",
                (at or utc_now(), username, action, detail))

    def audit(self, username: str, action: str, detail: str = "") -> None:
        """Add one line to the audit trail (e.g. a login, a user change)."""
        self._retry(self._audit, username, action, detail)

    def list_audit(self, limit: int = 200, username: str | None = None) -> list[AuditEntry]:
        """The audit trail, newest first."""
        where, params = _where({"username = ?": username})
        rows = self._rows(f"SELECT id, at, username, action, detail FROM audit{where} ORDER BY id DESC LIMIT ?",
                          (*params, int(limit)))
        return [AuditEntry(int(r[0]), *r[1:]) for r in rows]

    def create_user(self, username: str, password_hash: str, role: str, actor: str | None = None) -> User:
        """A new user (store only the hash; surface/accounts.py makes it). ValueError if taken or bad role."""
        _check_role(role)
        if not username or not password_hash:
            raise ValueError("username and password hash must not be empty")
        created = utc_now()

        def step(cur: Any) -> None:
            if not self._x(cur, "INSERT INTO users (username, password_hash, role, created) VALUES (?, ?, ?, ?) "
                                "ON CONFLICT (username) DO NOTHING", (username, password_hash, role, created)).rowcount:
                raise ValueError(f"user {username!r} already exists")
            if actor:
                self._audit(cur, actor, "create user", f"{username} ({role})", created)
        self._retry(step)
        return User(username, password_hash, role, created)

    def get_user(self, username: str) -> User | None:
        r = self._one("SELECT username, password_hash, role, created FROM users WHERE username = ?", (username,))
        return None if r is None else User(*r)

    def list_users(self) -> list[User]:
        return [User(*r) for r in self._rows("SELECT username, password_hash, role, created FROM users "
                                             "ORDER BY username")]

    def _update_user(self, username: str, column: str, value: str, actor: str | None, what: str) -> None:
        def step(cur: Any) -> None:
            if not self._x(cur, f"UPDATE users SET {column} = ? WHERE username = ?", (value, username)).rowcount:
                raise KeyError(f"no user {username!r}")
            if actor:
                self._audit(cur, actor, what, username if column == "password_hash" else f"{username}: {value}")
        self._retry(step)

    def set_role(self, username: str, role: str, actor: str | None = None) -> None:
        _check_role(role)
        self._update_user(username, "role", role, actor, "set role")

    def set_password_hash(self, username: str, password_hash: str, actor: str | None = None) -> None:
        if not password_hash:
            raise ValueError("password hash must not be empty")
        self._update_user(username, "password_hash", password_hash, actor, "set password")

    def delete_user(self, username: str, actor: str | None = None) -> None:
        def step(cur: Any) -> None:
            if not self._x(cur, "DELETE FROM users WHERE username = ?", (username,)).rowcount:
                raise KeyError(f"no user {username!r}")
            if actor:
                self._audit(cur, actor, "delete user", username)
        self._retry(step)


# --------------------------------------------------------------------------- helpers
def _where(conds: dict[str, Any]) -> tuple[str, list]:
    used = [(c, v) for c, v in conds.items() if v is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]


def _event_row(r: tuple) -> EventRow:
    return EventRow(
        event_id=r[0], site=r[1], node=r[2], boot_id=r[3], seq=int(r[4]), trigger_time=r[5], window_start=r[6],
        fs=float(r[7]), samples=int(r[8]), channels=tuple(json.loads(r[9])), label=r[10], confidence=float(r[11]),
        entropy=float(r[12]), probabilities=json.loads(r[13]), features=json.loads(r[14]), model_name=r[15],
        model_version=r[16], model_sha256=r[17], latency_ms=float(r[18]), historical=bool(r[19]), received=r[20],
        doubt=float(r[21]), doubt_reasons=tuple(json.loads(r[22])), reviewed_label=r[23], reviewed_by=r[24],
        reviewed_at=r[25], has_waveform=bool(r[26]))


def _ranges(rows: Sequence[tuple], closed: Sequence[str | None] | None) -> list[MissingRange]:
    """(site, node, boot_id, seq, noticed) rows sorted by key and seq -> ranges of consecutive seqs."""
    out: list[MissingRange] = []
    for i, (site, node, boot_id, seq, noticed) in enumerate(rows):
        c = None if closed is None else closed[i]
        last = out[-1] if out else None
        if (last is not None and (last.site, last.node, last.boot_id) == (site, node, boot_id)
                and last.last_seq + 1 == seq and (last.closed is None) == (c is None)):
            out[-1] = MissingRange(site, node, boot_id, last.first_seq, int(seq), min(last.noticed, noticed),
                                   max(last.closed, c) if c and last.closed else c)
        else:
            out.append(MissingRange(site, node, boot_id, int(seq), int(seq), noticed, c))
    return out


def open_store(url: str) -> Store:
    """Open (and migrate) the archive at ``url``: ``sqlite:///PATH`` or ``postgresql://...``.

    A bad URL, a missing directory or an unreachable server is a UserError of one line.
    """
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        if not rest.startswith("/") or rest == "/":
            raise UserError(f"database URL {url!r}: expected sqlite:///relative/path.db or sqlite:////abs/path.db")
        path = rest[1:]
        if path != ":memory:":
            parent = Path(path).resolve().parent
            if not parent.is_dir():
                raise UserError(f"database URL {url!r}: directory {parent} does not exist")
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the PUBACK goes out
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as exc:
            raise UserError(f"database URL {url!r}: cannot open ({exc})") from None
        return Store(conn, SQLITE, url)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg
        except ImportError:
            raise UserError("PostgreSQL needs psycopg 3: pip install 'stopewatch[surface]'") from None
        def connect() -> Any:
            return psycopg.connect(url, connect_timeout=10, autocommit=True)  # writes use transaction()

        try:
            conn = connect()
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"database URL {_redact(url)!r}: cannot connect ({first})") from None
        return Store(conn, POSTGRES, _redact(url), reconnect=connect)
    raise UserError(f"database URL {url!r}: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


def _redact(url: str) -> str:
    """The URL without a password (it goes into logs and error lines)."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, cred = head.partition("//")
    return f"{scheme}//{cred.split(':', 1)[0]}:***@{tail}"
