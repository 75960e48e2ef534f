"""The continuous archive: the board's stream as miniSEED 2 in a bounded ring of SDS day files.

Layout (SeisComP Data Structure): ``{root}/YEAR/NET/STA/CHA.D/NET.STA.LOC.CHA.D.YEAR.DOY``, one file per
channel and UTC day; a record goes into the file of the day it starts in. SeisComP, ObsPy
(``obspy.clients.filesystem.sds``) and Swarm read such a tree as it is.

What is written: the board's own counts (int16/int24 boards as Steim-2 compressed int32, or Steim-1 or
plain int32 as ``archive.encoding`` says; int32 boards as plain int32 unless Steim-1 is chosen, because
Steim-2 cannot hold a full-scale int32 step; float32 boards as float32, text-mode boards as float64),
with the board's gaps kept
as gaps: a jump in the sample index flushes what is buffered and starts a new record. Each record's start
time comes from the board's sample clock; within a continuous run the time follows the nominal rate and
is re-anchored to the clock (a "time tear", counted) when the two part by more than half the clock's
stated error (at least half a sample). Every record carries the clock's SEED timing quality (blockette 1001).

The packing is libmseed's (pymseed): a rolling trace list per channel that emits full records as
samples arrive, fed in batches of ``BATCH_S`` (5 s: the Python around each batch costs more than
libmseed's packing of a 1 s batch); the archive's latency is those 5 s plus one record (about 0.5 s of a 4 kHz
channel at 4096 bytes), and a killed daemon loses at most that much (SIGTERM writes everything).
A day file holds only its day: a block that crosses midnight UTC is split there.

The ring: after each write the oldest day files go while the archive is larger than ``max_bytes``, while a
day ended more than ``max_days`` before the newest data, or while the disk has less than
``min_free_bytes`` free (the outbox must always have room). When only the current day is left and it is
still too large, its oldest records are cut off (the file rewritten from its tail, records are fixed
length). When the disk stays too full anyway, records are dropped and counted. No fault here stops the
daemon: every one is logged with its cause and counted in health's ``archive``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge.gateway.config import ArchiveConfig
from edge.gateway.streams import StreamCodes
from firmware_bridge.clock import iso_utc

if TYPE_CHECKING:
    from pymseed import MS3TraceList

log = logging.getLogger("stopewatch.archive")
_DAY_FILE = re.compile(r"^[A-Z0-9]*\.[A-Z0-9]*\.[A-Z0-9]*\.[A-Z0-9]*\.D\.(\d{4})\.(\d{3})$")
DAY_NS = 86_400 * 10**9
AGE_CHECK_NS = 60 * 10**9
BATCH_S = 5.0  # samples are packed in batches of this many seconds (the archive's latency, plus a record)
TRIM_TO = 0.9  # a trimmed archive is cut to this fraction of max_bytes, so trims are rare
LOG_EVERY_S = 60.0  # repeated faults of one kind: one journal line per minute with the count


class TimingSource(Protocol):
    """What the archive needs of a clock (firmware_bridge.clock.SampleClock)."""

    def time_ns(self, index: int | float) -> int: ...

    @property
    def error_ns(self) -> int | None: ...

    @property
    def quality(self) -> int: ...


@dataclass
class ArchiveStats:
    """Counters for health's ``archive`` object."""

    records: int = 0  # records written
    bytes_written: int = 0
    gaps: int = 0  # breaks in the board's sample index (each starts a new record)
    time_tears: int = 0  # re-anchorings of a continuous run to the clock
    write_errors: int = 0
    records_dropped: int = 0  # records not written (write error, or no disk space left)
    files_deleted: int = 0
    records_trimmed: int = 0  # records cut off the head of a day file
    size_bytes: int = 0  # the archive on disk now
    files: int = 0
    oldest: str | None = None  # first day on disk, YYYY-DDD
    timing_quality: int = 0  # of the last records written
    last_error: str | None = None
    cpu_s: float = 0.0  # CPU time of the writing thread spent in write() since start (packing, files, ring)


def sds_path(codes: StreamCodes, row: int, t_ns: int) -> Path:
    """The SDS file (relative to the archive root) that holds a record of row ``row`` starting at ``t_ns``."""
    day = datetime.fromtimestamp(t_ns / 1e9, UTC)
    cha = codes.channels[row]
    year, doy = day.year, day.timetuple().tm_yday
    name = f"{codes.network}.{codes.station}.{codes.location}.{cha}.D.{year:04d}.{doy:03d}"
    return Path(f"{year:04d}") / codes.network / codes.station / f"{cha}.D" / name


def sds_files(codes: StreamCodes, start_ns: int, end_ns: int) -> list[str]:
    """SDS files (relative paths) holding the span ``start_ns..end_ns`` of every channel."""
    days = {start_ns, end_ns}
    return sorted({str(sds_path(codes, row, t)) for row in range(len(codes.channels)) for t in days})


def _day_of(path: Path) -> tuple[int, int] | None:
    m = _DAY_FILE.match(path.name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _day_end_ns(day: tuple[int, int]) -> int:
    start = datetime(day[0], 1, 1, tzinfo=UTC) + timedelta(days=day[1])
    return int(start.timestamp()) * 1_000_000_000


class RingArchive:
    """Writes sample blocks of one board as miniSEED into the SDS ring under ``root``."""

    def __init__(self, cfg: ArchiveConfig, root: str | os.PathLike):
        from pymseed import DataEncoding

        self.cfg = cfg
        self.root = Path(root)
        self.stats = ArchiveStats()
        self._encodings = {"steim2": DataEncoding.STEIM2, "steim1": DataEncoding.STEIM1,
                           "int32": DataEncoding.INT32, "float32": DataEncoding.FLOAT32,
                           "float64": DataEncoding.FLOAT64}
        self._traces: list[MS3TraceList] = []
        self._codes: StreamCodes | None = None
        self._fs = 0.0
        self._sample_type, self._encoding, self._dtype = "i", "steim2", np.dtype(np.int32)
        self._next_index: int | None = None
        self._clock: TimingSource | None = None
        self._newest_ns = 0  # start of the latest record written
        self._sizes: dict[Path, int] = {}  # every day file of the ring (relative path) -> bytes
        self._day: dict[Path, tuple[int, int] | None] = {}  # its (year, day of year)
        self._total = 0
        self._aged_at = -AGE_CHECK_NS  # data time at which max_days was last applied
        self._files: dict[Path, object] = {}  # open append handles of the current day's files
        self._paths: dict[tuple[int, int], Path] = {}  # (row, day number) -> SDS file, current day only
        self._days_sorted: list[tuple[int, int]] | None = None  # cache of _days()
        self._log_at: dict[str, float] = defaultdict(lambda: -1e9)
        self._log_held: dict[str, int] = defaultdict(int)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # survived: every write will fail the same way, and be counted
            self._fault("write", f"cannot create the archive directory {self.root}: {exc.strerror or exc}")
        self._scan()

    # ------------------------------------------------------------------ the stream
    def start(self, codes: StreamCodes, fs: float, kind: str) -> None:
        """A new stream (first block, or the board restarted with another rate or layout). ``kind`` is the
        board's sample format: ``int16``, ``int24``, ``int32``, ``float32`` or ``text``."""
        from pymseed import MS3TraceList

        self.flush()
        for rel in list(self._files):
            self._close(rel)
        self._paths = {}
        self._codes, self._fs = codes, float(fs)
        integer = self.cfg.encoding if self.cfg.encoding != "steim2" or kind != "int32" else "int32"
        self._sample_type, self._encoding, self._dtype = {  # Steim-2 cannot hold int32 full-scale steps
            "int16": ("i", self.cfg.encoding, np.int32), "int24": ("i", self.cfg.encoding, np.int32),
            "int32": ("i", integer, np.int32), "float32": ("f", "float32", np.float32),
        }.get(kind, ("d", "float64", np.float64))
        self._traces = [MS3TraceList() for _ in codes.channels]  # one per channel: each record's file is known
        self._next_index = None
        self._anchor_index, self._anchor_ns = 0, 0  # the current run: this sample index is at this time
        self._ns_per_sample = 1e9 / self._fs
        self._batch_samples = BATCH_S * self._fs
        self._tolerance_ns = 0.0
        self._midnight_ns = 0
        self._clock = None  # the clock of the current run (its quality goes in the records)
        self._pending: list[np.ndarray] = []
        self._pending_start = 0
        self._pending_n = 0
        self._buffer_day: int | None = None  # day number (ns // DAY_NS) of what the trace lists hold

    def write(self, counts: np.ndarray, first_sample: int, clock: TimingSource) -> None:
        """Archive the board's samples ``first_sample..`` (channels, n) in counts; never raises for I/O.

        Called for every block the board sends (hundreds a second at real time), so the contiguous case is
        kept to a clock reading and a comparison; the clock's error and quality are read once a batch.
        The calling thread's CPU time in here is counted (``stats.cpu_s``): the archive's cost in service."""
        t0 = time.thread_time()
        try:
            self._write(counts, first_sample, clock)
        finally:
            self.stats.cpu_s += time.thread_time() - t0

    def _write(self, counts: np.ndarray, first_sample: int, clock: TimingSource) -> None:
        if self._codes is None:
            raise RuntimeError("RingArchive.write before start()")
        n = counts.shape[1]
        t_clock = clock.time_ns(first_sample)
        if first_sample != self._next_index:
            if self._next_index is not None:
                self.stats.gaps += 1
                self._flush_run()  # the run before the gap is complete: its last record goes out now
            self._anchor(first_sample, t_clock, clock)
            start_ns = t_clock
        else:
            start_ns = self._anchor_ns + round((first_sample - self._anchor_index) * self._ns_per_sample)
            if abs(t_clock - start_ns) > self._tolerance_ns:
                self.stats.time_tears += 1
                self._flush_run()
                self._anchor(first_sample, t_clock, clock)
                start_ns = t_clock
        self._next_index = first_sample + n
        data = np.asarray(counts)
        if start_ns + n * self._ns_per_sample > self._midnight_ns:
            # A day file holds only its day: the part after midnight starts the next file.
            split = min(n, max(0, math.ceil((self._midnight_ns - start_ns) / self._ns_per_sample)))
            if split < n:
                self._queue(data[:, :split], start_ns)
                self._flush_run()
                start_ns, data = start_ns + round(split * self._ns_per_sample), data[:, split:]
            self._midnight_ns = (start_ns // DAY_NS + 1) * DAY_NS
        self._queue(data, start_ns)
        if self._pending_n >= self._batch_samples:
            self._follow(clock)
            self._feed()
            self._pack(flush=False)

    def _follow(self, clock: TimingSource) -> None:
        """Take the clock's current state: its quality goes in the records, and the run may part from it by
        a quarter of its stated error before it is re-anchored (the run then stays within the clock's own
        error plus a quarter of it), at least half a sample."""
        self._clock = clock
        self._tolerance_ns = max(0.5 * self._ns_per_sample, (clock.error_ns or 0) / 4)

    def _anchor(self, index: int, t_ns: int, clock: TimingSource) -> None:
        """Start a run at sample ``index`` = time ``t_ns``; later samples follow the nominal rate."""
        self._anchor_index, self._anchor_ns = index, t_ns
        self._follow(clock)
        self._midnight_ns = (t_ns // DAY_NS + 1) * DAY_NS

    def flush(self) -> None:
        """Write out everything buffered (shutdown, a gap, a new stream), as short records if need be."""
        if self._codes is not None and self._next_index is not None:
            self._flush_run()

    def health(self) -> dict:
        """Health's ``archive`` object."""
        return dict(asdict(self.stats), cpu_s=round(self.stats.cpu_s, 3))

    # ------------------------------------------------------------------ samples -> records -> files
    def _queue(self, data: np.ndarray, start_ns: int) -> None:
        """Hold contiguous samples until a batch is worth packing (fewer, larger libmseed calls)."""
        if not data.shape[1]:
            return
        if not self._pending:
            self._pending_start = start_ns
        self._pending.append(data)
        self._pending_n += data.shape[1]

    def _feed(self) -> None:
        """Hand the held samples to the trace lists."""
        if not self._pending:
            return
        day = self._pending_start // DAY_NS
        if self._buffer_day is not None and day != self._buffer_day:
            self._pack(flush=True)  # the lists still hold the end of the day before: into its own file
        data = np.ascontiguousarray(np.concatenate(self._pending, axis=1) if len(self._pending) > 1
                                    else self._pending[0], dtype=self._dtype)
        self._buffer_day = day
        self._newest_ns = max(self._newest_ns, self._pending_start)
        for row, traces in enumerate(self._traces):
            traces.add_data(self._codes.source_id(row), data[row], self._sample_type, self._fs,
                            starttime=self._pending_start)
        self._pending, self._pending_n = [], 0

    def _flush_run(self) -> None:
        self._feed()
        self._pack(flush=True)

    def _pack(self, flush: bool) -> None:
        if self._buffer_day is None:
            return
        quality = int(self._clock.quality) if self._clock is not None else 0
        extra = json.dumps({"FDSN": {"Time": {"Quality": quality}}})
        by_file: dict[Path, list[bytes]] = {}
        for row, traces in enumerate(self._traces):
            records = list(traces.generate(max_record_length=self.cfg.record_bytes,
                                           encoding=self._encodings[self._encoding], format_version=2,
                                           extra_headers=extra, flush_data=flush, remove_packed=True))
            if records:
                key = (row, self._buffer_day)
                if key not in self._paths:
                    self._paths = {key: sds_path(self._codes, row, self._buffer_day * DAY_NS),
                                   **{k: v for k, v in self._paths.items() if k[1] == self._buffer_day}}
                by_file[self._paths[key]] = records
        if not by_file:
            return
        self.stats.timing_quality = quality
        count = sum(len(v) for v in by_file.values())
        size = sum(len(r) for v in by_file.values() for r in v)
        if not self._make_room(size):
            self.stats.records_dropped += count
            self._fault("disk", f"{self._free_bytes()} bytes free, below archive.min_free_bytes = "
                        f"{self.cfg.min_free_bytes} even with the archive emptied: {count} records not written")
            return
        for rel, records in by_file.items():
            path = self.root / rel
            try:
                f = self._handle(rel)
                f.write(b"".join(records))
                f.flush()  # into the OS: a killed daemon loses nothing it reported as written
            except OSError as exc:
                self._close(rel)
                self.stats.write_errors += 1
                self.stats.records_dropped += len(records)
                self._fault("write", f"cannot write {path}: {exc.strerror or exc}")
                continue
            written = sum(len(r) for r in records)
            self.stats.records += len(records)
            self.stats.bytes_written += written
            self._add_size(rel, written)
        self._expire()
        self._update_size()

    def _handle(self, rel: Path):
        """The open append handle of a day file (files of other days are closed: they are complete)."""
        f = self._files.get(rel)
        if f is None:
            day = _day_of(rel)
            for other in [r for r in self._files if _day_of(r) != day]:
                self._close(other)
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[rel] = open(path, "ab")  # noqa: SIM115 - kept open across writes, closed in _close
        return f

    def _close(self, rel: Path) -> None:
        f = self._files.pop(rel, None)
        if f is not None:
            try:
                f.close()
            except OSError as exc:
                self._fault("write", f"cannot close {self.root / rel}: {exc.strerror or exc}")

    def close(self) -> None:
        """Flush and close (the daemon's shutdown)."""
        self.flush()
        for rel in list(self._files):
            self._close(rel)

    # ------------------------------------------------------------------ the ring
    def _scan(self) -> None:
        """Index the day files already on disk (a restart continues the same ring)."""
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                path = Path(dirpath) / name
                if _DAY_FILE.match(name):
                    try:
                        self._add_size(path.relative_to(self.root), path.stat().st_size)
                    except OSError:
                        continue
        self._update_size()

    def _add_size(self, rel: Path, size: int) -> None:
        """Book ``size`` more bytes for ``rel`` (a new file is indexed by its day)."""
        if rel not in self._sizes:
            self._day[rel] = _day_of(rel)
            self._sizes[rel] = 0
            self._days_sorted = None
        self._sizes[rel] += size
        self._total += size

    def _set_size(self, rel: Path, size: int | None) -> None:
        """``rel`` is now ``size`` bytes long (None: deleted)."""
        self._total -= self._sizes.get(rel, 0)
        if size is None:
            self._sizes.pop(rel, None)
            self._day.pop(rel, None)
            self._days_sorted = None
        else:
            self._sizes[rel] = size
            self._total += size

    def _update_size(self) -> None:
        self.stats.size_bytes = self._total
        self.stats.files = len(self._sizes)
        days = self._days()
        self.stats.oldest = "{:04d}-{:03d}".format(*days[0]) if days else None

    def _free_bytes(self) -> int | None:
        """Free bytes on the archive's file system (of its nearest existing parent); None if unknown."""
        where = self.root
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            return shutil.disk_usage(where).free
        except OSError:
            return None

    def _days(self) -> list[tuple[int, int]]:
        if self._days_sorted is None:
            self._days_sorted = sorted({d for d in self._day.values() if d})
        return self._days_sorted

    def _make_room(self, incoming: int) -> bool:
        """Free disk space for ``incoming`` bytes above min_free_bytes, oldest first; False if impossible."""
        while (free := self._free_bytes()) is not None and free - incoming < self.cfg.min_free_bytes:
            days = self._days()
            if len(days) > 1:
                self._delete_day(days[0], "the disk is below archive.min_free_bytes")
            elif days and self._trim_day(days[0], target=self._total // 2):
                continue
            else:
                return False
        return True

    def _expire(self) -> None:
        """Apply max_days and max_bytes."""
        days = self._days()
        newest = self._newest_ns or (_day_end_ns(days[-1]) if days else 0)
        if days and newest - self._aged_at >= AGE_CHECK_NS:  # ages move slowly: looked at once a minute
            self._aged_at = newest
            for day in days[:-1]:
                if (newest - _day_end_ns(day)) / DAY_NS > self.cfg.max_days:
                    self._delete_day(day, f"older than archive.max_days = {self.cfg.max_days:g}")
        while self._total > self.cfg.max_bytes:
            days = self._days()
            if len(days) > 1:
                self._delete_day(days[0], f"the archive is above archive.max_bytes = {self.cfg.max_bytes}")
            elif not days or not self._trim_day(days[0], target=int(TRIM_TO * self.cfg.max_bytes)):
                break

    def _delete_day(self, day: tuple[int, int], why: str) -> None:
        for rel in [p for p, d in self._day.items() if d == day]:
            self._close(rel)
            try:
                (self.root / rel).unlink(missing_ok=True)
            except OSError as exc:
                self._fault("delete", f"cannot delete {self.root / rel}: {exc.strerror or exc}")
            self._set_size(rel, None)
            self.stats.files_deleted += 1
        log.info("archive: deleted day %04d-%03d (%s)", *day, why)

    def _trim_day(self, day: tuple[int, int], target: int) -> bool:
        """Cut the oldest records off every file of ``day`` so that the archive shrinks to ``target`` bytes;
        False when nothing could be cut."""
        files = [p for p, d in self._day.items() if d == day]
        total = self._total
        if total <= target or not files:
            return False
        keep = target / total
        reclen = self.cfg.record_bytes
        cut_any = False
        for rel in files:
            path, size = self.root / rel, self._sizes[rel]
            records = size // reclen
            cut = records - int(records * keep)
            if cut <= 0:
                continue
            self._close(rel)  # reopened for appending at the next write
            try:
                with open(path, "rb") as f:
                    f.seek(cut * reclen)
                    tail = f.read()
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(tail)
                os.replace(tmp, path)
            except OSError as exc:
                self._fault("trim", f"cannot trim {path}: {exc.strerror or exc}")
                continue
            self._set_size(rel, len(tail))
            self.stats.records_trimmed += cut
            cut_any = True
        return cut_any

    def _fault(self, kind: str, message: str) -> None:
        """Log a fault with its cause: the first at once, then at most one line a minute with the count."""
        self.stats.last_error = message
        now = time.monotonic()
        if now - self._log_at[kind] < LOG_EVERY_S:
            self._log_held[kind] += 1
            return
        more = f" (+{self._log_held[kind]} more since the last line)" if self._log_held[kind] else ""
        log.error("archive: %s%s", message, more)
        self._log_at[kind], self._log_held[kind] = now, 0


def span_fields(codes: StreamCodes, start_ns: int, end_ns: int) -> dict:
    """The event message's ``archive`` object: the archived time span of an event window and its files."""
    return {"start": iso_utc(start_ns), "end": iso_utc(end_ns), "files": sds_files(codes, start_ns, end_ns)}
