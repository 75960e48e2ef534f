"""Home Assistant MQTT discovery: retained configs that point at the topics the daemon really publishes.

The daemon runs against the board simulator and a real broker; the configs are read back from
``homeassistant/#`` and every value_template is rendered (Jinja, as Home Assistant does) against the
real event, health and status messages of that run.
"""

from __future__ import annotations

import signal

import pytest
from mqtt_broker import Collector, read_retained, wait_until
from test_daemon import TOPIC, Board, Daemon, T, write_config

from edge.errors import UserError
from edge.gateway.config import parse_config
from edge.gateway.homeassistant import discovery_configs, node_id
from edge.gateway.mqtt import Publisher

jinja2 = pytest.importorskip("jinja2", reason="Jinja renders the templates as Home Assistant does")
PREFIX = "homeassistant"
NUMERIC = {"last_event_ppv", "events", "outbox_backlog", "realtime_factor"}


def render(template: str, payload: dict) -> str:
    """A value_template's result for a JSON payload (Home Assistant's ``value_json``)."""
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(value_json=payload)


def test_the_daemon_announces_sensors_that_read_its_own_messages(mqtt_broker, tmp_path, cleanup):
    board = Board(tmp_path, speed=3.0, rate_per_min=30)
    cleanup(board)
    col = Collector(mqtt_broker.port, "#")
    cleanup(col)
    config = write_config(tmp_path, board, mqtt_broker.port)
    config.write_text(config.read_text().replace("[mqtt]\n", "[mqtt]\nhomeassistant_discovery = true\n"))
    daemon = Daemon(config, tmp_path)
    cleanup(daemon)
    configs = lambda c: {t: m for t, m in c.messages.items() if t.startswith(f"{PREFIX}/")}  # noqa: E731
    # Six configs, and at least one event and a health message with a stream behind it.
    assert col.wait_for(lambda c: len(configs(c)) == 6 and c.payloads(f"{TOPIC}/event")
                        and any(h["realtime_factor"] for h in c.payloads(f"{TOPIC}/health")), T), daemon.text()
    nid = "stopewatch_testmine_gw1"
    assert sorted(configs(col)) == sorted(f"{PREFIX}/sensor/{nid}/{o}/config" for o in (
        "last_event_class", "last_event_ppv", "events", "outbox_backlog", "link_state", "realtime_factor"))
    status = read_retained(mqtt_broker.port, f"{TOPIC}/status")
    event = col.payloads(f"{TOPIC}/event")[-1]
    health = [h for h in col.payloads(f"{TOPIC}/health") if h["realtime_factor"]][-1]
    real = {f"{TOPIC}/event": event, f"{TOPIC}/health": health}
    for topic in configs(col):  # (retained: checked below with a subscriber that comes later)
        cfg = col.payloads(topic)[-1]
        object_id = topic.split("/")[-2]
        assert cfg["unique_id"] == f"{nid}_{object_id}" and cfg["name"]
        assert cfg["device"] == {"identifiers": [nid], "name": "stopewatch testmine/gw1",
                                 "model": status["model"]["name"], "manufacturer": "stopewatch",
                                 "sw_version": status["version"]}
        # The state topic is one the daemon publishes on, and the template finds its field in a real message.
        assert cfg["state_topic"] in real, cfg["state_topic"]
        value = render(cfg["value_template"], real[cfg["state_topic"]])
        assert value and value != "None", (object_id, value)
        if object_id in NUMERIC:
            float(value)
        # Availability: the retained status says online, and the template maps that to payload_available.
        assert cfg["availability_topic"] == f"{TOPIC}/status"
        assert render(cfg["availability_template"], status) == cfg["payload_available"] == "online"
        assert cfg["payload_not_available"] == "offline"
    ppv = col.payloads(f"{PREFIX}/sensor/{nid}/last_event_ppv/config")[-1]
    assert float(render(ppv["value_template"], event)) == event["features"]["ppv"]
    assert ppv["unit_of_measurement"] == event["units"]["ppv"] == "m/s" and ppv["device_class"] == "speed"
    cls = col.payloads(f"{PREFIX}/sensor/{nid}/last_event_class/config")[-1]
    assert render(cls["value_template"], event) == event["label"]
    link = col.payloads(f"{PREFIX}/sensor/{nid}/link_state/config")[-1]
    assert render(link["value_template"], health) == health["link"]["state"]
    # A Home Assistant that starts later still finds the configs (retained).
    for topic in configs(col):
        assert read_retained(mqtt_broker.port, topic) == col.payloads(topic)[-1], topic
    # A clean stop leaves "stopped": the sensors become unavailable (as with the will's "offline").
    assert daemon.signal(signal.SIGTERM) == 0
    stopped = read_retained(mqtt_broker.port, f"{TOPIC}/status")
    assert stopped["state"] == "stopped"
    assert render(cls["availability_template"], stopped) == cls["payload_not_available"]
    assert render(cls["availability_template"], dict(stopped, state="offline")) == cls["payload_not_available"]


def test_discovery_is_off_by_default(mqtt_broker, tmp_path):
    cfg = parse_config({"node": {"site": "s1", "node": "n1", "state_dir": str(tmp_path / "state")},
                        "mqtt": {"host": "127.0.0.1", "port": mqtt_broker.port}}, "test.toml")
    assert cfg.mqtt.homeassistant_discovery is False
    col = Collector(mqtt_broker.port, "#")
    pub = Publisher(cfg, "boot-1", "0.1.0", {"name": "triaxial", "sha256": "ab" * 32})
    pub.start(reconnect_min_s=1, reconnect_max_s=2)
    try:
        assert col.wait_for(lambda c: c.messages.get("stopewatch/v1/s1/n1/status"), T)
        pub.publish_health({"events": 0})
        assert col.wait_for(lambda c: c.messages.get("stopewatch/v1/s1/n1/health"), T)
        assert not [t for t in col.messages if t.startswith(f"{PREFIX}/")]
    finally:
        pub.stop(timeout=5)
        col.close()


def test_a_backlog_at_connect_goes_out_beside_the_configs(make_broker, tmp_path):
    """40 queued events and the discovery configs at one connect: the configs (QoS 0) take no place in the
    in-flight window, so the broker's receive maximum is never exceeded and the link is never dropped."""
    from test_mqtt_publisher import sample_event

    broker = make_broker()
    port = broker.port
    broker.stop()
    cfg = parse_config({"node": {"site": "s1", "node": "n1", "state_dir": str(tmp_path / "state")},
                        "mqtt": {"host": "127.0.0.1", "port": port, "homeassistant_discovery": True}}, "t.toml")
    pub = Publisher(cfg, "boot-1", "0.1.0", {"name": "triaxial", "sha256": "ab" * 32})
    pub.start(reconnect_min_s=1, reconnect_max_s=1)
    try:
        for seq in range(1, 41):
            pub.submit_event(sample_event(seq))
        broker.start()
        col = Collector(port, "#")
        assert pub.wait_drained(T) and pub.counters["acked"] == 40
        assert pub.counters["connects"] == 1 and pub.counters["reconnects"] == 0
        assert wait_until(lambda: len([t for t in col.messages if t.startswith(f"{PREFIX}/")]) == 6, T)
        col.close()
    finally:
        pub.stop(timeout=5)


def test_names_units_and_prefix_follow_the_config():
    cfg = parse_config({"node": {"site": "kloof.4", "node": "l29-east"}, "board": {"units": "m/s**2"},
                        "mqtt": {"homeassistant_discovery": True, "homeassistant_prefix": "ha/disc"}}, "t.toml")
    assert node_id(cfg) == "stopewatch_kloof_4_l29-east"  # '.' is not allowed in a discovery node_id
    configs = discovery_configs(cfg, "2.1.0")
    assert all(t.startswith("ha/disc/sensor/stopewatch_kloof_4_l29-east/") and t.endswith("/config")
               for t in configs)
    ppv = configs["ha/disc/sensor/stopewatch_kloof_4_l29-east/last_event_ppv/config"]
    assert ppv["unit_of_measurement"] == "m/s**2" and "device_class" not in ppv  # not a speed: no class
    assert ppv["state_topic"] == "stopewatch/v1/kloof.4/l29-east/event"
    health = configs["ha/disc/sensor/stopewatch_kloof_4_l29-east/events/config"]
    assert health["expire_after"] == 181  # three default health intervals of 60 s, and a second


@pytest.mark.parametrize(("mqtt", "message"), [
    ({"homeassistant_prefix": ""}, "mqtt.homeassistant_prefix = ''"),
    ({"homeassistant_prefix": "home/#"}, "mqtt.homeassistant_prefix = 'home/#'"),
    ({"homeassistant_prefix": "homeassistant/"}, "trailing '/'"),
    ({"homeassistant_prefix": "$SYS"}, "'$'"),
    ({"homeassistant_discovery": "yes"}, "mqtt.homeassistant_discovery = 'yes'; expected bool"),
    ({"homeassistant_discovery": True, "mode": "sparkplug"}, "mqtt.homeassistant_discovery = true with mqtt.mode"),
])
def test_bad_discovery_settings_are_one_line(mqtt, message):
    with pytest.raises(UserError, match=None) as exc:
        parse_config({"mqtt": mqtt}, "t.toml")
    assert message in str(exc.value) and "\n" not in str(exc.value)
