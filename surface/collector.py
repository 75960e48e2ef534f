"""``stopewatch collect``: subscribe to every node, archive each message exactly once, raise alerts.

The delivery chain: MQTT 5 with a persistent session (``clean_start`` false, a session expiry), so the
broker queues QoS 1 messages while the collector is away; paho's ``manual_ack``, so no PUBACK goes out
before the message is committed. paho's network thread only queues what arrives; a writer thread takes
batches, stores each batch in one transaction (:meth:`surface.store.Store.ingest`), and then
acknowledges the batch's messages in the order they arrived. A collector killed at any point has
acknowledged only committed messages. The broker resends the rest, and the ``event_id`` key turns that
redelivery into a no-op: at least once on the wire, exactly once in the database.

An acknowledgement is only sent on the connection its message came in on. After a reconnect, packet
ids are reused, and the broker redelivers the unacknowledged messages anyway.

With ``broker.shared_group`` the subscriptions are ``$share/{group}/...``, so the broker hands each
message to one collector of the group.
"""

from __future__ import annotations

import logging
import queue
import signal
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.topics import NodeTopics, parse_topic, subscription
from surface.config import SurfaceConfig, password
from surface.notice import Noticer, alert_payload
from surface.records import BadMessage, parse_event, parse_health, parse_status, parse_waveform
from surface.store import Alert, Rejected, Store, open_store

log = logging.getLogger(__name__)

_PARSERS = {"event": parse_event, "waveform": parse_waveform, "status": parse_status, "health": parse_health}
SUBSCRIBED_KINDS = ("status", "event", "waveform", "health")  # not "alert": that is what we publish


@dataclass(frozen=True)
class _Incoming:
    connection: int  # which connection it came in on (acks go back only on that one)
    mid: int
    qos: int
    topic: str
    payload: bytes
    at: float  # time.time() on arrival


@dataclass
class CollectorStats:
    """Counters since start (logged every minute and on stop)."""

    received: int = 0
    queue_peak: int = 0  # most messages waiting for the writer at once
    events_new: int = 0
    events_duplicate: int = 0
    waveforms_new: int = 0
    waveforms_duplicate: int = 0
    statuses: int = 0
    health: int = 0
    rejected: int = 0
    batches: int = 0
    acked: int = 0
    acks_skipped: int = 0  # committed, but the connection changed: the broker redelivers, dedup absorbs
    db_errors: int = 0
    notice_errors: int = 0
    connects: int = 0
    disconnects: int = 0
    alerts: dict[str, int] = field(default_factory=dict)
    last_error: str = ""


def subscriptions(prefix: str, group: str = "") -> list[str]:
    """The topic filters the collector subscribes to (shared as ``$share/{group}/...`` when ``group``)."""
    topics = [subscription(prefix, kind) for kind in SUBSCRIBED_KINDS]
    return [f"$share/{group}/{t}" for t in topics] if group else topics


class Collector:
    """One collector process: the paho client, the writer thread and the noticer. ``start``, then ``stop``."""

    def __init__(self, cfg: SurfaceConfig, store: Store | None = None,
                 on_commit: Callable[[list[str], float], None] | None = None) -> None:
        self.cfg = cfg
        self.store = store if store is not None else open_store(cfg.database.url)
        self.stats = CollectorStats()
        self.noticer = Noticer(self.store, cfg.alerts, self._publish_alert if cfg.alerts.publish else None)
        self.on_commit = on_commit  # (new event ids, commit time): the benchmark's latency probe
        # Bounded: when the writer falls behind, paho's network thread waits here, TCP pushes back on the
        # broker, and memory stays flat. The broker does not always hold to our receive maximum: draining a
        # resumed session, Mosquitto 2.0.11 had 400+ unacknowledged messages on their way to us at once.
        self._queue: queue.Queue[_Incoming] = queue.Queue(maxsize=2 * cfg.ingest.batch_max)
        self._conn_lock = threading.Lock()
        self._connection = 0
        self._connected = False
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        self.failure: str | None = None
        self.client = self._make_client()

    # ----------------------------------------------------------------- MQTT
    def _make_client(self) -> paho.Client:
        b = self.cfg.broker
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id, protocol=paho.MQTTv5,
                             manual_ack=True)
        if b.username:
            client.username_pw_set(b.username, password(b))
        if b.tls:
            client.tls_set(ca_certs=b.ca_file, certfile=b.cert_file or None, keyfile=b.key_file or None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        return client

    def start(self) -> None:
        """Connect in the background (retrying forever) and start the writer; returns at once."""
        b = self.cfg.broker
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = b.session_expiry_s
        props.ReceiveMaximum = b.receive_maximum
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.connect_async(b.host, b.port, keepalive=b.keepalive_s, clean_start=False, properties=props)
        log.info("collect: connecting to %s:%d as %s (MQTT 5, persistent session, expiry %d s%s); archive %s",
                 b.host, b.port, self.cfg.client_id, b.session_expiry_s,
                 f", shared group {b.shared_group}" if b.shared_group else "", self.store.url)
        self._writer = threading.Thread(target=self._write_loop, name="collector-writer", daemon=True)
        self._writer.start()
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason_code}"
            log.error("collect: %s; retrying", self.stats.last_error)
            return
        self.stats.connects += 1
        self._connected = True
        subs = subscriptions(self.cfg.broker.prefix, self.cfg.broker.shared_group)
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in subs])
        log.info("collect: connected (session %s); subscribed to %s",
                 "resumed" if flags.session_present else "new", ", ".join(subs))

    def _on_connect_fail(self, client, userdata) -> None:
        self.stats.last_error = "cannot reach the broker"
        log.warning("collect: cannot reach the broker at %s:%d; retrying", self.cfg.broker.host,
                    self.cfg.broker.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._conn_lock:
            self._connection += 1  # acks of messages from the old connection are not sent
            self._connected = False
        self.stats.disconnects += 1
        if not self._stopping.is_set():
            log.warning("collect: disconnected from the broker (%s); reconnecting, unacknowledged messages "
                        "will be redelivered", reason_code)

    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:
        item = _Incoming(self._connection, msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.time())
        while not self._stopping.is_set():  # stopping: leave it unacknowledged, the broker redelivers it
            try:
                self._queue.put(item, timeout=0.5)
            except queue.Full:
                continue
            self.stats.received += 1
            self.stats.queue_peak = max(self.stats.queue_peak, self._queue.qsize())
            return

    def _publish_alert(self, alert: Alert) -> None:
        topic = NodeTopics(self.cfg.broker.prefix, alert.site, alert.node).alert
        self.client.publish(topic, alert_payload(alert), qos=1)

    # ----------------------------------------------------------------- writer thread
    def _parse(self, m: _Incoming):
        where = parse_topic(m.topic, self.cfg.broker.prefix)
        if where is None or where[2] not in _PARSERS:
            return Rejected(m.topic, "topic outside the layout {prefix}/{site}/{node}/{kind}", m.payload)
        site, node, kind = where
        try:
            return _PARSERS[kind](m.payload, site, node)
        except BadMessage as exc:
            log.warning("collect: rejected a message on %s: %s (kept in the rejected table)", m.topic, exc)
            return Rejected(m.topic, str(exc), m.payload)

    def _take_batch(self, timeout: float) -> list[_Incoming]:
        try:
            batch = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.cfg.ingest.batch_wait_s
        while len(batch) < self.cfg.ingest.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[_Incoming]) -> bool:
        records = [self._parse(m) for m in batch]
        delay = 0.5
        while True:
            try:
                res = self.store.ingest(records)
                break
            except Exception as exc:  # the database is away or full: keep the messages unacknowledged
                self.stats.db_errors += 1
                self.stats.last_error = f"database: {type(exc).__name__}: {exc}"
                log.error("collect: storing %d messages failed (%s); they stay unacknowledged, retrying in %.1f s",
                          len(batch), self.stats.last_error, delay)
                if self._stopping.wait(delay):
                    return False  # stopping: the broker redelivers them to the next run
                delay = min(delay * 2, 30.0)
        committed = time.time()
        with self._conn_lock:
            for m in batch:
                if m.qos == 0:
                    continue
                if m.connection == self._connection and self._connected:
                    self.client.ack(m.mid, m.qos)
                    self.stats.acked += 1
                else:
                    self.stats.acks_skipped += 1
        s = self.stats
        s.batches += 1
        s.events_new += res.events_new
        s.events_duplicate += res.events_duplicate
        s.waveforms_new += res.waveforms_new
        s.waveforms_duplicate += res.waveforms_duplicate
        s.statuses += len(res.statuses)
        s.health += res.health
        s.rejected += res.rejected
        if self.on_commit is not None and res.new_event_ids:
            self.on_commit(res.new_event_ids, committed)
        try:
            self.noticer.on_ingest(res)
        except Exception as exc:
            self.stats.notice_errors += 1
            log.exception("collect: noticing after a batch failed (%s)", exc)
        return True

    def _write_loop(self) -> None:
        try:
            next_check = time.monotonic() + self.cfg.alerts.check_interval_s
            next_stats = time.monotonic() + 60.0
            while True:
                if self._stopping.is_set() and self._queue.empty():
                    return
                wait = max(0.01, min(next_check - time.monotonic(), 0.5))
                batch = self._take_batch(wait)
                if batch and not self._write(batch):
                    return
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + self.cfg.alerts.check_interval_s
                    try:
                        self.noticer.check()
                    except Exception as exc:
                        self.stats.notice_errors += 1
                        self.stats.last_error = f"notice: {type(exc).__name__}: {exc}"
                        log.error("collect: the periodic check failed (%s); next in %.1f s", self.stats.last_error,
                                  self.cfg.alerts.check_interval_s)
                if now >= next_stats:
                    next_stats = now + 60.0
                    log.info("collect: %s", self.summary())
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("collect: the writer thread died (%s)", self.failure)

    # ----------------------------------------------------------------- life cycle
    def summary(self) -> str:
        s = asdict(self.stats)
        s["alerts"] = {k: v for k, v in self.noticer.raised.items() if v}
        return ", ".join(f"{k} {v}" for k, v in s.items() if v not in ("", {}, 0))

    def healthy(self) -> bool:
        """False when the writer or paho's network thread died (the process should exit for systemd)."""
        network = getattr(self.client, "_thread", None)  # paho's loop_start() thread (not public API)
        writer_ok = self._writer is None or self._writer.is_alive() or self._stopping.is_set()
        return writer_ok and (network is None or network.is_alive() or self._stopping.is_set())

    def stop(self, timeout: float = 10.0) -> None:
        """Store and acknowledge what has arrived, then disconnect; the session stays on the broker."""
        self._stopping.set()
        if self._writer is not None:
            self._writer.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()
        log.info("collect: stopped; %s", self.summary())


def run_collect(cfg: SurfaceConfig) -> int:
    """The ``stopewatch collect`` process: runs until SIGTERM/SIGINT; 1 if a worker thread died."""
    from edge.field.sdnotify import Notifier

    collector = Collector(cfg)
    web = None
    if cfg.web.enabled:  # the page shares the collector's store (one connection, thread-safe)
        from surface.web.server import start_web

        try:
            web = start_web(collector.store, cfg.web)
        except BaseException:
            collector.store.close()
            raise
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    notify = Notifier()
    collector.start()
    notify.ready(f"collecting into {collector.store.url}" + (f"; review page at {web.url}" if web else ""))
    code = 0
    while not done.wait(1.0):
        if not collector.healthy():
            log.error("collect: a worker thread died (%s); exiting for a restart", collector.failure or "network")
            code = 1
            break
        if web is not None and not web.alive():
            log.error("collect: the review page's server ended; exiting for a restart")
            code = 1
            break
    notify.stopping()
    if web is not None:
        web.stop()
    collector.stop()
    return code
