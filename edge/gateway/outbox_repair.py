"""Checking the outbox file at start, and salvaging what can be read from a damaged one.

SQLite recovers from a torn write on its own, but it does so quietly: a write-ahead log (WAL) frame with a
bad checksum ends the log, and every transaction after it is dropped without a word. For an outbox that
is silent loss of events, so before SQLite opens the file this module reads the WAL itself
(:func:`inspect_wal`, the format of https://www.sqlite.org/fileformat2.html#walformat) and counts the
committed transactions SQLite would throw away; then ``PRAGMA quick_check`` looks at the main file.

A damaged outbox is set aside (renamed with a UTC timestamp, never deleted, with its WAL) and salvaged
(:func:`salvage`) from a copy: the copy's WAL is resealed (fresh checksums, so every committed frame is
applied, a damaged page included) and then read by ``sqlite3 .recover`` when the sqlite3 command-line tool
is installed (it reads the b-tree pages directly, past damaged ones), else row by row through Python's
sqlite3. Each row read back is checked (topic, kind, a JSON event) before it goes into the new outbox
with its old id, so the order of the backlog is kept. Rows found but unreadable, and rows the damaged
file counts but no method could read, are reported as lost.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little-endian / big-endian words
_WAL_HEADER, _FRAME_HEADER = 32, 24
_COLUMNS = ("id", "topic", "payload", "qos", "retain", "kind", "label", "created", "attempts", "historical")
_DEAD_COLUMNS = ("id", "topic", "payload", "kind", "label", "created", "reason", "refused")
KINDS = ("event", "waveform")


@dataclass(frozen=True)
class WalReport:
    """What SQLite would make of a WAL file: frames of the current log, and committed ones it would drop."""

    frames: int  # complete frames written in the log's current generation (its salts)
    valid_frames: int  # frames up to the first bad checksum: what SQLite reads
    lost_commits: int  # committed transactions after that point, which SQLite would drop silently
    problem: str | None  # why the log is damaged, None when it is sound

    @property
    def damaged(self) -> bool:
        return self.problem is not None


@dataclass(frozen=True)
class Recovery:
    """The outcome of setting a damaged outbox aside and salvaging it (reported in logs and health)."""

    problem: str  # what the check found
    set_aside: str  # where the damaged file now is
    recovered: int  # rows put back into the new outbox
    lost: int  # rows found damaged, or counted by the damaged file but unreadable
    dead_letters: int  # rows of the dead-letter table carried over
    method: str  # "sqlite3 .recover" or "row by row"

    def as_dict(self) -> dict:
        return {"problem": self.problem, "set_aside": self.set_aside, "recovered": self.recovered,
                "lost": self.lost, "dead_letters": self.dead_letters, "method": self.method}


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def _frames(raw: bytes) -> tuple[int, bool, int, tuple[int, int], list[int]] | None:
    """(page size, big-endian, salts, header checksum, offsets of the current generation's frames), or None
    when the header itself is bad."""
    if len(raw) < _WAL_HEADER:
        return None
    magic, _version, page, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", raw[:_WAL_HEADER])
    if magic not in WAL_MAGIC or page < 512 or page > 65536 or page & (page - 1):
        return None
    big = magic == WAL_MAGIC[1]
    if _checksum(raw[:24], big, 0, 0) != (c1, c2):
        return None
    size = _FRAME_HEADER + page
    offsets = []
    last_own = -1  # the current generation is a prefix; a frame whose salts were hit lies inside it
    for n, off in enumerate(range(_WAL_HEADER, len(raw) - size + 1, size)):
        offsets.append(off)
        if struct.unpack(">2I", raw[off + 8:off + 16]) == (salt1, salt2):
            last_own = n
    return page, big, (salt1, salt2), (c1, c2), offsets[:last_own + 1]


def inspect_wal(path: Path) -> WalReport:
    """Read a WAL file as SQLite's recovery would, and count the committed frames it would drop."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return WalReport(0, 0, 0, None)
    parsed = _frames(raw)
    if parsed is None:
        if len(raw) > _WAL_HEADER:  # a bad header: SQLite ignores the whole log
            return WalReport(0, 0, -1, f"{path.name}: the write-ahead log's header is damaged; SQLite would "
                                       f"ignore all {len(raw)} bytes of it")
        return WalReport(0, 0, 0, None)
    page, big, salts, (s0, s1), offsets = parsed
    valid = 0
    lost_commits = 0
    broken_at: int | None = None
    for n, off in enumerate(offsets):
        head = raw[off:off + _FRAME_HEADER]
        _pgno, commit, salt1, salt2, c1, c2 = struct.unpack(">6I", head)
        if broken_at is None:
            s0, s1 = _checksum(head[:8], big, s0, s1)
            s0, s1 = _checksum(raw[off + _FRAME_HEADER:off + _FRAME_HEADER + page], big, s0, s1)
            if (salt1, salt2) == salts and (s0, s1) == (c1, c2):
                valid = n + 1
                continue
            broken_at = n
        if commit:
            lost_commits += 1
    if broken_at is not None and lost_commits:
        return WalReport(len(offsets), valid, lost_commits,
                         f"{path.name}: frame {broken_at + 1} of {len(offsets)} of the write-ahead log is damaged; "
                         f"SQLite would silently drop the {lost_commits} committed transactions after it")
    return WalReport(len(offsets), valid, 0, None)


def reseal_wal(path: Path) -> int:
    """Rewrite the salts and checksums of every frame of the WAL's current generation so that SQLite applies
    them all (for a salvage copy, never the original); returns how many frames were resealed."""
    raw = bytearray(path.read_bytes())
    parsed = _frames(bytes(raw))
    if parsed is None:
        return 0
    page, big, salts, (s0, s1), offsets = parsed
    for off in offsets:
        struct.pack_into(">2I", raw, off + 8, *salts)
        s0, s1 = _checksum(bytes(raw[off:off + 8]), big, s0, s1)
        s0, s1 = _checksum(bytes(raw[off + _FRAME_HEADER:off + _FRAME_HEADER + page]), big, s0, s1)
        struct.pack_into(">2I", raw, off + 16, s0, s1)
    path.write_bytes(bytes(raw))
    return len(offsets)


def quick_check(db: sqlite3.Connection, name: str) -> str | None:
    """Why the open outbox (main file and its sound WAL) is damaged: ``PRAGMA quick_check`` and a read of
    every row's length, or None."""
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            return f"{name}: PRAGMA quick_check found damage ({'; '.join(problems)})"
        db.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM outbox").fetchone()
    except sqlite3.DatabaseError as exc:
        return f"{name}: SQLite cannot read it ({exc})"
    return None


def set_aside(path: Path, now: datetime | None = None) -> Path:
    """Rename the damaged outbox and its WAL/shared-memory files to ``<name>.damaged-<UTC time>`` (never deleted)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.rename(f"{target}{suffix}")
    return target


def _valid(row: dict) -> bool:
    """A salvaged outbox row that can be sent as it is: a topic, a known kind, and for an event its JSON."""
    try:
        if not (isinstance(row["id"], int) and row["id"] > 0 and isinstance(row["topic"], str) and row["topic"]
                and isinstance(row["payload"], bytes) and row["payload"] and row["kind"] in KINDS
                and row["qos"] in (0, 1, 2) and isinstance(row["created"], int | float)):
            return False
        body = json.loads(row["payload"])
        return isinstance(body, dict) and bool(body.get("event_id")) and (
            row["kind"] != "event" or body.get("schema", "").startswith("stopewatch.event/"))
    except (KeyError, TypeError, ValueError):
        return False


@dataclass
class _Salvaged:
    rows: list[dict]
    dead: list[dict]
    damaged_rows: int  # rows found but failing the check
    counted: int | None  # rows the damaged file says it holds, when it can still count them
    max_seq: int  # the highest id ever assigned, as far as can be read
    method: str


def _counted(db: sqlite3.Connection) -> tuple[int | None, int]:
    count = seq = None
    with contextlib.suppress(sqlite3.DatabaseError):
        count = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    with contextlib.suppress(sqlite3.DatabaseError, TypeError):
        seq = int(db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0])
    return count, seq or 0


def _recover_with_cli(copy: Path, work: Path, sqlite3_cli: str) -> _Salvaged | None:
    """``sqlite3 copy .recover | sqlite3 recovered`` (streamed: the SQL text is never held in memory)."""
    out = work / "recovered.sqlite"
    try:
        with subprocess.Popen([sqlite3_cli, str(copy), ".recover"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as dump:
            load = subprocess.run([sqlite3_cli, str(out)], stdin=dump.stdout, capture_output=True, timeout=600)
            dump.stdout.close()
            dump.wait(600)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if dump.returncode != 0 or load.returncode != 0 or not out.exists():
        return None  # e.g. Debian's sqlite3 is built without the sqlite_dbpage table .recover needs
    rows: list[dict] = []
    dead: list[dict] = []
    damaged = 0
    with contextlib.closing(sqlite3.connect(out)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "outbox" in tables:
            for values in db.execute(f"SELECT {', '.join(_COLUMNS)} FROM outbox ORDER BY id"):
                row = dict(zip(_COLUMNS, values, strict=True))
                if isinstance(row["payload"], str):
                    row["payload"] = row["payload"].encode()
                if _valid(row):
                    rows.append(row)
                else:
                    damaged += 1
        if "dead_letter" in tables:
            dead = [dict(zip(_DEAD_COLUMNS, v, strict=True))
                    for v in db.execute(f"SELECT {', '.join(_DEAD_COLUMNS)} FROM dead_letter ORDER BY id")]
        if "lost_and_found" in tables:
            # Records whose table .recover could not tell: ten fields is an outbox row (id is the rowid).
            cols = [r[1] for r in db.execute("PRAGMA table_info(lost_and_found)")]
            width = len(_COLUMNS)
            if {"nfield", "id"} <= set(cols) and f"c{width - 1}" in cols:
                fields = ", ".join(f"c{i}" for i in range(1, width))
                for values in db.execute(f"SELECT id, {fields} FROM lost_and_found WHERE nfield = ?", (width,)):
                    row = dict(zip(_COLUMNS, values, strict=True))
                    if isinstance(row["payload"], str):
                        row["payload"] = row["payload"].encode()
                    if _valid(row) and all(r["id"] != row["id"] for r in rows):
                        rows.append(row)
                    else:
                        damaged += 1
    rows.sort(key=lambda r: r["id"])
    return _Salvaged(rows, dead, damaged, None, 0, "sqlite3 .recover")


def _recover_row_by_row(copy: Path) -> _Salvaged:
    """Python-level salvage: every id the table or its indexes still name, read one row at a time."""
    rows: list[dict] = []
    dead: list[dict] = []
    damaged = 0
    ids: set[int] = set()
    try:
        db = sqlite3.connect(copy)
    except sqlite3.DatabaseError:
        return _Salvaged([], [], 0, None, 0, "row by row")
    with contextlib.closing(db):
        for query in ("SELECT id FROM outbox", "SELECT id FROM outbox INDEXED BY outbox_kind",
                      "SELECT id FROM outbox INDEXED BY outbox_label"):
            with contextlib.suppress(sqlite3.DatabaseError):
                for (row_id,) in db.execute(query):  # a damaged page ends the scan; what came before counts
                    ids.add(int(row_id))
        for row_id in sorted(ids):
            try:
                values = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM outbox WHERE id = ?", (row_id,)).fetchone()
            except sqlite3.DatabaseError:
                damaged += 1
                continue
            row = dict(zip(_COLUMNS, values, strict=True)) if values else None
            if row is not None and _valid(row):
                rows.append(row)
            else:
                damaged += 1
        with contextlib.suppress(sqlite3.DatabaseError):
            dead = [dict(zip(_DEAD_COLUMNS, v, strict=True))
                    for v in db.execute(f"SELECT {', '.join(_DEAD_COLUMNS)} FROM dead_letter ORDER BY id")]
        counted, seq = _counted(db)
    return _Salvaged(rows, dead, damaged, counted, seq, "row by row")


def salvage(damaged: Path, sqlite3_cli: str | None = None) -> _Salvaged:
    """Read what can be read from a damaged outbox (at ``damaged``, with its ``-wal`` if any), on a copy."""
    cli = sqlite3_cli if sqlite3_cli is not None else shutil.which("sqlite3")
    with tempfile.TemporaryDirectory(prefix="outbox-salvage-") as tmp:
        work = Path(tmp)
        copy = work / "damaged.sqlite"
        shutil.copyfile(damaged, copy)
        wal = Path(f"{damaged}-wal")
        if wal.exists():
            shutil.copyfile(wal, f"{copy}-wal")
            reseal_wal(Path(f"{copy}-wal"))
        counted, seq = None, 0
        with contextlib.suppress(sqlite3.DatabaseError), contextlib.closing(sqlite3.connect(copy)) as db:
            counted, seq = _counted(db)  # also folds the resealed WAL into the copy
        found = _recover_with_cli(copy, work, cli) if cli else None
        if found is None:
            found = _recover_row_by_row(copy)
        found.counted = counted if counted is not None else found.counted
        found.max_seq = max(seq, found.max_seq, max((r["id"] for r in found.rows), default=0))
        return found
