"""The collector against a real Mosquitto, real SQLite and real PostgreSQL, fed by edge's own publisher.

Exactly once: broker redelivery, a collector SIGKILLed and restarted, two collectors on a shared
subscription. Noticing: a seq gap from a node whose outbox evicted events, a node killed without a
clean stop (its will says offline), a node whose health stops, a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from mqtt_broker import Collector as Subscriber
from mqtt_broker import wait_until
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from surface_support import event_message, health_message

from edge.devtools.broker import mosquitto_path
from edge.gateway.config import parse_config
from edge.gateway.mqtt import Publisher
from edge.topics import alert_subscription
from surface.collector import Collector, subscriptions
from surface.config import parse_surface_config
from surface.records import parse_event
from surface.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SITE, NODE = "kloof-4", "l29-east"
T = 60.0  # generous bound for work on a loaded 2-core machine; the assertions are about what, not how fast

pytestmark = pytest.mark.skipif(mosquitto_path() is None, reason="needs Mosquitto (apt-get install mosquitto): "
                                "persistent sessions, MQTT 5 shared subscriptions")


def surface_cfg(url: str, port: int, client_id: str = "col-1", **alerts) -> dict:
    return {"database": {"url": url},
            "broker": {"port": port, "client_id": client_id, "keepalive_s": 5},
            "ingest": {"batch_wait_s": 0.02},
            "alerts": {"gap_grace_s": 1.0, "check_interval_s": 0.2, **alerts}}


def node_cfg(tmp_path: Path, port: int, node: str = NODE, **mqtt):
    return parse_config({"node": {"site": SITE, "node": node, "state_dir": str(tmp_path / f"state-{node}")},
                         "mqtt": {"host": "127.0.0.1", "port": port, "publish_waveforms": True, **mqtt}}, "node.toml")


def publish_events(pub: Publisher, boot_id: str, seqs, node: str = NODE) -> list[str]:
    ids = []
    for seq in seqs:
        m = event_message(node=node, boot_id=boot_id, seq=seq)
        pub.submit_event(m)
        data = np.random.default_rng(seq).normal(0, 1e-3, (3, 512)).astype(np.float32)
        pub.submit_waveform(m["event_id"], data, 4000.0, m["window"]["start"], ["Z", "N", "E"], "m/s")
        ids.append(m["event_id"])
    return ids


def event_ids(url: str) -> list[str]:
    with open_store(url) as store:
        return [r[0] for r in store._rows("SELECT event_id FROM events ORDER BY event_id")]


def counts(url: str) -> tuple[int, int]:
    with open_store(url) as store:
        return (int(store._one("SELECT COUNT(*) FROM events")[0]), int(store._one("SELECT COUNT(*) FROM waveforms")[0]))


@pytest.fixture
def node(tmp_path):
    started = []

    def start(port: int, boot_id: str = "boot-a", node: str = NODE, **mqtt) -> Publisher:
        pub = Publisher(node_cfg(tmp_path, port, node, **mqtt), boot_id, "0.1.0",
                        {"name": "stopewatch-triaxial", "sha256": "ab" * 32})
        pub.start(reconnect_min_s=1, reconnect_max_s=2)
        started.append(pub)
        return pub

    yield start
    for pub in started:
        pub.stop(timeout=2)


@pytest.fixture
def collectors():
    started = []

    def start(data: dict) -> Collector:
        c = Collector(parse_surface_config(data, "surface.toml"))
        c.start()
        started.append(c)
        assert wait_until(lambda: c.stats.connects >= 1, T)
        return c

    yield start
    for c in started:
        if not c._stopping.is_set():
            c.stop()


def test_redelivered_messages_are_stored_once(surface_url, mqtt_broker, node, collectors):
    """The broker resends what was never acknowledged; events already committed are not stored twice."""
    port = mqtt_broker.port
    # A session that received events and vanished without a PUBACK: a collector that committed, then died.
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    ghost = paho.Client(CallbackAPIVersion.VERSION2, client_id="col-1", protocol=paho.MQTTv5, manual_ack=True)
    got: list[paho.MQTTMessage] = []
    ghost.on_message = lambda c, u, m: got.append(m)
    ghost.connect("127.0.0.1", port, clean_start=False, properties=props)
    ghost.loop_start()
    ghost.subscribe([(t, 1) for t in subscriptions("stopewatch/v1")])
    time.sleep(0.5)
    pub = node(port)
    ids = publish_events(pub, "boot-a", range(1, 21))
    assert pub.wait_drained(T)
    # The broker sends up to its in-flight limit (Mosquitto: 20) without our PUBACKs, and then waits.
    assert wait_until(lambda: sum(m.topic.endswith("/event") for m in got) >= 5, T)
    time.sleep(0.5)
    committed = [parse_event(m.payload, SITE, NODE) for m in got if m.topic.endswith("/event")]
    with open_store(surface_url) as store:  # committed before the crash, never acknowledged
        store.ingest(committed)
    ghost.loop_stop()
    ghost._sock.close()  # gone without DISCONNECT and without acknowledging anything
    time.sleep(0.5)

    col = collectors(surface_cfg(surface_url, port))
    assert wait_until(lambda: counts(surface_url) == (20, 20), T)
    assert wait_until(lambda: col.stats.events_duplicate >= len(committed), T)  # the broker did resend them
    assert event_ids(surface_url) == sorted(ids)
    assert col.stats.rejected == 0


CHILD = textwrap.dedent("""
    import logging, sys
    sys.argv = ["stopewatch", "collect", "--config", sys.argv[1]]
    from edge.cli import main
    sys.exit(main())
""")


def test_sigkilled_collector_loses_and_duplicates_nothing(surface_url, mqtt_broker, node, tmp_path):
    """SIGKILL in the middle of a stream, restart with the same session: every event once."""
    port = mqtt_broker.port
    conf = tmp_path / "surface.toml"
    d = surface_cfg(surface_url, port)
    conf.write_text("\n".join(f"[{s}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in t.items())
                              for s, t in d.items()) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start_child(name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(conf)], env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
        assert wait_until(lambda: "subscribed" in log.read_text(), T), log.read_text()
        return proc, log

    first, _ = start_child("first")
    pub = node(port)
    ids = publish_events(pub, "boot-a", range(1, 101))
    assert wait_until(lambda: counts(surface_url)[0] >= 20, T)
    first.send_signal(signal.SIGKILL)  # mid-stream: some messages committed and not acknowledged, some in flight
    first.wait(10)
    ids += publish_events(pub, "boot-a", range(101, 201))  # published while no collector runs: queued by the broker
    assert pub.wait_drained(T)
    second, log = start_child("second")
    try:
        assert wait_until(lambda: counts(surface_url) == (200, 200), T), counts(surface_url)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, log.read_text()
    assert event_ids(surface_url) == sorted(ids)
    with open_store(surface_url) as store:
        assert store.list_missing() == []
    assert "collect: stopped" in log.read_text()


def test_two_collectors_share_the_load_without_loss(surface_url, mqtt_broker, node, collectors):
    port = mqtt_broker.port
    # One collector may run behind the other: a seq it has not stored yet is missing to the other for a while.
    # gap_grace_s covers that lag (here 20 s on a loaded test machine; docs/surface.md).
    a = collectors({**surface_cfg(surface_url, port, "col-a", gap_grace_s=20.0),
                    "broker": {"port": port, "client_id": "col-a", "shared_group": "archive"}})
    b = collectors({**surface_cfg(surface_url, port, "col-b", gap_grace_s=20.0),
                    "broker": {"port": port, "client_id": "col-b", "shared_group": "archive"}})
    time.sleep(0.5)
    pubs = [node(port, node=name) for name in ("l29-east", "l31-west")]
    ids = []
    for pub, name in zip(pubs, ("l29-east", "l31-west"), strict=True):
        ids += publish_events(pub, "boot-a", range(1, 151), node=name)
    for pub in pubs:
        assert pub.wait_drained(T)
    assert wait_until(lambda: counts(surface_url) == (300, 300), T), counts(surface_url)
    assert event_ids(surface_url) == sorted(ids)
    # Each collector stored a share, and together exactly the 300 (a duplicate would be counted as one)
    # (a collector counts a batch just after its commit: wait for the counters to catch up with the rows)
    assert wait_until(lambda: a.stats.events_new + b.stats.events_new >= 300, T)
    assert a.stats.events_new > 0 and b.stats.events_new > 0
    assert a.stats.events_new + b.stats.events_new == 300
    assert wait_until(lambda: a.stats.received + b.stats.received >= 600, T)
    a.noticer.check()
    b.noticer.check()
    with open_store(surface_url) as store:  # racing collectors do not leave phantom gaps behind
        assert store.list_missing() == []
        assert [al for al in store.list_alerts() if al.kind == "gap"] == []


def test_seq_gap_from_an_evicting_outbox_raises_its_alert(surface_url, make_broker, node, collectors):
    """The broker is away, the node's outbox (4 rows) evicts the oldest events: the gap is alerted."""
    broker = make_broker("broker", persistence=True)
    port = broker.port
    col = collectors(surface_cfg(surface_url, port))
    watcher = Subscriber(port, alert_subscription("stopewatch/v1"))
    pub = node(port, boot_id="boot-g")
    publish_events(pub, "boot-g", [1, 2])
    assert wait_until(lambda: counts(surface_url)[0] == 2, T)
    pub.cfg.mqtt.publish_waveforms = False
    pub.outbox.max_events = 4
    broker.stop()
    for seq in range(3, 11):  # 3..6 are evicted to make room; 7..10 stay queued on the node
        pub.submit_event(event_message(boot_id="boot-g", seq=seq))
    broker.start()
    assert wait_until(lambda: counts(surface_url)[0] == 6, T), counts(surface_url)
    arrived = time.monotonic()
    assert wait_until(lambda: col.noticer.raised["gap"] >= 1, T)
    # raised within the configured time: grace plus one check interval (plus scheduling slack of the loaded box)
    assert time.monotonic() - arrived <= col.cfg.alerts.gap_grace_s + col.cfg.alerts.check_interval_s + 5.0
    with open_store(surface_url) as store:
        [gap] = store.list_missing()
        assert (gap.boot_id, gap.first_seq, gap.last_seq) == ("boot-g", 3, 6)
        [alert] = [a for a in store.list_alerts() if a.kind == "gap"]
        assert alert.detail == {"boot_id": "boot-g", "first_seq": 3, "last_seq": 6}
    assert wait_until(lambda: any(json.loads(m.payload)["kind"] == "gap"
                                  for m in watcher.messages.get(f"stopewatch/v1/{SITE}/{NODE}/alert", [])), T)
    watcher.close()
    from jsonschema import Draft202012Validator

    schema = json.loads((ROOT / "surface" / "schemas" / "alert.schema.json").read_text())
    for m in watcher.messages[f"stopewatch/v1/{SITE}/{NODE}/alert"]:
        Draft202012Validator(schema).validate(json.loads(m.payload))


NODE_CHILD = textwrap.dedent("""
    import json, sys, time
    from edge.gateway.config import parse_config
    from edge.gateway.mqtt import Publisher
    cfg = parse_config(json.loads(sys.argv[1]))
    pub = Publisher(cfg, sys.argv[2], "0.1.0", {"name": "stopewatch-triaxial", "sha256": "ab" * 32})
    pub.start(reconnect_max_s=2)
    while True:
        if pub.connected:
            pub.publish_health(json.loads(sys.argv[3]))
        time.sleep(0.5)
""")


def test_killed_node_raises_offline_and_restart_alerts(surface_url, mqtt_broker, collectors, tmp_path):
    port = mqtt_broker.port
    col = collectors(surface_cfg(surface_url, port))
    cfg = {"node": {"site": SITE, "node": NODE, "state_dir": str(tmp_path / "node")},
           "mqtt": {"host": "127.0.0.1", "port": port, "keepalive_s": 2}}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start_node(boot_id: str) -> subprocess.Popen:
        health = health_message(boot_id=boot_id)
        return subprocess.Popen([sys.executable, "-c", NODE_CHILD, json.dumps(cfg), boot_id, json.dumps(health)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    proc = start_node("boot-1")
    try:
        assert wait_until(lambda: col.stats.health >= 1, T)
        with open_store(surface_url) as store:
            assert store.list_nodes()[0].state == "online"
        proc.send_signal(signal.SIGKILL)  # no clean stop: the broker publishes the will after 1.5 keepalives
        proc.wait(10)
        killed = time.monotonic()
        assert wait_until(lambda: col.noticer.raised["offline"] >= 1, T)
        assert time.monotonic() - killed <= 1.5 * 2 + 5.0
        with open_store(surface_url) as store:
            assert store.list_nodes()[0].state == "offline"
            [offline] = store.list_alerts(kind="offline")
            assert offline.detail["boot_id"] == "boot-1"
        proc = start_node("boot-2")
        assert wait_until(lambda: col.noticer.raised["restart"] >= 1, T)
        with open_store(surface_url) as store:
            [restart] = store.list_alerts(kind="restart")
            assert restart.detail == {"boot_id": "boot-2", "previous": "boot-1"}
            assert [b[0] for b in store.boots(SITE, NODE)] == ["boot-1", "boot-2"]
    finally:
        proc.kill()
        proc.wait(10)


def test_silent_node_alert_and_resume(surface_url, mqtt_broker, node, collectors):
    port = mqtt_broker.port
    col = collectors(surface_cfg(surface_url, port, health_interval_s=1.0, silent_after=2))
    pub = node(port, boot_id="boot-s")
    assert wait_until(lambda: pub.connected, T)
    assert pub.publish_health(health_message(boot_id="boot-s"))
    assert wait_until(lambda: col.stats.health >= 1, T)
    last = time.monotonic()  # then the node stays connected and says nothing: hung, not gone
    assert wait_until(lambda: col.noticer.raised["silent"] >= 1, T)
    assert time.monotonic() - last <= 2 * 1.0 + col.cfg.alerts.check_interval_s + 5.0
    assert pub.publish_health(health_message(boot_id="boot-s"))
    assert wait_until(lambda: col.noticer.raised["resumed"] >= 1, T)
    with open_store(surface_url) as store:
        assert [a.kind for a in store.list_alerts()][:2] == ["resumed", "silent"]
        assert store.list_nodes()[0].silent_since is None
