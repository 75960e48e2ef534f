"""Sparkplug B publishing against a real Mosquitto, decoded by pysparkplug's host side (not by our own code).

The publisher runs in this process (the seq wrap needs hundreds of events, the outage test a broker restart);
tests/test_sparkplug_daemon.py runs the real daemon for the birth/death/restart cycle. Waits are on
conditions with generous timeouts.
"""

from __future__ import annotations

import datetime
import importlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from mqtt_broker import wait_until
from paho.mqtt.enums import CallbackAPIVersion
from test_mqtt_publisher import MODEL, make_cfg, publisher_factory, sample_event

spb = pytest.importorskip("pysparkplug")

from edge.gateway.sparkplug import (  # noqa: E402 (after the importorskip)
    EVENT_METRICS,
    NODE_METRICS,
    ONLY_IN_MESSAGE,
    REBIRTH,
    SparkplugPublisher,
    event_metrics,
)
from edge.vocabulary import CLASSES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GROUP, NODE, DEVICE = "s1", "n1", "board"
T = 60.0


def event(seq: int, boot_id: str = "boot-1") -> dict:
    """A complete event message, its trigger time one second per seq after a fixed start."""
    msg = sample_event(seq, boot_id)
    at = datetime.datetime(2025, 3, 1, 12, tzinfo=datetime.UTC) + datetime.timedelta(seconds=seq, microseconds=1000)
    msg["trigger_time"] = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    msg["missing_samples"], msg["concealed_samples"] = 0, 0
    return msg


class Host:
    """A Sparkplug host application's view: every spBv1.0 message, decoded with pysparkplug.

    Data messages are decoded with the births received before them (aliases and datatypes come from the
    births, as a real host does), so a data message whose alias the births did not declare fails here.
    """

    def __init__(self, port: int, *, client_id: str = "", persistent: bool = False) -> None:
        self.raw: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"host-{id(self)}",
                                  protocol=paho.MQTTv311, clean_session=not persistent)
        self.client.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(20), f"host could not subscribe on port {port}"

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.raw.append(msg)
            self._cond.notify_all()

    def messages(self) -> list[tuple[str, object]]:
        """(message type, decoded payload) in arrival order (STATE and commands left out)."""
        with self._cond:
            raw = list(self.raw)
        out, nbirth, dbirth = [], None, None
        for m in raw:
            topic = spb.Topic.from_str(m.topic)
            kind = str(topic.message_type.value)
            if kind in ("STATE", "NCMD", "DCMD"):
                continue
            birth = nbirth if kind == "NDATA" else dbirth if kind == "DDATA" else None
            payload = spb.Message.from_mqtt_message(m, birth=birth).payload
            if kind == "NBIRTH":
                nbirth = payload
            elif kind == "DBIRTH":
                dbirth = payload
            out.append((kind, payload))
        return out

    def of(self, kind: str) -> list:
        return [p for k, p in self.messages() if k == kind]

    def wait_for(self, predicate, timeout: float = T) -> bool:
        return wait_until(lambda: predicate(self), timeout)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def values(payload) -> dict:
    return {m.name: m.value for m in payload.metrics}


def ddata_events(host: Host) -> list[dict]:
    """Each DDATA's metrics by name (first copy of each event_id: delivery is at least once)."""
    seen, out = set(), []
    for payload in host.of("DDATA"):
        v = values(payload)
        if v["Event/event_id"] not in seen:
            seen.add(v["Event/event_id"])
            out.append(v)
    return out


@pytest.fixture
def nodes():
    """Start Sparkplug publishers through this factory; any still running are stopped after the test."""
    yield from publisher_factory(SparkplugPublisher)


@pytest.fixture
def hosts():
    made: list[Host] = []

    def make(port: int, **kwargs) -> Host:
        made.append(Host(port, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


def spb_cfg(tmp_path: Path, port: int, **mqtt):
    return make_cfg(tmp_path, port, mode="sparkplug", **mqtt)


# ----------------------------------------------------------------------------------------------- the table
def test_the_metric_table_covers_every_event_field_with_its_datatype():
    schema = json.loads((ROOT / "edge/schemas/event.schema.json").read_text())
    sources = {s.source for s in EVENT_METRICS if s.source}
    covered = sources | set(ONLY_IN_MESSAGE)
    # every field of the event schema is a metric, or travels only inside Event/message
    for name, prop in schema["properties"].items():
        if name in covered:
            continue
        nested = [f"{name}.{k}" for k in prop.get("properties", {})]
        for field in nested or [name]:
            assert field in covered or any(s.startswith(field + ".") for s in sources), f"event field {field!r}"
    assert {f"probabilities.{c}" for c in CLASSES} <= sources  # one metric per class
    # names and aliases are unique across the node and its device (Sparkplug aliases are per edge node)
    every = NODE_METRICS + EVENT_METRICS
    assert len({s.name for s in every}) == len(every) and len({s.alias for s in every}) == len(every)
    # each metric's value from a real event message has its datatype's Python type, and survives the codec
    msg = event(7)
    python_type = {"STRING": str, "DOUBLE": float, "UINT64": int, "UINT32": int, "BOOLEAN": bool,
                   "DATETIME": datetime.datetime}
    metrics = event_metrics(msg, historical=True, with_names=True)
    for spec, metric in zip(EVENT_METRICS, metrics, strict=True):
        assert metric.datatype is spec.dtype and metric.value is not None, spec.name
        assert isinstance(metric.value, python_type[spec.datatype]), (spec.name, metric.value)
        assert metric.is_historical and metric.timestamp == 1740830407001  # the event's own time, ms
    birth = spb.DBirth(timestamp=1, seq=1, metrics=tuple(
        spb.Metric(timestamp=1, name=s.name, datatype=s.dtype, value=None, alias=s.alias) for s in EVENT_METRICS))
    decoded_birth = spb.DBirth.decode(birth.encode())
    assert {m.name: m.datatype for m in decoded_birth.metrics} == {s.name: s.dtype for s in EVENT_METRICS}
    data = spb.DData(timestamp=2, seq=2, metrics=event_metrics(msg, historical=False)).encode()
    got = values(spb.DData.decode(data, birth=decoded_birth))
    assert got["Event/label"] == "blast" and got["Event/confidence"] == pytest.approx(0.9)
    assert got["Event/probabilities/blast"] == pytest.approx(0.9) and got["Event/ppv"] == pytest.approx(1.2e-4)
    assert got["Event/event_id"] == msg["event_id"] and got["Event/seq"] == 7 and got["Event/clipped"] is False
    assert got["Event/trigger_time"] == datetime.datetime(2025, 3, 1, 12, 0, 7, 1000, tzinfo=datetime.UTC)
    assert json.loads(got["Event/message"]) == dict(msg, historical=False)


def test_docs_name_every_metric_with_its_datatype_and_alias():
    text = (ROOT / "docs/mqtt.md").read_text()
    for spec in NODE_METRICS + EVENT_METRICS:
        row = [line for line in text.splitlines() if line.startswith(f"| `{spec.name}` |")]
        assert row, f"docs/mqtt.md has no row for {spec.name}"
        cells = [c.strip() for c in row[0].split("|")]
        assert cells[2].upper() == spec.datatype and cells[3] in (str(spec.alias), "(none)"), row[0]


def test_config_keys_are_checked_and_json_mode_imports_no_sparkplug(tmp_path):
    from edge.errors import UserError
    from edge.gateway.config import parse_config

    base = {"node": {"state_dir": str(tmp_path)}}
    cfg = parse_config(dict(base, mqtt={"mode": "both", "sparkplug_primary_host": "scada"}), "t.toml")
    assert cfg.sparkplug_outbox_path == tmp_path / "outbox-sparkplug.sqlite"
    assert parse_config(dict(base, mqtt={"mode": "sparkplug"}), "t.toml").sparkplug_outbox_path == cfg.outbox_path
    for mqtt, words in (({"mode": "xml"}, "mqtt.mode = 'xml'; allowed: json, sparkplug, both"),
                        ({"sparkplug_device": "a/b"}, "mqtt.sparkplug_device = 'a/b'"),
                        ({"sparkplug_primary_host": "#"}, "mqtt.sparkplug_primary_host = '#'"),
                        ({"mode": "sparkplug", "publish_waveforms": True}, "set mqtt.mode = \"both\"")):
        with pytest.raises(UserError, match=None) as err:
            parse_config(dict(base, mqtt=mqtt), "t.toml")
        assert words in str(err.value) and str(err.value).startswith("t.toml: ") and "\n" not in str(err.value)
    # the default path never loads the Sparkplug codec (nor protobuf, nor TensorFlow)
    code = ("import sys, edge.gateway.daemon, edge.gateway.mqtt; "
            "print(sorted(m for m in ('pysparkplug', 'google.protobuf', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_missing_pysparkplug_is_one_clear_line(monkeypatch):
    from edge.errors import UserError

    monkeypatch.setitem(sys.modules, "pysparkplug", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "edge.gateway.sparkplug")
    with pytest.raises(UserError, match=r"pysparkplug is not installed: pip install 'stopewatch\[sparkplug\]'"):
        importlib.import_module("edge.gateway.sparkplug")
    monkeypatch.undo()
    assert importlib.import_module("edge.gateway.sparkplug").SparkplugPublisher is SparkplugPublisher


# ----------------------------------------------------------------------------------------------- sessions
def test_birth_data_health_and_rebirth_on_command(make_broker, nodes, hosts, tmp_path):
    broker = make_broker()
    host = hosts(broker.port)
    pub = nodes(spb_cfg(tmp_path, broker.port))
    assert host.wait_for(lambda h: h.of("DBIRTH")), pub.status_line()
    kinds = [k for k, _ in host.messages()]
    assert kinds[:2] == ["NBIRTH", "DBIRTH"]
    nbirth, dbirth = host.of("NBIRTH")[0], host.of("DBIRTH")[0]
    assert nbirth.seq == 0 and dbirth.seq == 1
    node = values(nbirth)
    assert node["bdSeq"] == pub.bdseq == 0 and node[REBIRTH] is False and node["Properties/boot_id"] == "boot-1"
    assert {m.name: m.datatype for m in nbirth.metrics} == {s.name: s.dtype for s in NODE_METRICS}
    assert {m.name: m.datatype for m in dbirth.metrics} == {s.name: s.dtype for s in EVENT_METRICS}

    for seq in range(1, 4):
        pub.submit_event(event(seq))
    assert host.wait_for(lambda h: len(ddata_events(h)) == 3)
    assert pub.wait_drained(T)
    ddata = host.of("DDATA")
    assert [d.seq for d in ddata] == [2, 3, 4]
    got = ddata_events(host)
    assert [e["Event/seq"] for e in got] == [1, 2, 3] and not any(e["Event/historical"] for e in got)
    assert not any(m.is_historical for d in ddata for m in d.metrics)

    assert pub.publish_health({"uptime_s": 1.5, "backlog": 0, "events": 3, "link": {"state": "ok"}})
    assert host.wait_for(lambda h: h.of("NDATA"))
    health = values(host.of("NDATA")[0])
    assert health["Health/uptime_s"] == 1.5 and health["Health/events"] == 3 and health["Health/link"] == "ok"
    assert health["Sparkplug/births"] == 1 and json.loads(health["Health/message"])["sparkplug"]["bdseq"] == 0
    assert host.of("NDATA")[0].seq == 5

    # Rebirth on command: new NBIRTH (same bdSeq, seq 0) and DBIRTH
    host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", spb.NCmd(timestamp=spb.get_current_timestamp(), metrics=(
        spb.Metric(timestamp=1, name=REBIRTH, datatype=spb.DataType.BOOLEAN, value=True),)).encode())
    assert host.wait_for(lambda h: len(h.of("DBIRTH")) == 2)
    again = host.of("NBIRTH")[1]
    assert again.seq == 0 and values(again)["bdSeq"] == 0 and host.of("DBIRTH")[1].seq == 1
    pub.submit_event(event(4))
    assert host.wait_for(lambda h: len(ddata_events(h)) == 4)
    assert host.of("DDATA")[-1].seq == 2  # seq goes on from the new births
    assert pub.session()["rebirth_commands"] == 1 and pub.session()["births"] == 2

    # Anything else is refused: logged, counted, nothing published
    births = len(host.of("NBIRTH"))
    host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", spb.NCmd(timestamp=1, metrics=(
        spb.Metric(timestamp=1, name="Node Control/Reboot", datatype=spb.DataType.BOOLEAN, value=True),)).encode())
    host.publish(f"spBv1.0/{GROUP}/DCMD/{NODE}/{DEVICE}", spb.DCmd(timestamp=1, metrics=(
        spb.Metric(timestamp=1, name="Event/label", datatype=spb.DataType.STRING, value="blast"),)).encode())
    host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", b"\xff\x00 not protobuf")
    assert wait_until(lambda: pub.session()["refused_commands"] == 3, T)
    pub.submit_event(event(5))  # the node goes on as before
    assert host.wait_for(lambda h: len(ddata_events(h)) == 5)
    assert len(host.of("NBIRTH")) == births and pub.session()["rebirth_commands"] == 1


def test_seq_runs_0_to_255_and_wraps(make_broker, nodes, hosts, tmp_path):
    broker = make_broker()
    host = hosts(broker.port)
    pub = nodes(spb_cfg(tmp_path, broker.port))
    assert host.wait_for(lambda h: h.of("DBIRTH"))
    n = 300
    for seq in range(1, n + 1):
        pub.submit_event(event(seq))
    assert host.wait_for(lambda h: len(ddata_events(h)) == n, 2 * T)
    seqs = [k_p[1].seq for k_p in host.messages()]
    assert seqs[:2] == [0, 1] and len(seqs) == n + 2
    assert seqs == [i % 256 for i in range(n + 2)]  # NBIRTH 0, DBIRTH 1, then every message one more, mod 256
    i = seqs.index(254)
    assert seqs[i:i + 4] == [254, 255, 0, 1]
    assert [e["Event/seq"] for e in ddata_events(host)] == list(range(1, n + 1))


def test_historical_replay_after_a_broker_outage(make_broker, nodes, hosts, tmp_path):
    broker = make_broker(persistence=True)
    host = hosts(broker.port, client_id="scada-host", persistent=True)
    pub = nodes(spb_cfg(tmp_path, broker.port))
    assert host.wait_for(lambda h: h.of("DBIRTH"))
    pub.submit_event(event(1))
    assert host.wait_for(lambda h: len(ddata_events(h)) == 1)
    broker.stop()
    assert wait_until(lambda: not pub.connected, T)
    for seq in range(2, 32):
        assert pub.submit_event(event(seq)) is not None
    assert pub.outbox.depth() == 30
    broker.start()
    assert host.wait_for(lambda h: len(ddata_events(h)) == 31, 2 * T), pub.status_line()
    assert pub.wait_drained(T)
    got = ddata_events(host)
    assert [e["Event/seq"] for e in got] == list(range(1, 32))  # none lost, in order
    replayed = [d for d in host.of("DDATA") if values(d)["Event/seq"] >= 2]
    assert all(m.is_historical for d in replayed for m in d.metrics)
    assert all(values(d)["Event/historical"] for d in replayed)
    for d in replayed:  # each metric carries the event's own time, not the time of sending
        seq = values(d)["Event/seq"]
        assert {m.timestamp for m in d.metrics} == {1740830400001 + 1000 * seq}
    # the second session re-births with the next bdSeq, and its data follows its births
    nbirths = host.of("NBIRTH")
    assert [values(b)["bdSeq"] for b in nbirths] == [0, 1]
    kinds = [k for k, _ in host.messages()]
    second = kinds.index("NBIRTH", 1)
    assert kinds[second:second + 2] == ["NBIRTH", "DBIRTH"] and set(kinds[second + 2:]) == {"DDATA"}


def _state(host: Host, online: bool, ts: int) -> None:
    host.publish("spBv1.0/STATE/scada", json.dumps({"online": online, "timestamp": ts}).encode(), retain=True)


def test_primary_host_state_gates_births_and_data(make_broker, nodes, hosts, tmp_path):
    broker = make_broker()
    host = hosts(broker.port)
    _state(host, False, 1000)  # retained: the node sees it as soon as it subscribes
    pub = nodes(spb_cfg(tmp_path, broker.port, sparkplug_primary_host="scada"))
    assert wait_until(lambda: pub.connected and pub.session()["state_messages"] >= 1, T)
    for seq in range(1, 4):
        pub.submit_event(event(seq))
    assert not pub.session()["born"] and pub.session()["host_online"] is False
    _state(host, False, 500)  # an older STATE: ignored; once the node has seen it nothing has gone out
    assert wait_until(lambda: pub.session()["state_messages"] >= 2, T)
    assert host.messages() == [] and pub.outbox.depth() == 3
    assert "waiting for Primary Host 'scada'" in pub.status_line()

    _state(host, True, 2000)
    assert host.wait_for(lambda h: len(ddata_events(h)) == 3)
    assert [k for k, _ in host.messages()][:2] == ["NBIRTH", "DBIRTH"]
    assert all(e["Event/historical"] for e in ddata_events(host))  # queued while the host was away
    assert pub.session()["host_online"] is True

    _state(host, False, 3000)
    assert wait_until(lambda: not pub.session()["born"], T)
    for seq in range(4, 7):
        pub.submit_event(event(seq))
    assert not pub.publish_health({"uptime_s": 1.0})  # no NDATA either while the host is away
    _state(host, False, 3500)  # a round trip through the node: still nothing sent
    assert wait_until(lambda: pub.session()["state_messages"] >= 5, T)
    assert pub.outbox.depth() == 3 and len(ddata_events(host)) == 3

    _state(host, True, 4000)  # the host is back: re-birth, then the waiting events
    assert host.wait_for(lambda h: len(ddata_events(h)) == 6)
    first, second = host.of("NBIRTH")
    assert values(second)["bdSeq"] == values(first)["bdSeq"]  # the same session: same bdSeq
    assert [e["Event/seq"] for e in ddata_events(host)] == [1, 2, 3, 4, 5, 6]
    assert all(e["Event/historical"] for e in ddata_events(host)[3:])


def test_a_clean_stop_publishes_ndeath_and_bdseq_survives_a_restart(make_broker, hosts, tmp_path):
    broker = make_broker()
    host = hosts(broker.port)
    cfg = spb_cfg(tmp_path, broker.port)
    for run in range(2):
        pub = SparkplugPublisher(cfg, f"boot-{run}", "0.1.0", MODEL)
        pub.start(reconnect_min_s=1, reconnect_max_s=2)
        assert host.wait_for(lambda h, run=run: len(h.of("DBIRTH")) == run + 1)
        pub.stop(timeout=5)
        assert host.wait_for(lambda h, run=run: len(h.of("NDEATH")) == run + 1)
    births = [values(b)["bdSeq"] for b in host.of("NBIRTH")]
    deaths = [d.bd_seq_metric.value for d in host.of("NDEATH")]
    assert births == deaths == [0, 1]
