"""The publisher against a real broker: durable delivery through outages and SIGKILL, status, auth, TLS.

Every wait is on a condition with a generous timeout; the only timed part is the issue's scenario itself
(50 events spread over a 30 s broker outage).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from mqtt_broker import Collector, free_port, read_retained, wait_until

from edge.gateway.config import parse_config
from edge.gateway.messages import decode_waveform
from edge.gateway.mqtt import Publisher, _Wake
from edge.gateway.outbox import Outbox

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "edge" / "schemas"
TOPIC = "stopewatch/v1/s1/n1"
MODEL = {"name": "triaxial", "version": "1.0.0", "sha256": "ab" * 32}
T = 60.0  # generous timeout for anything that should take well under a second


def make_cfg(tmp_path: Path, port: int, max_events: int = 100_000, **mqtt) -> object:
    return parse_config({"node": {"site": "s1", "node": "n1", "state_dir": str(tmp_path / "state")},
                         "mqtt": {"host": "127.0.0.1", "port": port, **mqtt},
                         "outbox": {"max_events": max_events}}, "test.toml")


def sample_event(seq: int, boot_id: str = "boot-1", label: str = "blast") -> dict:
    """A complete stopewatch.event/2 message as the daemon builds it."""
    probs = dict.fromkeys(("microseismic", "blast", "drilling", "electrical", "mechanical", "noise"), 0.02)
    probs[label if label in probs else "blast"] = 0.9
    return {"schema": "stopewatch.event/2", "event_id": f"s1.n1.{boot_id}.{seq}", "site": "s1", "node": "n1",
            "boot_id": boot_id, "seq": seq, "trigger_time": "2025-03-01T12:00:00.123456Z",
            "window": {"start": "2025-03-01T12:00:00.000000Z", "fs": 4000.0, "samples": 2048,
                       "channels": ["Z", "N", "E"]},
            "label": label, "confidence": 0.9, "probabilities": probs, "entropy": 0.31, "model": MODEL,
            "features": {"ppv": 1.2e-4, "dominant_hz": 412.0, "duration_s": 0.08, "snr_db": 21.5,
                         "sta_lta_max": 9.3, "energy": 3.1e-9, "band_energy": {"20-100": 0.1, "100-500": 0.9},
                         "clipped": False},
            "latency_ms": 3.2, "historical": False,
            "stream": {"network": "XX", "station": "STA01", "location": "00", "channels": ["GPZ", "GPN", "GPE"]},
            "archive": {"start": "2025-03-01T12:00:00.000000Z", "end": "2025-03-01T12:00:00.512000Z",
                        "files": ["2025/XX/STA01/GPZ.D/XX.STA01.00.GPZ.D.2025.060"]},
            "units": {"ppv": "m/s", "dominant_hz": "Hz", "duration_s": "s", "snr_db": "dB", "sta_lta_max": "1",
                      "energy": "(m/s)^2*s", "band_energy": "1", "clipped": "boolean"},
            "timing": {"clock": "board", "locked": True, "error_s": 1e-06, "quality": 100}}


def publisher_factory(cls: type[Publisher]):
    """A fixture's body: yields a factory that starts publishers of ``cls``; stops them after the test."""
    started: list[Publisher] = []

    def start(cfg, boot_id: str = "boot-1", **kwargs) -> Publisher:
        pub = cls(cfg, boot_id, "0.1.0", {"name": MODEL["name"], "sha256": MODEL["sha256"]}, **kwargs)
        pub.start(reconnect_min_s=1, reconnect_max_s=2)
        started.append(pub)
        return pub

    yield start
    for pub in started:
        pub.stop(timeout=5)


@pytest.fixture
def publishers():
    """Start publishers through this factory; any still running are stopped after the test."""
    yield from publisher_factory(Publisher)


def first_copies(col: Collector) -> list[dict]:
    """Event messages by first arrival, duplicates (at-least-once redelivery) dropped."""
    return col.first_payloads(f"{TOPIC}/event")


def last_status(col: Collector) -> dict | None:
    statuses = col.payloads(f"{TOPIC}/status")
    return statuses[-1] if statuses else None


def test_events_status_health_and_latency_hook(mqtt_broker, publishers, tmp_path):
    v311 = mqtt_broker.kind == "amqtt"  # the fallback broker speaks MQTT 3.1.1 only
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    pub = publishers(make_cfg(tmp_path, mqtt_broker.port, protocol="3.1.1" if v311 else "5"))
    deliveries = []
    pub.on_ack = deliveries.append
    assert wait_until(lambda: pub.connected, T)
    assert col.wait_for(lambda c: (last_status(c) or {}).get("state") == "online", T)
    status = last_status(col)
    assert status["boot_id"] == "boot-1" and status["version"] == "0.1.0" and status["model"]["name"] == "triaxial"
    Draft202012Validator(json.loads((SCHEMAS / "status.schema.json").read_text())).validate(status)

    for seq in range(1, 11):
        pub.submit_event(sample_event(seq))
    assert col.wait_for(lambda c: len(first_copies(c)) == 10, T)
    assert pub.wait_drained(T) and pub.outbox.depth() == 0
    events = first_copies(col)
    assert [e["seq"] for e in events] == list(range(1, 11))
    assert not any(e["historical"] for e in events)
    schema = json.loads((SCHEMAS / "event.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    for e in events:
        Draft202012Validator(schema).validate(e)

    # the latency hook: one Delivery per acknowledged event, with monotonic submit and PUBACK times
    assert wait_until(lambda: len(deliveries) == 10, T)
    assert [d.event_id for d in deliveries] == [e["event_id"] for e in events]
    assert all(d.latency_s is not None and d.latency_s > 0 for d in deliveries)
    stats = pub.stats()
    assert stats["acked"] == 10 and stats["backlog"] == 0 and stats["connected"] is True
    assert stats["publish_latency_ms"]["n"] == 10 and stats["publish_latency_ms"]["p99"] > 0

    assert pub.publish_health({"uptime_s": 1.5, "backlog": 0})
    assert col.wait_for(lambda c: c.payloads(f"{TOPIC}/health") == [{"uptime_s": 1.5, "backlog": 0}], T)
    assert not col.messages[f"{TOPIC}/health"][0].retain
    assert "connected" in pub.status_line()
    pub.model = {"name": "triaxial-v2", "sha256": "cd" * 32}  # model swap: the retained status follows
    assert col.wait_for(lambda c: (last_status(c) or {}).get("model", {}).get("name") == "triaxial-v2", T)
    if mqtt_broker.kind == "mosquitto":
        assert "as stopewatch-s1-n1 (p5" in mqtt_broker.log.read_text()  # MQTT 5 by default
    col.close()


def test_mqtt_311_option(make_broker, publishers, tmp_path):
    broker = make_broker()
    col = Collector(broker.port, f"{TOPIC}/#")
    pub = publishers(make_cfg(tmp_path, broker.port, protocol="3.1.1", client_id="gw-311"))
    for seq in range(1, 4):
        pub.submit_event(sample_event(seq))
    assert col.wait_for(lambda c: len(first_copies(c)) == 3, T)
    assert [e["seq"] for e in first_copies(col)] == [1, 2, 3]
    assert col.wait_for(lambda c: (last_status(c) or {}).get("state") == "online", T)
    if broker.kind == "mosquitto":
        assert "as gw-311 (p2" in broker.log.read_text()  # protocol level 4 is logged as p2 (3.1.1)
    col.close()


def test_clean_stop_publishes_stopped_and_loses_nothing(mqtt_broker, publishers, tmp_path):
    v311 = mqtt_broker.kind == "amqtt"
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    pub = publishers(make_cfg(tmp_path, mqtt_broker.port, protocol="3.1.1" if v311 else "5"))
    assert wait_until(lambda: pub.connected, T)
    for seq in range(1, 31):
        pub.submit_event(sample_event(seq))
    assert pub.stop(timeout=T) == 0  # drained before stopping
    assert col.wait_for(lambda c: len(first_copies(c)) == 30, T)
    assert [e["seq"] for e in first_copies(col)] == list(range(1, 31))
    assert col.wait_for(lambda c: (last_status(c) or {}).get("state") == "stopped", T)
    if mqtt_broker.kind == "mosquitto":
        # once the broker has handled the disconnect, a will would already have replaced `stopped`
        assert wait_until(lambda: "Client stopewatch-s1-n1 disconnected." in mqtt_broker.log.read_text(), T)
    assert read_retained(mqtt_broker.port, f"{TOPIC}/status")["state"] == "stopped"
    assert Outbox(make_cfg(tmp_path, mqtt_broker.port).outbox_path).depth() == 0
    col.close()


def test_starts_without_broker_queues_to_disk_evicts_noise_first_then_delivers(make_broker, publishers, tmp_path,
                                                                                caplog):
    caplog.set_level(logging.INFO, logger="edge.gateway.mqtt")
    broker = make_broker(persistence=True)  # persistence: the collector's session survives the restart
    col = Collector(broker.port, f"{TOPIC}/event", persistent=True, client_id="central")
    broker.stop()
    pub = publishers(make_cfg(tmp_path, broker.port, max_events=5))  # returns at once with no broker
    labels = ["blast", "noise", "microseismic", "noise", "drilling", "electrical", "noise", "mechanical"]
    for seq, label in enumerate(labels, 1):
        pub.submit_event(sample_event(seq, label=label))
    assert not pub.connected and "unreachable" in pub.status_line()
    assert pub.outbox.depth() == 5
    assert pub.stats()["evictions"] == {"noise": 3}
    assert wait_until(lambda: pub.stats()["connect_failures"] >= 2, T)
    assert caplog.text.count("unreachable") == 1  # one line per state change, not per retry

    broker.start()
    assert col.wait_for(lambda c: len(first_copies(c)) == 5, T)
    events = first_copies(col)
    assert [e["label"] for e in events] == ["blast", "microseismic", "drilling", "electrical", "mechanical"]
    assert all(e["historical"] for e in events)
    assert pub.wait_drained(T)
    assert "connected to 127.0.0.1" in caplog.text
    col.close()


@pytest.mark.slow
def test_broker_outage_30s_with_50_events_delivers_all_in_order(make_broker, publishers, tmp_path):
    broker = make_broker(persistence=True)
    col = Collector(broker.port, f"{TOPIC}/#", persistent=True, client_id="central")
    pub = publishers(make_cfg(tmp_path, broker.port))
    assert wait_until(lambda: pub.connected, T)
    pub.submit_event(sample_event(1))  # live
    assert col.wait_for(lambda c: len(first_copies(c)) == 1, T) and pub.wait_drained(T)

    broker.stop()
    assert wait_until(lambda: not pub.connected, T)
    t0 = time.monotonic()
    for i in range(50):  # the scenario: 50 events while the broker is down for 30 s
        time.sleep(max(0.0, t0 + i * 0.6 - time.monotonic()))
        pub.submit_event(sample_event(2 + i))
    time.sleep(max(0.0, t0 + 30.0 - time.monotonic()))
    assert pub.outbox.depth() == 50 and not pub.connected

    broker.start()
    assert col.wait_for(lambda c: len(first_copies(c)) == 51, T)
    events = first_copies(col)
    assert [e["seq"] for e in events] == list(range(1, 52))  # in order, none lost
    assert events[0]["historical"] is False and all(e["historical"] for e in events[1:])
    assert pub.wait_drained(T)
    assert pub.stats()["reconnects"] >= 1
    assert col.wait_for(lambda c: (last_status(c) or {}).get("state") == "online", T)
    col.close()


def test_connection_lost_with_events_in_flight_resends_them(mqtt_broker, publishers, tmp_path):
    if mqtt_broker.kind != "mosquitto":
        pytest.skip("needs Mosquitto (SIGSTOP of the broker process)")
    col = Collector(mqtt_broker.port, f"{TOPIC}/event")
    pub = publishers(make_cfg(tmp_path, mqtt_broker.port, keepalive_s=1))
    assert wait_until(lambda: pub.connected, T)
    mqtt_broker.proc.send_signal(signal.SIGSTOP)  # published, never acknowledged: the client gives up
    try:
        for seq in range(1, 11):
            pub.submit_event(sample_event(seq))
        assert wait_until(lambda: not pub.connected, T)  # keepalive timeout
        assert pub.outbox.depth() == 10
    finally:
        mqtt_broker.proc.send_signal(signal.SIGCONT)
    # after the reconnect every unacknowledged row goes again, in order, marked historical
    assert col.wait_for(lambda c: {e["seq"] for e in c.payloads(f"{TOPIC}/event") if e["historical"]}
                        == set(range(1, 11)), T)
    assert pub.wait_drained(T)
    assert [e["seq"] for e in first_copies(col)] == list(range(1, 11))
    assert pub.stats()["published"] >= 20
    col.close()


_CHILD = """
import json, sys, time
from edge.gateway.config import parse_config
from edge.gateway.mqtt import Publisher, _Wake
cfg = parse_config(json.loads(sys.argv[1]))
events = json.loads(open(sys.argv[2]).read())
pub = Publisher(cfg, "boot-child", "0.1.0", {"name": "triaxial", "sha256": "ab" * 32})
pub.start(reconnect_max_s=2)
deadline = time.monotonic() + 60
while not pub.connected:
    if time.monotonic() > deadline:
        sys.exit("child: no connection")
    time.sleep(0.01)
print("connected", flush=True)
sys.stdin.readline()
for event in events:
    print(pub.submit_event(event), flush=True)  # printed once on disk
print("done", flush=True)
time.sleep(600)
"""


def test_sigkill_with_backlog_will_says_offline_and_restart_delivers(mqtt_broker, publishers, tmp_path):
    if mqtt_broker.kind != "mosquitto":
        pytest.skip("needs Mosquitto (SIGSTOP of the broker process)")
    col = Collector(mqtt_broker.port, f"{TOPIC}/#")
    cfg_data = {"node": {"site": "s1", "node": "n1", "state_dir": str(tmp_path / "state")},
                "mqtt": {"host": "127.0.0.1", "port": mqtt_broker.port}}
    events_file = tmp_path / "events.json"
    events_file.write_text(json.dumps([sample_event(seq, "boot-child") for seq in range(1, 21)]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(cfg_data), str(events_file)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "connected"
        assert col.wait_for(lambda c: (last_status(c) or {}).get("boot_id") == "boot-child", T)
        # Freeze the broker: the child publishes but no PUBACK can come back, so its backlog stays on disk.
        mqtt_broker.proc.send_signal(signal.SIGSTOP)
        try:
            child.stdin.write("go\n")
            child.stdin.flush()
            lines = [child.stdout.readline().strip() for _ in range(21)]
            assert lines[-1] == "done", lines
            child.kill()  # SIGKILL with 20 unacknowledged events
            child.wait(T)
        finally:
            mqtt_broker.proc.send_signal(signal.SIGCONT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(T)
        child.stdin.close()
        child.stdout.close()
    assert col.wait_for(lambda c: (last_status(c) or {}).get("state") == "offline", T)  # the broker's will
    assert last_status(col)["boot_id"] == "boot-child"
    cfg = parse_config(cfg_data)
    with Outbox(cfg.outbox_path) as box:
        assert box.depth() == 20

    pub = publishers(cfg, boot_id="boot-2")
    assert col.wait_for(lambda c: len(first_copies(c)) == 20, T)
    assert pub.wait_drained(T)
    assert [e["seq"] for e in first_copies(col)] == list(range(1, 21))
    resent = [e for e in col.payloads(f"{TOPIC}/event") if e["historical"]]
    assert sorted({e["seq"] for e in resent}) == list(range(1, 21))  # the new run resent all, as historical
    assert col.wait_for(lambda c: ((last_status(c) or {}).get("state"), last_status(c).get("boot_id"))
                        == ("online", "boot-2"), T)
    col.close()


def test_username_and_password_file(make_broker, publishers, tmp_path, caplog):
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    pwfile = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(pwfile), "gateway", "s3cret"], check=True, timeout=T)
    subprocess.run([tool, "-b", str(pwfile), "central", "c3ntral"], check=True, timeout=T)
    broker = make_broker(password_file=pwfile)
    (tmp_path / "good").write_text("s3cret\n")
    (tmp_path / "bad").write_text("wrong\n")
    col = Collector(broker.port, f"{TOPIC}/#", username="central", password="c3ntral")

    caplog.set_level(logging.INFO, logger="edge.gateway.mqtt")
    bad = publishers(make_cfg(tmp_path / "b", broker.port, username="gateway", password_file=str(tmp_path / "bad")))
    bad.submit_event(sample_event(1))
    assert wait_until(lambda: "refused" in caplog.text, T)
    assert not bad.connected and bad.outbox.depth() == 1  # kept on disk, not dropped
    bad.stop(timeout=1)

    good = publishers(make_cfg(tmp_path / "g", broker.port, username="gateway",
                               password_file=str(tmp_path / "good")))
    good.submit_event(sample_event(1))
    assert col.wait_for(lambda c: len(first_copies(c)) == 1, T)
    assert good.wait_drained(T)
    col.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, timeout=T, capture_output=True)


def make_certificates(d: Path) -> dict:
    """A throw-away CA, a broker certificate for 127.0.0.1 and a client certificate, via the openssl CLI."""
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return {name: str(d / name) for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_tls_with_ca_and_client_certificate(make_broker, publishers, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed (needed to make test certificates)")
    certs = make_certificates(tmp_path / "pki")
    broker = make_broker(tls={"ca": certs["ca.crt"], "cert": certs["server.crt"], "key": certs["server.key"]})
    client_tls = {"ca": certs["ca.crt"], "cert": certs["client.crt"], "key": certs["client.key"]}
    col = Collector(broker.port, f"{TOPIC}/#", tls=client_tls)
    pub = publishers(make_cfg(tmp_path, broker.port, tls=True, ca_file=certs["ca.crt"],
                              cert_file=certs["client.crt"], key_file=certs["client.key"]))
    for seq in (1, 2):
        pub.submit_event(sample_event(seq))
    assert col.wait_for(lambda c: len(first_copies(c)) == 2, T)
    assert pub.wait_drained(T)
    assert col.wait_for(lambda c: (last_status(c) or {}).get("state") == "online", T)
    col.close()


def test_waveforms_published_when_enabled(make_broker, publishers, tmp_path):
    broker = make_broker()
    v311 = broker.kind == "amqtt"
    col = Collector(broker.port, f"{TOPIC}/#")
    pub = publishers(make_cfg(tmp_path, broker.port, publish_waveforms=True, protocol="3.1.1" if v311 else "5"))
    window = np.random.default_rng(1).standard_normal((3, 2048)).astype(np.float32) * 1e-5
    event = sample_event(1)
    pub.submit_event(event)
    assert pub.submit_waveform(event["event_id"], window, 4000.0, event["window"]["start"], ["Z", "N", "E"],
                               units="m/s", label="blast") is not None
    assert col.wait_for(lambda c: c.messages.get(f"{TOPIC}/waveform"), T)
    msg = col.payloads(f"{TOPIC}/waveform")[0]
    Draft202012Validator(json.loads((SCHEMAS / "waveform.schema.json").read_text())).validate(msg)
    assert msg["event_id"] == event["event_id"] and msg["fs"] == 4000.0 and msg["channels"] == ["Z", "N", "E"]
    np.testing.assert_array_equal(decode_waveform(msg), window)  # exact float32 round trip
    assert pub.wait_drained(T)

    off = Publisher(make_cfg(tmp_path / "off", free_port()), "b", "0.1.0", {})
    assert off.submit_waveform("x", window, 4000.0, "t", ["Z", "N", "E"]) is None  # disabled by default
    off.stop(timeout=0)
    col.close()


def test_a_broker_acl_that_refuses_the_event_topic_dead_letters_instead_of_deleting(make_broker, tmp_path,
                                                                                     publishers):
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {TOPIC}/status\ntopic readwrite {TOPIC}/health\ntopic read #\n")
    broker = make_broker(acl_file=acl)
    pub = publishers(make_cfg(tmp_path, broker.port))
    for i in range(1, 6):
        pub.submit_event(sample_event(i))
    assert wait_until(lambda: pub.stats()["dead_lettered"] == 5, T), pub.stats()
    assert pub.outbox.depth() == 0 and pub.outbox.dead_letters() == 5  # kept on disk, not deleted
    assert pub.stats()["acked"] == 0
    with sqlite3.connect(pub.outbox.path) as db:
        reasons = {r for (r,) in db.execute("SELECT reason FROM dead_letter")}
    assert reasons == {"Not authorized (0x87)"}


def test_a_sender_that_dies_on_its_outbox_says_so(mqtt_broker, tmp_path, publishers):
    pub = publishers(make_cfg(tmp_path, mqtt_broker.port))
    pub.submit_event(sample_event(1))
    assert wait_until(lambda: pub.stats()["acked"] == 1, T)
    assert pub.dead_workers() == {}
    pub.outbox._db.close()  # the outbox's file fails under the sender, as a corrupt page or a lost disk would
    pub._events.put(_Wake())
    assert wait_until(lambda: "mqtt-sender" in pub.dead_workers(), T)
    assert "ProgrammingError" in pub.dead_workers()["mqtt-sender"]


# ----------------------------------------------------------------------------- broker answers, packet sizes, TLS
def test_a_transient_refusal_is_retried_with_back_off_and_then_delivered(tmp_path, publishers, caplog):
    from faults import FakeBroker

    quota_exceeded = 0x97
    broker = FakeBroker(puback=lambda topic, n: quota_exceeded if topic.endswith("/event") and n <= 3 else 0)
    try:
        caplog.set_level(logging.INFO, logger="edge.gateway.mqtt")
        pub = publishers(make_cfg(tmp_path, broker.port))
        for seq in (1, 2):
            pub.submit_event(sample_event(seq))
        assert wait_until(lambda: pub.outbox.depth() == 0, T), pub.stats()
        got = broker.published(f"{TOPIC}/event")
        refused = [json.loads(r.payload)["seq"] for r in got if r.reason == quota_exceeded]
        accepted = [json.loads(r.payload)["seq"] for r in got if r.reason == 0]
        assert len(refused) == 3 and sorted(set(accepted)) == [1, 2]  # refused three times, then each delivered
        stats = pub.stats()
        assert stats["retried"] >= 3 and stats["dead_lettered"] == 0 and stats["acked"] == 2
        assert pub.outbox.dead_letters() == 0
        lines = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
        assert len(lines) == 1 and "0x97" in lines[0] and "retried with back-off" in lines[0]  # logged once
    finally:
        broker.close()


def test_the_brokers_maximum_packet_size_splits_waveforms_and_dead_letters_what_cannot_fit(tmp_path, publishers):
    from faults import FakeBroker

    from edge.gateway.messages import join_waveform

    limit = 8000
    broker = FakeBroker(max_packet=limit)
    try:
        pub = publishers(make_cfg(tmp_path, broker.port, publish_waveforms=True))
        window = np.random.default_rng(2).standard_normal((3, 2048)).astype(np.float32)
        for seq in (1, 2):
            event = sample_event(seq)
            pub.submit_event(event)
            pub.submit_waveform(event["event_id"], window * seq, 4000.0, event["window"]["start"], ["Z", "N", "E"],
                                units="m/s", label="blast")
        assert wait_until(lambda: pub.outbox.depth() == 0, T), pub.stats()
        assert pub.max_packet == limit
        waves = broker.published(f"{TOPIC}/waveform")
        schema = Draft202012Validator(json.loads((SCHEMAS / "waveform.schema.json").read_text()))
        by_event: dict[str, list[dict]] = {}
        for r in waves:
            msg = json.loads(r.payload)
            schema.validate(msg)
            assert len(r.payload) < limit and msg["part"]["count"] > 1
            by_event.setdefault(msg["event_id"], []).append(msg)
        for seq in (1, 2):  # each window arrives whole, from its parts
            np.testing.assert_array_equal(join_waveform(by_event[f"s1.n1.boot-1.{seq}"]), window * seq)
        assert {json.loads(r.payload)["seq"] for r in broker.published(f"{TOPIC}/event")} == {1, 2}
        assert pub.stats()["waveform_parts"] == sum(len(v) for v in by_event.values())
    finally:
        broker.close()

    tiny = FakeBroker(max_packet=400)  # not even an event fits: dead-lettered with the reason, the queue moves on
    try:
        pub = publishers(make_cfg(tmp_path / "tiny", tiny.port))
        for seq in (1, 2, 3):
            pub.submit_event(sample_event(seq))
        assert wait_until(lambda: pub.stats()["dead_lettered"] == 3, T), pub.stats()
        assert pub.outbox.depth() == 0 and tiny.published(f"{TOPIC}/event") == []
        with sqlite3.connect(pub.outbox.path) as db:
            reasons = [r for (r,) in db.execute("SELECT reason FROM dead_letter")]
        assert len(reasons) == 3 and all("larger than the broker's maximum packet size" in r and "> 400 bytes" in r
                                         for r in reasons)
    finally:
        tiny.close()


def test_connect_limits_inbound_packets_and_an_oversized_one_drops_the_link_not_the_memory(tmp_path, publishers,
                                                                                             caplog):
    from faults import FakeBroker, oversized_publish

    from edge.gateway.health import rss_mb

    broker = FakeBroker(after_connack=oversized_publish(2**28 - 1, 128 * 2**20))  # announces 256 MB, sends 128
    try:
        caplog.set_level(logging.INFO, logger="edge.gateway.mqtt")
        before = rss_mb()
        pub = publishers(make_cfg(tmp_path, broker.port, max_inbound_kb=64))
        assert wait_until(lambda: pub.stats()["inbound_refused"] >= 2, T), pub.stats()
        assert rss_mb() - before < 64, (before, rss_mb())  # without the limit: +97 MB for 96 MB sent
        assert b"\x27\x00\x01\x00\x00" in broker.connect_properties[0]  # CONNECT: Maximum Packet Size 65536
        lines = [r.getMessage() for r in caplog.records if "max_inbound_kb" in r.getMessage()]
        assert len(lines) == 1 and "268435" in lines[0]  # logged once with the announced size, not per reconnect
        pub.submit_event(sample_event(1))  # still queued, not lost
        assert pub.outbox.depth() == 1
    finally:
        broker.close()


def test_tls_failures_are_logged_as_tls_with_the_reason(make_broker, publishers, tmp_path, caplog):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed (needed to make test certificates)")
    certs = make_certificates(tmp_path / "pki")
    other = make_certificates(tmp_path / "other")  # a CA that did not sign the broker's certificate
    broker = make_broker(tls={"ca": certs["ca.crt"], "cert": certs["server.crt"], "key": certs["server.key"]})
    client = {"tls": True, "cert_file": certs["client.crt"], "key_file": certs["client.key"]}
    caplog.set_level(logging.INFO, logger="edge.gateway.mqtt")
    wrong_ca = publishers(make_cfg(tmp_path / "a", broker.port, ca_file=other["ca.crt"], **client))
    assert wait_until(lambda: "TLS" in wrong_ca.connect_problem, T), wrong_ca.stats()
    assert "certificate verify failed" in wrong_ca.connect_problem and "unreachable" not in wrong_ca.connect_problem
    assert wrong_ca.status_line().startswith("MQTT TLS with 127.0.0.1") and wrong_ca.stats()["tls_failures"] >= 1
    wrong_ca.stop(timeout=0)
    cfg = make_cfg(tmp_path / "b", broker.port, ca_file=certs["ca.crt"], **client)
    cfg.mqtt.host = "localhost"  # the broker's certificate names 127.0.0.1 only
    mismatch = publishers(cfg)
    assert wait_until(lambda: "TLS" in mismatch.connect_problem, T), mismatch.stats()
    assert "mismatch" in mismatch.connect_problem.lower()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "TLS" in r.getMessage()]
    assert len(errors) == 2 and all("mqtt.ca_file" in e for e in errors)
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
