"""`stopewatch dataset gallery`: one waveform + spectrogram per class, as a PNG."""

from __future__ import annotations

import numpy as np
import pytest

from edge.cli import main
from edge.formats import WindowSet, read_windows, write_manifest, write_windows
from edge.vocabulary import CLASSES
from training.gallery import DPI, FIGSIZE, pick_representatives

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

FS, SAMPLES, ONSET = 4000.0, 4096, 0.256


def toy_windows(rng: np.random.Generator, per_class: int, classes=CLASSES) -> WindowSet:
    """Noise plus a class-specific tone burst from the onset on (enough for a plot to show something)."""
    t = np.arange(SAMPLES) / FS
    waves, labels, snr, site = [], [], [], []
    for c, cls in enumerate(classes):
        for k in range(per_class):
            x = rng.normal(0.0, 1.0, (3, SAMPLES))
            if cls != "noise":
                burst = np.sin(2 * np.pi * (100.0 + 250.0 * c) * t) * np.exp(-(t - ONSET) / 0.1) * (t >= ONSET)
                x += 10.0 * (k + 1) * burst
            waves.append(x)
            labels.append(cls)
            snr.append(float(k))
            site.append(f"site-{k % 2}")
    return WindowSet(np.array(waves, dtype=np.float32), np.array(labels), FS,
                     np.array(snr, dtype=np.float32), np.array(site))


def write_dataset(path, ws: WindowSet, shard: int = 7) -> None:
    path.mkdir()
    shards = []
    for i, start in enumerate(range(0, len(ws), shard)):
        name = f"windows-{i:05d}.npz"
        write_windows(path / name, ws.subset(np.arange(start, min(start + shard, len(ws)))))
        shards.append({"file": name, "count": min(shard, len(ws) - start)})
    write_manifest(path, {"shards": shards, "onset_s": ONSET, "units": "m/s", "count": len(ws)})


def test_pick_median_snr_or_seeded():
    labels = np.array(["blast"] * 5 + ["noise"] * 2)
    snr = np.array([9.0, 1.0, 5.0, 3.0, 7.0, 2.0, 1.0])
    assert pick_representatives(labels, snr, None) == {"blast": 2, "noise": 6}
    a = pick_representatives(labels, snr, 3)
    assert a == pick_representatives(labels, snr, 3)
    assert labels[a["blast"]] == "blast" and labels[a["noise"]] == "noise"


def test_gallery_png_has_size_and_content(tmp_path, capsys):
    ds = tmp_path / "ds"
    write_dataset(ds, toy_windows(np.random.default_rng(1), per_class=3))
    out = tmp_path / "fig" / "gallery.png"
    assert main(["dataset", "gallery", str(ds), "--out", str(out)]) == 0
    assert "6 classes" in capsys.readouterr().out
    img = imread(out)
    assert img.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    rgb = img[..., :3]
    non_white = np.any(rgb < 0.95, axis=-1).mean()
    assert non_white > 0.25  # six spectrograms fill a good part of the page
    colours = np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200  # a colormap, not a blank or two-tone page
    # Every class row holds a spectrogram: the right half of each row is mostly coloured.
    h, w = rgb.shape[:2]
    for r in range(len(CLASSES)):
        band = rgb[int(h * (0.06 + 0.15 * r)):int(h * (0.06 + 0.15 * (r + 1))), w // 2:]
        assert np.any(band < 0.95, axis=-1).mean() > 0.3


def test_gallery_marks_missing_classes_and_single_file(tmp_path, capsys):
    ws = toy_windows(np.random.default_rng(2), per_class=2, classes=("blast", "noise"))
    path = tmp_path / "two.npz"
    write_windows(path, ws)
    out = tmp_path / "g.png"
    assert main(["dataset", "gallery", str(path), "--out", str(out), "--seed", "4", "--onset", "0.256"]) == 0
    assert "2 classes" in capsys.readouterr().out
    assert imread(out).shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))


def test_gallery_bad_inputs(tmp_path, capsys):
    assert main(["dataset", "gallery", str(tmp_path / "nothing"), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing" in err and "no such file" in err
    path = tmp_path / "w.npz"
    write_windows(path, toy_windows(np.random.default_rng(0), 1, ("blast",)))
    assert main(["dataset", "gallery", str(path), "--out", str(tmp_path / "g.jpg")]) == 2
    assert ".png" in capsys.readouterr().err


def test_gallery_of_the_synthetic_generator(tmp_path, capsys):
    generate = pytest.importorskip("training.synthetic.generate")
    ds = tmp_path / "synth"
    generate.write_window_dataset(ds, count=18, seed=5, progress=False)
    out = tmp_path / "synth.png"
    assert main(["dataset", "gallery", str(ds), "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"{len(set(read_windows(ds).labels.tolist()))} classes" in shown
    img = imread(out)
    assert img.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    assert np.any(img[..., :3] < 0.95, axis=-1).mean() > 0.25
