"""Publishing to the surface broker: retained status, durable QoS 1 events, optional waveforms, health.

Topics under ``{prefix}/{site}/{node}`` (SPEC.md):

- ``status``   retained JSON ``{state, ts, boot_id, version, model}``; ``online`` on every (re)connect, the
  broker's will says ``offline``, a clean :meth:`Publisher.stop` says ``stopped``.
- ``event``    QoS 1, ``stopewatch.event/1`` (edge/schemas/event.schema.json).
- ``waveform`` QoS 1, ``stopewatch.waveform/1`` (see :func:`waveform_message`), only when
  ``mqtt.publish_waveforms`` is true.
- ``health``   QoS 0, not retained, not queued: a stale health message has no value.

Durability is ours, not paho's (paho's in-memory queue drops messages when full and forgets them on
restart). Every event goes into the SQLite :class:`~edge.gateway.outbox.Outbox` first; a sender thread publishes
rows in id order with a bounded in-flight window and deletes a row only when the broker's PUBACK for its
packet id arrives. On every new connection paho's own queue is dropped and all unacknowledged rows are
resent in order: delivery is at-least-once and ``event_id`` lets consumers drop duplicates.

``historical`` is true when the event did not go out live: it was queued while the broker was unreachable,
it is left from a previous run, or it is being resent after a lost connection.

The daemon never waits for the broker: the client connects in the background and retries forever with
exponential back-off, logging one line per state change (not per message or per retry).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.gateway.config import Config, password
from edge.gateway.outbox import Outbox

log = logging.getLogger(__name__)

EVENT_SCHEMA = "stopewatch.event/1"
WAVEFORM_SCHEMA = "stopewatch.waveform/1"
INFLIGHT_WINDOW = 16  # unacknowledged QoS 1 publishes at once; below Mosquitto's default receive-maximum (20)
_LATENCY_SAMPLES = 10_000


def utc_now() -> str:
    """ISO-8601 UTC with microseconds and a 'Z', the time format of every message."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def waveform_message(event_id: str, data: np.ndarray, fs: float, start: str, channels: Sequence[str],
                     units: str = "", site: str = "", node: str = "", boot_id: str = "") -> dict:
    """The ``stopewatch.waveform/1`` message: the event window for central review and relabelling.

    Samples travel as base64 of little-endian float32 in (channels, samples) C order: exact (the
    pipeline's own float32 values), decodable in one line anywhere
    (``np.frombuffer(base64.b64decode(m["data"]), "<f4").reshape(len(m["channels"]), m["samples"])``),
    and only a third larger than raw binary while the message stays self-describing JSON.
    """
    arr = np.ascontiguousarray(np.asarray(data, dtype="<f4"))
    if arr.ndim != 2 or arr.shape[0] != len(channels):
        raise ValueError(f"waveform must be (channels, samples) with {len(channels)} channels, got {arr.shape}")
    return {"schema": WAVEFORM_SCHEMA, "event_id": event_id, "site": site, "node": node, "boot_id": boot_id,
            "start": start, "fs": float(fs), "channels": list(channels), "samples": int(arr.shape[1]),
            "units": units, "dtype": "float32-le", "encoding": "base64", "data": base64.b64encode(arr).decode()}


def decode_waveform(message: dict) -> np.ndarray:
    """Samples of a ``stopewatch.waveform/1`` message as float32 (channels, samples)."""
    raw = np.frombuffer(base64.b64decode(message["data"]), dtype="<f4")
    return raw.reshape(len(message["channels"]), int(message["samples"])).astype(np.float32)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


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
        self.root = cfg.topic_root
        self._model = dict(model)
        self.outbox = outbox if outbox is not None else Outbox(cfg.outbox_path, cfg.outbox.max_events)
        self.window = max(1, int(window))
        self.on_ack: Callable[[Delivery], None] | None = None
        # Rows up to this id were queued before the current connection came up (by an earlier run, or
        # while the broker was down, or unnoticed-down): they are historical whatever happens now.
        self._live_after_id = self.outbox.last_id()
        self._events: queue.Queue[tuple] = queue.Queue()
        self._state_lock = threading.Lock()  # orders publishes against session changes (see _sender)
        self._submit_lock = threading.Lock()
        self._submitted: collections.OrderedDict[int, tuple[float, str]] = collections.OrderedDict()
        self._drained = threading.Condition()
        self._stopping = threading.Event()
        self._stopped = False
        self._left = 0
        self._stop_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._connected = False
        self._session = 0
        self._ever_connected = False
        self._down_since: float | None = time.monotonic()
        self._last_problem = ""
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=_LATENCY_SAMPLES)
        self.counters = {"submitted": 0, "published": 0, "acked": 0, "rejected": 0, "connects": 0,
                         "reconnects": 0, "connect_failures": 0, "waveforms": 0, "health_sent": 0}
        self.client = self._make_client()

    # ----------------------------------------------------------------- client set-up
    @property
    def model(self) -> dict:
        """The status message's model description; setting it (model swap) refreshes the will and status."""
        return self._model

    @model.setter
    def model(self, model: dict) -> None:
        self._model = dict(model)
        self.client.will_set(f"{self.root}/status", self._status("offline"), qos=1, retain=True)  # next session
        if self._connected and not self._stopping.is_set():
            self.client.publish(f"{self.root}/status", self._status("online"), qos=1, retain=True)

    def _status(self, state: str) -> bytes:
        return _dumps({"state": state, "ts": utc_now(), "boot_id": self.boot_id, "version": self.version,
                       "model": self.model})

    def _make_client(self) -> paho.Client:
        m = self.cfg.mqtt
        self.client_id = m.client_id or f"stopewatch-{self.cfg.node.site}-{self.cfg.node.node}"
        v5 = m.protocol == "5"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                             clean_session=None if v5 else True)
        if m.username:
            client.username_pw_set(m.username, password(m))
        if m.tls:
            client.tls_set(ca_certs=m.ca_file, certfile=m.cert_file or None, keyfile=m.key_file or None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.will_set(f"{self.root}/status", self._status("offline"), qos=1, retain=True)
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
        kwargs = {"clean_start": True} if m.protocol == "5" else {}
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive_s, **kwargs)
        log.info("MQTT: connecting to %s:%d as %s (MQTT %s%s); %d events waiting in %s", m.host, m.port,
                 self.client_id, m.protocol, ", TLS" if m.tls else "", self.outbox.depth(), self.outbox.path)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._sender, name="mqtt-sender", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            problem = f"broker refused the connection: {reason_code}"
            if problem != self._last_problem:
                log.error("MQTT: %s (check mqtt.username/password_file/client certificate); retrying", problem)
                self._last_problem = problem
            return
        with self._state_lock:
            client.drop_out_messages()  # paho must not resend: the outbox resends, in order
            self._live_after_id = self.outbox.last_id()
            self._session += 1
            self._connected = True
            client.publish(f"{self.root}/status", self._status("online"), qos=1, retain=True)
            self._events.put(("connected", self._session))
        self.counters["connects"] += 1
        if self._ever_connected:
            self.counters["reconnects"] += 1
        offline = "" if self._down_since is None else f" after {time.monotonic() - self._down_since:.0f} s"
        log.info("MQTT: connected to %s:%d%s; %d events to send from the outbox", self.cfg.mqtt.host,
                 self.cfg.mqtt.port, offline if self._ever_connected else "", self.outbox.depth())
        self._ever_connected = True
        self._down_since = None
        self._last_problem = ""

    def _on_connect_fail(self, client, userdata) -> None:
        self.counters["connect_failures"] += 1
        problem = "broker unreachable"
        if problem != self._last_problem:
            log.warning("MQTT: broker %s:%d unreachable; events queue on disk (%d waiting), retrying with "
                        "back-off", self.cfg.mqtt.host, self.cfg.mqtt.port, self.outbox.depth())
            self._last_problem = problem

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # No state lock here: paho may hold its message mutex while calling this (see _sender).
        was = self._connected
        self._connected = False
        self._events.put(("disconnected",))
        if was:
            self._down_since = time.monotonic()
            if not self._stopping.is_set():
                log.warning("MQTT: connection lost (%s); events queue on disk, reconnecting", reason_code)
                # The will's ts is when it was set: refresh it for the next session.
                client.will_set(f"{self.root}/status", self._status("offline"), qos=1, retain=True)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Runs with paho's message mutex held: only hand the PUBACK over to the sender thread.
        self._events.put(("ack", mid, time.monotonic(), reason_code.is_failure, str(reason_code)))

    # ----------------------------------------------------------------- submitting (pipeline thread)
    def submit_event(self, msg: dict, t_close: float | None = None) -> int:
        """Queue one ``stopewatch.event/1`` message durably and wake the sender; returns its outbox id.

        ``t_close`` is the ``time.monotonic()`` the latency is measured from (the window close); default
        now. When this returns the event is on disk: it will be delivered even after a power cut.
        """
        t0 = time.monotonic() if t_close is None else t_close
        historical = bool(msg.get("historical", False)) or not self._connected
        body = dict(msg, historical=historical)
        with self._submit_lock:
            row_id = self.outbox.put(f"{self.root}/event", _dumps(body), qos=1, kind="event",
                                     label=str(msg.get("label", "")), historical=historical)
            self._submitted[row_id] = (t0, str(msg.get("event_id", "")))
            while len(self._submitted) > _LATENCY_SAMPLES:
                self._submitted.popitem(last=False)
        self.counters["submitted"] += 1
        self._events.put(("wake",))
        return row_id

    def submit_waveform(self, event_id: str, data: np.ndarray, fs: float, start: str, channels: Sequence[str],
                        units: str = "", label: str = "") -> int | None:
        """Queue the event's window on ``{root}/waveform`` when mqtt.publish_waveforms is on (else None).

        Waveforms share the outbox (durable, in order after their event) and its bound; ``label`` is the
        event's class, so noise waveforms are evicted first.
        """
        if not self.cfg.mqtt.publish_waveforms:
            return None
        body = waveform_message(event_id, data, fs, start, channels, units, self.cfg.node.site,
                                self.cfg.node.node, self.boot_id)
        row_id = self.outbox.put(f"{self.root}/waveform", _dumps(body), qos=1, kind="waveform", label=label)
        self.counters["waveforms"] += 1
        self._events.put(("wake",))
        return row_id

    def publish_health(self, health: dict) -> bool:
        """Send one health message now (QoS 0, not retained, not queued); False when offline."""
        if not self._connected:
            return False
        info = self.client.publish(f"{self.root}/health", _dumps(health), qos=0, retain=False)
        ok = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        self.counters["health_sent"] += ok
        return ok

    # ----------------------------------------------------------------- sender thread
    def _sender(self) -> None:
        session = 0  # the connection this thread last saw established
        live = False
        inflight: dict[int, tuple[int, bool]] = {}  # mid -> (row id, sent as historical)
        cursor = 0  # highest row id handed to the client in this session
        while True:
            try:
                batch = [self._events.get(timeout=0.05 if self._stopping.is_set() else 1.0)]
            except queue.Empty:
                batch = []
            while True:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            acked: list[tuple[int, bool, float]] = []
            for ev in batch:
                if ev[0] == "ack":
                    entry = inflight.pop(ev[1], None)
                    if entry is None:
                        continue  # status or health message, or a packet of a dropped session
                    if ev[3]:
                        self.counters["rejected"] += 1
                        log.error("MQTT: broker rejected outbox row %d (%s); dropped (check the broker's ACL)",
                                  entry[0], ev[4])
                    acked.append((entry[0], entry[1], ev[2]))
                elif ev[0] == "connected":
                    session, live, cursor = ev[1], True, 0
                    inflight.clear()
                elif ev[0] == "disconnected":
                    live = False
            if acked:
                self._acknowledge(acked)
            if self._stopping.is_set() and (self.outbox.depth() == 0 or not self._connected
                                            or time.monotonic() >= self._stop_deadline):
                return
            if live and len(inflight) < self.window:
                cursor, live = self._send_more(session, inflight, cursor)

    def _send_more(self, session: int, inflight: dict[int, tuple[int, bool]], cursor: int) -> tuple[int, bool]:
        rows = self.outbox.pending(self.window - len(inflight), after_id=cursor)
        sent = []
        live = True
        for row in rows:
            historical = row.historical or row.attempts > 0 or row.id <= self._live_after_id
            payload = row.payload
            if historical and row.kind == "event":
                body = json.loads(payload)
                if body.get("historical") is not True:
                    body["historical"] = True
                    payload = _dumps(body)
            with self._state_lock:
                # A reconnect since this thread last looked starts a new session: stop, resend from the start.
                if not (self._connected and self._session == session):
                    live = False
                    break
                info = self.client.publish(row.topic, payload, qos=row.qos, retain=row.retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                live = False  # connection just dropped; paho's copy is discarded on reconnect
                break
            inflight[info.mid] = (row.id, historical)
            cursor = row.id
            sent.append(row.id)
        if sent:
            self.outbox.mark_sent(sent)
            self.counters["published"] += len(sent)
        return cursor, live

    def _acknowledge(self, acked: list[tuple[int, bool, float]]) -> None:
        self.outbox.ack([row_id for row_id, _, _ in acked])
        self.counters["acked"] += len(acked)
        for row_id, historical, t_ack in acked:
            with self._submit_lock:
                t0, event_id = self._submitted.pop(row_id, (None, ""))
            if t0 is not None and not historical:
                self.latencies_ms.append((t_ack - t0) * 1e3)
            if self.on_ack is not None:
                try:
                    self.on_ack(Delivery(row_id, event_id, historical, t0, t_ack))
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
        return {"connected": self._connected, **self.counters, "backlog": self.outbox.depth(),
                "evictions": dict(self.outbox.evictions),
                "publish_latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99), "n": len(lat)}}

    def status_line(self) -> str:
        """One line for sd_notify STATUS / logs, saying plainly whether the broker is reachable."""
        depth = self.outbox.depth()
        if self._connected:
            return f"MQTT connected to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}, {depth} events to send"
        return (f"MQTT broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port} unreachable, {depth} events queued "
                "on disk")

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
        self._events.put(("wake",))
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
        left = self.outbox.depth()
        if self._connected:
            info = self.client.publish(f"{self.root}/status", self._status("stopped"), qos=1, retain=True)
            with contextlib.suppress(RuntimeError):  # connection dropped just now: the will (offline) stands
                info.wait_for_publish(timeout=5.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()
        log.info("MQTT: stopped; %d events left in the outbox for the next start", left)
        self._left = left
        return left
