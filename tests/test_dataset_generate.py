"""`stopewatch dataset generate`: the benchmark on disk, byte-for-byte reproducible, with clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge.cli import main
from edge.formats import read_stream, read_windows
from edge.vocabulary import CLASSES
from training.synthetic.sites import HELDOUT_SITES, TRAIN_SITES


def generate(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["dataset", "generate", "--out", str(out), "--quiet", *extra]) == 0
    return out


def test_same_seed_same_bytes_whatever_the_shard_size(tmp_path):
    a = generate(tmp_path, "a", "--count", "30", "--seed", "7", "--shard-size", "10")
    b = generate(tmp_path, "b", "--count", "30", "--seed", "7", "--shard-size", "10")
    c = generate(tmp_path, "c", "--count", "30", "--seed", "7", "--shard-size", "25")
    d = generate(tmp_path, "d", "--count", "30", "--seed", "8", "--shard-size", "10")
    for name in ("manifest.json", "shard-00000.npz", "shard-00002.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    wa, wc, wd = read_windows(a), read_windows(c), read_windows(d)
    assert np.array_equal(wa.waveforms, wc.waveforms) and np.array_equal(wa.labels, wc.labels)
    assert not np.array_equal(wa.waveforms, wd.waveforms)


def test_dataset_follows_the_spec_format_and_manifest(tmp_path):
    out = generate(tmp_path, "ds", "--count", "24", "--seed", "1", "--shard-size", "10")
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["count"] for s in manifest["shards"]] == [10, 10, 4]
    assert manifest["seed"] == 1 and manifest["generator"]["version"]
    assert manifest["class_counts"] == {c: 4 for c in CLASSES}
    assert set(manifest["sites"]) == set(TRAIN_SITES) and manifest["heldout_sites"] == list(HELDOUT_SITES)
    assert "microseismic" in manifest["parameter_ranges"]
    ws = read_windows(out)
    assert ws.waveforms.shape == (24, 3, 4096) and ws.waveforms.dtype == np.float32
    assert ws.fs == 4000.0 and set(ws.labels) == set(CLASSES)
    assert set(ws.site) <= set(TRAIN_SITES)
    assert ws.time[0].endswith("Z") and len(ws.snr_db) == 24
    event_snr = ws.snr_db[ws.labels != "noise"]
    assert np.all((event_snr >= -3) & (event_snr <= 30))
    assert np.all(np.isnan(ws.snr_db[ws.labels == "noise"]))
    with np.load(out / "shard-00000.npz", allow_pickle=False) as z:  # plain arrays, no pickle needed
        assert z["labels"].dtype.kind == "U"


def test_heldout_uniaxial_and_custom_rate(tmp_path):
    out = generate(tmp_path, "h", "--count", "12", "--sites", "heldout", "--channels", "1", "--fs", "10000",
                   "--samples", "2048", "--snr-db", "-3:6", "--classes", "microseismic,blast")
    ws = read_windows(out)
    assert ws.waveforms.shape == (12, 1, 2048) and ws.fs == 10000.0
    assert set(ws.site) <= set(HELDOUT_SITES) and set(ws.labels) == {"microseismic", "blast"}
    assert np.all((ws.snr_db >= -3) & (ws.snr_db <= 6))


def test_stream_file_has_ground_truth_at_the_events(tmp_path):
    out = tmp_path / "s.npz"
    assert main(["dataset", "generate", "--stream", "120", "--out", str(out), "--seed", "2",
                 "--snr-db", "15:25", "--events-per-min", "10"]) == 0
    s = read_stream(out)
    assert s.data.shape == (3, 480_000) and s.fs == 4000.0 and list(s.channels) == ["Z", "N", "E"]
    assert len(s.event_onsets) >= 5 and np.all(np.diff(s.event_onsets) > 0)
    assert set(s.event_labels) <= set(CLASSES) - {"noise"}
    assert np.all((s.event_snr_db >= 15) & (s.event_snr_db <= 25))
    quiet = np.sqrt(np.mean(s.data[:, :4000].astype(float) ** 2))  # first second: background only
    for onset in s.event_onsets:
        after = s.data[:, onset:onset + 2000].astype(float)
        assert np.sqrt(np.mean(after**2)) > 1.5 * quiet
    again = tmp_path / "s2.npz"
    main(["dataset", "generate", "--stream", "120", "--out", str(again), "--seed", "2",
          "--snr-db", "15:25", "--events-per-min", "10"])
    assert out.read_bytes() == again.read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--count", "5", "--sites", "nowhere"], "--sites: unknown site 'nowhere'; allowed: train, heldout, all"),
    (["--count", "5", "--classes", "quake"], "--classes: 'quake': quake is not a class; allowed: microseismic"),
    (["--count", "0"], "argument --count: '0'; expected an integer from 1 to"),
    (["--count", "5", "--snr-db", "10"], "--snr-db = '10'; expected LOW:HIGH"),
    (["--count", "5", "--fs", "5"], "argument --fs: '5'; expected a number from 100 to 100000 (Hz)"),
    (["--stream", "10", "--site", "moon"], "--site = 'moon'; allowed: za-deep-gold"),
])
def test_bad_arguments_give_one_clear_line(tmp_path, args, message):
    out = tmp_path / ("x.npz" if "--stream" in args else "x")
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "dataset", "generate", "--out", str(out), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_existing_data_is_never_overwritten(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "precious.npz").write_bytes(b"x")
    assert main(["dataset", "generate", "--out", str(out), "--count", "3"]) == 2
    assert (out / "precious.npz").read_bytes() == b"x"
