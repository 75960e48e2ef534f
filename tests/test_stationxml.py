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
