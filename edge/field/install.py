"""``stopewatch install``: turn a gateway with the package installed into a running service.

Run as root once the package is in its venv (default /opt/stopewatch/venv)::

    sudo /opt/stopewatch/venv/bin/stopewatch install --site SITE --node NODE --serial-port /dev/ttyACM0 \\
        --broker mqtt.surface.example:8883 --tls --ca-file ca.crt

Each step says what it changes; a step whose result is already in place says ``unchanged``, so a second
run changes nothing (idempotent) and a re-run with one new flag changes just that. ``--dry-run`` prints
every step without doing any; ``--root DIR`` does everything inside a staging root (user database,
directories, config, units, enablement symlinks) so that it can be tested without touching the machine.

Steps: the daemon's user (sysusers.d), its directories (tmpfiles.d), TLS and password files copied to
/etc/stopewatch (the service cannot read home directories), the board description, the shipped model
into the model store, the config file, the systemd units, then enable (and, on a live system, start).
"""

from __future__ import annotations

import filecmp
import os
import pwd
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from edge.errors import UserError
from edge.field.model_store import Board, ModelStore, write_board
from edge.gateway.config import Config, parse_config

USER = "stopewatch"
VENV = "/opt/stopewatch/venv"  # the ExecStart prefix written in systemd/*.service
CONF_DIR = "/etc/stopewatch"
STATE_DIR = "/var/lib/stopewatch"
UNIT_DIR = "/etc/systemd/system"
SYSUSERS = "/etc/sysusers.d/stopewatch.conf"
TMPFILES = "/etc/tmpfiles.d/stopewatch.conf"
UNITS = ("stopewatch.service", "stopewatch@.service")
SECRET_KEYS = ("password_file", "key_file")  # copied readable by the daemon's user alone
_REPO = Path(__file__).resolve().parents[2]


def under_root(root: str | Path | None, path: str | Path) -> Path:
    """``path`` inside the install root ``root`` (None or "/" = the real system)."""
    return Path(root or "/") / str(path).lstrip("/")


# --------------------------------------------------------------------------- shipped files
def shipped_dir(kind: str) -> Path | None:
    """Where the shipped ``systemd`` or ``models`` directory is: the source tree, else ``{prefix}/share``."""
    for base in (_REPO, Path(sys.prefix) / "share" / "stopewatch"):
        if (base / kind).is_dir():
            return base / kind
    return None


def unit_text(name: str, prefix: str = VENV) -> str:
    """A shipped unit file with its ExecStart pointing into ``prefix`` (the venv holding ``stopewatch``)."""
    d = shipped_dir("systemd")
    if d is None or not (d / name).is_file():
        raise UserError(f"cannot find the shipped unit {name} (looked in {_REPO / 'systemd'} and "
                        f"{Path(sys.prefix) / 'share/stopewatch/systemd'}); reinstall the package")
    return (d / name).read_text().replace(VENV, prefix.rstrip("/"))


def shipped_model(channels: int | None, fs: float | None = None) -> Path | None:
    """The shipped model for a uniaxial (1) or triaxial (3, default) board, if present: of the low-rate
    family for a board at <= 1 kHz (falling back to the triaxial one for a uniaxial board), else 4 kHz."""
    from edge.gateway.model import LOW_RATE_FAMILY_MAX_HZ

    d = shipped_dir("models")
    if d is None:
        return None
    kind = "uniaxial" if channels == 1 else "triaxial"
    names = [f"lowrate_{kind}", "lowrate_triaxial"] if fs is not None and fs <= LOW_RATE_FAMILY_MAX_HZ else [kind]
    for name in names:
        if (d / name / "model_card.json").is_file():
            return d / name
    return None


# --------------------------------------------------------------------------- config file
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def dump_config(data: dict) -> str:
    """The config as TOML, sections and keys in the order of edge/gateway/config.py (flat tables of scalars)."""
    out = ["# stopewatch gateway configuration, written by `stopewatch install`.",
           "# Every key and its default: edge/stopewatch.example.toml. Re-running install keeps your edits",
           "# of keys it is not asked to change. Apply changes: systemctl restart stopewatch",
           "# ([trigger] and [model] also on systemctl reload stopewatch)."]
    order = {f.name: [g.name for g in fields(f.default_factory())] for f in fields(Config) if f.name != "source"}
    for section, keys in order.items():
        table = data.get(section) or {}
        if not table:
            continue
        out.append(f"\n[{section}]")
        for key in keys + sorted(set(table) - set(keys)):
            if key in table:
                out.append(f"{key} = {_toml_value(table[key])}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the plan
@dataclass
class Answers:
    """What the technician told us (None = keep what the existing config says, else the default)."""

    site: str | None = None
    node: str | None = None
    serial_port: str | None = None
    baudrate: int | None = None
    text_mode: bool | None = None
    broker: str | None = None  # host[:port]
    tls: bool | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    board_fs: float | None = None
    board_channels: int | None = None
    model: str | None = None


QUESTIONS = (  # (answer field, question, default)
    ("site", "Mine site id (letters, digits, . _ -)", "demo-site"),
    ("node", "This gateway's node id", "node-01"),
    ("serial_port", "Serial device of the ADC board (see ls /dev/serial/by-id/)", "/dev/ttyACM0"),
    ("broker", "MQTT broker host[:port] on the surface", "127.0.0.1:1883"),
)


def ask_missing(answers: Answers, existing: dict, ask: Callable[[str], str] = input) -> None:
    """Prompt for the essential answers that neither a flag nor the existing config gives."""
    have = {"site": existing.get("node", {}).get("site"), "node": existing.get("node", {}).get("node"),
            "serial_port": existing.get("board", {}).get("port"), "broker": existing.get("mqtt", {}).get("host")}
    for name, question, default in QUESTIONS:
        if getattr(answers, name) is None and have[name] is None:
            reply = ask(f"{question} [{default}]: ").strip()
            setattr(answers, name, reply or default)


@dataclass
class Step:
    """One action: ``what`` it does; ``run`` returns False when everything was already in place."""

    what: str
    run: Callable[[], bool]


@dataclass
class Installer:
    answers: Answers
    root: Path = Path("/")
    instance: str | None = None
    prefix: str = VENV
    start: bool = True
    force_model: bool = False
    log: Callable[[str], None] = print
    steps: list[Step] = field(default_factory=list)

    # ------------------------------------------------------------ paths
    def at(self, path: str | Path) -> Path:
        """``path`` inside the install root."""
        return under_root(self.root, path)

    @property
    def staged(self) -> bool:
        return self.root != Path("/")

    @property
    def name(self) -> str:
        return self.instance or "stopewatch"

    @property
    def unit(self) -> str:
        return f"stopewatch@{self.instance}.service" if self.instance else "stopewatch.service"

    @property
    def config_path(self) -> str:
        return f"{CONF_DIR}/{self.name}.toml"

    @property
    def state_dir(self) -> str:
        return f"{STATE_DIR}/{self.instance}" if self.instance else STATE_DIR

    # ------------------------------------------------------------ helpers
    def _ids(self) -> tuple[int, int] | None:
        """The daemon user's (uid, gid) in the install root, None when it does not exist (yet)."""
        if not self.staged:
            try:
                pw = pwd.getpwnam(USER)
                return pw.pw_uid, pw.pw_gid
            except KeyError:
                return None
        passwd = self.at("/etc/passwd")
        if passwd.is_file():
            for line in passwd.read_text().splitlines():
                parts = line.split(":")
                if len(parts) > 3 and parts[0] == USER:
                    return int(parts[2]), int(parts[3])
        return None

    def _own(self, path: Path, user: bool = False, mode: int | None = None) -> None:
        """root:stopewatch (or stopewatch:stopewatch with ``user``) when we are root and the user exists."""
        if mode is not None:
            os.chmod(path, mode)
        ids = self._ids()
        if ids is not None and os.geteuid() == 0:
            os.chown(path, ids[0] if user else 0, ids[1], follow_symlinks=False)

    def _write(self, path: Path, text: str, mode: int = 0o644, group_owned: bool = False) -> bool:
        if path.is_file() and path.read_text() == text:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        if group_owned:
            self._own(tmp)
        if path.is_file():
            shutil.copy2(path, path.with_name(path.name + ".bak"))  # the technician's last version
        os.replace(tmp, path)
        return True

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")

    def _existing(self) -> dict:
        path = self.at(self.config_path)
        if not path.is_file():
            return {}
        try:
            return tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"{path}: existing config is not valid TOML ({exc}); fix or remove it first") from None

    # ------------------------------------------------------------ steps
    def plan(self) -> list[Step]:
        """Every step, in order (nothing is done yet)."""
        a = self.answers
        s = [Step(f"daemon user '{USER}' (in group dialout) from {SYSUSERS}", self._user),
             Step(f"directories {CONF_DIR}, {self.state_dir}/models from {TMPFILES}", self._dirs)]
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            if getattr(a, key):
                owner = f"{USER}:{USER} 0600" if key in SECRET_KEYS else f"root:{USER} 0640"
                s.append(Step(f"copy {getattr(a, key)} to {self._secret_path(key)} ({owner})",
                              lambda k=key: self._secret(k)))
        if a.board_fs is not None or a.board_channels is not None:
            s.append(Step(f"board description {self.state_dir}/board.json (fs {a.board_fs}, channels "
                          f"{a.board_channels})", self._board))
        s.append(Step(f"model into {self.state_dir}/models/current", self._model))
        s.append(Step(f"config {self.config_path} (root:{USER} 0640)", self._config))
        s.append(Step(f"units {', '.join(UNITS)} in {UNIT_DIR} (ExecStart {self.prefix}/bin/stopewatch)", self._units))
        s.append(Step(f"enable {self.unit}" + (" and (re)start it" if self.start and not self.staged else ""),
                      self._enable))
        return s

    def _user(self) -> bool:
        changed = self._write(self.at(SYSUSERS), unit_text("sysusers.d/stopewatch.conf"))
        if self._ids() is not None and not changed:
            return False
        exe = shutil.which("systemd-sysusers")
        if exe is not None:
            self._run([exe, f"--root={self.root}", "stopewatch.conf"] if self.staged else [exe, "stopewatch.conf"])
        elif not self.staged:
            self._run(["useradd", "--system", "--user-group", "--home-dir", STATE_DIR, "--no-create-home",
                       "--shell", "/usr/sbin/nologin", "--groups", "dialout", USER])
        else:
            raise UserError("systemd-sysusers is needed to create the user in a staging root "
                            "(apt-get install systemd)")
        return True

    def _dirs(self) -> bool:
        text = unit_text("tmpfiles.d/stopewatch.conf")
        changed = self._write(self.at(TMPFILES), text)
        wanted = [self.at(CONF_DIR), self.at(self.state_dir), self.at(f"{self.state_dir}/models")]
        if not changed and all(p.is_dir() for p in wanted):
            return False
        exe = shutil.which("systemd-tmpfiles")
        if exe is not None:
            self._run([exe, f"--root={self.root}", "--create", "stopewatch.conf"] if self.staged
                      else [exe, "--create", "stopewatch.conf"])
        for p in wanted:  # without systemd-tmpfiles, and for a template instance's own state directory
            if not p.is_dir():
                p.mkdir(parents=True, mode=0o750)
                self._own(p, user=p != self.at(CONF_DIR), mode=0o750)
        return True

    def _secret_path(self, key: str) -> str:
        src = Path(getattr(self.answers, key))
        return f"{CONF_DIR}/tls/{src.name}" if key != "password_file" else f"{CONF_DIR}/{self.name}.password"

    def _secret(self, key: str) -> bool:
        src = Path(getattr(self.answers, key))
        dst = self.at(self._secret_path(key))
        if src.resolve() == dst.resolve():
            return False
        if not src.is_file():
            raise UserError(f"--{key.replace('_', '-')} {src}: no such file")
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            return False
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(dst.parent, 0o750)
        self._own(dst.parent)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(src, tmp)
        # The password and the private key: the daemon's user only (doctor warns on group/other read bits).
        self._own(tmp, user=key in SECRET_KEYS, mode=0o600 if key in SECRET_KEYS else 0o640)
        os.replace(tmp, dst)
        return True

    def _board_value(self) -> Board | None:
        a = self.answers
        if a.board_fs is None and a.board_channels is None:
            from edge.field.model_store import read_board
            return read_board(self.at(self.state_dir))
        if a.board_fs is None or a.board_channels is None:
            raise UserError("give both --board-fs and --board-channels (what the ADC board sends)")
        return Board(float(a.board_fs), int(a.board_channels), "declared at stopewatch install")

    def _board(self) -> bool:
        board = self._board_value()
        path = self.at(self.state_dir) / "board.json"
        from edge.field.model_store import read_board
        if read_board(self.at(self.state_dir)) == board:
            return False
        write_board(self.at(self.state_dir), board)
        self._own(path, user=True, mode=0o644)
        return True

    def _model(self) -> bool:
        store = ModelStore(self.at(f"{self.state_dir}/models"), owner=self._ids())
        src = self.answers.model
        if src is None:
            if store.current_sha() is not None:
                return False  # keep whatever model the gateway runs; `stopewatch model install` swaps it
            board = self._board_value()
            found = shipped_model(board.channels if board else None, board.fs if board else None)
            if found is None:
                self.log("  warning: no shipped model found; install one with "
                         f"`stopewatch model install DIR --config {self.config_path}`")
                return False
            src = str(found)
        pre_s = float(self._existing().get("trigger", {}).get("pre_s", 0.256))
        result = store.install(src, board=self._board_value(), pre_s=pre_s, force=self.force_model)
        for w in result.warnings:
            self.log(f"  warning: {w}")
        return result.changed

    def config_data(self) -> dict:
        """The config the install writes: the existing file, updated with the answers and the store layout."""
        a = self.answers
        data = {k: dict(v) for k, v in self._existing().items() if isinstance(v, dict)}
        node, board, mqtt = (data.setdefault(k, {}) for k in ("node", "board", "mqtt"))
        for table, key, value in (
                (node, "site", a.site), (node, "node", a.node), (board, "port", a.serial_port),
                (board, "baudrate", a.baudrate), (board, "text_mode", a.text_mode), (mqtt, "tls", a.tls),
                (mqtt, "username", a.username)):
            if value is not None:
                table[key] = value
        if a.board_fs is not None and board.get("text_mode"):
            board["text_fs"] = float(a.board_fs)
        if a.broker is not None:
            host, _, port = a.broker.rpartition(":") if a.broker.count(":") == 1 else (a.broker, "", "")
            mqtt["host"] = host or a.broker
            if port:
                try:
                    mqtt["port"] = int(port)
                except ValueError:
                    raise UserError(f"--broker {a.broker!r}; expected HOST or HOST:PORT") from None
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            if getattr(a, key):
                mqtt[key] = self._secret_path(key)
        node["state_dir"] = self.state_dir
        data.setdefault("model", {})["path"] = f"{self.state_dir}/models/current"
        return {k: v for k, v in data.items() if v}

    def check_config(self, data: dict) -> Config:
        """Validate as the daemon will (file paths looked up inside the install root)."""
        probe = {k: dict(v) for k, v in data.items()}
        for key in ("password_file", "ca_file", "cert_file", "key_file"):
            path = probe.get("mqtt", {}).get(key)
            if getattr(self.answers, key):  # not copied yet: the technician's file must exist
                probe["mqtt"][key] = str(Path(getattr(self.answers, key)).absolute())
            elif path and self.staged:
                probe["mqtt"][key] = str(self.at(path))
        return parse_config(probe, self.config_path)

    def _config(self) -> bool:
        data = self.config_data()
        self.check_config(data)
        if self._existing() == data:
            return False  # same settings: keep the technician's file as it is (comments, order)
        return self._write(self.at(self.config_path), dump_config(data), mode=0o640, group_owned=True)

    def _units(self) -> bool:
        changed = False
        for name in UNITS:
            changed |= self._write(self.at(f"{UNIT_DIR}/{name}"), unit_text(name, self.prefix))
        if changed and not self.staged and shutil.which("systemctl"):
            self._run(["systemctl", "daemon-reload"])
        return changed

    def _enable(self) -> bool:
        wants = self.at(f"{UNIT_DIR}/multi-user.target.wants/{self.unit}")
        changed = not wants.is_symlink()
        systemctl = shutil.which("systemctl")
        if changed:
            if systemctl is not None:
                self._run([systemctl, f"--root={self.root}", "enable", self.unit] if self.staged
                          else [systemctl, "enable", self.unit])
            else:  # what `systemctl enable` does for WantedBy=multi-user.target
                wants.parent.mkdir(parents=True, exist_ok=True)
                target = f"{UNIT_DIR}/stopewatch@.service" if self.instance else f"{UNIT_DIR}/{self.unit}"
                os.symlink(target, wants)
        if self.start and not self.staged:
            if systemctl is None or not Path("/run/systemd/system").is_dir():
                self.log("  warning: systemd is not running here: start the daemon by hand or reboot")
                return changed
            self._run([systemctl, "restart", self.unit])  # picks up a new config, model or unit
            changed = True
        return changed

    # ------------------------------------------------------------ running
    def run(self, dry_run: bool = False) -> int:
        """Do (or with ``dry_run`` only print) every step; returns how many changed something."""
        if self.prefix.startswith(("/home/", "/root/")):
            self.log(f"warning: {self.prefix} is in a home directory, which the service cannot read "
                     "(ProtectHome=yes); install the package into /opt/stopewatch/venv")
        if not dry_run and not self.staged and os.geteuid() != 0:
            raise UserError("stopewatch install changes the system: run it as root (sudo), "
                            "or try --dry-run / --root DIR first")
        self.check_config(self.config_data())  # bad answers stop here, before anything is changed
        self._board_value()  # both of --board-fs / --board-channels, or neither
        if self.answers.model is not None:  # the model is verified now, so that a dry run says so too
            from edge.field.model_store import verify

            verify(self.answers.model)
        changed = 0
        target = f" into {self.root}" if self.staged else ""
        for step in self.plan():
            if dry_run:
                self.log(f"would: {step.what}{target}")
                continue
            did = step.run()
            changed += did
            self.log(f"{'done' if did else 'unchanged'}: {step.what}")
        if dry_run:
            self.log(f"--- {self.config_path} would read:\n{dump_config(self.config_data())}---")
        else:
            self.log(f"{changed} step(s) changed the system; check it with: "
                     f"{self.prefix}/bin/stopewatch doctor --config {self.config_path}")
        return changed
