"""Home Assistant MQTT discovery: retained sensor configs that point at the topics the daemon already publishes.

With ``mqtt.homeassistant_discovery = true`` the JSON publisher sends, on every (re)connect and retained,
one config per sensor to ``{mqtt.homeassistant_prefix}/sensor/{node_id}/{object_id}/config``. Each reads
its value out of the node's own ``event`` or ``health`` messages with a ``value_template``: there is no
second data stream. Availability follows the retained ``status`` topic: ``online`` there is available;
the will's ``offline`` and a clean stop's ``stopped`` are both unavailable (``availability_template``
maps the JSON status to those two words). Health sensors expire after three health intervals without a
message, so a silent node does not show stale figures.

To take a node out of Home Assistant, turn discovery off and clear each retained config (an empty retained
message on its topic, e.g. ``mosquitto_pub -r -n -t homeassistant/sensor/NODE_ID/OBJECT_ID/config``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge.gateway.config import Config

# Discovery topic segments (node_id, object_id) allow only these characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Units Home Assistant accepts for the "speed" device class that a velocity sensor may report in.
_SPEED_UNITS = ("m/s", "mm/s", "in/s", "ft/s")
AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.state == 'online' else 'offline' }}"


@dataclass(frozen=True)
class Sensor:
    """One discovered sensor: which message it reads (``event`` or ``health``) and how."""

    object_id: str
    name: str
    kind: str  # "event" | "health": the node topic the value comes from
    template: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    icon: str | None = None


def sensors(cfg: Config) -> list[Sensor]:
    """The sensors this node announces (PPV in ``board.units``)."""
    units = cfg.board.units
    return [
        Sensor("last_event_class", "Last event class", "event", "{{ value_json.label }}", icon="mdi:pulse"),
        Sensor("last_event_ppv", "Last event PPV", "event", "{{ value_json.features.ppv }}", unit=units,
               device_class="speed" if units in _SPEED_UNITS else None, state_class="measurement"),
        Sensor("events", "Events since start", "health", "{{ value_json.events }}", unit="events",
               state_class="total_increasing", icon="mdi:counter"),
        Sensor("outbox_backlog", "Outbox backlog", "health", "{{ value_json.backlog }}", unit="events",
               state_class="measurement", icon="mdi:tray-full"),
        Sensor("link_state", "Board link", "health", "{{ value_json.link.state }}", icon="mdi:serial-port"),
        # None (no stream yet) renders as "None", which Home Assistant takes as an unknown value.
        Sensor("realtime_factor", "Realtime factor", "health", "{{ value_json.realtime_factor }}", unit="x",
               state_class="measurement", icon="mdi:speedometer"),
    ]


def node_id(cfg: Config) -> str:
    """The discovery node_id: ``stopewatch_{site}_{node}`` with characters outside [A-Za-z0-9_-] as '_'."""
    return _UNSAFE.sub("_", f"stopewatch_{cfg.node.site}_{cfg.node.node}")


def discovery_configs(cfg: Config, version: str, model: str = "") -> dict[str, dict]:
    """Topic -> discovery payload (to be sent as retained JSON) of every sensor of this node.

    ``version`` is the daemon's (the device's ``sw_version``); ``model`` names the classifier (the device's
    ``model``, default "stopewatch gateway").
    """
    topics, nid = cfg.topics, node_id(cfg)
    device = {"identifiers": [nid], "name": f"stopewatch {cfg.node.site}/{cfg.node.node}",
              "model": model or "stopewatch gateway", "manufacturer": "stopewatch", "sw_version": version}
    expire = int(3 * cfg.health.interval_s) + 1
    out: dict[str, dict] = {}
    for s in sensors(cfg):
        payload: dict = {
            "name": s.name, "unique_id": f"{nid}_{s.object_id}",
            "state_topic": topics.event if s.kind == "event" else topics.health, "value_template": s.template,
            "availability_topic": topics.status, "availability_template": AVAILABILITY_TEMPLATE,
            "payload_available": "online", "payload_not_available": "offline",
            "device": device, "origin": {"name": "stopewatch", "sw_version": version},
        }
        if s.kind == "event":
            payload["qos"] = 1  # events are sent at QoS 1
        else:
            payload["expire_after"] = expire
        for key, value in (("unit_of_measurement", s.unit), ("device_class", s.device_class),
                           ("state_class", s.state_class), ("icon", s.icon)):
            if value is not None:
                payload[key] = value
        out[f"{cfg.mqtt.homeassistant_prefix}/sensor/{nid}/{s.object_id}/config"] = payload
    return out
