"""The gateway's model store: verified installs, atomic swaps, one-step rollback.

Layout under ``{state_dir}/models`` (the daemon's ``model.path`` points at ``current``)::

    versions/<sha256[:12]>-<card>/model.tflite, model_card.json   one directory per installed model
    current  -> versions/<sha>                              what the daemon loads
    previous -> versions/<sha>                              what ``rollback`` returns to

A model is checked before it can become ``current``: its sha256 must match its card, the LiteRT
interpreter must load it with the card's input and output shapes, and the card must fit the board
(rate, channels) and the trigger's window. The swap is a rename of a symlink, so the daemon sees the old
model or the new one and never half of either; a power cut mid-install leaves at worst an unused
``versions/*.part`` directory. The running daemon is then asked to reload (SIGHUP, via systemctl).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError
from edge.gateway.model import CARD, TFLITE, Classifier, rate_refusal, read_card

BOARD_FILE = "board.json"  # what the board was measured (doctor) or declared (install) to send
_ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")


@dataclass(frozen=True)
class Board:
    """What the ADC board sends: sampling rate (Hz) and channel count; ``source`` says how we know."""

    fs: float
    channels: int
    source: str = ""


@dataclass(frozen=True)
class FitProblem:
    """One way a model does not fit this gateway; ``fatal`` problems refuse the install."""

    text: str
    fatal: bool = True
    fix: str = ""  # what to do, when it is more specific than "install the model made for this board"


def models_dir(state_dir: str | Path) -> Path:
    """``{state_dir}/models``."""
    return Path(state_dir) / "models"


# --------------------------------------------------------------------------- board description
def read_board(state_dir: str | Path) -> Board | None:
    """The board description recorded in ``{state_dir}/board.json`` (None when never recorded)."""
    path = Path(state_dir) / BOARD_FILE
    try:
        d = json.loads(path.read_text())
        return Board(float(d["fs"]), int(d["channels"]), str(d.get("source", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable board description ({exc}); delete it and run stopewatch doctor") \
            from None


def write_board(state_dir: str | Path, board: Board) -> Path:
    """Record what the board sends (atomic write)."""
    path = Path(state_dir) / BOARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps({"fs": board.fs, "channels": board.channels, "source": board.source}) + "\n")
    os.replace(tmp, path)
    return path


def card_fit(card: dict, board: Board | None, pre_s: float | None = None) -> list[FitProblem]:
    """How the model card does not fit the board and the trigger window (empty list: it fits).

    Rate: the board's rate must lie in the card's ``board_rates_hz`` (inferred from ``fs`` on old cards,
    see ``edge.gateway.model.board_rates_hz``): a 4 kHz model's 1 s window cannot hold a low-rate event,
    and a 500 Hz model's band misses what a fast board records. The model's band (preprocessing.lowpass_hz)
    must also lie below the board's Nyquist frequency, or the model would look for energy the board
    never recorded. Channels: equal, or adaptable under the
    card's channel_policy. Window: the trigger's pre-event part (trigger.pre_s) must fit in the model
    window, and should sit where the model was trained to see the onset.
    """
    problems = []
    fs, n = float(card["fs"]), int(card["samples"])
    if board is not None:
        lowpass = float(card["preprocessing"].get("lowpass_hz", fs / 2))
        refusal = rate_refusal(card, board.fs)
        if refusal is not None:
            text, _, fix = refusal.partition("; ")
            problems.append(FitProblem(text, fix=fix))
        elif lowpass >= board.fs / 2:
            problems.append(FitProblem(f"the board samples at {board.fs:g} Hz but the model uses up to "
                                       f"{lowpass:g} Hz (needs a board rate above {2 * lowpass:g} Hz)"))
        policy = card.get("channel_policy", "strict")
        c, m = board.channels, int(card["channels"])
        if c != m and not ((c > m and policy in ("first", "any")) or (c < m and policy in ("zero_fill", "any"))):
            problems.append(FitProblem(f"the board sends {c} channel(s) but the model takes {m} and its "
                                       f"channel_policy '{policy}' does not adapt them"))
    if pre_s is not None:
        window_s = n / fs
        if pre_s >= window_s:
            problems.append(FitProblem(f"trigger.pre_s = {pre_s:g} s does not fit in the model window of "
                                       f"{window_s:g} s"))
        onset = card.get("onset_s")
        if isinstance(onset, int | float) and abs(onset - pre_s) > 0.05 * window_s:
            problems.append(FitProblem(f"trigger.pre_s = {pre_s:g} s but the model was trained with the onset "
                                       f"at {onset:g} s; set trigger.pre_s = {onset:g}", fatal=False))
    return problems


# --------------------------------------------------------------------------- sources
@contextlib.contextmanager
def _unpacked(src: Path) -> Iterator[Path]:
    """A model directory or .tflite file as given, or the two files of an archive in a temporary directory."""
    name = src.name.lower()
    if not name.endswith(_ARCHIVES):
        yield src
        return
    with tempfile.TemporaryDirectory(prefix="stopewatch-model-") as tmp:
        wanted = {TFLITE, CARD}
        found: dict[str, bytes] = {}
        try:
            if name.endswith(".zip"):
                with zipfile.ZipFile(src) as zf:
                    for info in zf.infolist():
                        if not info.is_dir() and Path(info.filename).name in wanted:
                            found[Path(info.filename).name] = zf.read(info)
            else:
                with tarfile.open(src) as tf:
                    for member in tf.getmembers():
                        if member.isfile() and Path(member.name).name in wanted:
                            found[Path(member.name).name] = tf.extractfile(member).read()
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise UserError(f"{src}: not a readable model archive ({exc})") from None
        missing = wanted - set(found)
        if missing:
            raise UserError(f"{src}: archive lacks {', '.join(sorted(missing))}")
        for fname, data in found.items():  # only the two basenames: no path from the archive is used
            (Path(tmp) / fname).write_bytes(data)
        yield Path(tmp)


def verify(src: str | Path) -> Classifier:
    """Load a model the way the daemon will: sha256 against the card, interpreter, shapes."""
    src = Path(src)
    if not src.exists():
        raise UserError(f"{src}: no such model file or directory")
    return Classifier(src)


def selftest_summary(clf: Classifier) -> str | None:
    """None when the model classifies every built-in test window right, else how it fails
    ("3/6 right: blast -> drilling, ...")."""
    from edge.field.doctor import run_selftest  # doctor imports this module: imported on use

    test = run_selftest(clf)
    if test["right"] == test["total"]:
        return None
    wrong = ", ".join(f"{w['expected']} -> {w['label']}" for w in test["windows"] if w["label"] != w["expected"])
    return f"{test['right']}/{test['total']} built-in windows right ({wrong})"


JOURNAL_SOCKET = "/dev/log"  # the system journal's syslog socket (systemd-journald, rsyslog)


def journal(message: str, address: str | None = None) -> bool:
    """One WARNING line to the system journal (identifier ``stopewatch-model``) through its syslog socket;
    False where there is none (a container, a staging machine), when the line goes to stderr only.
    ``STOPEWATCH_JOURNAL_SOCKET`` names another socket (the tests listen on one)."""
    import logging
    import logging.handlers

    address = address or os.environ.get("STOPEWATCH_JOURNAL_SOCKET") or JOURNAL_SOCKET
    failed: list[BaseException] = []
    try:
        handler = logging.handlers.SysLogHandler(address=address)
    except OSError:
        return False
    handler.ident = "stopewatch-model: "
    handler.handleError = lambda record: failed.append(sys.exc_info()[1])  # no traceback on the terminal
    try:
        handler.emit(logging.LogRecord("stopewatch-model", logging.WARNING, __file__, 0, message, None, None))
    finally:
        handler.close()
    return not failed


# --------------------------------------------------------------------------- the store
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_durably(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo)
        fo.flush()
        os.fsync(fo.fileno())
    os.chmod(dst, 0o644)


def _point(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target`` atomically (rename over the old link)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _target(link: Path) -> str | None:
    return os.readlink(link) if link.is_symlink() else None


@dataclass
class InstallResult:
    sha256: str
    name: str
    version: str
    path: Path
    changed: bool
    previous: str | None
    warnings: list[str]


class ModelStore:
    """The models directory of one gateway (one daemon instance)."""

    def __init__(self, root: str | Path, owner: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"
        self.current = self.root / "current"
        self.previous = self.root / "previous"
        self.owner = owner  # (uid, gid) given to new files when running as root (the daemon's user)

    def _chown(self, path: Path) -> None:
        if self.owner is not None and os.geteuid() == 0:
            os.chown(path, *self.owner, follow_symlinks=False)

    def current_sha(self) -> str | None:
        t = _target(self.current)
        return Path(t).name if t else None

    def previous_sha(self) -> str | None:
        t = _target(self.previous)
        return Path(t).name if t else None

    def install(self, src: str | Path, board: Board | None = None, pre_s: float | None = None,
                force: bool = False) -> InstallResult:
        """Verify ``src`` (directory, .tflite beside its card, or .tar.gz/.zip) and make it current.

        The old current becomes ``previous``. Installing the model that is already current changes
        nothing. Fatal fit problems and a failed self-test (the built-in windows) refuse the install unless
        ``force``; a forced install is written to the journal and to the installed card's ``installed.forced``.
        """
        src = Path(src)
        if not src.exists():
            raise UserError(f"{src}: no such model file or directory")
        with _unpacked(src) as path:
            clf = verify(path)
            if clf.tflite_path.name != TFLITE:
                raise UserError(f"{src}: install the model directory (its {TFLITE}); other .tflite variants "
                                "are for benchmarks and their hash is not the card's sha256")
            card = clf.card
            problems = card_fit(card, board, pre_s)
            fatal = [p.text + (f"; {p.fix}" if p.fix else "") for p in problems if p.fatal]
            if fatal and not force:
                raise UserError(f"{src}: does not fit this gateway: {'; '.join(fatal)} (--force installs anyway)")
            test = selftest_summary(clf)
            if test is not None:
                if not force:
                    raise UserError(f"{src}: fails the self-test, {test}; refused (the interpreter or the model "
                                    "is broken here; --force installs anyway and records it)")
                fatal.append(f"self-test {test}")
            warnings = [p.text for p in problems if not p.fatal] + [f"forced: {t}" for t in fatal]
            if fatal:  # an override is never silent: the journal and the install record keep it
                journal(f"model install --force: {card['name']} {card['version']} ({card['sha256'][:12]}) "
                        f"from {src.resolve()}: {'; '.join(fatal)}")
            sha = card["sha256"]
            key = version_key(card)
            self.versions.mkdir(parents=True, exist_ok=True)
            self._chown(self.root)
            self._chown(self.versions)
            final = self.versions / key
            if not (final.is_dir() and _sha_ok(final)):
                part = Path(tempfile.mkdtemp(prefix=f"{key}.", suffix=".part", dir=self.versions))
                _copy_durably(clf.tflite_path, part / TFLITE)
                card_out = dict(card)
                card_out.pop("files", None)  # only model.tflite is installed; its hash is the card's sha256
                card_out["installed"] = {"from": str(src.resolve()), "at": _now(),
                                         **({"forced": fatal} if fatal else {})}
                (part / CARD).write_text(json.dumps(card_out, indent=2) + "\n")
                with open(part / CARD, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(part, 0o755)
                for p in (part, part / TFLITE, part / CARD):
                    self._chown(p)
                _fsync_dir(part)
                if final.exists():  # a damaged copy of the same model: replace it
                    shutil.rmtree(final)
                os.replace(part, final)
                _fsync_dir(self.versions)
        old = self.current_sha()
        if old == key:
            return InstallResult(sha, card["name"], card["version"], final, False, self.previous_sha(), warnings)
        if old is not None:
            _point(self.previous, f"versions/{old}")
            self._chown(self.previous)
        _point(self.current, f"versions/{key}")
        self._chown(self.current)
        _fsync_dir(self.root)
        return InstallResult(sha, card["name"], card["version"], final, True, old, warnings)

    def rollback(self) -> tuple[str, str]:
        """Swap ``current`` and ``previous`` (after verifying the previous model); returns (new, old) sha keys."""
        prev, cur = self.previous_sha(), self.current_sha()
        if prev is None:
            raise UserError(f"{self.root}: no previous model to roll back to (only one model was ever installed)")
        verify(self.versions / prev)
        _point(self.current, f"versions/{prev}")
        if cur is not None:
            _point(self.previous, f"versions/{cur}")
        _fsync_dir(self.root)
        return prev, cur or ""

    def list(self) -> list[dict]:
        """One row per installed version: key, name, version, fs, channels, installed time, role."""
        rows = []
        cur, prev = self.current_sha(), self.previous_sha()
        if not self.versions.is_dir():
            return rows
        for d in sorted(self.versions.iterdir()):
            if not d.is_dir() or d.name.endswith(".part"):
                continue
            try:
                card = read_card(d / CARD)
            except UserError as exc:
                rows.append({"key": d.name, "problem": str(exc), "role": ""})
                continue
            role = "current" if d.name == cur else "previous" if d.name == prev else ""
            m = card.get("metrics", {})
            f1 = next((m[k] for k in ("test_macro_f1", "macro_f1") if isinstance(m.get(k), float)), None)
            rows.append({"key": d.name, "name": card["name"], "version": card["version"], "fs": card["fs"],
                         "channels": card["channels"], "samples": card["samples"], "macro_f1": f1,
                         "installed": card.get("installed", {}).get("at", ""), "role": role,
                         "sha_ok": _sha_ok(d)})
        return rows


def version_key(card: dict) -> str:
    """Directory name of an installed model: its weights' sha256 and a hash of the rest of its card
    (a recalibrated card for the same weights is another version)."""
    import hashlib

    rest = {k: v for k, v in card.items() if k not in ("files", "installed")}
    card_hash = hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()
    return f"{card['sha256'][:12]}-{card_hash[:6]}"


def _sha_ok(d: Path) -> bool:
    from edge.gateway.model import sha256_file

    try:
        return sha256_file(d / TFLITE) == json.loads((d / CARD).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return False


def _now() -> str:
    from firmware_bridge.clock import utc_now

    return utc_now()


# --------------------------------------------------------------------------- asking the daemon to reload
def unit_for_config(config: str | Path) -> str:
    """The systemd unit that runs ``config``: stopewatch.toml -> stopewatch.service, NAME.toml -> stopewatch@NAME."""
    stem = Path(config).stem
    return "stopewatch.service" if stem == "stopewatch" else f"stopewatch@{stem}.service"


def reload_daemon(unit: str | None = None, pid: int | None = None) -> str:
    """Ask the running daemon to re-read its model: SIGHUP to ``pid``, else ``systemctl reload unit``.

    Returns one line saying what happened (never raises when there is simply no daemon to reload).
    """
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return f"no process {pid}: the new model is used at the daemon's next start"
        except PermissionError:
            raise UserError(f"not allowed to signal process {pid}; run as root or as the daemon's user") from None
        return f"sent SIGHUP to process {pid} (the daemon reloads its model)"
    if unit is None:
        return "no daemon named: the new model is used at the daemon's next start"
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return "no systemctl here: the new model is used at the daemon's next start"
    state = subprocess.run([systemctl, "is-active", unit], capture_output=True, text=True).stdout.strip()
    if state != "active":
        return f"{unit} is {state or 'not running'}: the new model is used at its next start"
    done = subprocess.run([systemctl, "reload", unit], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"systemctl reload {unit} failed: {done.stderr.strip()}; the model is installed, "
                        f"restart the service: systemctl restart {unit}")
    return f"reloaded {unit} (journalctl -u {unit} shows 'reloaded: model ...' or why it refused)"
