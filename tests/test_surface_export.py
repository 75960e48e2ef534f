"""From the archive to a window dataset that training reads, and to QuakeML (read back with ObsPy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from surface_support import event_message, waveform_message

from edge.cli import main
from edge.formats import read_manifest, read_windows
from edge.vocabulary import CLASSES
from surface.export import QUAKEML_TYPES
from surface.records import parse_event, parse_waveform
from surface.store import open_store

SITE, NODE = "kloof-4", "l29-east"


def fill(url: str) -> dict[str, np.ndarray]:
    """Three events per class and one unknown, each with its waveform; returns event_id -> samples."""
    items, samples = [], {}
    seq = 0
    for label in (*CLASSES, "unknown"):
        for _ in range(3 if label != "unknown" else 1):
            seq += 1
            m = event_message(seq=seq, label=label, confidence=0.5 + 0.05 * (seq % 8))
            w = waveform_message(m, seed=seq)
            items += [parse_event(json.dumps(m).encode(), SITE, NODE),
                      parse_waveform(json.dumps(w).encode(), SITE, NODE)]
            samples[m["event_id"]] = items[-1].data.copy()
    with open_store(url) as store:
        store.ingest(items)
    return samples


def test_export_reviewed_events_reads_as_training_data(surface_url, tmp_path, capsys):
    samples = fill(surface_url)
    with open_store(surface_url) as store:
        rows = sorted(store.query_events(), key=lambda r: r.seq)
        # a reviewer confirms one per class, corrects one blast to drilling, and names the unknown
        for r in rows:
            if r.seq % 3 == 1 and r.label != "unknown":
                store.relabel(r.event_id, r.label, "ana")
        blast = [r for r in rows if r.label == "blast"][1]
        store.relabel(blast.event_id, "drilling", "ana", "regular pulses")
        unknown = [r for r in rows if r.label == "unknown"][0]
        store.relabel(unknown.event_id, "mechanical", "ben")
    out = tmp_path / "reviewed"
    assert main(["dataset", "export", "--db", surface_url, "--out", str(out)]) == 0
    assert "wrote 8 windows" in capsys.readouterr().out
    ws = read_windows(out)  # the reader train --data uses, with the six-class vocabulary
    manifest = read_manifest(out)
    assert manifest["count"] == 8 and manifest["reviewed_only"] is True
    assert manifest["class_counts"] == {"microseismic": 1, "blast": 1, "drilling": 2, "electrical": 1,
                                        "mechanical": 2, "noise": 1}
    assert ws.fs == 4000.0 and ws.waveforms.shape == (8, 3, 512)
    assert manifest["onset_s"] == pytest.approx(0.064)
    with np.load(out / "shard-00000.npz", allow_pickle=False) as z:
        ids = z["event_id"].tolist()
    assert blast.event_id in ids
    np.testing.assert_array_equal(ws.waveforms[ids.index(blast.event_id)], samples[blast.event_id])
    assert ws.labels[ids.index(blast.event_id)] == "drilling"

    assert main(["dataset", "export", "--db", surface_url, "--out", str(tmp_path / "all"), "--no-reviewed-only",
                 "--shard-size", "5"]) == 0
    from training.data import load_splits  # what `train --init MODEL --data DIR` runs on the export

    every = str(tmp_path / "all")
    splits = load_splits({"seed": 0, "data": {"source": "files", "train": every, "test": every, "val": every,
                                              "val_fraction": 0.2, "heldout": None}})
    assert len(splits["train"]) == 19  # every class event, and the unknown one now mechanical
    assert len(read_manifest(tmp_path / "all")["shards"]) == 4


def test_export_refuses_with_one_line(surface_url, tmp_path, capsys):
    with open_store(surface_url):
        pass
    assert main(["dataset", "export", "--db", surface_url, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "no reviewed events with waveforms" in err and err.count("\n") == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert main(["dataset", "export", "--db", surface_url, "--out", str(tmp_path / "full")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert main(["dataset", "export", "--db", surface_url, "--out", str(tmp_path / "y"), "--since", "yesterday"]) == 2
    assert "--since = 'yesterday'" in capsys.readouterr().err


def test_quakeml_catalogue_reads_back_with_obspy(surface_url, tmp_path):
    obspy = pytest.importorskip("obspy", reason="the QuakeML export needs ObsPy (the surface extra)")
    fill(surface_url)
    with open_store(surface_url) as store:
        first = min(store.query_events(), key=lambda r: r.seq)
        store.relabel(first.event_id, "blast", "ana")
    stations = tmp_path / "stations.csv"
    stations.write_text("site,node,latitude,longitude,depth_m\nkloof-4,l29-east,-26.41,27.37,3100\n")
    out = tmp_path / "catalogue.xml"
    assert main(["dataset", "quakeml", "--db", surface_url, "--out", str(out), "--stations", str(stations)]) == 0
    cat = obspy.read_events(str(out), format="QUAKEML")
    assert len(cat) == 19
    by_id = {str(e.resource_id).rsplit("/", 1)[-1]: e for e in cat}
    ev = by_id[first.event_id]
    assert ev.event_type == "mining explosion" and ev.event_type_certainty == "known"
    assert ev.origins[0].time == obspy.UTCDateTime(first.trigger_time)
    assert (ev.origins[0].latitude, ev.origins[0].longitude) == (-26.41, 27.37)
    assert ev.picks[0].waveform_id.station_code == NODE and ev.picks[0].waveform_id.network_code == SITE
    assert ev.amplitudes[0].generic_amplitude == pytest.approx(first.features["ppv"])
    assert ev.amplitudes[0].unit == "m/s" and ev.amplitudes[0].type == "PPV"
    features = json.loads(ev.comments[0].text.removeprefix("features "))
    assert features["dominant_hz"] == {"value": 40.0, "unit": "Hz"}
    types = {e.event_type for e in cat}
    assert types == {QUAKEML_TYPES[c] for c in (*CLASSES, "unknown")}
    assert all(e.event_type_certainty == "suspected" for e in cat if e is not ev)
    bad = tmp_path / "bad.csv"
    bad.write_text("site,node,latitude\nx,y,1\n")
    assert main(["dataset", "quakeml", "--db", surface_url, "--out", str(out), "--stations", str(bad)]) == 2
