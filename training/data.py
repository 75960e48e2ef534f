"""Datasets for training and evaluation: the synthetic benchmark or a mine's own records.

Windows are brought to the model's rate, length and channel count, detrended and
band-passed once (``edge.gateway.preprocess.filter_windows``); augmentation then applies
only linear operations (shift, gain, polarity, added background, channel dropout)
to the filtered traces, which commute with the filter, before ``normalise``.
So the network trains on exactly what ``edge.gateway.preprocess.preprocess`` gives the gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.formats import WindowSet, read_windows, write_windows
from edge.gateway.preprocess import PreprocessParams, adapt_channels, filter_windows, fit_length, normalise, resample
from edge.vocabulary import CLASSES


def progress_bar(total: int, desc: str, unit: str):
    """A tqdm bar on stderr when stderr is a terminal (a person watching), else None (logs stay clean)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)


def cache_dir() -> Path:
    """Where generated datasets are cached (STOPEWATCH_CACHE, default ~/.cache/stopewatch)."""
    return Path(os.environ.get("STOPEWATCH_CACHE", Path.home() / ".cache" / "stopewatch"))


def synthetic(count: int, seed: int, sites: list[str] | str = "train", channels: int = 3,
              snr_db: tuple[float, float] = (-3.0, 30.0), families: tuple[str, ...] = CLASSES,
              fs: float = 4000.0, samples: int = 4096, cache: bool = True, regime: str = "high") -> WindowSet:
    """Windows of the synthetic benchmark (cached on disk by their arguments)."""
    from training.synthetic.generate import GENERATOR_VERSION, generate_windows

    sites = [sites] if isinstance(sites, str) else list(sites)
    key = [GENERATOR_VERSION, count, seed, sites, channels, list(snr_db), list(families), fs, samples]
    key = json.dumps(key if regime == "high" else [*key, regime])  # high-regime caches keep their names
    path = cache_dir() / f"windows-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if cache and path.is_file():
        return read_windows(path, vocabulary=None)
    print(f"generating {count} windows (seed {seed}, sites {','.join(sites)}) ...", file=sys.stderr, flush=True)
    bar = progress_bar(count, f"seed {seed}", "window")
    if bar is None:
        ws = generate_windows(count, seed, sites=sites, fs=fs, channels=channels, samples=samples,
                              families=tuple(families), snr_db=tuple(snr_db), regime=regime)
    else:  # each window has its own seed (seed, index): chunks give the same windows
        parts = []
        with bar:
            for start in range(0, count, 100):
                stop = min(count, start + 100)
                parts.append(generate_windows(count, seed, sites=sites, fs=fs, channels=channels, samples=samples,
                                              families=tuple(families), snr_db=tuple(snr_db), start=start, stop=stop,
                                              regime=regime))
                bar.update(stop - start)
        ws = concat(parts)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_windows(path, ws)
    return ws


def concat(parts: list[WindowSet]) -> WindowSet:
    """One WindowSet from several with the same rate and shape."""
    def cat(name):
        vals = [getattr(p, name) for p in parts]
        return None if any(v is None for v in vals) else np.concatenate(vals)
    return WindowSet(np.concatenate([p.waveforms for p in parts]), np.concatenate([p.labels for p in parts]),
                     parts[0].fs, cat("snr_db"), cat("site"), cat("time"))


def split_holdout(ws: WindowSet, fraction: float, seed: int) -> tuple[WindowSet, WindowSet]:
    """(rest, holdout): chronological when windows carry times (later windows held out, so that
    windows of one event or one day do not land on both sides), else stratified random."""
    n = len(ws)
    k = max(1, int(round(fraction * n)))
    if ws.time is not None:
        order = np.argsort(ws.time.astype(str), kind="stable")
        hold = order[n - k:]
    else:
        rng = np.random.default_rng(seed)
        hold = []
        for c in np.unique(ws.labels):
            idx = np.flatnonzero(ws.labels == c)
            rng.shuffle(idx)
            hold.extend(idx[: max(1, int(round(fraction * len(idx))))])
        hold = np.asarray(hold)
    mask = np.zeros(n, dtype=bool)
    mask[hold] = True
    return ws.subset(~mask), ws.subset(mask)


def synthetic_plan(cfg: dict) -> dict[str, dict]:
    """The generator arguments of each synthetic split (stored in the model card, so that anyone can
    regenerate exactly the same test sets)."""
    d, p = cfg["data"], cfg["preprocess"]
    common = {"channels": d["channels"], "fs": p["fs"], "samples": p["samples"]}
    if d["regime"] != "high":  # the high regime's plans (and the shipped cards) stay as they were
        common["regime"] = d["regime"]
    snr = list(d["snr_db"])
    train, held = (d["sites"], "heldout") if d["sites"] == "train" else ("wide", "wide-heldout")
    every = "all" if d["sites"] == "train" else [train, held]
    plan = {
        "train": {"count": d["train_count"], "seed": d["train_seed"], "sites": train, "snr_db": snr},
        "val": {"count": d["val_count"], "seed": d["val_seed"], "sites": train, "snr_db": snr},
        "test": {"count": d["test_count"], "seed": d["test_seed"], "sites": train, "snr_db": snr},
        "heldout": {"count": d["heldout_count"], "seed": d["heldout_seed"], "sites": held, "snr_db": snr},
        "lowsnr": {"count": d["lowsnr_count"], "seed": d["lowsnr_seed"], "sites": every, "snr_db": [-3.0, 6.0]},
        "openset": {"count": d["openset_count"], "seed": d["openset_seed"], "sites": every, "snr_db": snr,
                    "families": ["rockfall"]},
    }
    return {k: {**v, **common, "families": v.get("families", list(CLASSES))} for k, v in plan.items() if v["count"]}


def load_splits(cfg: dict) -> dict[str, WindowSet]:
    """The named splits of a config: train, val, test, and (synthetic) heldout, lowsnr, openset."""
    d = cfg["data"]
    if d["source"] == "synthetic":
        return {name: synthetic(a["count"], a["seed"], a["sites"], channels=a["channels"], snr_db=tuple(a["snr_db"]),
                                families=tuple(a["families"]), fs=a["fs"], samples=a["samples"],
                                regime=a.get("regime", "high"))
                for name, a in synthetic_plan(cfg).items()}
    train = read_windows(d["train"])
    splits = {}
    if d["test"]:
        splits["test"] = read_windows(d["test"])
    else:
        train, splits["test"] = split_holdout(train, 0.2, cfg["seed"])
    if d["val"]:
        splits["val"] = read_windows(d["val"])
    else:
        train, splits["val"] = split_holdout(train, d["val_fraction"], cfg["seed"] + 1)
    splits["train"] = train
    if d["heldout"]:
        splits["heldout"] = read_windows(d["heldout"])
    for name, ws in splits.items():
        missing = sorted(set(CLASSES) - set(ws.labels.tolist()))
        if name == "train" and missing:
            raise UserError(f"data.train: classes {missing} have no windows; every class needs examples")
    return splits


@dataclass
class Prepared:
    """Filtered (not yet normalised) windows (n, channels, samples) with integer labels."""

    x: np.ndarray
    y: np.ndarray
    source: WindowSet


def prepare(ws: WindowSet, params: PreprocessParams, channels: int, policy: str) -> Prepared:
    """Resample, fit length, adapt channels, detrend and band-pass (chunked, float32)."""
    index = {c: i for i, c in enumerate(CLASSES)}
    y = np.array([index.get(str(label), -1) for label in ws.labels], dtype=np.int64)
    out = np.empty((len(ws), channels, params.samples), dtype=np.float32)
    for s in range(0, len(ws), 1000):
        part = ws.waveforms[s:s + 1000]
        part = adapt_channels(fit_length(resample(part, ws.fs, params.fs), params.samples), channels, policy)
        out[s:s + 1000] = filter_windows(part, params)
    return Prepared(out, y, ws)


def to_model_input(filtered: np.ndarray, clip: float) -> np.ndarray:
    """Normalise filtered windows and lay them out for the network: (n, samples, channels)."""
    return np.ascontiguousarray(np.transpose(normalise(filtered, clip), (0, 2, 1)))


def augment(x: np.ndarray, rng: np.random.Generator, aug: dict, background: np.ndarray | None) -> np.ndarray:
    """Random linear augmentations of filtered windows (n, channels, samples); returns a new array."""
    n, c, s = x.shape
    out = x.copy()
    if aug["time_shift"] > 0:
        max_shift = int(aug["time_shift"] * s)
        shifts = rng.integers(-max_shift, max_shift + 1, n)
        for i in range(n):
            out[i] = np.roll(out[i], shifts[i], axis=-1)
    # Small per-channel gain jitter (sensor calibration), polarity flipped for the whole window: a
    # per-channel flip or a large gain spread would erase the common-mode signature of electrical pickup.
    lo, hi = aug["channel_gain"]
    gains = np.exp(rng.uniform(np.log(lo), np.log(hi), (n, c, 1))).astype(np.float32)
    flips = np.where(rng.random((n, 1, 1)) < aug["polarity"], -1.0, 1.0).astype(np.float32)
    out *= gains * flips
    if background is not None and len(background) and aug["background"] > 0:
        add = np.flatnonzero(rng.random(n) < aug["background"])
        if add.size:
            pick = background[rng.integers(0, len(background), add.size)]
            pick = np.roll(pick, int(rng.integers(0, s)), axis=-1)
            rms_x = np.sqrt(np.mean(out[add] ** 2, axis=(1, 2), keepdims=True)) + 1e-30
            rms_b = np.sqrt(np.mean(pick ** 2, axis=(1, 2), keepdims=True)) + 1e-30
            snr = rng.uniform(*aug["background_snr_db"], (add.size, 1, 1))
            out[add] += pick * (rms_x / rms_b * 10 ** (-snr / 20)).astype(np.float32)
    if c > 1 and aug["channel_dropout"] > 0:
        drop = rng.random(n) < aug["channel_dropout"]
        out[drop, 1:] = 0.0
    return out


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced weights n / (k * count_c) (zero-count classes get weight 0)."""
    counts = np.bincount(y[y >= 0], minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)
