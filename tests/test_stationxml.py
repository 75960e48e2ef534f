"""`stopewatch station-xml`: ObsPy reads the inventory, and it validates against the FDSN schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

obspy = pytest.importorskip("obspy", reason="ObsPy (the dev extra) reads the StationXML back")
ROOT = Path(__file__).resolve().parents[1]


def station_xml(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "node.toml"
    path.write_text(config)
    return subprocess.run([sys.executable, "-m", "edge.cli", "station-xml", "--config", str(path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


CONFIG = """
[node]
site = "kloof-4"
node = "l29-east"
[board]
counts_per_unit = 2.5e8
units = "m/s"
[stream]
network = "ZA"
station = "L29E"
location = ""
sensor = "GS-11D 4.5 Hz"
sensitivity_hz = 80.0
latitude = -26.41
longitude = 27.46
elevation_m = 1610.0
depth_m = 2900.0
"""


def test_inventory_reads_back_in_obspy_and_validates(tmp_path):
    out = tmp_path / "inv.xml"
    proc = station_xml(tmp_path, CONFIG, "--fs", "4000", "--start", "2026-01-01T00:00:00Z", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    inv = obspy.read_inventory(str(out))
    assert sorted(inv.get_contents()["channels"]) == ["ZA.L29E..GPE", "ZA.L29E..GPN", "ZA.L29E..GPZ"]
    sta = inv[0][0]
    assert (sta.latitude, sta.longitude, sta.elevation) == (-26.41, 27.46, 1610.0)
    orientation = {c.code: (c.dip, c.azimuth) for c in sta}
    assert orientation == {"GPZ": (-90.0, 0.0), "GPN": (0.0, 0.0), "GPE": (0.0, 90.0)}
    for cha in sta:
        assert cha.sample_rate == 4000.0 and cha.depth == 2900.0 and cha.elevation == 1610.0 - 2900.0
        assert cha.sensor.type == "Geophone" and cha.sensor.model == "GS-11D 4.5 Hz"
        sens = cha.response.instrument_sensitivity
        assert (sens.value, sens.frequency, sens.input_units, sens.output_units) == (2.5e8, 80.0, "m/s", "count")
        assert cha.start_date == obspy.UTCDateTime("2026-01-01")
    # The physical unit follows from it: one count is 1 / counts_per_unit m/s.
    tr = obspy.Trace(data=__import__("numpy").full(100, 2.5e8), header={
        "network": "ZA", "station": "L29E", "location": "", "channel": "GPZ", "sampling_rate": 4000.0,
        "starttime": obspy.UTCDateTime("2026-02-01")})
    tr.remove_sensitivity(inv)
    assert abs(tr.data[0] - 1.0) < 1e-12


def test_inventory_validates_against_the_fdsn_schema(tmp_path):
    etree = pytest.importorskip("lxml.etree", reason="lxml validates against the XSD")
    import obspy.io.stationxml as sx

    xsd = Path(sx.__file__).parent / "data" / "fdsn-station-1.2.xsd"
    if not xsd.is_file():
        pytest.skip(f"the FDSN StationXML 1.2 schema is not available offline ({xsd})")
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    for args in (["--fs", "4000"], ["--fs", "500", "--channels", "1"], ["--fs", "200", "--channels", "2"]):
        proc = station_xml(tmp_path, CONFIG + 'instrument = "accelerometer"\n' if "200" in args else CONFIG, *args)
        assert proc.returncode == 0, proc.stderr
        doc = etree.fromstring(proc.stdout.encode())
        assert schema.validate(doc), schema.error_log
    assert obspy.read_inventory(__import__("io").BytesIO(proc.stdout.encode()))[0][0][0].code == "HN1"
    for args in (["--fs", "4000"], ["--fs", "500", "--channels", "1"]):  # with the geophone's poles and zeros
        proc = station_xml(tmp_path, CONFIG + "natural_hz = 4.5\ndamping = 0.6\n", *args)
        assert proc.returncode == 0, proc.stderr
        assert "<PolesZeros" in proc.stdout
        assert schema.validate(etree.fromstring(proc.stdout.encode())), schema.error_log


@pytest.mark.parametrize("args, extra, message", [
    (["--fs", "0"], "", "station-xml --fs = 0; expected a rate in Hz"),
    (["--fs", "0.5"], "", "0.5 Hz: no band code"),
    (["--fs", "4000", "--channels", "2"], 'orientation = "ZNE"\n', "names 3 channels; the board sends 2"),
    (["--fs", "4000", "--start", "yesterday"], "", "station-xml --start = 'yesterday'; expected an ISO-8601"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, extra, message):
    proc = station_xml(tmp_path, CONFIG + extra, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


GEOPHONE = CONFIG + "natural_hz = 4.5\ndamping = 0.6\n"


def analytic_geophone(f: float, natural_hz: float, damping: float) -> complex:
    """s^2 / (s^2 + 2 zeta w0 s + w0^2), the velocity geophone (computed here, not by the writer)."""
    s, w0 = 2j * __import__("math").pi * f, 2 * __import__("math").pi * natural_hz
    return s * s / (s * s + 2 * damping * w0 * s + w0 * w0)


def test_a_geophone_gets_its_poles_and_zeros_and_evalresp_follows_them(tmp_path):
    import numpy as np

    out = tmp_path / "inv.xml"
    proc = station_xml(tmp_path, GEOPHONE, "--fs", "4000", "--channels", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    inv = obspy.read_inventory(str(out))
    resp = inv.get_response("ZA.L29E..GPZ", obspy.UTCDateTime())
    pz = resp.response_stages[0]
    assert isinstance(pz, obspy.core.inventory.response.PolesZerosResponseStage)
    assert pz.pz_transfer_function_type == "LAPLACE (RADIANS/SECOND)"
    assert pz.zeros == [0j, 0j] and len(pz.poles) == 2
    w0 = 2 * np.pi * 4.5
    assert np.allclose(sorted(pz.poles, key=lambda p: p.imag),
                       [complex(-0.6 * w0, -0.8 * w0), complex(-0.6 * w0, 0.8 * w0)], rtol=1e-9)
    assert [s.stage_gain for s in resp.response_stages] == [1.0, 2.5e8]
    # The whole response in counts per m/s against the analytic geophone, scaled to 2.5e8 at 80 Hz.
    scale = 2.5e8 / abs(analytic_geophone(80.0, 4.5, 0.6))
    freqs = np.array([9.0, 45.0, 80.0])  # 2x and 10x the natural frequency, and the sensitivity frequency
    got = resp.get_evalresp_response_for_frequencies(freqs, output="VEL")
    want = np.array([scale * analytic_geophone(f, 4.5, 0.6) for f in freqs])
    assert np.allclose(np.abs(got), np.abs(want), rtol=0.01), (np.abs(got), np.abs(want))
    assert np.allclose(np.angle(got), np.angle(want), atol=0.01)
    # ObsPy recomputes the overall sensitivity from the stages: the stated one within 1 %.
    stated = resp.instrument_sensitivity.value
    resp.recalculate_overall_sensitivity()
    assert abs(resp.instrument_sensitivity.value / stated - 1) < 0.01
    # remove_response works: sines of 1 um/s at 2x and 10x the natural frequency, recorded in counts (each
    # scaled and shifted by the response), come back as 1 um/s (amplitude of the middle second).
    t = np.arange(8000) / 4000.0
    for f, h in zip(freqs[:2], want[:2], strict=True):
        tr = obspy.Trace(data=np.abs(h) * 1e-6 * np.sin(2 * np.pi * f * t + np.angle(h)), header={
            "network": "ZA", "station": "L29E", "location": "", "channel": "GPZ", "sampling_rate": 4000.0,
            "starttime": obspy.UTCDateTime()})
        tr.remove_response(inventory=inv, output="VEL", pre_filt=(1.0, 2.0, 1500.0, 1800.0), water_level=None)
        mid = slice(2000, 6000)
        amplitude = 2 * abs(np.mean(tr.data[mid] * np.exp(-2j * np.pi * f * t[mid])))
        assert abs(amplitude / 1e-6 - 1) < 0.01, (f, amplitude)


def test_an_accelerometer_or_an_unknown_sensor_stays_flat(tmp_path):
    for config in (CONFIG, CONFIG + 'instrument = "accelerometer"\n'):
        proc = station_xml(tmp_path, config, "--fs", "4000", "--channels", "1")
        assert proc.returncode == 0, proc.stderr
        resp = obspy.read_inventory(__import__("io").BytesIO(proc.stdout.encode()))[0][0][0].response
        assert len(resp.response_stages) == 1 and type(resp.response_stages[0]).__name__ == "ResponseStage"


@pytest.mark.parametrize(("extra", "args", "message"), [
    ("natural_hz = 4.5\ndamping = 0.6\n", ("--fs", "150"), "below Nyquist"),  # sensitivity_hz 80 >= 75
    ("natural_hz = 50.0\n", ("--fs", "4000"), "stream.sensitivity_hz = 80"),  # 80 Hz is not in the flat band
    ('natural_hz = 4.5\ninstrument = "accelerometer"\n', ("--fs", "4000"), "stream.natural_hz = 4.5"),
    ("natural_hz = 4.5\ndamping = 1.5\n", ("--fs", "4000"), "stream.damping = 1.5"),
    ("natural_hz = -1\n", ("--fs", "4000"), "stream.natural_hz = -1"),
])
def test_a_sensor_response_that_cannot_hold_is_one_line(tmp_path, extra, args, message):
    proc = station_xml(tmp_path, CONFIG + extra, *args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
