"""The gateway daemon's configuration: one TOML file, validated at start.

Every error names the file, the key path, the bad value and what is allowed,
in one line. Unknown keys are errors too (a typo must not silently fall back to
a default underground). ``edge/stopewatch.example.toml`` documents every key.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from edge.errors import UserError
from edge.topics import DEFAULT_PREFIX, NodeTopics

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # safe inside an MQTT topic and a file name


@dataclass
class NodeConfig:
    """Who this gateway is and where it keeps its state."""

    site: str = "demo-site"
    node: str = "node-01"
    prefix: str = DEFAULT_PREFIX
    state_dir: str = "/var/lib/stopewatch"


@dataclass
class BoardConfig:
    """The ADC board's serial link (firmware_bridge)."""

    port: str = "/dev/ttyACM0"  # any pyserial URL: device path, pty, socket://host:port, or a file
    baudrate: int = 921600
    text_mode: bool = False
    counts_per_unit: float = 1.0e9  # ADC counts per physical unit (e.g. counts per m/s)
    units: str = "m/s"
    text_fs: float = 4000.0  # sampling rate of a text-mode board (binary frames carry their own)
    reconnect_max_s: float = 30.0


@dataclass
class ModelConfig:
    """The classifier: a directory with model.tflite and model_card.json."""

    path: str = "models/triaxial"
    threads: int = 1


@dataclass
class TriggerConfig:
    """Band-pass, STA/LTA and the event trigger."""

    highpass_hz: float = 20.0
    lowpass_hz: float = 1500.0
    method: str = "recursive"  # recursive | classic
    sta_s: float = 0.02
    lta_s: float = 2.0
    on: float = 4.0
    off: float = 1.8
    coincidence: int = 1  # channels that must be triggered together
    min_duration_s: float = 0.01
    max_duration_s: float = 20.0
    refractory_s: float = 1.0  # after an event closes, new triggers within this time extend nothing
    pre_s: float = 0.256  # window start before the trigger (should match the model's onset)
    conceal_gap_s: float = 0.05  # gaps up to this long are bridged, keeping the trigger's state; longer ones reset it
    prewhiten_order: int = 0  # AR whitening before the STA/LTA (removes steady lines); 0 = off
    prewhiten_s: float = 2.0  # the whitening is fitted on this much recent background, refitted every quarter
    dropout_min_run: int = 0  # exact repeats on every channel that make a dropout, masked from the STA/LTA; 0 = off


@dataclass
class MqttConfig:
    """The broker on the surface."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"  # 5 | 3.1.1
    client_id: str = ""  # default: stopewatch-{site}-{node}
    keepalive_s: int = 30
    username: str = ""
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    publish_waveforms: bool = False
    max_inbound_kb: int = 64  # largest packet taken from the broker (MQTT 5 CONNECT Maximum Packet Size)
    mode: str = "json"  # json | sparkplug | both (edge/gateway/sparkplug.py)
    sparkplug_device: str = "board"  # the Sparkplug device id of the ADC board (events are its DDATA)
    sparkplug_primary_host: str = ""  # a Primary Host id: wait for its STATE online before births and data
    homeassistant_discovery: bool = False  # retained Home Assistant discovery configs (edge/gateway/homeassistant.py)
    homeassistant_prefix: str = "homeassistant"  # Home Assistant's discovery prefix


@dataclass
class OutboxConfig:
    """The durable on-disk queue of events not yet acknowledged by the broker."""

    path: str = ""  # default: {state_dir}/outbox.sqlite
    max_events: int = 100_000
    reserve_kb: int = 1024  # disk kept free beside the outbox, released when the disk fills (0: none)


@dataclass
class HealthConfig:
    """Periodic health messages."""

    interval_s: float = 60.0


@dataclass
class LogConfig:
    """The journal: how much the daemon says."""

    level: str = "info"  # debug | info | warning | error


@dataclass
class StreamConfig:
    """The board's SEED stream codes (archive, event messages, StationXML) and the sensor behind them."""

    network: str = "XX"  # FDSN network code; XX is the code for unregistered networks
    station: str = "STA01"
    location: str = "00"
    instrument: str = "geophone"  # geophone (P) | seismometer (H) | accelerometer (N): the instrument code
    band: str = ""  # "" = from the board's rate (SEED band code), or one letter to force it
    orientation: str = ""  # "" = ZNE for 3 channels, Z for 1, 1..9 otherwise; or one code per channel
    sensor: str = ""  # the sensor's model, for StationXML (e.g. "GS-11D 4.5 Hz")
    sensitivity_hz: float = 100.0  # where counts_per_unit holds (in the sensor's flat band)
    natural_hz: float = 0.0  # a geophone's or seismometer's natural frequency, for StationXML's poles; 0 = unknown
    damping: float = 0.7  # its damping ratio (fraction of critical), with natural_hz
    latitude: float = 0.0
    longitude: float = 0.0
    elevation_m: float = 0.0  # of the surface above the sensor
    depth_m: float = 0.0  # of the sensor below the surface


@dataclass
class ArchiveConfig:
    """The continuous miniSEED ring archive (SDS layout)."""

    enabled: bool = True
    path: str = ""  # default: {state_dir}/archive
    max_days: float = 7.0  # day files older than this (by the data's time) go first
    max_bytes: int = 2_000_000_000  # the oldest records go when the archive grows past this
    min_free_bytes: int = 500_000_000  # headroom left on the disk for the outbox and the system
    record_bytes: int = 4096  # miniSEED record length: 512 to 65536, a power of two
    encoding: str = "steim2"  # integer boards: steim2 (smallest) | steim1 (faster) | int32 (uncompressed)


@dataclass
class MetricsConfig:
    """The optional Prometheus endpoint (health counters and latency histograms)."""

    enabled: bool = False
    bind: str = "127.0.0.1"  # localhost only unless the mine's network is meant to scrape the node
    port: int = 9719


@dataclass
class Config:
    """The whole daemon configuration."""

    node: NodeConfig = field(default_factory=NodeConfig)
    board: BoardConfig = field(default_factory=BoardConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str = "<defaults>"

    @property
    def outbox_path(self) -> Path:
        return Path(self.outbox.path) if self.outbox.path else Path(self.node.state_dir) / "outbox.sqlite"

    @property
    def sparkplug_outbox_path(self) -> Path:
        """The Sparkplug publisher's outbox: the outbox itself in mode "sparkplug", a second file beside it in
        mode "both" (each form is acknowledged on its own; an event leaves a file only on its form's PUBACK)."""
        path = self.outbox_path
        return path if self.mqtt.mode == "sparkplug" else path.with_name(f"{path.stem}-sparkplug{path.suffix}")

    @property
    def bdseq_path(self) -> Path:
        """Where the Sparkplug bdSeq of the last session is kept across restarts (beside the outbox)."""
        return self.outbox_path.with_name("sparkplug-bdseq")

    @property
    def archive_path(self) -> Path:
        return Path(self.archive.path) if self.archive.path else Path(self.node.state_dir) / "archive"

    @property
    def topics(self) -> NodeTopics:
        """This node's MQTT topics."""
        return NodeTopics(self.node.prefix, self.node.site, self.node.node)


# Allowed values and ranges beyond the type, as (key path -> check, description of what is allowed).
# The STA/LTA kinds edge.gateway.dsp.STA_LTA implements (named here so a config is checked without the DSP).
STA_LTA_METHODS = ("recursive", "classic")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Keys that would hold a secret in the config file itself: refused with a pointer to mqtt.password_file,
# and the value is never echoed.
_SECRET_WORDS = ("password", "passwd", "secret", "token", "passphrase", "credential")
# DNS labels of letters, digits and '-' (and '_', which container and site DNS names use), dot-separated.
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                   r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")
INSTRUMENTS = ("geophone", "seismometer", "accelerometer")
MQTT_MODES = ("json", "sparkplug", "both")
_CHOICES = {"trigger.method": STA_LTA_METHODS, "mqtt.protocol": ("5", "3.1.1"), "log.level": LOG_LEVELS,
            "mqtt.mode": MQTT_MODES,
            "stream.instrument": INSTRUMENTS, "archive.encoding": ("steim2", "steim1", "int32")}
_POSITIVE = {"board.baudrate", "board.counts_per_unit", "board.text_fs", "board.reconnect_max_s", "model.threads",
             "trigger.highpass_hz", "trigger.lowpass_hz", "trigger.sta_s", "trigger.lta_s", "trigger.on",
             "trigger.off", "trigger.coincidence", "trigger.min_duration_s", "trigger.max_duration_s",
             "mqtt.port", "mqtt.keepalive_s", "mqtt.max_inbound_kb", "outbox.max_events", "health.interval_s",
             "stream.sensitivity_hz", "archive.max_days", "archive.max_bytes", "metrics.port"}
_NON_NEGATIVE = {"trigger.refractory_s", "trigger.pre_s", "trigger.conceal_gap_s", "trigger.prewhiten_order",
                 "trigger.dropout_min_run", "archive.min_free_bytes",
                 "stream.depth_m", "stream.natural_hz"}
# Values that parse and are positive but would make the daemon run and detect nothing, or that a library
# chokes on: (lowest, highest, why). Each bound is far outside what a working node uses.
_RANGES: dict[str, tuple[float, float, str]] = {
    "board.baudrate": (300, 20_000_000, "serial baud rate"),
    "board.counts_per_unit": (1e-6, 1e18, "ADC counts per physical unit"),
    "board.text_fs": (1.0, 1e6, "Hz"),
    "board.reconnect_max_s": (0.1, 3600.0, "seconds"),
    "model.threads": (1, 64, "interpreter threads"),
    "trigger.highpass_hz": (0.01, 1e5, "Hz"),
    "trigger.lowpass_hz": (0.1, 5e5, "Hz"),
    "trigger.sta_s": (1e-4, 10.0, "seconds (at least one sample at 10 kHz)"),
    "trigger.lta_s": (0.01, 600.0, "seconds"),
    "trigger.on": (1.01, 1e4, "STA/LTA ratio (above 1: louder than the background)"),
    "trigger.coincidence": (1, 32, "channels (a board sends at most 32)"),
    "trigger.min_duration_s": (0.0, 60.0, "seconds"),
    "trigger.max_duration_s": (0.01, 86_400.0, "seconds"),
    "trigger.refractory_s": (0.0, 600.0, "seconds"),
    "trigger.pre_s": (0.0, 60.0, "seconds"),
    "trigger.conceal_gap_s": (0.0, 1.0, "seconds; 0 = every gap resets the trigger"),
    "trigger.prewhiten_order": (0, 64, "prediction coefficients; 0 = no prewhitening"),
    "trigger.prewhiten_s": (0.01, 600.0, "seconds of background the whitening is fitted on"),
    "trigger.dropout_min_run": (0, 100_000, "repeated samples; 0 = no dropout mask"),
    "mqtt.keepalive_s": (1, 65_535, "seconds (the MQTT limit)"),
    "mqtt.max_inbound_kb": (1, 262_144, "kB (the MQTT limit is 256 MB; a publisher receives only acknowledgements)"),
    "outbox.max_events": (1, 1_000_000_000, "rows"),
    "outbox.reserve_kb": (0, 1_048_576, "kB kept free for the outbox to recover from a full disk"),
    "health.interval_s": (1.0, 86_400.0, "seconds (health is a rate report, not a stream)"),
    "stream.sensitivity_hz": (0.001, 1e5, "Hz"),
    "stream.natural_hz": (0.0, 10_000.0, "Hz; 0 = unknown (a flat StationXML response)"),
    "stream.damping": (0.01, 1.0, "fraction of critical damping (geophones: about 0.2 to 0.7)"),
    "stream.latitude": (-90.0, 90.0, "degrees north"),
    "stream.longitude": (-180.0, 180.0, "degrees east"),
    "stream.elevation_m": (-12_000.0, 9_000.0, "metres above sea level"),
    "stream.depth_m": (0.0, 12_000.0, "metres below the surface"),
    "archive.max_days": (0.01, 36_600.0, "days"),
    "archive.max_bytes": (1_000_000, 10**15, "bytes (at least 1 MB)"),
    "archive.min_free_bytes": (0, 10**15, "bytes"),
    "archive.record_bytes": (512, 65_536, "bytes"),
    "metrics.port": (1, 65_535, "TCP port"),
}
# SEED 2.4 field widths (miniSEED 2 and the SDS file names): network 1-2, station 1-5, location 0-2 characters.
_SEED_CODES = {"network": (1, 2), "station": (1, 5), "location": (0, 2)}


def _coerce(value: Any, kind: type, where: str) -> Any:
    """Check ``value`` against the field's type; ints are accepted for floats, nothing else is converted."""
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda v: isinstance(v, str)}[kind]
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool) and where == "mqtt.protocol":
        value = str(value)  # protocol = 5 is natural to write
    if not ok(value):
        raise UserError(f"{where} = {value!r}; expected {'a finite number' if kind is float else kind.__name__}")
    return float(value) if kind is float else value


def _section(cls: type, table: Any, path: str, source: str) -> Any:
    if not isinstance(table, dict):
        raise UserError(f"{source}: [{path}] must be a table of keys")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(table) - set(names))
    secret = [k for k in unknown if any(w in k.lower() for w in _SECRET_WORDS)]
    if secret:
        raise UserError(f"{source}: {path}.{secret[0]} looks like a plaintext credential (value not shown); "
                        "a password never goes in the config: write it alone in a file, chmod 600 it and set "
                        "mqtt.password_file")
    if unknown:
        raise UserError(f"{source}: unknown key {path}.{unknown[0]}; allowed in [{path}]: {', '.join(names)}")
    values = {}
    for name in names:
        if name in table:
            where = f"{path}.{name}"
            try:
                values[name] = _coerce(table[name], hints[name], where)
            except UserError as exc:
                raise UserError(f"{source}: {exc}") from None
    return cls(**values)


def _check(cfg: Config) -> None:
    src = cfg.source
    for section in fields(Config):
        if section.name == "source":
            continue
        obj = getattr(cfg, section.name)
        for f in fields(obj):
            where, value = f"{section.name}.{f.name}", getattr(obj, f.name)
            if where in _CHOICES and value not in _CHOICES[where]:
                raise UserError(f"{src}: {where} = {value!r}; allowed: {', '.join(_CHOICES[where])}")
            if where in _POSITIVE and value <= 0:
                raise UserError(f"{src}: {where} = {value!r}; expected a positive number")
            if where in _NON_NEGATIVE and value < 0:
                raise UserError(f"{src}: {where} = {value!r}; expected zero or more")
            if where in _RANGES and not _RANGES[where][0] <= value <= _RANGES[where][1]:
                lo, hi, unit = _RANGES[where]
                shown = f"{value:g}" if isinstance(value, float) else repr(value)
                raise UserError(f"{src}: {where} = {shown}; allowed {lo:g} to {hi:g} ({unit})")
            if isinstance(value, str) and any(ord(ch) < 32 for ch in value):
                raise UserError(f"{src}: {where} = {value!r}; control characters (such as NUL) are not allowed")
    for key in ("site", "node"):
        value = getattr(cfg.node, key)
        if not _NAME.match(value):
            raise UserError(f"{src}: node.{key} = {value!r}; allowed: 1-64 letters, digits, '.', '_' or '-' "
                            "(it becomes part of the MQTT topic)")
    if any(c in cfg.node.prefix for c in "#+") or cfg.node.prefix.endswith("/") or not cfg.node.prefix:
        raise UserError(f"{src}: node.prefix = {cfg.node.prefix!r}; expected a topic prefix without "
                        "wildcards or a trailing '/'")
    t = cfg.trigger
    if t.off >= t.on:
        raise UserError(f"{src}: trigger.off = {t.off:g}; must be below trigger.on = {t.on:g} (hysteresis)")
    if t.lta_s <= t.sta_s:
        raise UserError(f"{src}: trigger.lta_s = {t.lta_s:g}; must be longer than trigger.sta_s = {t.sta_s:g}")
    if t.highpass_hz >= t.lowpass_hz:
        raise UserError(f"{src}: trigger.highpass_hz = {t.highpass_hz:g}; must be below trigger.lowpass_hz = "
                        f"{t.lowpass_hz:g}")
    if t.min_duration_s > t.max_duration_s:
        raise UserError(f"{src}: trigger.min_duration_s = {t.min_duration_s:g}; must not exceed "
                        f"trigger.max_duration_s = {t.max_duration_s:g}")
    m = cfg.mqtt
    if m.port > 65535:
        raise UserError(f"{src}: mqtt.port = {m.port}; expected 1-65535")
    if m.tls and not m.ca_file:
        raise UserError(f"{src}: mqtt.tls = true needs mqtt.ca_file (the CA that signed the broker's certificate)")
    if bool(m.cert_file) != bool(m.key_file):
        raise UserError(f"{src}: mqtt.cert_file and mqtt.key_file go together (client certificate and its key)")
    _check_host(m.host, src)
    for key in ("password_file", "ca_file", "cert_file", "key_file"):
        path = getattr(m, key)
        if path and not Path(path).is_file():
            raise UserError(f"{src}: mqtt.{key} = {path!r}; no such file")
    if m.password_file and not m.username:
        raise UserError(f"{src}: mqtt.password_file is set but mqtt.username is empty")
    if m.password_file:
        read_password(m.password_file, f"{src}: mqtt.password_file")
    if m.tls:
        check_tls_files(m, src)
    if not _NAME.match(m.sparkplug_device):
        raise UserError(f"{src}: mqtt.sparkplug_device = {m.sparkplug_device!r}; allowed: 1-64 letters, digits, "
                        "'.', '_' or '-' (it becomes part of the Sparkplug topic)")
    if m.sparkplug_primary_host and not _NAME.match(m.sparkplug_primary_host):
        raise UserError(f"{src}: mqtt.sparkplug_primary_host = {m.sparkplug_primary_host!r}; allowed: empty (no "
                        "Primary Host) or 1-64 letters, digits, '.', '_' or '-'")
    if m.mode == "sparkplug" and m.publish_waveforms:
        raise UserError(f"{src}: mqtt.publish_waveforms = true with mqtt.mode = \"sparkplug\"; waveforms go on "
                        "the JSON topics only: set mqtt.mode = \"both\" or publish_waveforms = false")
    if not m.homeassistant_prefix or any(c in m.homeassistant_prefix for c in "#+") \
            or m.homeassistant_prefix.startswith(("/", "$")) or m.homeassistant_prefix.endswith("/"):
        raise UserError(f"{src}: mqtt.homeassistant_prefix = {m.homeassistant_prefix!r}; expected a topic prefix "
                        "without wildcards, a leading '/' or '$', or a trailing '/' (Home Assistant's default: "
                        "\"homeassistant\")")
    if m.homeassistant_discovery and m.mode == "sparkplug":
        raise UserError(f"{src}: mqtt.homeassistant_discovery = true with mqtt.mode = \"sparkplug\"; the "
                        "discovered sensors read the JSON event, health and status topics: set mqtt.mode = "
                        "\"json\" or \"both\", or homeassistant_discovery = false")
    if not cfg.board.port.strip():
        raise UserError(f"{src}: board.port = {cfg.board.port!r}; expected a serial device, pyserial URL or file")
    if cfg.node.prefix.startswith("$"):
        raise UserError(f"{src}: node.prefix = {cfg.node.prefix!r}; topics starting with '$' are the broker's "
                        "own ($SYS) and refuse clients' messages")
    if cfg.outbox.path and Path(cfg.outbox.path).is_dir():
        raise UserError(f"{src}: outbox.path = {cfg.outbox.path!r} is a directory; expected a file name "
                        "(e.g. /var/lib/stopewatch/outbox.sqlite)")
    _check_stream(cfg)


def _check_host(host: str, src: str) -> None:
    """A host name or IP address paho can connect to; credentials or a URL scheme are refused."""
    import ipaddress

    if "@" in host or "://" in host:
        raise UserError(f"{src}: mqtt.host = {host!r}; expected a bare host name or IP address (no scheme, no "
                        "user:password@: credentials go in mqtt.username and mqtt.password_file)")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not _HOST.match(host):
        raise UserError(f"{src}: mqtt.host = {host!r}; expected a host name (letters, digits, '-', '_', dots) or "
                        "an IP address")


def read_password(path: str, where: str) -> str:
    """The password in ``path`` (UTF-8 text, surrounding whitespace removed); a UserError naming ``where``
    when it cannot be read, is not UTF-8 text or is empty."""
    try:
        text = Path(path).read_bytes().decode("utf-8").strip()
    except OSError as exc:
        raise UserError(f"{where} = {path!r}; cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{where} = {path!r}; not UTF-8 text (byte {exc.start}); write the password as "
                        "plain text") from None
    if not text:
        raise UserError(f"{where} = {path!r}; the file is empty")
    if any(ord(ch) < 32 for ch in text):
        raise UserError(f"{where} = {path!r}; holds control characters or several lines; expected one line")
    return text


def check_tls_files(m: MqttConfig, src: str) -> None:
    """Load the CA and the client certificate and key the way the TLS connection will, so that an empty,
    garbage or passphrase-protected file is refused at start instead of at the first connect."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=m.ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise UserError(f"{src}: mqtt.ca_file = {m.ca_file!r}; not a PEM CA certificate "
                        f"({getattr(exc, 'reason', None) or exc})") from None
    if not ctx.get_ca_certs():
        raise UserError(f"{src}: mqtt.ca_file = {m.ca_file!r}; holds no CA certificate")
    if m.cert_file:
        def no_passphrase() -> bytes:
            raise UserError(f"{src}: mqtt.key_file = {m.key_file!r} is protected by a passphrase, which the "
                            "daemon cannot type; store the key without one (openssl pkey -in KEY -out KEY.new), "
                            "chmod 600")

        try:
            ctx.load_cert_chain(m.cert_file, m.key_file, password=no_passphrase)
        except ssl.SSLError as exc:
            raise UserError(f"{src}: mqtt.cert_file = {m.cert_file!r} with mqtt.key_file = {m.key_file!r}; not "
                            f"a PEM certificate and its matching key ({exc.reason or exc})") from None
        except OSError as exc:
            raise UserError(f"{src}: mqtt.cert_file / mqtt.key_file: cannot read ({exc.strerror})") from None


NYQUIST_MARGIN = 0.45  # the trigger's band stops at 0.45 fs whatever the config says (a 1 kHz board, say)


def check_trigger_fit(cfg: Config, window_s: float, slowest_fs: float, max_channels: int, why: str) -> None:
    """Refuse a [trigger] that would run and detect nothing with this model and board: a pre-event part
    longer than the model's window, an STA shorter than one sample or a band above Nyquist at the
    slowest rate the board may send, or more coincident channels than it has. ``why`` says where
    ``slowest_fs`` and ``max_channels`` come from (one line, naming key, value and what is allowed)."""
    src, t = cfg.source, cfg.trigger
    if t.pre_s >= window_s:
        raise UserError(f"{src}: trigger.pre_s = {t.pre_s:g}; must be shorter than the model's window of "
                        f"{window_s:g} s (the trigger would sit outside the classified window)")
    if t.sta_s * slowest_fs < 1:
        raise UserError(f"{src}: trigger.sta_s = {t.sta_s:g}; shorter than one sample at {slowest_fs:g} Hz "
                        f"({why}); allowed at least {1 / slowest_fs:g} s")
    if t.lta_s * slowest_fs < 2 * max(1, round(t.sta_s * slowest_fs)):
        raise UserError(f"{src}: trigger.lta_s = {t.lta_s:g}; must hold at least two STA windows at "
                        f"{slowest_fs:g} Hz ({why})")
    if t.highpass_hz >= NYQUIST_MARGIN * slowest_fs:
        raise UserError(f"{src}: trigger.highpass_hz = {t.highpass_hz:g}; must be below "
                        f"{NYQUIST_MARGIN * slowest_fs:g} Hz ({NYQUIST_MARGIN:g} x {slowest_fs:g} Hz, {why})")
    if t.coincidence > max_channels:
        raise UserError(f"{src}: trigger.coincidence = {t.coincidence}; allowed 1 to {max_channels} "
                        f"(the channels there are: {why})")


def _check_stream(cfg: Config) -> None:
    src, st, ar = cfg.source, cfg.stream, cfg.archive
    for key, (lo, hi) in _SEED_CODES.items():
        value = getattr(st, key)
        if not (lo <= len(value) <= hi and re.fullmatch(r"[A-Z0-9]*", value)):
            raise UserError(f"{src}: stream.{key} = {value!r}; allowed: {lo}-{hi} capital letters or digits "
                            "(a SEED code)")
    if st.band and not re.fullmatch(r"[A-Z]", st.band):
        raise UserError(f"{src}: stream.band = {st.band!r}; allowed: empty (from the rate) or one capital letter "
                        "(a SEED band code such as G, D, E, S)")
    if st.orientation and not re.fullmatch(r"[A-Z0-9]{1,9}", st.orientation):
        raise UserError(f"{src}: stream.orientation = {st.orientation!r}; allowed: empty (ZNE, Z, 1..9) or one "
                        "capital letter or digit per channel, e.g. ZNE or Z12")
    if st.natural_hz:
        if st.instrument == "accelerometer":
            raise UserError(f"{src}: stream.natural_hz = {st.natural_hz:g} with stream.instrument = "
                            "\"accelerometer\"; allowed only for a geophone or seismometer (an accelerometer's "
                            "response is written flat): set natural_hz = 0")
        if st.sensitivity_hz < 2 * st.natural_hz:
            raise UserError(f"{src}: stream.sensitivity_hz = {st.sensitivity_hz:g}; must be in the sensor's flat "
                            f"band, at least 2 x stream.natural_hz = {2 * st.natural_hz:g} Hz")
    if ar.record_bytes & (ar.record_bytes - 1):
        raise UserError(f"{src}: archive.record_bytes = {ar.record_bytes}; allowed: a power of two from 512 to "
                        "65536 (miniSEED 2)")


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Build and validate a :class:`Config` from a parsed TOML mapping."""
    sections = {f.name: f for f in fields(Config) if f.name != "source"}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        hint = (" (this looks like a training configuration; the daemon takes one like "
                "edge/stopewatch.example.toml)") if {"data", "train"} & set(unknown) else ""
        raise UserError(f"{source}: unknown section [{unknown[0]}]; allowed: {', '.join(sections)}{hint}")
    hints = get_type_hints(Config)
    cfg = Config(source=source, **{name: _section(hints[name], data.get(name, {}), name, source)
                                   for name in sections})
    _check(cfg)
    return cfg


# Keys naming files or directories. A relative value names what is beside the configuration file when it
# exists there (under systemd the working directory is /, so a file's own neighbourhood is what a technician
# means); otherwise it stays relative to the working directory, as the example config's
# ``models/triaxial`` is when run from the source tree.
_PATH_KEYS = {"node": ("state_dir",), "model": ("path",), "outbox": ("path",), "archive": ("path",),
              "mqtt": ("password_file", "ca_file", "cert_file", "key_file")}


def _resolve_paths(data: dict, base: Path) -> dict:
    """``data`` with relative path values made absolute against ``base`` (non-path keys untouched)."""
    out = dict(data)
    for section, keys in _PATH_KEYS.items():
        table = out.get(section)
        if not isinstance(table, dict):
            continue
        table = dict(table)
        for key in keys:
            value = table.get(key)
            if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute() \
                    and (base / value).exists():
                table[key] = str(base / value)
        out[section] = table
    return out


def load_config(path: str | Path) -> Config:
    """Read and validate the daemon's TOML configuration file; a relative path names what is beside the file
    when it exists there, else what is in the working directory."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such configuration file "
                        "(start from edge/stopewatch.example.toml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(_resolve_paths(data, path.resolve().parent), str(path))


def password(cfg: MqttConfig) -> str | None:
    """The broker password, read from its file at connect time (never stored in the config)."""
    if not cfg.password_file:
        return None
    return read_password(cfg.password_file, "mqtt.password_file")
