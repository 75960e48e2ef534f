"""``stopewatch station-xml``: the node's inventory as FDSN StationXML 1.2.

One network, one station, one channel per component of the board, with the stream codes of the
archive (edge.gateway.streams), the sensor's orientation (dip and azimuth of Z, N, E), the sampling
rate, the sensor type and model, and the overall sensitivity: ``board.counts_per_unit`` counts per
``board.units`` at ``stream.sensitivity_hz`` (also as a single gain-only response stage; the sensor's
poles and zeros are not in the configuration, so the response is flat-band only). With it, SeisComP
(``import_inv fdsnxml``) and ObsPy (``read_inventory``) use the archive directly, in physical units.

Written with the standard library's ElementTree, element by element in the order the FDSN schema
(fdsn-station-1.2.xsd) requires; the tests validate the output against that schema and read it
back with ObsPy. ObsPy's Inventory would write the same document, but it brings ObsPy (lxml,
matplotlib, SQLAlchemy: over 100 MB) onto a gateway for some forty elements; the gateway runs this
command where the config is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from edge import package_version
from edge.gateway.config import Config
from edge.gateway.streams import ORIENTATION, stream_codes
from firmware_bridge.clock import iso_utc

NAMESPACE = "http://www.fdsn.org/xml/station/1"
SENSOR_TYPE = {"geophone": "Geophone", "seismometer": "Seismometer", "accelerometer": "Accelerometer"}


def _sub(parent: ET.Element, tag: str, text: str | float | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = f"{text:.10g}" if isinstance(text, float) else str(text)
    return el


def station_xml(cfg: Config, fs: float, channels: int, start: datetime | None = None) -> bytes:
    """The StationXML document (UTF-8 bytes) of a node whose board streams ``channels`` components at ``fs`` Hz.

    ``start`` opens the epoch of the network, station and channels (default: the start of today, UTC).
    Raises UserError when no SEED channel code fits the rate or the layout.
    """
    codes = stream_codes(cfg.stream, fs, channels, cfg.source)
    st, board = cfg.stream, cfg.board
    start = start or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    begin = iso_utc(start)
    sensor_elevation = st.elevation_m - st.depth_m  # StationXML: the channel's elevation is the sensor's

    root = ET.Element("FDSNStationXML", {"xmlns": NAMESPACE, "schemaVersion": "1.2"})
    _sub(root, "Source", f"stopewatch {cfg.node.site}/{cfg.node.node}")
    _sub(root, "Module", f"stopewatch {package_version()}")
    _sub(root, "Created", iso_utc(datetime.now(UTC)))
    net = _sub(root, "Network", code=codes.network, startDate=begin)
    _sub(net, "Description", f"stopewatch nodes of site {cfg.node.site}")
    sta = _sub(net, "Station", code=codes.station, startDate=begin)
    _sub(sta, "Description", f"stopewatch node {cfg.node.node}")
    _sub(sta, "Latitude", float(st.latitude))
    _sub(sta, "Longitude", float(st.longitude))
    _sub(sta, "Elevation", float(st.elevation_m))
    site = _sub(sta, "Site")
    _sub(site, "Name", f"{cfg.node.site} {cfg.node.node}")
    _sub(sta, "CreationDate", begin)
    _sub(sta, "TotalNumberChannels", channels)
    for row, code in enumerate(codes.channels):
        dip, azimuth = ORIENTATION.get(code[2], (0.0, 0.0))
        cha = _sub(sta, "Channel", code=code, locationCode=codes.location, startDate=begin)
        _sub(cha, "Latitude", float(st.latitude))
        _sub(cha, "Longitude", float(st.longitude))
        _sub(cha, "Elevation", float(sensor_elevation))
        _sub(cha, "Depth", float(st.depth_m))
        _sub(cha, "Azimuth", azimuth)
        _sub(cha, "Dip", dip)
        _sub(cha, "Type", "CONTINUOUS")
        _sub(cha, "SampleRate", float(fs))
        sensor = _sub(cha, "Sensor")
        _sub(sensor, "Type", SENSOR_TYPE[st.instrument])
        _sub(sensor, "Description", f"{st.instrument}, component {code[2]} (board row {row})")
        if st.sensor:
            _sub(sensor, "Model", st.sensor)
        resp = _sub(cha, "Response")
        sens = _sub(resp, "InstrumentSensitivity")
        _sub(sens, "Value", float(board.counts_per_unit))
        _sub(sens, "Frequency", float(st.sensitivity_hz))
        _sub(_sub(sens, "InputUnits"), "Name", board.units)
        _sub(_sub(sens, "OutputUnits"), "Name", "count")
        # One gain-only stage: the flat-band sensitivity is all that is known (no poles and zeros are
        # configured), and readers that walk the stages (ObsPy's remove_sensitivity) need one.
        stage = _sub(resp, "Stage", number="1")
        gain = _sub(stage, "StageGain")
        _sub(gain, "Value", float(board.counts_per_unit))
        _sub(gain, "Frequency", float(st.sensitivity_hz))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
