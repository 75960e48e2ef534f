"""Sparkplug B (spBv1.0) publishing: the node's events and health as Sparkplug metrics (``[mqtt] mode``).

Topics: group = ``node.site``, edge node = ``node.node``, device = ``mqtt.sparkplug_device`` (the ADC board):

- ``spBv1.0/{site}/NBIRTH/{node}``   node birth: ``bdSeq``, ``Node Control/Rebirth``, the node's properties and
  every health metric; seq 0.
- ``spBv1.0/{site}/DBIRTH/{node}/{device}``  device birth: every event metric, declared with its datatype.
- ``spBv1.0/{site}/DDATA/{node}/{device}``   one event per message, QoS 1, from the durable outbox.
- ``spBv1.0/{site}/NDATA/{node}``    health, QoS 0, not queued.
- ``spBv1.0/{site}/NDEATH/{node}``   the MQTT will, registered at connect with that session's ``bdSeq``.
- ``spBv1.0/{site}/NCMD/{node}``, ``.../DCMD/{node}/{device}`` (subscribed): only ``Node Control/Rebirth`` is
  obeyed; anything else is logged with its name, counted in health (``refused_commands``) and ignored.
- ``spBv1.0/STATE/{host}`` (subscribed when ``mqtt.sparkplug_primary_host`` is set): births and data wait until
  the Primary Host says ``{"online": true}``; when it goes offline data stops (events wait in the outbox)
  and the node re-births when it returns.

Every metric's name, datatype and alias is defined once, in :data:`NODE_METRICS` and :data:`EVENT_METRICS`.
Births carry names, aliases and datatypes; data messages carry aliases only (the host resolves them from the
births, as Sparkplug intends).

``seq`` is one counter per edge node (births and data of the node and its device), 0-255, wrapping, reset to 0
by every NBIRTH. ``bdSeq`` is 0-255 too, advanced once per MQTT session and kept on disk
(:attr:`~edge.gateway.config.Config.bdseq_path`), so a restart never reuses the last session's number.

Durability is the JSON publisher's (this class is a :class:`~edge.gateway.mqtt.Publisher`): the outbox stores the
``stopewatch.event/2`` message, the DDATA payload is built from it when it is sent (its seq is the node's seq at
that moment) and the row is deleted only on the broker's PUBACK. That is why events go at QoS 1 where the
specification suggests QoS 0 for data: the PUBACK is the only proof a broker took them. A row sent while the
broker, or the Primary Host, was unreachable goes out with ``is_historical`` on every metric, each metric
timestamped with the event's trigger time.

The codec is pysparkplug's (payload and STATE encode/decode); pysparkplug is imported only by this module,
which the daemon imports only when ``mqtt.mode`` asks for Sparkplug.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from edge.errors import UserError
from edge.gateway.config import Config
from edge.gateway.mqtt import Publisher, _Connected, _Disconnected
from edge.gateway.outbox import Outbox
from edge.vocabulary import CLASSES
from firmware_bridge.clock import parse_iso_utc

try:
    import pysparkplug as spb
except ImportError as exc:  # the optional extra is missing: one clear line from the daemon
    raise UserError("mqtt.mode asks for Sparkplug B but pysparkplug is not installed: pip install "
                    "'stopewatch[sparkplug]' and then pip install --no-deps pysparkplug==0.6.1 (see the README's "
                    f"dependency notes) ({exc})") from None

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"


@dataclass(frozen=True)
class MetricSpec:
    """One Sparkplug metric: its name, datatype (a ``pysparkplug.DataType`` member name), alias and source.

    ``source`` is a dotted path into the message the value is read from (the event message for event metrics,
    the health message for health metrics); ``""`` for the metrics the node fills in itself.
    """

    name: str
    datatype: str
    alias: int
    source: str
    about: str

    @property
    def dtype(self) -> spb.DataType:
        return spb.DataType[self.datatype]


def _table(first_alias: int, rows: list[tuple[str, str, str, str]]) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(name, dtype, first_alias + i, source, about)
                 for i, (name, dtype, source, about) in enumerate(rows))


# The node's metrics (NBIRTH declares them all; NDATA carries the health ones). bdSeq and the Rebirth control
# have the names and types the specification gives them.
NODE_METRICS: tuple[MetricSpec, ...] = _table(1, [
    (BDSEQ, "INT64", "", "birth/death sequence of this MQTT session (0-255), the same in NBIRTH and NDEATH"),
    (REBIRTH, "BOOLEAN", "", "write true (NCMD) to have the node publish its births again"),
    ("Properties/boot_id", "STRING", "", "this run of the daemon"),
    ("Properties/version", "STRING", "", "stopewatch version"),
    ("Properties/model_name", "STRING", "", "the classifier's model"),
    ("Properties/model_sha256", "STRING", "", "the model file's SHA-256"),
    ("Health/uptime_s", "DOUBLE", "uptime_s", "seconds since the daemon started"),
    ("Health/serial", "STRING", "serial", "the board's serial link state"),
    ("Health/link", "STRING", "link.state", "the board link: ok, degraded or blind"),
    ("Health/samples_in", "UINT64", "samples_in", "samples per channel read from the board"),
    ("Health/crc_errors", "UINT64", "crc_errors", "frames dropped for a bad CRC"),
    ("Health/gaps", "UINT64", "gaps", "gaps in the board's sample counter"),
    ("Health/dropped_chunks", "UINT64", "dropped_chunks", "serial reads dropped because the pipeline fell behind"),
    ("Health/triggers", "UINT64", "triggers", "triggers since start"),
    ("Health/events", "UINT64", "events", "events classified since start"),
    ("Health/backlog", "UINT64", "backlog", "events waiting in the outbox"),
    ("Health/inference_p99_ms", "DOUBLE", "inference_ms.p99", "99th percentile of inference time, ms"),
    ("Health/realtime_factor", "DOUBLE", "realtime_factor", "how much faster than real time the pipeline runs"),
    ("Health/cpu_percent", "DOUBLE", "cpu_percent", "CPU use of the daemon since the last health message"),
    ("Health/rss_mb", "DOUBLE", "rss_mb", "resident memory, MB"),
    ("Sparkplug/births", "UINT64", "sparkplug.births", "NBIRTH+DBIRTH pairs sent since start"),
    ("Sparkplug/rebirth_commands", "UINT64", "sparkplug.rebirth_commands", "Rebirth commands obeyed"),
    ("Sparkplug/refused_commands", "UINT64", "sparkplug.refused_commands", "commands refused (not Rebirth)"),
    ("Health/message", "STRING", "", "the complete health message (JSON), every field of docs/mqtt.md"),
])

# The board's (the device's) metrics: one DDATA message per event carries all of them.
EVENT_METRICS: tuple[MetricSpec, ...] = _table(len(NODE_METRICS) + 1, [
    ("Event/event_id", "STRING", "event_id", "unique and stable across redelivery: {site}.{node}.{boot_id}.{seq}"),
    ("Event/boot_id", "STRING", "boot_id", "the daemon run that classified it"),
    ("Event/seq", "UINT64", "seq", "the event's number within its boot (not the Sparkplug seq)"),
    ("Event/trigger_time", "DATETIME", "trigger_time", "trigger onset, UTC, ms"),
    ("Event/window_start", "DATETIME", "window.start", "first sample of the classified window, UTC, ms"),
    ("Event/window_fs", "DOUBLE", "window.fs", "the window's sampling rate, Hz"),
    ("Event/window_samples", "UINT32", "window.samples", "samples per channel in the window"),
    ("Event/label", "STRING", "label", "the class, or unknown below the model's confidence threshold"),
    ("Event/confidence", "DOUBLE", "confidence", "the top class's probability"),
    ("Event/entropy", "DOUBLE", "entropy", "entropy of the probabilities, bits"),
    *[(f"Event/probabilities/{c}", "DOUBLE", f"probabilities.{c}", f"probability of {c}") for c in CLASSES],
    ("Event/ppv", "DOUBLE", "features.ppv", "peak particle velocity, in the board's units"),
    ("Event/dominant_hz", "DOUBLE", "features.dominant_hz", "dominant frequency, Hz"),
    ("Event/duration_s", "DOUBLE", "features.duration_s", "trigger duration, s"),
    ("Event/snr_db", "DOUBLE", "features.snr_db", "signal to noise ratio, dB"),
    ("Event/sta_lta_max", "DOUBLE", "features.sta_lta_max", "largest STA/LTA ratio"),
    ("Event/energy", "DOUBLE", "features.energy", "window energy, (units)^2*s"),
    ("Event/clipped", "BOOLEAN", "features.clipped", "a sample reached the ADC's limit"),
    ("Event/latency_ms", "DOUBLE", "latency_ms", "window close to message, ms"),
    ("Event/missing_samples", "UINT64", "missing_samples", "samples of the window the board never sent"),
    ("Event/concealed_samples", "UINT64", "concealed_samples", "samples bridged over short link gaps"),
    ("Event/model_name", "STRING", "model.name", "the model that classified it"),
    ("Event/model_sha256", "STRING", "model.sha256", "that model file's SHA-256"),
    ("Event/timing_clock", "STRING", "timing.clock", "board, host or record: where the times come from"),
    ("Event/timing_locked", "BOOLEAN", "timing.locked", "the board's clock was locked to GPS/PPS"),
    ("Event/historical", "BOOLEAN", "historical", "it did not go out live (also every metric's is_historical)"),
    ("Event/message", "STRING", "", "the complete stopewatch.event/2 message (JSON): stream, archive, units ..."),
])

# Event message fields that have no metric of their own and travel only inside Event/message.
ONLY_IN_MESSAGE = ("schema", "site", "node", "window.channels", "features.band_energy", "stream", "archive",
                   "units", "timing.error_s", "timing.quality", "model.version")


def _get(msg: dict, path: str) -> Any:
    value: Any = msg
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _utc(text: str) -> Any:
    import datetime

    return datetime.datetime.fromtimestamp(parse_iso_utc(text) / 1e9, tz=datetime.UTC)


def metric_value(spec: MetricSpec, value: Any) -> Any:
    """``value`` (as read from a message) in the Python type pysparkplug encodes for ``spec``'s datatype;
    None (sent as a null metric) when the message does not have it."""
    if value is None:
        return None
    if spec.datatype == "DATETIME":
        return _utc(value)
    if spec.datatype == "DOUBLE":
        return float(value)
    if spec.datatype.startswith(("UINT", "INT")):
        return int(value)
    if spec.datatype == "BOOLEAN":
        return bool(value)
    return str(value)


def event_metrics(msg: dict, *, historical: bool, with_names: bool = False) -> tuple[spb.Metric, ...]:
    """The DDATA metrics of one ``stopewatch.event/2`` message, timestamped with its trigger time."""
    ts = parse_iso_utc(msg["trigger_time"]) // 1_000_000
    body = dict(msg, historical=historical)
    out = []
    for spec in EVENT_METRICS:
        value = json.dumps(body, separators=(",", ":")) if spec.name == "Event/message" \
            else metric_value(spec, _get(body, spec.source))
        out.append(spb.Metric(timestamp=ts, name=spec.name if with_names else None, datatype=spec.dtype,
                              value=value, alias=spec.alias, is_historical=historical))
    return tuple(out)


def load_bdseq(path: Path) -> int:
    """The bdSeq the next session uses: one past the last one recorded at ``path`` (0 when there is none)."""
    try:
        return (int(path.read_text().strip()) + 1) % 256
    except (OSError, ValueError):
        return 0


def save_bdseq(path: Path, value: int) -> None:
    """Record ``value`` as the bdSeq of the session about to start (written and fsynced, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(f"{value}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class _Rebirth:
    """An NCMD asked for Rebirth (paho thread -> sender thread)."""


@dataclass(frozen=True)
class _HostState:
    """The Primary Host's STATE changed."""

    online: bool


class SparkplugPublisher(Publisher):
    """The Sparkplug B edge node: the :class:`Publisher`'s durable delivery with Sparkplug messages."""

    def __init__(self, cfg: Config, boot_id: str, version: str, model: dict, *, outbox: Outbox | None = None,
                 **kwargs: Any) -> None:
        m = cfg.mqtt
        self.group, self.edge_node, self.device = cfg.node.site, cfg.node.node, m.sparkplug_device
        self.primary_host = m.sparkplug_primary_host
        self._bdseq_path = cfg.bdseq_path
        self._bdseq_path.parent.mkdir(parents=True, exist_ok=True)
        self.bdseq = load_bdseq(self._bdseq_path)  # of the session being (or about to be) established
        self._seq = 0
        self._born = False
        self._host_online = not self.primary_host
        self._host_ts = -1
        self._nbirth: spb.NBirth | None = None  # as last sent: resolve aliases of incoming NCMDs and DCMDs
        self._dbirth: spb.DBirth | None = None
        self.session_counters = {"births": 0, "rebirth_commands": 0, "refused_commands": 0, "state_messages": 0,
                                 "data_sent": 0}
        self._lock = threading.Lock()  # seq assignment + publish, from the sender and the main thread
        if outbox is None:
            outbox = Outbox(cfg.sparkplug_outbox_path, cfg.outbox.max_events, reserve_kb=cfg.outbox.reserve_kb)
        super().__init__(cfg, boot_id, version, model, outbox=outbox, **kwargs)
        self.client.on_message = self._on_message

    # ----------------------------------------------------------------- topics
    def topic(self, kind: str, device: bool = False) -> str:
        """``spBv1.0/{group}/{kind}/{edge node}[/{device}]``."""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge_node}" + (f"/{self.device}" if device else "")

    @property
    def state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.primary_host}"

    # ----------------------------------------------------------------- hooks of the Publisher
    def _client_id(self) -> str:
        # In mode "both" this is a second connection beside the JSON one: its own client id, its own will.
        base = super()._client_id()
        return base + "-spb" if self.cfg.mqtt.mode == "both" else base

    def _set_will(self, client: paho.Client) -> None:
        # The will is the NDEATH of the next session. Its bdSeq is written to disk first, so that a restart
        # (even after SIGKILL) starts one past it.
        if getattr(self, "_bdseq_path", None) is None:
            return
        save_bdseq(self._bdseq_path, self.bdseq)
        death = spb.NDeath(timestamp=spb.get_current_timestamp(), bd_seq_metric=self._bdseq_metric())
        client.will_set(self.topic("NDEATH"), death.encode(), qos=1, retain=False)

    def _bdseq_metric(self) -> spb.Metric:
        return spb.Metric(timestamp=spb.get_current_timestamp(), name=BDSEQ, datatype=spb.DataType.INT64,
                          value=self.bdseq)

    def _announce(self, client: paho.Client) -> None:
        # Subscribe first (the specification's order): STATE before any birth, then the commands.
        self._born = False
        self._host_online = not self.primary_host
        self._host_ts = -1
        if self.primary_host:
            client.subscribe(self.state_topic, qos=1)
        client.subscribe(self.topic("NCMD"), qos=1)
        client.subscribe(self.topic("DCMD", device=True), qos=1)
        log.info("Sparkplug: session with bdSeq %d%s", self.bdseq,
                 f"; waiting for Primary Host {self.primary_host!r} to be online" if self.primary_host else "")

    def _model_changed(self) -> None:
        self._events.put(_Rebirth())  # the model is a node property: the host learns it from a new NBIRTH

    def _on_sender_item(self, item: Any) -> None:
        if isinstance(item, _Connected):
            if self._host_online:
                self._birth("session start")
        elif isinstance(item, _Disconnected):
            self._born = False
            # The next session is a new one: its NDEATH (the will, set in _on_disconnect) has the next bdSeq.
        elif isinstance(item, _HostState):
            if item.online and not self._born:
                self._birth(f"Primary Host {self.primary_host!r} online")
            elif not item.online and self._born:
                self._born = False
                log.warning("Sparkplug: Primary Host %r went offline; data stops (events wait in the outbox, %d "
                            "now) until it is back", self.primary_host, self.outbox.depth())
        elif isinstance(item, _Rebirth) and self._host_online:
            self._birth("Rebirth command" if self._born else "rebirth")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected:  # a session ended: the next one has a new bdSeq (set as the will in super())
            self.bdseq = (self.bdseq + 1) % 256
        self._born = False
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _may_send(self) -> bool:
        return self._born

    def _packets(self, row, payload: bytes) -> list[bytes] | str:
        return [payload]  # a DDATA of one event is well under any broker's limit; the JSON is encoded at send

    def _publish_row(self, row, packets: list[bytes], historical: bool) -> list[paho.MQTTMessageInfo]:
        msg = json.loads(packets[0])
        with self._lock:
            payload = spb.DData(timestamp=spb.get_current_timestamp(), seq=self._next_seq(),
                                metrics=event_metrics(msg, historical=historical)).encode()
            info = self.client.publish(self.topic("DDATA", device=True), payload, qos=1, retain=False)
        self.session_counters["data_sent"] += 1
        return [info]

    def _farewell(self) -> paho.MQTTMessageInfo:
        # A clean disconnect does not fire the will: say NDEATH ourselves, with this session's bdSeq.
        self._born = False
        death = spb.NDeath(timestamp=spb.get_current_timestamp(), bd_seq_metric=self._bdseq_metric())
        return self.client.publish(self.topic("NDEATH"), death.encode(), qos=1, retain=False)

    # ----------------------------------------------------------------- births and seq
    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        return seq

    def _node_birth_metrics(self) -> tuple[spb.Metric, ...]:
        now = spb.get_current_timestamp()
        own = {BDSEQ: self.bdseq, REBIRTH: False, "Properties/boot_id": self.boot_id,
               "Properties/version": self.version, "Properties/model_name": self.model.get("name"),
               "Properties/model_sha256": self.model.get("sha256")}
        out = []
        for spec in NODE_METRICS:
            value = own.get(spec.name)
            out.append(spb.Metric(timestamp=now, name=spec.name, datatype=spec.dtype, value=value,
                                  alias=None if spec.name == BDSEQ else spec.alias))
        return tuple(out)

    def _birth(self, why: str) -> None:
        """NBIRTH (seq 0, this session's bdSeq) then DBIRTH, before any data of the session (sender thread)."""
        now = spb.get_current_timestamp()
        device_metrics = tuple(spb.Metric(timestamp=now, name=s.name, datatype=s.dtype, value=None, alias=s.alias)
                               for s in EVENT_METRICS)
        with self._state_lock:
            if not self._connected:
                return
            with self._lock:
                self._seq = 0
                nbirth = spb.NBirth(timestamp=now, seq=self._next_seq(), metrics=self._node_birth_metrics())
                dbirth = spb.DBirth(timestamp=now, seq=self._next_seq(), metrics=device_metrics)
                infos = [self.client.publish(self.topic("NBIRTH"), nbirth.encode(), qos=0, retain=False),
                         self.client.publish(self.topic("DBIRTH", device=True), dbirth.encode(), qos=0,
                                             retain=False)]
            if any(info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS for info in infos):
                log.warning("Sparkplug: births not sent (%s); the connection dropped, they go again on reconnect",
                            paho.error_string(next(i.rc for i in infos if i.rc != MQTTErrorCode.MQTT_ERR_SUCCESS)))
                return
            self._nbirth, self._dbirth = nbirth, dbirth
            # Rows queued until now were not live: they go out marked historical.
            self._live_after_id = self.outbox.last_id()
            self._born = True
        self.session_counters["births"] += 1
        log.info("Sparkplug: NBIRTH + DBIRTH sent (%s; bdSeq %d); %d events to send from the outbox", why,
                 self.bdseq, self.outbox.depth())

    # ----------------------------------------------------------------- inbound: STATE and commands (paho thread)
    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:
        try:
            if self.primary_host and msg.topic == self.state_topic:
                self._on_state(msg.payload)
            elif msg.topic == self.topic("NCMD"):
                self._on_command("NCMD", spb.NCmd, msg.payload)
            elif msg.topic == self.topic("DCMD", device=True):
                self._on_command("DCMD", spb.DCmd, msg.payload)
        except Exception:  # a bad inbound message must never stop paho's network thread
            log.exception("Sparkplug: could not handle a message on %s", msg.topic)

    def _on_state(self, raw: bytes) -> None:
        self.session_counters["state_messages"] += 1
        try:
            state = spb.State.decode(raw)
            online, ts = bool(state.online), int(state.timestamp)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("Sparkplug: Primary Host %r sent a STATE that is not {\"online\": bool, \"timestamp\": ms} "
                        "(%s); ignored", self.primary_host, exc)
            return
        if ts < self._host_ts:  # an older STATE than one already seen (the specification says: ignore it)
            return
        self._host_ts = ts
        was, self._host_online = self._host_online, online
        if online != was:
            log.info("Sparkplug: Primary Host %r is %s", self.primary_host, "online" if online else "offline")
        self._events.put(_HostState(online))

    def _refuse(self, kind: str, names: list[str], why: str) -> None:
        self.session_counters["refused_commands"] += 1
        log.warning("Sparkplug: %s %s refused (%s); the only command this node takes is NCMD %r = true", kind,
                    ", ".join(repr(n) for n in names) or "(no metrics)", why, REBIRTH)

    def _on_command(self, kind: str, cls: Any, raw: bytes) -> None:
        try:
            cmd = cls.decode(raw, birth=self._nbirth if kind == "NCMD" else self._dbirth)
        except Exception as exc:  # undecodable protobuf, or an alias this node never declared
            self._refuse(kind, [], f"undecodable: {type(exc).__name__}: {exc}")
            return
        names = [m.name if m.name is not None else f"alias {m.alias}" for m in cmd.metrics]
        rebirth = [m for m in cmd.metrics if m.name == REBIRTH]
        if kind == "NCMD" and len(rebirth) == len(cmd.metrics) == 1 and rebirth[0].value is True:
            self.session_counters["rebirth_commands"] += 1
            log.info("Sparkplug: Rebirth command received")
            self._events.put(_Rebirth())
            return
        self._refuse(kind, names, "DCMD is not taken" if kind == "DCMD" else "not a Rebirth = true")

    # ----------------------------------------------------------------- health (main thread)
    def publish_health(self, health: dict) -> bool:
        """Send the health message as NDATA (QoS 0, not queued); False when not born (offline, host away)."""
        if not (self._connected and self._born):
            return False
        body = dict(health, sparkplug=self.session())
        now = spb.get_current_timestamp()
        metrics = []
        for spec in NODE_METRICS:
            if spec.name == "Health/message":
                value: Any = json.dumps(body, separators=(",", ":"), default=str)
            elif spec.source:
                value = metric_value(spec, _get(body, spec.source))
            else:
                continue
            metrics.append(spb.Metric(timestamp=now, name=None, datatype=spec.dtype, value=value, alias=spec.alias))
        with self._lock:
            info = self.client.publish(self.topic("NDATA"), spb.NData(timestamp=now, seq=self._next_seq(),
                                                                       metrics=tuple(metrics)).encode(),
                                       qos=0, retain=False)
        ok = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        self.counters["health_sent"] += ok
        return ok

    def submit_waveform(self, *args: Any, **kwargs: Any) -> int | None:
        """Waveforms go on the JSON topics only (mode "both"); the Sparkplug node publishes none."""
        return None

    def session(self) -> dict:
        """The Sparkplug session's state for health."""
        return {"connected": self._connected, "born": self._born,
                "primary_host": self.primary_host or None,
                "host_online": self._host_online if self.primary_host else None,
                "bdseq": self.bdseq, "seq": self._seq, **self.session_counters}

    def status_line(self) -> str:
        line = super().status_line().replace("MQTT", "Sparkplug", 1)
        if self._connected and not self._born and self.primary_host:
            line += f", waiting for Primary Host {self.primary_host!r}"
        return line
