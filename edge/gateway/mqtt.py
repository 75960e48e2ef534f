"""Publishing to the surface broker: retained status, durable QoS 1 events, optional waveforms, health.

Topics (built by :class:`edge.topics.NodeTopics`; every field in docs/mqtt.md):

- ``status``   retained JSON ``{state, ts, boot_id, version, model}``; ``online`` on every (re)connect, the
  broker's will says ``offline``, a clean :meth:`Publisher.stop` says ``stopped``.
- ``event``    QoS 1, ``stopewatch.event/1`` (edge/schemas/event.schema.json).
- ``waveform`` QoS 1, ``stopewatch.waveform/1`` (see :func:`edge.gateway.messages.waveform_message`), only when
  ``mqtt.publish_waveforms`` is true.
- ``health``   QoS 0, not retained, not queued: a stale health message has no value.

With ``mqtt.homeassistant_discovery`` every (re)connect also sends Home Assistant's retained discovery configs
(edge/gateway/homeassistant.py), which read the topics above.

Durability is ours, not paho's (paho's in-memory queue drops messages when full and forgets them on
restart). Every event goes into the SQLite :class:`~edge.gateway.outbox.Outbox` first; a sender thread publishes
rows in id order with a bounded in-flight window and deletes a row only when the broker's PUBACK for its
packet id arrives. On every new connection paho's own queue is dropped and all unacknowledged rows are
resent in order: delivery is at-least-once and ``event_id`` lets consumers drop duplicates.

``historical`` is true when the event did not go out live: it was queued while the broker was unreachable,
it is left from a previous run, or it is being resent after a lost connection.

The daemon never waits for the broker: the client connects in the background and retries forever with
exponential back-off, logging one line per state change (not per message or per retry). A failed connection
says why: a TLS failure is logged as TLS with its reason (certificate verify failed, hostname mismatch ...),
not as an unreachable broker.

Packet sizes, both ways (MQTT 5):

- outbound: the broker's Maximum Packet Size (CONNACK property) is respected. A waveform too large for it is
  sent in parts that fit (each a ``stopewatch.waveform/1`` message with a ``part`` object; see
  :func:`edge.gateway.messages.split_waveform`); a message that cannot fit at all (an event, or a waveform
  whose single sample row does not fit) goes to the dead-letter table with the reason. Nothing blocks the
  queue: without this, the broker drops the connection on the oversized packet and the same row is sent
  again on every reconnect.
- inbound: CONNECT asks the broker for packets of at most ``mqtt.max_inbound_kb``, and the client refuses a
  larger one before reading it (paho itself would allocate whatever length the broker announces): the
  connection is dropped and the reason logged.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import queue
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.gateway.config import Config, password
from edge.gateway.health import percentile
from edge.gateway.homeassistant import discovery_configs
from edge.gateway.messages import split_waveform, waveform_message
from edge.gateway.outbox import Outbox
from firmware_bridge.clock import utc_now

log = logging.getLogger(__name__)

INFLIGHT_WINDOW = 16  # unacknowledged QoS 1 publishes at once; below Mosquitto's default receive-maximum (20)
_LATENCY_SAMPLES = 10_000


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class _Connected:
    """A session came up (paho thread -> sender thread)."""

    session: int


@dataclass(frozen=True)
class _Disconnected:
    """The connection dropped."""


@dataclass(frozen=True)
class _Ack:
    """The broker's PUBACK for packet ``mid``, received at ``at`` (time.monotonic())."""

    mid: int
    at: float
    failed: bool
    reason: str
    code: int = 0


# PUBACK reason codes that will not change by retrying (MQTT 5, section 3.4.2.1): the message goes to the
# outbox's dead-letter table. Other failures (quota exceeded, unspecified) are retried with back-off.
PERMANENT_REFUSALS = {0x83: "implementation specific error", 0x87: "not authorized", 0x90: "topic name invalid",
                      0x95: "packet too large", 0x99: "payload format invalid"}
RETRY_MIN_S, RETRY_MAX_S = 1.0, 60.0


def publish_packet_size(topic: str, payload: bytes, qos: int = 1) -> int:
    """Bytes of the MQTT 5 PUBLISH packet for ``payload`` on ``topic`` (no properties), as the broker counts
    it against its Maximum Packet Size: fixed header, topic, packet id (QoS > 0), properties length, payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos > 0 else 0) + 1 + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + length_bytes + remaining


def describe_connect_error(exc: BaseException | None) -> tuple[bool, str]:
    """(is it TLS, the reason in words) for an exception raised while connecting to the broker."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True, f"certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return True, str(exc.reason or exc)
    if isinstance(exc, OSError):
        return False, exc.strerror or str(exc)
    return False, str(exc) if exc is not None else "no answer"


class _Client(paho.Client):
    """paho's client with two guards it lacks: a bound on inbound packets, and the cause of a failed connect.

    Both hook paho internals (``reconnect`` is public; ``_sock_recv`` and ``_in_packet`` are not): the fake
    broker test in tests/test_faults_outbox.py fails if a paho release changes them.
    """

    def __init__(self, *args: Any, max_inbound: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_inbound = int(max_inbound)
        self.connect_error: BaseException | None = None  # why the last connection attempt failed
        self.inbound_refused = ""  # why the last connection was dropped by the inbound limit

    def reconnect(self) -> MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as exc:
            self.connect_error = exc
            raise
        self.connect_error = None
        return rc

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = self._in_packet
        if packet["have_remaining"] and packet["remaining_length"] > self.max_inbound:
            self.inbound_refused = (f"the broker sent a packet of {packet['remaining_length']} bytes, above "
                                    f"mqtt.max_inbound_kb ({self.max_inbound} bytes)")
            raise OSError(errno.EMSGSIZE, self.inbound_refused)
        return super()._sock_recv(min(bufsize, 1 << 16))  # recv(n) allocates n bytes up front


@dataclass(frozen=True)
class _Wake:
    """Something new to send (or stop was asked)."""


_SenderItem = _Connected | _Disconnected | _Ack | _Wake


@dataclass(frozen=True)
class _InFlight:
    """A published outbox row (or one part of a split waveform row) waiting for its PUBACK."""

    row_id: int
    historical: bool
    parts: int = 1  # packets this row went out as; the row is acknowledged when all have their PUBACK


@dataclass(frozen=True)
class Delivery:
    """One event acknowledged by the broker (handed to ``Publisher.on_ack``)."""

    row_id: int
    event_id: str
    historical: bool
    submitted: float | None  # time.monotonic() given to submit_event (e.g. the window close), if this run
    acked: float  # time.monotonic() when the PUBACK was received

    @property
    def latency_s(self) -> float | None:
        return None if self.submitted is None else self.acked - self.submitted


class Publisher:
    """Owns the paho client, the outbox and the sender thread. Call :meth:`start`, then :meth:`stop`.

    ``model`` is the status message's model description ({name, sha256}; passed through as given).
    ``on_ack`` (settable attribute) is called in the sender thread with a :class:`Delivery` per event.
    """

    def __init__(self, cfg: Config, boot_id: str, version: str, model: dict, *, outbox: Outbox | None = None,
                 window: int = INFLIGHT_WINDOW) -> None:
        self.cfg = cfg
        self.boot_id = boot_id
        self.version = version
        self.topics = cfg.topics
        self._model = dict(model)
        self.outbox = outbox if outbox is not None else Outbox(cfg.outbox_path, cfg.outbox.max_events,
                                                                reserve_kb=cfg.outbox.reserve_kb)
        self.window = max(1, int(window))
        self.on_ack: Callable[[Delivery], None] | None = None
        # Rows up to this id were queued before the current connection came up (by an earlier run, or
        # while the broker was down, or unnoticed-down): they are historical whatever happens now.
        self._live_after_id = self.outbox.last_id()
        self._events: queue.Queue[_SenderItem] = queue.Queue()
        self._state_lock = threading.Lock()  # orders publishes against session changes (see _sender)
        self._submit_lock = threading.Lock()
        self._submitted: collections.OrderedDict[int, tuple[float, str]] = collections.OrderedDict()
        self._drained = threading.Condition()
        self._stopping = threading.Event()
        self._stopped = False
        self._left = 0
        self._stop_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._network: threading.Thread | None = None  # paho's network thread, once started
        self._connected = False
        self._session = 0
        self._ever_connected = False
        self._down_since: float | None = time.monotonic()
        self._last_problem = ""
        self._refusals_logged: set[str] = set()
        self.max_packet: int | None = None  # the broker's Maximum Packet Size (CONNACK), None when it sets none
        self.connect_problem = ""  # why the broker cannot be reached, in words (empty once connected)
        self.failure: str | None = None  # why the sender thread died, if it did
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=_LATENCY_SAMPLES)
        self.counters = {"submitted": 0, "published": 0, "acked": 0, "dead_lettered": 0, "retried": 0, "connects": 0,
                         "reconnects": 0, "connect_failures": 0, "tls_failures": 0, "waveforms": 0,
                         "waveform_parts": 0, "oversized": 0, "damaged": 0, "inbound_refused": 0,
                         "health_sent": 0}
        self.client = self._make_client()

    # ----------------------------------------------------------------- client set-up
    @property
    def model(self) -> dict:
        """The status message's model description; setting it (model swap) refreshes the will and status."""
        return self._model

    @model.setter
    def model(self, model: dict) -> None:
        self._model = dict(model)
        self._set_will(self.client)  # next session
        if self._connected and not self._stopping.is_set():
            self._model_changed()

    # ----------------------------------------------------------------- what the JSON form says (hooks)
    def _client_id(self) -> str:
        return self.cfg.mqtt.client_id or f"stopewatch-{self.cfg.node.site}-{self.cfg.node.node}"

    # The Sparkplug B publisher (edge/gateway/sparkplug.py) overrides these; the durable sending is shared.
    def _set_will(self, client: paho.Client) -> None:
        """Register the will of the next session: the retained ``offline`` status."""
        client.will_set(self.topics.status, self._status("offline"), qos=1, retain=True)

    def _announce(self, client: paho.Client) -> None:
        """A session came up (paho thread, state lock held): say ``online`` (and, when asked, send Home
        Assistant's discovery configs, after the status so that the sensors start available)."""
        client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        self._publish_discovery(client)

    def _publish_discovery(self, client: paho.Client) -> None:
        """Home Assistant's discovery configs of this node, retained (none when mqtt.homeassistant_discovery is
        off). QoS 0: they take no place in the in-flight window (kept below the broker's receive maximum), and
        being retained and sent again on every connect, one lost with a dropped connection comes back."""
        if self.cfg.mqtt.homeassistant_discovery:
            for topic, config in discovery_configs(self.cfg, self.version, str(self.model.get("name", ""))).items():
                client.publish(topic, _dumps(config), qos=0, retain=True)

    def _model_changed(self) -> None:
        self.client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        self._publish_discovery(self.client)  # the device's model names the classifier

    def _on_sender_item(self, item: Any) -> None:
        """The sender thread saw ``item`` (a session change or a hook's own item); nothing to do for JSON."""

    def _may_send(self) -> bool:
        """Whether queued rows may go out now (besides being connected)."""
        return True

    def _publish_row(self, row, packets: list[bytes], historical: bool) -> list[paho.MQTTMessageInfo]:
        """Publish one outbox row's packets (sender thread, state lock held)."""
        return [self.client.publish(row.topic, packet, qos=row.qos, retain=row.retain) for packet in packets]

    def _farewell(self) -> paho.MQTTMessageInfo:
        """The last message of a clean stop: the retained ``stopped`` status."""
        return self.client.publish(self.topics.status, self._status("stopped"), qos=1, retain=True)

    def _status(self, state: str) -> bytes:
        return _dumps({"state": state, "ts": utc_now(), "boot_id": self.boot_id, "version": self.version,
                       "model": self.model})

    def _make_client(self) -> paho.Client:
        m = self.cfg.mqtt
        self.client_id = self._client_id()
        v5 = m.protocol == "5"
        client = _Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                         protocol=paho.MQTTv5 if v5 else paho.MQTTv311, clean_session=None if v5 else True,
                         max_inbound=m.max_inbound_kb * 1024)
        if m.username:
            client.username_pw_set(m.username, password(m))
        if m.tls:
            client.tls_set(ca_certs=m.ca_file, certfile=m.cert_file or None, keyfile=m.key_file or None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._set_will(client)
        client.max_inflight_messages_set(self.window + 4)  # + status messages; paho must never queue ours
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self, reconnect_min_s: int = 1, reconnect_max_s: int = 30) -> None:
        """Connect in the background and start the sender; returns at once even with no broker."""
        m = self.cfg.mqtt
        self.client.reconnect_delay_set(min_delay=max(1, int(reconnect_min_s)),
                                        max_delay=max(1, int(reconnect_max_s)))
        kwargs: dict[str, Any] = {}
        if m.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.MaximumPacketSize = min(m.max_inbound_kb * 1024, 268_435_455)  # the broker must not send more
            kwargs = {"clean_start": True, "properties": props}
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive_s, **kwargs)
        log.info("MQTT: connecting to %s:%d as %s (MQTT %s%s); %d events waiting in %s", m.host, m.port,
                 self.client_id, m.protocol, ", TLS" if m.tls else "", self.outbox.depth(), self.outbox.path)
        self.client.loop_start()
        # paho's network thread (not public API). Held here because paho clears its own reference when the
        # thread ends, so a thread that died of an exception would otherwise look like one never started.
        self._network = getattr(self.client, "_thread", None)
        self._thread = threading.Thread(target=self._sender, name="mqtt-sender", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            problem = f"broker refused the connection: {reason_code}"
            self.connect_problem = problem
            if problem != self._last_problem:
                log.error("MQTT: %s (check mqtt.username/password_file/client certificate); retrying", problem)
                self._last_problem = problem
            return
        limit = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        with self._state_lock:
            self.max_packet = int(limit) if limit else None
            client.drop_out_messages()  # paho must not resend: the outbox resends, in order
            self._live_after_id = self.outbox.last_id()
            self._session += 1
            self._connected = True
            self._announce(client)
            self._events.put(_Connected(self._session))
        self.counters["connects"] += 1
        if self._ever_connected:
            self.counters["reconnects"] += 1
        offline = "" if self._down_since is None else f" after {time.monotonic() - self._down_since:.0f} s"
        log.info("MQTT: connected to %s:%d%s; %d events to send from the outbox%s", self.cfg.mqtt.host,
                 self.cfg.mqtt.port, offline if self._ever_connected else "", self.outbox.depth(),
                 f"; the broker takes packets up to {self.max_packet} bytes" if self.max_packet else "")
        self._ever_connected = True
        self._down_since = None
        self._last_problem = ""
        self.connect_problem = ""

    def _on_connect_fail(self, client, userdata) -> None:
        self.counters["connect_failures"] += 1
        tls, reason = describe_connect_error(getattr(client, "connect_error", None))
        m = self.cfg.mqtt
        if tls:
            self.counters["tls_failures"] += 1
            problem = f"TLS with {m.host}:{m.port} failed: {reason}"
        else:
            problem = f"broker {m.host}:{m.port} unreachable: {reason}"
        self.connect_problem = problem
        if problem != self._last_problem:
            if tls:
                log.error("MQTT: %s (check mqtt.ca_file, cert_file, key_file and that mqtt.host is the name in "
                          "the broker's certificate); events queue on disk (%d waiting), retrying with back-off",
                          problem, self.outbox.depth())
            else:
                log.warning("MQTT: %s; events queue on disk (%d waiting), retrying with back-off", problem,
                            self.outbox.depth())
            self._last_problem = problem

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # No state lock here: paho may hold its message mutex while calling this (see _sender).
        was = self._connected
        self._connected = False
        self._events.put(_Disconnected())
        if getattr(client, "inbound_refused", ""):
            self.counters["inbound_refused"] += 1
            problem = f"dropped the connection: {client.inbound_refused}"
            client.inbound_refused = ""
            if problem not in self._refusals_logged:  # once per kind, not on every reconnect
                self._refusals_logged.add(problem)
                log.error("MQTT: %s; reconnecting", problem)
        if was:
            self._down_since = time.monotonic()
            if not self._stopping.is_set():
                log.warning("MQTT: connection lost (%s); events queue on disk, reconnecting", reason_code)
                # The will's ts is when it was set: refresh it for the next session.
                self._set_will(client)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Runs with paho's message mutex held: only hand the PUBACK over to the sender thread.
        self._events.put(_Ack(mid, time.monotonic(), reason_code.is_failure, str(reason_code),
                              int(getattr(reason_code, "value", 0))))

    # ----------------------------------------------------------------- submitting (pipeline thread)
    def submit_event(self, msg: dict, t_close: float | None = None) -> int | None:
        """Queue one ``stopewatch.event/1`` message durably and wake the sender; returns its outbox id.

        ``t_close`` is the ``time.monotonic()`` the latency is measured from (the window close); default
        now. When this returns an id the event is on disk: it will be delivered even after a power cut.
        None: the disk refused it even after eviction (counted in the outbox's ``unstored``; the caller logs it).
        """
        t0 = time.monotonic() if t_close is None else t_close
        historical = bool(msg.get("historical", False)) or not (self._connected and self._may_send())
        body = dict(msg, historical=historical)
        with self._submit_lock:
            row_id = self.outbox.put(self.topics.event, _dumps(body), qos=1, kind="event",
                                     label=str(msg.get("label", "")), historical=historical)
            if row_id is None:
                return None
            self._submitted[row_id] = (t0, str(msg.get("event_id", "")))
            while len(self._submitted) > _LATENCY_SAMPLES:
                self._submitted.popitem(last=False)
        self.counters["submitted"] += 1
        self._events.put(_Wake())
        return row_id

    def submit_waveform(self, event_id: str, data: np.ndarray, fs: float, start: str, channels: Sequence[str],
                        units: str = "", label: str = "") -> int | None:
        """Queue the event's window on the waveform topic when mqtt.publish_waveforms is on (else None).

        Waveforms share the outbox (durable, in order after their event) and its bound; ``label`` is the
        event's class, so noise waveforms are evicted first.
        """
        if not self.cfg.mqtt.publish_waveforms:
            return None
        body = waveform_message(event_id, data, fs, start, channels, units, self.cfg.node.site,
                                self.cfg.node.node, self.boot_id)
        row_id = self.outbox.put(self.topics.waveform, _dumps(body), qos=1, kind="waveform", label=label)
        if row_id is None:
            return None
        self.counters["waveforms"] += 1
        self._events.put(_Wake())
        return row_id

    def publish_health(self, health: dict) -> bool:
        """Send one health message now (QoS 0, not retained, not queued); False when offline."""
        if not self._connected:
            return False
        info = self.client.publish(self.topics.health, _dumps(health), qos=0, retain=False)
        ok = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        self.counters["health_sent"] += ok
        return ok

    # ----------------------------------------------------------------- sender thread
    def _sender(self) -> None:
        try:
            self._send_loop()
        except Exception as exc:  # e.g. the outbox's disk or file failed: say so, the daemon exits for systemd
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("MQTT: the sender thread died (%s); nothing more is delivered", self.failure)

    @property
    def network_thread(self) -> threading.Thread | None:
        """paho's network thread (None before start)."""
        return self._network

    def dead_workers(self) -> dict[str, str]:
        """Threads of this publisher that stopped without being asked, and why (empty while all is well)."""
        if self._thread is None or self._stopping.is_set():
            return {}
        dead = {}
        if not self._thread.is_alive():
            dead["mqtt-sender"] = self.failure or "ended"
        network = self._network
        if network is not None and not network.is_alive():
            dead["mqtt-network"] = "paho's network thread ended"
        return dead

    def _send_loop(self) -> None:
        session = 0  # the connection this thread last saw established
        live = False
        inflight: dict[int, _InFlight] = {}  # by paho's packet id
        cursor = 0  # highest row id handed to the client in this session
        retry_at: float | None = None  # when rows the broker refused for now are sent again
        backoff = RETRY_MIN_S
        parts_acked: dict[int, int] = {}  # row id of a split waveform -> parts acknowledged so far
        while True:
            try:
                batch = [self._events.get(timeout=0.05 if self._stopping.is_set() or retry_at else 1.0)]
            except queue.Empty:
                batch = []
            while True:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            acked: list[tuple[_InFlight, float]] = []
            refused: dict[int, str] = {}
            for ev in batch:
                self._on_sender_item(ev)
                if isinstance(ev, _Ack):
                    entry = inflight.pop(ev.mid, None)
                    if entry is None:
                        continue  # status or health message, or a packet of a dropped session
                    if not ev.failed:
                        backoff = RETRY_MIN_S
                        if entry.parts > 1:
                            parts_acked[entry.row_id] = parts_acked.get(entry.row_id, 0) + 1
                            if parts_acked[entry.row_id] < entry.parts:
                                continue
                            del parts_acked[entry.row_id]
                        acked.append((entry, ev.at))
                    elif ev.code in PERMANENT_REFUSALS:
                        refused[entry.row_id] = f"{ev.reason} (0x{ev.code:02x})"
                    else:  # transient: the row stays queued and goes again after a pause
                        self.counters["retried"] += 1
                        self._log_refusal(f"{ev.reason} (0x{ev.code:02x})", "kept in the outbox and retried "
                                          f"with back-off (next in {backoff:.0f} s)")
                        if retry_at is None:
                            retry_at = time.monotonic() + backoff
                            backoff = min(2 * backoff, RETRY_MAX_S)
                elif isinstance(ev, _Connected):
                    session, live, cursor = ev.session, True, 0
                    inflight.clear()
                    parts_acked.clear()
                elif isinstance(ev, _Disconnected):
                    live = False
            if acked:
                self._acknowledge(acked)
            if refused:
                for row_id in refused:
                    parts_acked.pop(row_id, None)
                self._dead_letter(refused)
            if retry_at is not None and time.monotonic() >= retry_at:
                cursor, retry_at = 0, None  # resend what is queued from its oldest row, in order
                parts_acked.clear()
            if self._stopping.is_set() and (self.outbox.depth() == 0 or not self._connected or not self._may_send()
                                            or time.monotonic() >= self._stop_deadline):
                return
            if live and len(inflight) < self.window and self._may_send():
                cursor, live = self._send_more(session, inflight, cursor)

    def _log_refusal(self, reason: str, outcome: str) -> None:
        """One ERROR line per kind of refusal, not one per message."""
        if reason not in self._refusals_logged:
            self._refusals_logged.add(reason)
            log.error("MQTT: the broker refused a message: %s; %s", reason, outcome)

    def _dead_letter(self, refused: dict[int, str]) -> None:
        """Move rows refused for good to the dead-letter table, logging each kind of reason once."""
        self.counters["dead_lettered"] += self.outbox.dead_letter(refused)
        for reason in set(refused.values()):
            self._log_refusal(reason, "moved to the outbox's dead_letter table (fix the broker's ACL or limits; "
                              "the rows are kept)")

    def _packets(self, row, payload: bytes) -> list[bytes] | str:
        """The payloads a row goes out as under the broker's Maximum Packet Size, or why it cannot go."""
        limit = self.max_packet
        if limit is None or publish_packet_size(row.topic, payload, row.qos) <= limit:
            return [payload]
        size = publish_packet_size(row.topic, payload, row.qos)
        if row.kind == "waveform":
            room = limit - publish_packet_size(row.topic, b"", row.qos)
            parts = split_waveform(json.loads(payload), room)
            if parts:
                return [_dumps(part) for part in parts]
        return (f"larger than the broker's maximum packet size ({size} > {limit} bytes"
                + (", and one sample per part does not fit either)" if row.kind == "waveform" else ")"))

    def _send_more(self, session: int, inflight: dict[int, _InFlight], cursor: int) -> tuple[int, bool]:
        rows = self.outbox.pending(self.window - len(inflight), after_id=cursor)
        sent = []
        too_large: dict[int, str] = {}  # rows that can never go: too large for this broker, or damaged
        live = True
        for row in rows:
            historical = row.historical or row.attempts > 0 or row.id <= self._live_after_id
            payload = row.payload
            try:
                body = json.loads(payload) if row.kind in ("event", "waveform") else {}
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
            except ValueError:  # bytes rotted on disk: never send garbage, never block the queue on it
                self.counters["damaged"] += 1
                too_large[row.id] = "payload damaged on disk (not JSON)"
                cursor = row.id
                continue
            if historical and row.kind == "event" and body.get("historical") is not True:
                body["historical"] = True
                payload = _dumps(body)
            packets = self._packets(row, payload)
            if isinstance(packets, str):  # it can never go to this broker: dead-letter it, keep the queue moving
                self.counters["oversized"] += 1
                too_large[row.id] = packets
                cursor = row.id
                continue
            with self._state_lock:
                # A reconnect since this thread last looked starts a new session: stop, resend from the start.
                if not (self._connected and self._session == session):
                    live = False
                    break
                infos = self._publish_row(row, packets, historical)
            if any(info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS for info in infos):
                live = False  # connection just dropped; paho's copy is discarded on reconnect
                break
            for info in infos:
                inflight[info.mid] = _InFlight(row.id, historical, len(infos))
            if len(infos) > 1:
                self.counters["waveform_parts"] += len(infos)
            cursor = row.id
            sent.append(row.id)
        if too_large:
            self._dead_letter(too_large)
        if sent:
            self.outbox.mark_sent(sent)
            self.counters["published"] += len(sent)
        return cursor, live

    def _acknowledge(self, acked: list[tuple[_InFlight, float]]) -> None:
        self.outbox.ack([entry.row_id for entry, _ in acked])
        self.counters["acked"] += len(acked)
        for entry, t_ack in acked:
            with self._submit_lock:
                t0, event_id = self._submitted.pop(entry.row_id, (None, ""))
            if t0 is not None and not entry.historical:
                self.latencies_ms.append((t_ack - t0) * 1e3)
            if self.on_ack is not None:
                try:
                    self.on_ack(Delivery(entry.row_id, event_id, entry.historical, t0, t_ack))
                except Exception:  # a faulty hook must not stop delivery
                    log.exception("MQTT: on_ack hook failed")
        with self._drained:
            self._drained.notify_all()

    # ----------------------------------------------------------------- observation and shutdown
    @property
    def connected(self) -> bool:
        return self._connected

    def wait_drained(self, timeout: float) -> bool:
        """Block until the outbox is empty (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self.outbox.depth() > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(min(left, 0.5))
        return True

    def stats(self) -> dict:
        """Counters for the health message: connection, backlog, evictions, delivery latency."""
        lat = list(self.latencies_ms)
        return {"connected": self._connected, "problem": self.connect_problem or None,
                "max_packet": self.max_packet, **self.counters, "backlog": self.outbox.depth(),
                "evictions": dict(self.outbox.evictions),
                "publish_latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "n": len(lat)}}

    def status_line(self) -> str:
        """One line for sd_notify STATUS / logs, saying plainly whether the broker is reachable."""
        depth = self.outbox.depth()
        if self._connected:
            return f"MQTT connected to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}, {depth} events to send"
        problem = self.connect_problem or f"broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port} unreachable"
        return f"MQTT {problem}, {depth} events queued on disk"

    def stop(self, timeout: float = 10.0) -> int:
        """Drain for up to ``timeout`` s, publish retained ``stopped``, disconnect cleanly (no will).

        Returns the number of rows left in the outbox; they stay on disk for the next start. When the
        broker is unreachable it returns at once (the broker has already published the will).
        """
        if self._stopped:
            return self._left
        self._stopped = True
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        self._events.put(_Wake())
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
        left = self.outbox.depth()
        if self._connected:
            info = self._farewell()
            with contextlib.suppress(RuntimeError):  # connection dropped just now: the will (offline) stands
                info.wait_for_publish(timeout=5.0)
        self.client.disconnect()
        self.client.loop_stop()
        with contextlib.suppress(sqlite3.Error):  # a damaged outbox was already reported by the sender
            self.outbox.close()
        log.info("MQTT: stopped; %d events left in the outbox for the next start", left)
        self._left = left
        return left
