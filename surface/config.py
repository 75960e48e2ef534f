"""The collector's configuration (``surface.toml``), validated at start like the gateway's.

Every error names the file, the key, the bad value and what is allowed, in one line; unknown keys are
errors. ``surface/surface.example.toml`` documents every key.
"""

from __future__ import annotations

import math
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from edge.errors import UserError
from edge.topics import DEFAULT_PREFIX

_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class DatabaseConfig:
    """Where the archive is: ``sqlite:///PATH`` (default) or ``postgresql://...``."""

    url: str = "sqlite:///surface.db"


@dataclass
class BrokerConfig:
    """The broker the nodes publish to, and this collector's session on it."""

    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = DEFAULT_PREFIX
    client_id: str = ""  # default: stopewatch-collector-{hostname}; must be stable: it names the session
    shared_group: str = ""  # non-empty: subscribe as $share/{group}/... so collectors split the load
    session_expiry_s: int = 7 * 86_400  # how long the broker keeps the session (and queues) while we are away
    keepalive_s: int = 30
    receive_maximum: int = 100  # QoS 1 messages the broker may send before our PUBACKs
    username: str = ""
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass
class IngestConfig:
    """How messages are written: in batches, one transaction each, acknowledged after the commit."""

    batch_max: int = 200
    batch_wait_s: float = 0.05


@dataclass
class AlertsConfig:
    """When the collector speaks up."""

    gap_grace_s: float = 30.0  # a missing seq must stay missing this long (reordering, resends) to alert
    health_interval_s: float = 60.0  # the nodes' health.interval_s
    silent_after: int = 3  # health intervals without health before a node is called silent
    check_interval_s: float = 5.0
    publish: bool = True  # also publish each alert on {prefix}/{site}/{node}/alert


@dataclass
class WebConfig:
    """The review page: served by the collector when ``enabled``, or alone by ``stopewatch surface serve``."""

    enabled: bool = False
    host: str = "127.0.0.1"  # loopback: put a TLS reverse proxy in front to reach it from elsewhere
    port: int = 8080
    session_timeout_min: float = 30.0  # a session idle this long must log in again
    secret_key_file: str = "surface-web.key"  # signs the session cookies; generated (mode 0600) when missing
    secure_cookie: bool = False  # true behind HTTPS: the browser then sends the cookie over HTTPS only
    page_size: int = 50  # events per page of the list
    threads: int = 4  # waitress worker threads


@dataclass
class SurfaceConfig:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source: str = "<defaults>"

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"stopewatch-collector-{socket.gethostname()}"


_RANGES: dict[str, tuple[float, float, str]] = {
    "broker.port": (1, 65_535, "TCP port"),
    "broker.session_expiry_s": (0, 4_294_967_295, "seconds (the MQTT 5 limit; 0 ends the session on disconnect)"),
    "broker.keepalive_s": (1, 65_535, "seconds (the MQTT limit)"),
    "broker.receive_maximum": (1, 65_535, "messages (the MQTT 5 limit)"),
    "ingest.batch_max": (1, 10_000, "messages"),
    "ingest.batch_wait_s": (0.0, 10.0, "seconds"),
    "alerts.gap_grace_s": (0.0, 86_400.0, "seconds"),
    "alerts.health_interval_s": (1.0, 86_400.0, "seconds"),
    "alerts.silent_after": (1, 1000, "health intervals"),
    "alerts.check_interval_s": (0.1, 3600.0, "seconds"),
    "web.port": (1, 65_535, "TCP port"),
    "web.session_timeout_min": (1.0, 7 * 24 * 60.0, "minutes"),
    "web.page_size": (1, 1000, "events"),
    "web.threads": (1, 64, "threads"),
}


def _coerce(value: Any, kind: type, where: str, source: str) -> Any:
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda v: isinstance(v, str)}[kind]
    if not ok(value):
        raise UserError(f"{source}: {where} = {value!r}; expected "
                        f"{'a finite number' if kind is float else kind.__name__}")
    if isinstance(value, str) and any(ord(c) < 32 for c in value):
        raise UserError(f"{source}: {where} = {value!r}; control characters are not allowed")
    return float(value) if kind is float else value


def parse_surface_config(data: dict, source: str = "<config>") -> SurfaceConfig:
    """Build and validate a :class:`SurfaceConfig` from a parsed TOML mapping."""
    hints = get_type_hints(SurfaceConfig)
    sections = [f.name for f in fields(SurfaceConfig) if f.name != "source"]
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise UserError(f"{source}: unknown section [{unknown[0]}]; allowed: {', '.join(sections)}")
    built = {}
    for name in sections:
        cls, table = hints[name], data.get(name, {})
        if not isinstance(table, dict):
            raise UserError(f"{source}: [{name}] must be a table of keys")
        keys = [f.name for f in fields(cls)]
        bad = sorted(set(table) - set(keys))
        if bad:
            raise UserError(f"{source}: unknown key {name}.{bad[0]}; allowed in [{name}]: {', '.join(keys)}")
        kinds = get_type_hints(cls)
        built[name] = cls(**{k: _coerce(v, kinds[k], f"{name}.{k}", source) for k, v in table.items()})
    cfg = SurfaceConfig(source=source, **built)
    for where, (lo, hi, unit) in _RANGES.items():
        section, key = where.split(".")
        value = getattr(getattr(cfg, section), key)
        if not lo <= value <= hi:
            raise UserError(f"{source}: {where} = {value!r}; allowed {lo:g} to {hi:g} ({unit})")
    b = cfg.broker
    if not b.prefix or any(c in b.prefix for c in "#+") or b.prefix.endswith("/") or b.prefix.startswith("$"):
        raise UserError(f"{source}: broker.prefix = {b.prefix!r}; expected a topic prefix without wildcards, "
                        "a leading '$' or a trailing '/'")
    if b.shared_group and not _GROUP.match(b.shared_group):
        raise UserError(f"{source}: broker.shared_group = {b.shared_group!r}; allowed: 1-64 letters, digits, "
                        "'.', '_' or '-'")
    if any(c in cfg.client_id for c in "#+/"):
        raise UserError(f"{source}: broker.client_id = {cfg.client_id!r}; '#', '+' and '/' are not allowed")
    if not cfg.database.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise UserError(f"{source}: database.url = {cfg.database.url!r}; expected sqlite:///PATH or "
                        "postgresql://USER@HOST:PORT/DB")
    if b.tls and not b.ca_file:
        raise UserError(f"{source}: broker.tls = true needs broker.ca_file (the CA of the broker's certificate)")
    if bool(b.cert_file) != bool(b.key_file):
        raise UserError(f"{source}: broker.cert_file and broker.key_file go together")
    for key in ("password_file", "ca_file", "cert_file", "key_file"):
        path = getattr(b, key)
        if path and not Path(path).is_file():
            raise UserError(f"{source}: broker.{key} = {path!r}; no such file")
    if b.password_file and not b.username:
        raise UserError(f"{source}: broker.password_file is set but broker.username is empty")
    w = cfg.web
    if not w.host or any(c.isspace() or c in "/#?" for c in w.host):
        raise UserError(f"{source}: web.host = {w.host!r}; expected an address to bind, e.g. 127.0.0.1")
    if not w.secret_key_file:
        raise UserError(f"{source}: web.secret_key_file is empty; name the file that holds (or will hold) "
                        "the session key")
    key_dir = Path(w.secret_key_file).resolve().parent
    if not key_dir.is_dir():
        raise UserError(f"{source}: web.secret_key_file = {w.secret_key_file!r}; directory {key_dir} does not exist")
    return cfg


def load_surface_config(path: str | Path) -> SurfaceConfig:
    """Read and validate ``surface.toml``. Relative file paths (and a relative SQLite path) name what is
    beside the config file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such configuration file (start from surface/surface.example.toml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    base = path.resolve().parent
    broker = data.get("broker")
    if isinstance(broker, dict):
        for key in ("password_file", "ca_file", "cert_file", "key_file"):
            v = broker.get(key)
            if isinstance(v, str) and v and not Path(v).is_absolute():
                broker[key] = str(base / v)
    web = data.get("web")
    if isinstance(web, dict):
        v = web.get("secret_key_file")
        if isinstance(v, str) and v and not Path(v).is_absolute():
            web["secret_key_file"] = str(base / v)
    db = data.get("database")
    if isinstance(db, dict) and isinstance(db.get("url"), str) and db["url"].startswith("sqlite:///"):
        rel = db["url"][len("sqlite:///"):]
        if rel and not rel.startswith("/") and rel != ":memory:":
            db["url"] = f"sqlite:///{base / rel}"
    return parse_surface_config(data, str(path))


def password(cfg: BrokerConfig) -> str | None:
    """The broker password, read from its file at connect time."""
    return Path(cfg.password_file).read_text().strip() if cfg.password_file else None
