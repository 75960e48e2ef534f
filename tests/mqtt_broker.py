"""A real MQTT broker for the tests, on a free loopback port, and a subscriber that collects messages.

Mosquitto is preferred (``/usr/sbin/mosquitto`` or on PATH; CI installs it). Without it, a pure-Python
amqtt broker serves the plain tests (MQTT 3.1.1, anonymous, no TLS, no persistence); tests that need
more call :func:`start_broker` with options and are skipped when only amqtt is available.
``STOPEWATCH_TEST_BROKER=amqtt`` forces the fallback. Never the machine's own broker on 1883: every
broker here is started by the test on its own port.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.devtools.broker import AmqttBroker, MosquittoBroker, free_port, mosquitto_path, port_open, wait_until

__all__ = ["AmqttBroker", "Collector", "MosquittoBroker", "free_port", "port_open", "read_retained",
           "start_broker", "wait_until"]


def start_broker(workdir: Path, port: int | None = None, **options) -> MosquittoBroker | AmqttBroker:
    """A running broker on ``port`` or a free loopback port.

    Options (persistence, password_file, tls, acl_file, max_packet_size) need Mosquitto: without it the test is skipped.
    """
    if mosquitto_path() is not None:
        broker: MosquittoBroker | AmqttBroker = MosquittoBroker(workdir, port=port, **options)
    elif any(options.values()):
        pytest.skip(f"needs Mosquitto for {', '.join(k for k, v in options.items() if v)} "
                    "(apt-get install mosquitto)")
    else:
        try:
            broker = AmqttBroker(workdir, port=port)
        except ImportError:
            pytest.skip("no MQTT broker: install mosquitto (or the dev extra's amqtt)")
    broker.start()
    return broker


class Collector:
    """A paho subscriber that records every message per topic and reconnects by itself.

    ``persistent=True`` uses a fixed client id and a non-clean session (QoS 1), so with a persistent
    Mosquitto nothing published while the collector is reconnecting after a broker restart is lost.
    """

    def __init__(self, port: int, topic: str = "#", *, persistent: bool = False, client_id: str = "",
                 username: str = "", password: str = "", tls: dict | None = None) -> None:
        self.topic = topic
        self.messages: dict[str, list[paho.MQTTMessage]] = {}
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"collector-{id(self)}",
                                  protocol=paho.MQTTv311, clean_session=not persistent)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(20):
            self.close()
            raise RuntimeError(f"collector could not subscribe on port {port}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.setdefault(msg.topic, []).append(msg)
            self._cond.notify_all()

    def payloads(self, topic: str) -> list[dict]:
        """JSON payloads received on ``topic``, in arrival order."""
        with self._cond:
            return [json.loads(m.payload) for m in self.messages.get(topic, [])]

    def first_payloads(self, topic: str, key: str = "event_id") -> list[dict]:
        """JSON payloads on ``topic`` by first arrival, later copies with the same ``key`` dropped
        (delivery is at least once)."""
        seen, out = set(), []
        for msg in self.payloads(topic):
            if msg[key] not in seen:
                seen.add(msg[key])
                out.append(msg)
        return out

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        """Wait until ``predicate(self)`` holds; True if it did within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def read_retained(port: int, topic: str, timeout: float = 15.0, **kwargs) -> dict | None:
    """The retained JSON message on ``topic`` as a new subscriber sees it (None if there is none)."""
    c = Collector(port, topic, **kwargs)
    try:
        c.wait_for(lambda s: s.messages.get(topic), timeout=min(timeout, 2.0))
        msgs = c.messages.get(topic, [])
        retained = [m for m in msgs if m.retain]
        return json.loads(retained[-1].payload) if retained else None
    finally:
        c.close()
