"""``stopewatch station-xml``: the node's inventory as FDSN StationXML 1.2.

One network, one station, one channel per component of the board, with the stream codes of the
archive (edge.gateway.streams), the sensor's orientation (dip and azimuth of Z, N, E), the sampling
rate, the sensor type and model, and the overall sensitivity: ``board.counts_per_unit`` counts per
``board.units`` at ``stream.sensitivity_hz``. With it, SeisComP (``import_inv fdsnxml``) and ObsPy
(``read_inventory``) use the archive directly, in physical units.

The response stages: when ``stream.natural_hz`` is set (a geophone or seismometer), stage 1 is the
sensor's poles and zeros, the velocity transducer's second-order high-pass
``H(s) = s^2 / (s^2 + 2 zeta w0 s + w0^2)`` (two zeros at 0, poles at ``-zeta w0 +- i w0 sqrt(1 - zeta^2)``,
Laplace in rad/s), normalised to ``|H| = 1`` at ``stream.sensitivity_hz`` (which the config keeps in the
flat band, at least twice the natural frequency, and this command below Nyquist); its gain is 1 and its
units are ``board.units`` in and out (the shape only: the sensor's and the ADC's shares of
``counts_per_unit`` are not configured). The last stage is the gain-only stage of ``counts_per_unit``,
so the product of the stage gains at ``sensitivity_hz`` is the overall sensitivity and evalresp
(ObsPy's ``remove_response``) sees the sensor's roll-off below its natural frequency. Without
``natural_hz`` (and always for an accelerometer) the response is that gain-only stage: flat band.

Written with the standard library's ElementTree, element by element in the order the FDSN schema
(fdsn-station-1.2.xsd) requires; the tests validate the output against that schema and read it
back with ObsPy. ObsPy's Inventory would write the same document, but it brings ObsPy (lxml,
matplotlib, SQLAlchemy: over 100 MB) onto a gateway for some forty elements; the gateway runs this
command where the config is.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from edge import package_version
from edge.errors import UserError
from edge.gateway.config import Config, StreamConfig
from edge.gateway.streams import ORIENTATION, stream_codes
from firmware_bridge.clock import iso_utc

NAMESPACE = "http://www.fdsn.org/xml/station/1"
SENSOR_TYPE = {"geophone": "Geophone", "seismometer": "Seismometer", "accelerometer": "Accelerometer"}


def _sub(parent: ET.Element, tag: str, text: str | float | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = f"{text:.10g}" if isinstance(text, float) else str(text)
    return el


def geophone_poles(natural_hz: float, damping: float) -> list[complex]:
    """The two poles (rad/s) of a velocity geophone of natural frequency ``natural_hz`` and damping ratio
    ``damping`` (0 < damping <= 1): ``-zeta w0 +- i w0 sqrt(1 - zeta^2)``."""
    w0 = 2 * math.pi * natural_hz
    im = w0 * math.sqrt(max(0.0, 1 - damping * damping))
    return [complex(-damping * w0, im), complex(-damping * w0, -im)]


def normalization_factor(poles: list[complex], zeros: int, freq_hz: float) -> float:
    """A0 such that ``|A0 * prod(s - z) / prod(s - p)| = 1`` at ``freq_hz`` (``zeros`` zeros at the origin)."""
    s = complex(0.0, 2 * math.pi * freq_hz)
    value = s**zeros
    for p in poles:
        value /= s - p
    return 1.0 / abs(value)


def _poles_zeros(stage: ET.Element, st: StreamConfig, units: str) -> None:
    """The sensor's PolesZeros element (see the module docstring), normalised at ``st.sensitivity_hz``."""
    poles = geophone_poles(st.natural_hz, st.damping)
    pz = _sub(stage, "PolesZeros", name=f"{st.instrument} {st.natural_hz:g} Hz, damping {st.damping:g}")
    _sub(_sub(pz, "InputUnits"), "Name", units)
    _sub(_sub(pz, "OutputUnits"), "Name", units)
    _sub(pz, "PzTransferFunctionType", "LAPLACE (RADIANS/SECOND)")
    _sub(pz, "NormalizationFactor", normalization_factor(poles, 2, st.sensitivity_hz))
    _sub(pz, "NormalizationFrequency", float(st.sensitivity_hz))
    for n in range(2):
        zero = _sub(pz, "Zero", number=str(n))
        _sub(zero, "Real", 0.0)
        _sub(zero, "Imaginary", 0.0)
    for n, p in enumerate(poles, start=2):
        pole = _sub(pz, "Pole", number=str(n))
        _sub(pole, "Real", float(p.real))
        _sub(pole, "Imaginary", float(p.imag))
    gain = _sub(stage, "StageGain")
    _sub(gain, "Value", 1.0)
    _sub(gain, "Frequency", float(st.sensitivity_hz))


def station_xml(cfg: Config, fs: float, channels: int, start: datetime | None = None) -> bytes:
    """The StationXML document (UTF-8 bytes) of a node whose board streams ``channels`` components at ``fs`` Hz.

    ``start`` opens the epoch of the network, station and channels (default: the start of today, UTC).
    Raises UserError when no SEED channel code fits the rate or the layout.
    """
    codes = stream_codes(cfg.stream, fs, channels, cfg.source)
    st, board = cfg.stream, cfg.board
    if st.natural_hz and st.sensitivity_hz >= fs / 2:
        raise UserError(f"{cfg.source}: stream.sensitivity_hz = {st.sensitivity_hz:g}; the poles and zeros are "
                        f"normalised there, so it must be below Nyquist ({fs / 2:g} Hz at {fs:g} Hz)")
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
        if st.natural_hz:
            _poles_zeros(_sub(resp, "Stage", number="1"), st, board.units)
        # The gain-only stage of counts_per_unit: all of the response without natural_hz (readers that walk
        # the stages, such as ObsPy's remove_sensitivity, need one), the gain behind the sensor's shape with it.
        stage = _sub(resp, "Stage", number="2" if st.natural_hz else "1")
        gain = _sub(stage, "StageGain")
        _sub(gain, "Value", float(board.counts_per_unit))
        _sub(gain, "Frequency", float(st.sensitivity_hz))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
