"""Import the mine's own labelled records into a window dataset (docs/data-formats.md).

Records
    miniSEED / SAC (and any other format ObsPy reads) -- needs the ``seismo`` extra.
        Traces are grouped by station and sensor: ``NET.STA.LOC`` plus the band and
        instrument letters of the channel code (``XX.ST07..HH`` for HHZ/HHN/HHE). Traces
        of one group in several files (one SAC file per component, day files) are joined.
        Gaps and overlaps with differing samples become missing data.
    CSV -- ``# key=value`` comment lines first (``fs`` in Hz and ``start_time`` ISO-8601 UTC
        are required, ``station`` is optional and defaults to the file name without its
        extension), then a header row of channel names, then one row of numbers per
        instant. An empty cell is a missing sample (a gap)::

            # fs=10000
            # start_time=2024-03-01T12:00:00.000000Z
            # station=ST07
            HHZ,HHN,HHE
            12,-3,4

    NPZ -- the continuous-stream format (``edge.formats.read_stream``); the station
        is the file name without ``.npz``; NaN samples are gaps. Files needing pickle are refused.

Labels CSV
    Columns ``file`` and/or ``station`` (which record), ``start_time`` (ISO-8601, the event
    onset; a time without a zone is taken as UTC), ``label`` (one of ``edge.vocabulary.CLASSES``);
    optional ``site`` and ``snr_db``. Lines starting with ``#`` are comments. A ``file`` is
    looked up relative to the labels file, then as given, then by name among the record files.

Windows
    Each window starts ``pre`` seconds before the onset and holds ``samples`` samples at
    ``fs`` Hz after resampling with ``scipy.signal.resample_poly`` (rational approximation of
    fs/native_fs, denominator <= 1000). The onset lands within half a sample of index
    ``round(pre * fs)``. Channels are ordered Z, N, E (or Z, 1, 2); ``channels=1`` takes Z,
    or the only channel of a uniaxial record. Values are kept as recorded (``units`` names
    them in the manifest).

A label row whose onset lies inside its record but whose window does not fit (too close to
the record's start or end, or across a gap) is skipped with a warning and counted in the
manifest; ``strict=True`` makes it an error instead. Every other bad input is an error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from edge.errors import UserError
from edge.formats import WINDOWS_FORMAT, WindowSet, parse_time, read_stream, write_manifest, write_windows
from edge.vocabulary import CLASSES
from firmware_bridge import clock

OBSPY_SUFFIXES = {".mseed": "MSEED", ".miniseed": "MSEED", ".ms": "MSEED", ".msd": "MSEED", ".sac": "SAC"}
RECORD_SUFFIXES = (*OBSPY_SUFFIXES, ".csv", ".npz")
LABEL_COLUMNS = ("file", "station", "start_time", "label", "site", "snr_db")
CSV_KEYS = ("fs", "start_time", "station")
TRIAXIAL_ORDERS = (("Z", "N", "E"), ("Z", "1", "2"))
MAX_DENOMINATOR = 1000


# --------------------------------------------------------------------------- data model
@dataclass
class Channel:
    """One channel of a record: samples (float64, NaN where missing) on its own time base."""

    name: str
    fs: float
    start: datetime
    npts: int
    data: np.ndarray | None = None  # None when only the header was read
    _missing: np.ndarray | None = field(default=None, repr=False)

    @property
    def missing(self) -> np.ndarray:
        """Sorted indices of missing samples (NaN, and inf: no sensor records one), found once per channel,
        not once per window."""
        if self._missing is None:
            self._missing = np.flatnonzero(~np.isfinite(self.data))
        return self._missing

    @property
    def component(self) -> str:
        """Orientation letter: the last character of the channel code (Z, N, E, 1, 2, ...)."""
        return self.name[-1:].upper()

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.npts / self.fs)


@dataclass
class Record:
    """One station/sensor's continuous record, possibly joined from several files."""

    key: str  # NET.STA.LOC.BI for ObsPy formats, the file path for CSV / NPZ
    kind: str  # MSEED, SAC, CSV, NPZ, or whatever ObsPy detected
    files: list[Path]
    aliases: set[str]  # values of the labels' station column that name this record
    channels: list[Channel] = field(default_factory=list)

    @property
    def start(self) -> datetime:
        return min(c.start for c in self.channels)

    @property
    def end(self) -> datetime:
        return max(c.end for c in self.channels)

    def describe(self) -> str:
        names = ", ".join(str(f) for f in self.files)
        return f"{names} ({self.key}: {clock.iso_utc(self.start)} to {clock.iso_utc(self.end)})"


@dataclass
class LabelRow:
    """One row of the labels CSV."""

    line: int
    file: str | None
    station: str | None
    onset: datetime
    label: str
    site: str | None
    snr_db: float | None


class Uncuttable(Exception):
    """The onset is inside the record but its window does not fit (edge of record, gap)."""


# --------------------------------------------------------------------------- labels
def read_labels(path: Path) -> list[LabelRow]:
    """Read and validate every row of the labels CSV (all errors before anything is cut)."""
    if not path.is_file():
        raise UserError(f"{path}: no such labels file")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            lines = [(i, line) for i, line in enumerate(fh, start=1) if line.strip() and not line.startswith("#")]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); expected a CSV labels file") from None
    if not lines:
        raise UserError(f"{path}: empty; expected a header row with columns "
                        "file or station, start_time, label (optional site, snr_db)")
    reader = csv.reader(line for _, line in lines)
    header = [h.strip() for h in next(reader)]
    for h in header:
        if h not in LABEL_COLUMNS:
            raise UserError(f"{path} line {lines[0][0]}: unknown column {h!r}; "
                            f"allowed: {', '.join(LABEL_COLUMNS)}")
    if len(set(header)) != len(header):
        raise UserError(f"{path} line {lines[0][0]}: a column is repeated in {header}")
    for need in ("start_time", "label"):
        if need not in header:
            raise UserError(f"{path} line {lines[0][0]}: missing column {need!r}; header is {header}")
    if "file" not in header and "station" not in header:
        raise UserError(f"{path} line {lines[0][0]}: needs a 'file' or a 'station' column "
                        "to find each record")
    rows = []
    for (lineno, _), cells in zip(lines[1:], reader, strict=True):
        where = f"{path} line {lineno}"
        if len(cells) != len(header):
            raise UserError(f"{where}: {len(cells)} fields; expected {len(header)} ({', '.join(header)})")
        row = {h: c.strip() for h, c in zip(header, cells, strict=True)}
        file, station = row.get("file") or None, row.get("station") or None
        if file is None and station is None:
            raise UserError(f"{where}: neither 'file' nor 'station' is given; "
                            "one is needed to find the record")
        if not row["start_time"]:
            raise UserError(f"{where}: empty start_time; expected the event onset as ISO-8601 UTC")
        onset = parse_time(row["start_time"], f"{where}: start_time")
        if row["label"] not in CLASSES:
            raise UserError(f"{where}: label {row['label']!r}; allowed: {', '.join(CLASSES)}")
        snr = None
        if row.get("snr_db"):
            try:
                snr = float(row["snr_db"])
            except ValueError:
                raise UserError(f"{where}: snr_db {row['snr_db']!r}; expected a number in dB") from None
        rows.append(LabelRow(lineno, file, station, onset, row["label"], row.get("site") or None, snr))
    if not rows:
        raise UserError(f"{path}: no label rows after the header")
    return rows


# --------------------------------------------------------------------------- records
def _obspy(path: Path):
    try:
        import obspy
    except ImportError:
        raise UserError(f"{path}: reading miniSEED/SAC needs ObsPy, which is not installed: "
                        "pip install 'stopewatch[seismo]'") from None
    return obspy


def _obspy_read(path: Path, headonly: bool):
    obspy = _obspy(path)
    fmt = OBSPY_SUFFIXES.get(path.suffix.lower())
    try:
        with warnings.catch_warnings():  # ObsPy's note on rounding SAC's delta is noise on the CLI
            warnings.filterwarnings("ignore", message="Sample spacing read from SAC", category=UserWarning)
            return obspy.read(str(path), format=fmt, headonly=headonly), fmt
    except Exception as exc:  # ObsPy raises many types for unreadable files; all mean "bad input"
        what = fmt or "seismic (format detected by ObsPy)"
        raise UserError(f"{path}: not a readable {what} record ({type(exc).__name__}: {exc})") from None


def _group_id(stats) -> str:
    return f"{stats.network}.{stats.station}.{stats.location}.{stats.channel[:-1]}"


def _aliases(stats) -> set[str]:
    n, s, loc = stats.network, stats.station, stats.location
    return {s, f"{n}.{s}", f"{n}.{s}.{loc}", _group_id(stats)}


def _trace_start(stats) -> datetime:
    return stats.starttime.datetime.replace(tzinfo=UTC)


def scan_obspy(path: Path) -> list[Record]:
    """Headers of a miniSEED/SAC file: one Record per station/sensor group, channels without data."""
    st, fmt = _obspy_read(path, headonly=True)
    records: dict[str, Record] = {}
    for tr in st:
        key = _group_id(tr.stats)
        rec = records.setdefault(key, Record(key, fmt or tr.stats._format, [path], _aliases(tr.stats)))
        rec.channels.append(Channel(tr.stats.channel, float(tr.stats.sampling_rate), _trace_start(tr.stats),
                                    int(tr.stats.npts)))
    if not records:
        raise UserError(f"{path}: holds no traces")
    return list(records.values())


def load_obspy(record: Record) -> Record:
    """Read the samples of an ObsPy record group from all its files, merged per channel (gaps -> NaN)."""
    obspy = _obspy(record.files[0])
    st = obspy.Stream()
    for f in record.files:
        part, _ = _obspy_read(f, headonly=False)
        st += obspy.Stream([tr for tr in part if _group_id(tr.stats) == record.key])
    try:
        st.merge(method=0, fill_value=None)  # gaps and conflicting overlaps become masked samples
    except Exception as exc:
        raise UserError(f"{record.describe()}: traces cannot be joined ({exc})") from None
    channels = []
    for tr in sorted(st, key=lambda t: t.stats.channel):
        data = np.ma.filled(np.ma.asarray(tr.data, dtype=np.float64), np.nan)
        channels.append(Channel(tr.stats.channel, float(tr.stats.sampling_rate), _trace_start(tr.stats),
                                int(tr.stats.npts), data))
    return Record(record.key, record.kind, record.files, record.aliases, channels)


def _csv_number(text: str, where: str) -> float:
    text = text.strip()
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{where}: value {text!r}; expected a number "
                        "(an empty cell marks a missing sample)") from None


def load_csv(path: Path) -> Record:
    """Read a CSV record (format in the module docstring)."""
    if not path.is_file():
        raise UserError(f"{path}: no such record file")
    meta: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); expected a CSV record") from None
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        text = lines[i].lstrip("#").strip()
        if text:
            key, sep, value = text.partition("=")
            key = key.strip()
            if not sep or key not in CSV_KEYS:
                raise UserError(f"{path} line {i + 1}: comment {lines[i]!r}; expected '# key=value' "
                                f"with key one of {', '.join(CSV_KEYS)}")
            meta[key] = value.strip()
        i += 1
    for need, example in (("fs", "# fs=10000"), ("start_time", "# start_time=2024-03-01T12:00:00Z")):
        if need not in meta:
            raise UserError(f"{path}: missing '# {need}=...' line before the header (e.g. {example!r})")
    try:
        fs = float(meta["fs"])
    except ValueError:
        fs = math.nan
    if not math.isfinite(fs) or fs <= 0:
        raise UserError(f"{path}: fs = {meta['fs']!r}; expected a positive sampling rate in Hz")
    start = parse_time(meta["start_time"], f"{path}: start_time")
    if i >= len(lines):
        raise UserError(f"{path}: no header row of channel names after the '#' lines")
    names = [h.strip() for h in next(csv.reader([lines[i]]))]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise UserError(f"{path} line {i + 1}: header {names}; expected distinct channel names such as Z,N,E")
    body = lines[i + 1:]
    while body and not body[-1].strip():
        body.pop()
    try:  # fast path for clean files; the slow path below finds and names the bad cell
        data = np.loadtxt(io.StringIO("\n".join(body)), delimiter=",", ndmin=2, dtype=np.float64).T
        if data.shape[0] != len(names):
            raise ValueError
    except ValueError:
        data = np.full((len(names), len(body)), np.nan)
        for k, ln in enumerate(csv.reader(body)):
            lineno = i + 2 + k
            if len(ln) != len(names):
                raise UserError(f"{path} line {lineno}: {len(ln)} fields; "
                                f"expected {len(names)} ({', '.join(names)})") from None
            for c, cell in enumerate(ln):
                data[c, k] = _csv_number(cell, f"{path} line {lineno} column {names[c]!r}")
    if data.shape[1] == 0:
        raise UserError(f"{path}: no samples after the header row")
    station = meta.get("station") or path.stem
    channels = [Channel(n, fs, start, data.shape[1], data[c]) for c, n in enumerate(names)]
    return Record(str(path), "CSV", [path], {station}, channels)


def load_npz(path: Path) -> Record:
    """Read a continuous-stream .npz (docs/data-formats.md) as a record; NaN samples are gaps."""
    s = read_stream(path)
    start = parse_time(s.start_time, f"{path}: key 'start_time'")
    data = s.data.astype(np.float64)
    channels = [Channel(str(n), float(s.fs), start, data.shape[1], data[c]) for c, n in enumerate(s.channels)]
    return Record(str(path), "NPZ", [path], {path.stem}, channels)


def expand_records(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Record files from the command line: files as given, directories searched for known suffixes."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in RECORD_SUFFIXES)
            if not found:
                raise UserError(f"{p}: directory holds no record files ({', '.join(RECORD_SUFFIXES)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p}: no such record file or directory")
    return out


class RecordIndex:
    """What records exist, found from headers; samples are read only when a record is cut."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.by_file: dict[Path, list[str]] = {}

    def add(self, path: Path) -> None:
        rp = path.resolve()
        if rp in self.by_file:
            return
        suffix = path.suffix.lower()
        if suffix == ".csv":
            found = [load_csv(path)]
        elif suffix == ".npz":
            found = [load_npz(path)]
        else:
            found = scan_obspy(path)
        self.by_file[rp] = []
        for rec in found:
            known = self.records.get(rec.key)
            if known is None:
                self.records[rec.key] = rec
            else:  # the same station/sensor continues in another file
                known.files.append(path)
                known.channels.extend(rec.channels)
            self.by_file[rp].append(rec.key)

    def find_file(self, value: str, labels_dir: Path, where: str) -> Path:
        for cand in (labels_dir / value, Path(value)):
            if cand.resolve() in self.by_file:
                return cand.resolve()
        named = [f for f in self.by_file if f.name == Path(value).name]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise UserError(f"{where}: file {value!r} matches several records: "
                            f"{', '.join(map(str, named))}; give its path relative to the labels file")
        for cand in (labels_dir / value, Path(value)):
            if cand.is_file():
                self.add(cand)
                return cand.resolve()
        raise UserError(f"{where}: file {value!r} not found (looked for {labels_dir / value} "
                        f"and among the {len(self.by_file)} record files given)")

    def resolve(self, row: LabelRow, labels_dir: Path, where: str) -> Record:
        """The one record a label row names (by file and/or station) whose span holds the onset."""
        if row.file is not None:
            keys = self.by_file[self.find_file(row.file, labels_dir, where)]
            cands = [self.records[k] for k in keys]
            if row.station is not None:
                cands = [r for r in cands if row.station in r.aliases]
                if not cands:
                    names = sorted(a for k in keys for a in self.records[k].aliases)
                    raise UserError(f"{where}: station {row.station!r} is not in file {row.file!r}; "
                                    f"it holds {', '.join(names)}")
        else:
            cands = [r for r in self.records.values() if row.station in r.aliases]
            if not cands:
                known = sorted({a for r in self.records.values() for a in r.aliases})
                raise UserError(f"{where}: station {row.station!r} is in none of the record files given; "
                                f"known stations: {', '.join(known) or 'none (pass record files)'}")
        inside = [r for r in cands if r.start <= row.onset <= r.end]
        if not inside:
            spans = "; ".join(r.describe() for r in cands)
            raise UserError(f"{where}: start_time {clock.iso_utc(row.onset)} is outside the record: {spans}")
        if len(inside) > 1:
            raise UserError(f"{where}: start_time {clock.iso_utc(row.onset)} is in several records "
                            f"({', '.join(r.key for r in inside)}); add a 'file' or a longer 'station' id")
        return inside[0]


def load_record(record: Record) -> Record:
    """The record with its samples read."""
    if record.kind in ("CSV", "NPZ"):
        return record
    return load_obspy(record)


# --------------------------------------------------------------------------- cutting
def pick_channels(record: Record, n_channels: int) -> list[Channel]:
    """Channels in model order: Z, N, E (or Z, 1, 2) for 3; Z, or the only channel, for 1."""
    by_comp: dict[str, Channel] = {}
    for c in record.channels:
        by_comp.setdefault(c.component, c)
    names = ", ".join(c.name for c in record.channels)
    if n_channels == 1:
        if "Z" in by_comp:
            return [by_comp["Z"]]
        if len(record.channels) == 1:
            return list(record.channels)
        raise UserError(f"{record.describe()}: channels {names}; --channels 1 needs a Z channel "
                        "or a single-channel record")
    for order in TRIAXIAL_ORDERS:
        if all(k in by_comp for k in order):
            return [by_comp[k] for k in order]
    raise UserError(f"{record.describe()}: channels {names}; --channels 3 needs components Z,N,E or Z,1,2 "
                    "(last letter of the channel code); use --channels 1 for uniaxial records")


def rational_ratio(fs: float, native_fs: float) -> tuple[int, int]:
    """``(up, down)`` with up/down ~= fs/native_fs, denominator <= 1000 (exact for common rates)."""
    frac = Fraction(fs / native_fs).limit_denominator(MAX_DENOMINATOR)
    if frac.numerator == 0:
        raise UserError(f"--fs {fs} Hz is too low for a {native_fs} Hz record")
    return frac.numerator, frac.denominator


def _valid_run(missing: np.ndarray, npts: int, lo: int, hi: int) -> tuple[int, int]:
    """The bounds of the gap-free run of samples around ``[lo, hi)`` (which holds no missing sample)."""
    i = int(np.searchsorted(missing, lo))
    j = int(np.searchsorted(missing, hi))
    return (int(missing[i - 1]) + 1 if i > 0 else 0), (int(missing[j]) if j < missing.size else npts)


def cut_channel(ch: Channel, window_start: datetime, samples: int, fs: float) -> np.ndarray:
    """``samples`` samples at ``fs`` Hz from ``window_start``, resampled from the channel's own rate.

    Raises Uncuttable when the window reaches past the channel's samples or crosses a gap.
    """
    assert ch.data is not None
    # Fractional native index of the window start, from integer microseconds; snapped to a
    # whole sample when within float rounding of one (10 kHz times are exact to the microsecond).
    pos = ((window_start - ch.start) // timedelta(microseconds=1)) * ch.fs / 1e6
    if abs(pos - round(pos)) < 1e-6:
        pos = float(round(pos))
    span = samples * ch.fs / fs
    if pos < -0.5:
        raise Uncuttable(f"window starts {-pos / ch.fs:.4f} s before channel {ch.name} starts "
                         f"({clock.iso_utc(ch.start)})")
    if pos + span > ch.npts + 0.5:
        raise Uncuttable(f"window ends {(pos + span - ch.npts) / ch.fs:.4f} s after channel {ch.name} ends "
                         f"({clock.iso_utc(ch.end)})")
    lo, hi = max(0, math.floor(pos)), min(ch.npts, math.ceil(pos + span))
    nan = ch.missing[np.searchsorted(ch.missing, lo):np.searchsorted(ch.missing, hi)]
    if nan.size:
        at = ch.start + timedelta(seconds=int(nan[0]) / ch.fs)
        raise Uncuttable(f"window crosses a gap in channel {ch.name} at {clock.iso_utc(at)} "
                         f"({nan.size} missing samples)")
    up, down = rational_ratio(fs, ch.fs)
    # Extra native samples on each side keep the anti-alias filter's edge effects out of the window.
    # The segment starts a whole number of `down` native samples before `lo`, so that the
    # resampled grid passes through native sample `lo` exactly.
    margin = 0 if up == down == 1 else math.ceil(10 * max(up, down) / up) + 2
    run_lo, run_hi = _valid_run(ch.missing, ch.npts, lo, hi)
    a = lo - down * min(math.ceil(margin / down), (lo - run_lo) // down)
    b = min(run_hi, hi + margin)
    seg = ch.data[a:b]
    y = seg if up == down == 1 else resample_poly(seg, up, down)
    j0 = round((pos - a) * up / down)
    out = y[max(j0, 0):j0 + samples]
    head = max(0, -j0)
    tail = samples - head - out.size
    slack = math.ceil(fs / ch.fs) + 1  # rounding at the record's edge can leave a sample or two
    if head > slack or tail > slack:
        span = f"{clock.iso_utc(ch.start)} to {clock.iso_utc(ch.end)}"
        raise Uncuttable(f"window does not fit channel {ch.name} ({span})")
    return np.pad(out, (head, max(tail, 0)), mode="edge") if head or tail > 0 else out


def cut_window(channels: list[Channel], onset: datetime, pre: float, samples: int, fs: float) -> np.ndarray:
    """One window (channels, samples) starting ``pre`` seconds before ``onset``."""
    start = onset - timedelta(seconds=pre)
    return np.stack([cut_channel(c, start, samples, fs) for c in channels]).astype(np.float32)


# --------------------------------------------------------------------------- import
def _warn(message: str) -> None:
    print(f"stopewatch: warning: {message}", file=sys.stderr)


def import_records(out: str | os.PathLike, labels: str | os.PathLike,
                   records: Iterable[str | os.PathLike] = (), *, fs: float = 4000.0, samples: int = 4096,
                   pre: float = 0.256, channels: int = 3,
                   units: str = "counts", site: str | None = None, strict: bool = False,
                   shard_size: int = 1000, warn: Callable[[str], None] = _warn) -> dict:
    """Cut one window per label row from the records and write a sharded window dataset to ``out``.

    Returns the manifest. Windows are written record by record (in order of first mention in
    the labels), label rows in file order within a record; each shard lists its label lines.
    The dataset is built in ``out.part`` and renamed, so a failed import leaves nothing behind.
    """
    out, labels = Path(out), Path(labels)
    if not (math.isfinite(fs) and fs > 0):
        raise UserError(f"--fs {fs}; expected a positive sampling rate in Hz")
    if samples < 1:
        raise UserError(f"--samples {samples}; expected a positive number of samples")
    if not 0 <= pre < samples / fs:
        raise UserError(f"--pre {pre}; expected 0 <= pre < window length {samples / fs:g} s")
    if channels not in (1, 3):
        raise UserError(f"--channels {channels}; allowed: 1, 3")
    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}; expected a positive number of windows")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not empty; choose a new directory")

    rows = read_labels(labels)
    index = RecordIndex()
    for p in expand_records(records):
        index.add(p)
    labels_dir = labels.parent
    plan: dict[str, list[LabelRow]] = {}
    for row in rows:
        rec = index.resolve(row, labels_dir, f"{labels} line {row.line}")
        plan.setdefault(rec.key, []).append(row)
    sites = [row.site or site for row in rows]
    if any(sites) and not all(sites):
        line = next(r.line for r, s in zip(rows, sites, strict=True) if not s)
        raise UserError(f"{labels} line {line}: empty site while other rows have one; fill it or pass --site")

    tmp = out.with_name(out.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted import of the same name
    tmp.mkdir(parents=True)
    try:
        manifest = _cut_all(tmp, index, plan, labels, fs=fs, samples=samples, pre=pre, channels=channels,
                            units=units, site=site, strict=strict, shard_size=shard_size, warn=warn)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _cut_all(tmp: Path, index: RecordIndex, plan: dict[str, list[LabelRow]], labels: Path, *, fs: float,
             samples: int, pre: float, channels: int, units: str, site: str | None, strict: bool,
             shard_size: int, warn: Callable[[str], None]) -> dict:
    buf: list[tuple[LabelRow, np.ndarray]] = []
    shards: list[dict] = []
    skipped: list[dict] = []
    sources: list[dict] = []
    class_counts = dict.fromkeys(CLASSES, 0)
    any_snr = any(r.snr_db is not None for rows in plan.values() for r in rows)
    any_site = site is not None or any(r.site for rows in plan.values() for r in rows)

    def flush() -> None:
        if not buf:
            return
        name = f"shard-{len(shards):05d}.npz"
        rows = [r for r, _ in buf]
        ws = WindowSet(
            np.stack([w for _, w in buf]), np.array([r.label for r in rows]), fs,
            np.array([np.nan if r.snr_db is None else r.snr_db for r in rows], dtype=np.float32)
            if any_snr else None,
            np.array([r.site or site for r in rows]) if any_site else None,
            np.array([clock.iso_utc(r.onset) for r in rows]))
        write_windows(tmp / name, ws)
        shards.append({"file": name, "count": len(rows), "label_lines": [r.line for r in rows],
                       "sha256": hashlib.sha256((tmp / name).read_bytes()).hexdigest()})
        for r in rows:
            class_counts[r.label] += 1
        buf.clear()

    for key, rows in plan.items():
        rec = load_record(index.records[key])
        picked = pick_channels(rec, channels)
        sources.append({"record": rec.key, "format": rec.kind, "files": [str(f) for f in rec.files],
                        "channels": [c.name for c in picked], "native_fs": [c.fs for c in picked],
                        "resample_up_down": [list(rational_ratio(fs, c.fs)) for c in picked]})
        for row in sorted(rows, key=lambda r: r.line):
            try:
                window = cut_window(picked, row.onset, pre, samples, fs)
            except Uncuttable as exc:
                message = f"{labels} line {row.line}: {row.label} at {clock.iso_utc(row.onset)} in {rec.key}: {exc}"
                if strict:
                    raise UserError(message + " (--strict)") from None
                warn(message + "; skipped (--strict makes this an error)")
                skipped.append({"line": row.line, "reason": str(exc)})
                continue
            buf.append((row, window))
            if len(buf) >= shard_size:
                flush()
        del rec, picked
    flush()
    count = sum(s["count"] for s in shards)
    if count == 0:
        raise UserError(f"{labels}: no window could be cut ({len(skipped)} rows skipped); nothing written")
    manifest = {
        "format": WINDOWS_FORMAT, "source": "import", "count": count, "class_counts": class_counts,
        "shards": shards, "fs": fs, "channels": channels,
        "channel_names": ["Z"] if channels == 1 else ["Z", "N", "E"],
        "samples": samples, "units": units, "onset_s": pre, "labels_file": str(labels),
        "records": sources, "skipped": len(skipped), "skipped_rows": skipped, "strict": strict,
    }
    write_manifest(tmp, manifest)
    return manifest
