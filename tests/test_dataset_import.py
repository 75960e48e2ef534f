"""`stopewatch dataset import`: real miniSEED/SAC/CSV/stream-npz records cut into window datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.formats import Stream, read_windows, write_stream

obspy = pytest.importorskip("obspy")

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def trace(data: np.ndarray, channel: str, fs: float, start: datetime = T0, station: str = "ST1"):
    tr = obspy.Trace(np.asarray(data))
    tr.stats.network, tr.stats.station, tr.stats.location, tr.stats.channel = "XX", station, "", channel
    tr.stats.sampling_rate = fs
    tr.stats.starttime = obspy.UTCDateTime(start)
    return tr


def write_labels(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def import_args(tmp_path: Path, labels: Path, *records, out: str = "ds", extra=()) -> list[str]:
    return ["dataset", "import", "--labels", str(labels), "--out", str(tmp_path / out),
            *map(str, records), *extra]


# --------------------------------------------------------------------------- miniSEED
@pytest.fixture
def mseed_10k(tmp_path: Path) -> Path:
    """A 10 kHz triaxial miniSEED record (int32 counts), components written in E, Z, N order."""
    fs, n, f0, amp = 10_000.0, 60_000, 250.0, 20_000.0
    t = np.arange(n) / fs
    z = np.round(amp * np.sin(2 * np.pi * f0 * t)).astype(np.int32)
    st = obspy.Stream([trace(-3 * z, "HHE", fs), trace(z, "HHZ", fs), trace(2 * z, "HHN", fs)])
    path = tmp_path / "st1.mseed"
    st.write(str(path), format="MSEED", encoding="STEIM2")
    return path


def test_mseed_resampled_to_4k_keeps_sine_phase_and_zne_order(tmp_path, mseed_10k, capsys):
    onsets = [T0 + timedelta(seconds=s) for s in (1.0, 2.5, 3.0001)]
    labels = write_labels(tmp_path / "labels.csv", "station,start_time,label",
                          [f"ST1,{iso(onsets[0])},blast", f"XX.ST1,{iso(onsets[1])},microseismic",
                           f"XX.ST1..HH,{iso(onsets[2])},noise"])
    code, out, err = run(import_args(tmp_path, labels, mseed_10k), capsys)
    assert code == 0, err
    assert "wrote 3 windows" in out
    ws = read_windows(tmp_path / "ds")
    assert ws.waveforms.shape == (3, 3, 4096) and ws.fs == 4000.0
    assert ws.labels.tolist() == ["blast", "microseismic", "noise"]
    assert ws.time.tolist() == [iso(t) for t in onsets]

    k = np.arange(4096)
    for i, onset in enumerate(onsets):
        z, n, e = ws.waveforms[i].astype(np.float64)
        # The dominant frequency stays 250 Hz after 10 kHz -> 4 kHz.
        spec = np.abs(np.fft.rfft(z * np.hanning(z.size)))
        assert np.fft.rfftfreq(z.size, 1 / 4000.0)[np.argmax(spec)] == pytest.approx(250.0, abs=1.0)
        # Sample k is the ground motion at onset - pre + k/fs: the phase is right, not just the frequency.
        t_rel = (onset - T0).total_seconds() - 0.256 + k / 4000.0
        expected = 20_000.0 * np.sin(2 * np.pi * 250.0 * t_rel)
        assert np.max(np.abs(z - expected)) < 0.02 * 20_000.0
        # Channel order Z, N, E whatever the order in the file.
        np.testing.assert_allclose(n, 2 * z, atol=1e-3 * 20_000.0)
        np.testing.assert_allclose(e, -3 * z, atol=1e-3 * 20_000.0)

    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["fs"] == 4000.0 and manifest["samples"] == 4096 and manifest["channels"] == 3
    assert manifest["units"] == "counts" and manifest["onset_s"] == 0.256
    assert manifest["class_counts"] == {"microseismic": 1, "blast": 1, "drilling": 0, "electrical": 0,
                                        "mechanical": 0, "noise": 1}
    assert manifest["skipped"] == 0 and manifest["labels_file"] == str(labels)
    (rec,) = manifest["records"]
    assert rec["channels"] == ["HHZ", "HHN", "HHE"] and rec["native_fs"] == [10_000.0] * 3
    assert rec["resample_up_down"] == [[2, 5]] * 3 and rec["files"] == [str(mseed_10k)]


def test_window_near_record_end_is_skipped_and_counted_or_fails_with_strict(tmp_path, mseed_10k, capsys):
    end_ish = T0 + timedelta(seconds=5.5)  # record is 6 s long; the window needs 1.024 - 0.256 s after onset
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label",
                          [f"st1.mseed,{iso(T0 + timedelta(seconds=2))},drilling",
                           f"st1.mseed,{iso(end_ish)},mechanical"])
    code, out, err = run(import_args(tmp_path, labels, mseed_10k), capsys)
    assert code == 0
    assert err.count("\n") == 1 and "warning" in err and "line 3" in err and "skipped" in err
    assert "after channel" in err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["count"] == 1 and manifest["skipped"] == 1
    assert manifest["skipped_rows"][0]["line"] == 3
    assert read_windows(tmp_path / "ds").labels.tolist() == ["drilling"]

    code, out, err = run(import_args(tmp_path, labels, mseed_10k, out="strict", extra=["--strict"]), capsys)
    assert code == 2
    assert err.count("\n") == 1 and "line 3" in err and "--strict" in err
    assert not (tmp_path / "strict").exists() and not (tmp_path / "strict.part").exists()


def test_window_across_a_gap_is_skipped(tmp_path, capsys):
    fs = 4000.0
    a = trace(np.ones(8000, dtype=np.int32), "EHZ", fs)
    b = trace(np.ones(8000, dtype=np.int32), "EHZ", fs, start=T0 + timedelta(seconds=2.5))  # 0.5 s gap
    path = tmp_path / "gappy.mseed"
    obspy.Stream([a, b]).write(str(path), format="MSEED")
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label",
                          [f"gappy.mseed,{iso(T0 + timedelta(seconds=2.2))},blast",
                           f"gappy.mseed,{iso(T0 + timedelta(seconds=3.0))},blast"])
    code, _, err = run(import_args(tmp_path, labels, path, extra=["--channels", "1"]), capsys)
    assert code == 0
    assert "line 2" in err and "gap in channel EHZ" in err and err.count("\n") == 1
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["count"] == 1 and manifest["skipped_rows"][0]["line"] == 2


# --------------------------------------------------------------------------- SAC
def test_sac_one_file_per_component_joined_by_station(tmp_path, capsys):
    fs = 4000.0
    n = 16_000
    sac_dir = tmp_path / "sac"
    sac_dir.mkdir()
    for comp, value in (("Z", 1.0), ("1", 2.0), ("2", 3.0)):
        trace(np.full(n, value, dtype=np.float32), f"HH{comp}", fs, station="ST9").write(
            str(sac_dir / f"XX.ST9.HH{comp}.sac"), format="SAC")
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label,site",
                          [f"sac/XX.ST9.HHZ.sac,{iso(T0 + timedelta(seconds=1))},electrical,mine-a"])
    code, _, err = run(import_args(tmp_path, labels, sac_dir), capsys)
    assert code == 0, err
    ws = read_windows(tmp_path / "ds")
    assert ws.waveforms.shape == (1, 3, 4096)
    assert ws.waveforms[0, :, 100].tolist() == [1.0, 2.0, 3.0]  # Z, 1, 2
    assert ws.site.tolist() == ["mine-a"]

    code, _, err = run(import_args(tmp_path, labels, sac_dir, out="uni", extra=["--channels", "1"]), capsys)
    assert code == 0, err
    uni = read_windows(tmp_path / "uni")
    assert uni.waveforms.shape == (1, 1, 4096) and np.all(uni.waveforms == 1.0)


# --------------------------------------------------------------------------- CSV
def write_csv_record(path: Path, data: np.ndarray, names: list[str], fs: float, start: datetime,
                     station: str | None = None) -> Path:
    lines = [f"# fs={fs:g}", f"# start_time={iso(start)}"]
    if station:
        lines.append(f"# station={station}")
    lines.append(",".join(names))
    lines += [",".join(f"{v:g}" for v in row) for row in data.T]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_onset_lands_at_pre_times_fs(tmp_path, capsys):
    fs = 4000.0
    data = np.zeros((1, 20_000))
    data[0, 8000:] = 1000.0  # step at 2.0 s after the record start = the labelled onset
    rec_dir = tmp_path / "recs"
    rec_dir.mkdir()
    write_csv_record(rec_dir / "borehole7.csv", data, ["Z"], fs, T0)
    labels = write_labels(rec_dir / "labels.csv", "file,start_time,label,snr_db",
                          [f"borehole7.csv,{iso(T0 + timedelta(seconds=2))},microseismic,12.5"])
    # No record arguments: the labels' file column names them, relative to the labels file.
    code, _, err = run(import_args(tmp_path, labels, extra=["--channels", "1", "--units", "m/s"]), capsys)
    assert code == 0, err
    ws = read_windows(tmp_path / "ds")
    w = ws.waveforms[0, 0]
    assert np.all(w[:1024] == 0.0) and np.all(w[1024:] == 1000.0)  # 0.256 s * 4000 Hz = 1024
    assert ws.snr_db.tolist() == [12.5]
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["units"] == "m/s"


def test_csv_10k_onset_after_resampling(tmp_path, capsys):
    fs = 10_000.0
    data = np.zeros((3, 40_000))
    data[1, 20_000:] = 1000.0  # Z is the middle CSV column
    path = write_csv_record(tmp_path / "r.csv", data, ["E", "Z", "N"], fs, T0, station="G7")
    labels = write_labels(tmp_path / "labels.csv", "station,start_time,label",
                          [f"G7,{iso(T0 + timedelta(seconds=2))},blast"])
    code, _, err = run(import_args(tmp_path, labels, path, extra=["--pre", "0.1"]), capsys)
    assert code == 0, err
    z, n, e = read_windows(tmp_path / "ds").waveforms[0]
    half = np.flatnonzero(z > 500.0)[0]  # mid-point of the step after the anti-alias filter
    assert abs(half - 400) <= 1  # 0.1 s * 4000 Hz
    assert np.max(np.abs(n)) < 1e-3 and np.max(np.abs(e)) < 1e-3


def test_csv_bad_cell_named_by_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(f"# fs=4000\n# start_time={iso(T0)}\nZ,N,E\n1,2,3\n4,x5,6\n")
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label", [f"bad.csv,{iso(T0)},noise"])
    code, _, err = run(import_args(tmp_path, labels), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "bad.csv line 5 column 'N'" in err and "'x5'" in err and "expected a number" in err


def test_csv_without_fs_comment(tmp_path, capsys):
    path = tmp_path / "nofs.csv"
    path.write_text(f"# start_time={iso(T0)}\nZ\n1\n")
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label", [f"nofs.csv,{iso(T0)},noise"])
    code, _, err = run(import_args(tmp_path, labels), capsys)
    assert code == 2 and "nofs.csv" in err and "# fs=" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- stream npz
def test_stream_npz_z12_order(tmp_path, capsys):
    fs = 4000.0
    data = np.zeros((3, 12_000), dtype=np.float32)
    data[0], data[1], data[2] = 2.0, 1.0, 3.0  # stored as 1-component, Z, 2-component
    data[1, 4000:] = 10.0
    path = tmp_path / "gallery_north.npz"
    write_stream(path, Stream(data, fs, iso(T0), np.array(["1", "Z", "2"])))
    labels = write_labels(tmp_path / "labels.csv", "station,start_time,label",
                          [f"gallery_north,{iso(T0 + timedelta(seconds=1))},mechanical"])
    code, _, err = run(import_args(tmp_path, labels, path, extra=["--site", "north"]), capsys)
    assert code == 0, err
    ws = read_windows(tmp_path / "ds")
    w = ws.waveforms[0]
    assert w[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert w[0, 1023] == 1.0 and w[0, 1024] == 10.0
    assert ws.site.tolist() == ["north"]


def test_npz_needing_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.npz"
    np.savez(path, data=np.array([object(), 1], dtype=object), fs=4000.0)
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label", [f"evil.npz,{iso(T0)},noise"])
    code, _, err = run(import_args(tmp_path, labels), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "evil.npz" in err and "pickle" in err and "refused" in err


# --------------------------------------------------------------------------- one-line errors
@pytest.mark.parametrize(("header", "row", "expected"), [
    ("file,start_time,label", "missing.mseed,{t},blast", ["line 2", "'missing.mseed'", "not found"]),
    ("file,start_time,label", "st1.mseed,{t},earthquake", ["line 2", "'earthquake'", "allowed: microseismic"]),
    ("file,start_time,label", "st1.mseed,2024-03-02T00:00:00Z,blast",
     ["line 2", "2024-03-02T00:00:00.000000Z", "outside the record", "st1.mseed"]),
    ("file,start_time,label", "st1.mseed,yesterday,blast", ["line 2", "'yesterday'", "ISO-8601"]),
    ("file,start_time,label,magnitude", "st1.mseed,{t},blast,0.3",
     ["line 1", "'magnitude'", "allowed: file, station, start_time, label"]),
    ("start_time,label", "{t},blast", ["'file' or a 'station' column"]),
    ("station,start_time,label", "ST5,{t},blast", ["line 2", "'ST5'", "known stations", "XX.ST1"]),
])
def test_bad_labels_give_one_line_and_exit_2(tmp_path, mseed_10k, capsys, header, row, expected):
    labels = write_labels(tmp_path / "labels.csv", header, [row.format(t=iso(T0 + timedelta(seconds=2)))])
    code, out, err = run(import_args(tmp_path, labels, mseed_10k), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopewatch: error: ")
    assert "labels.csv" in err or "st1.mseed" in err
    for part in expected:
        assert part in err
    assert "Traceback" not in err and not (tmp_path / "ds").exists()


def test_missing_record_argument_and_nonempty_out(tmp_path, mseed_10k, capsys):
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label", [f"st1.mseed,{iso(T0)},blast"])
    code, _, err = run(import_args(tmp_path, labels, tmp_path / "nope.mseed"), capsys)
    assert code == 2 and "nope.mseed: no such record file" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    code, _, err = run(import_args(tmp_path, labels, mseed_10k, out="full"), capsys)
    assert code == 2 and "not empty" in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"


def test_triaxial_request_on_uniaxial_record(tmp_path, capsys):
    path = tmp_path / "uni.mseed"
    trace(np.zeros(20_000, dtype=np.int32), "EHZ", 4000.0).write(str(path), format="MSEED")
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label",
                          [f"uni.mseed,{iso(T0 + timedelta(seconds=1))},noise"])
    code, _, err = run(import_args(tmp_path, labels, path), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "channels EHZ" in err and "--channels 1" in err


def test_without_obspy_says_how_to_install(tmp_path, mseed_10k, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "obspy", None)  # makes `import obspy` raise ImportError
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label", [f"st1.mseed,{iso(T0)},blast"])
    code, _, err = run(import_args(tmp_path, labels, mseed_10k), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'stopewatch[seismo]'" in err and "st1.mseed" in err


def test_installed_entry_point(tmp_path, mseed_10k):
    exe = REPO / ".venv" / "bin" / "stopewatch"
    if not exe.exists():
        pytest.skip("no .venv/bin/stopewatch (package not installed in a venv)")
    labels = write_labels(tmp_path / "labels.csv", "file,start_time,label",
                          [f"st1.mseed,{iso(T0 + timedelta(seconds=1))},blast",
                           f"st1.mseed,{iso(T0 + timedelta(seconds=1))},rockfall"])
    bad = subprocess.run([str(exe), *import_args(tmp_path, labels, mseed_10k)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'rockfall'" in bad.stderr
    write_labels(labels, "file,start_time,label", [f"st1.mseed,{iso(T0 + timedelta(seconds=1))},blast"])
    ok = subprocess.run([str(exe), *import_args(tmp_path, labels, mseed_10k)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert read_windows(tmp_path / "ds").waveforms.shape == (1, 3, 4096)


def test_resampling_next_to_a_gap_uses_only_real_samples():
    from training.records import Channel, cut_channel

    fs0 = 10_000.0
    t = np.arange(30_000) / fs0
    x = 100.0 * np.sin(2 * np.pi * 300.0 * t)
    x[9_990:10_000] = np.nan  # gap ends 10 samples before the window opens at sample 10 000
    w = cut_channel(Channel("HHZ", fs0, T0, x.size, x), T0 + timedelta(seconds=1.0), 4096, 4000.0)
    assert np.all(np.isfinite(w))
    expected = 100.0 * np.sin(2 * np.pi * 300.0 * (1.0 + np.arange(4096) / 4000.0))
    assert np.max(np.abs(w[50:] - expected[50:])) < 2.0  # away from the gap's edge: exact resampling
