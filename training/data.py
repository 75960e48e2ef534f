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


def _cached(kind: str, key: list, make) -> WindowSet:
    """The WindowSet ``make()`` builds, cached on disk under a hash of ``kind`` and every argument in ``key``."""
    digest = hashlib.sha256(json.dumps([kind, *key]).encode()).hexdigest()[:16]
    path = cache_dir() / f"{kind}-{digest}.npz"
    if path.is_file():
        return read_windows(path, vocabulary=None)
    ws = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_windows(path, ws)
    return ws


def synthetic(count: int, seed: int, sites: list[str] | str = "train", channels: int = 3,
              snr_db: tuple[float, float] = (-3.0, 30.0), families: tuple[str, ...] = CLASSES,
              fs: float = 4000.0, samples: int = 4096, cache: bool = True, regime: str = "high",
              mechanisms: str = "train") -> WindowSet:
    """Windows of the synthetic benchmark (cached on disk by their arguments)."""
    from training.synthetic.generate import GENERATOR_VERSION, generate_windows

    sites = [sites] if isinstance(sites, str) else list(sites)
    key = json.dumps([GENERATOR_VERSION, count, seed, sites, channels, list(snr_db), list(families), fs, samples,
                      regime, mechanisms])
    path = cache_dir() / f"windows-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if cache and path.is_file():
        return read_windows(path, vocabulary=None)
    print(f"generating {count} windows (seed {seed}, sites {','.join(sites)}, mechanisms {mechanisms}) ...",
          file=sys.stderr, flush=True)
    args = dict(sites=sites, fs=fs, channels=channels, samples=samples, families=tuple(families),
                snr_db=tuple(snr_db), regime=regime, mechanisms=mechanisms)
    bar = progress_bar(count, f"seed {seed}", "window")
    if bar is None:
        ws = generate_windows(count, seed, **args)
    else:  # each window has its own seed (seed, index): chunks give the same windows
        parts = []
        with bar:
            for start in range(0, count, 100):
                stop = min(count, start + 100)
                parts.append(generate_windows(count, seed, start=start, stop=stop, **args))
                bar.update(stop - start)
        ws = concat(parts)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_windows(path, ws)
    return ws


def crosscheck(count: int, seed: int, sites: list[str] | None = None, channels: int = 3,
               snr_db: tuple[float, float] = (-3.0, 30.0), families: tuple[str, ...] = CLASSES,
               fs: float = 4000.0, samples: int = 4096, regime: str = "high") -> WindowSet:
    """Windows of the independent crosscheck generator at the model's rate and length (cached), the onset
    where the regime puts it; ``sites`` restricts its site types (default: all eight)."""
    from training.crosscheck import VERSION, generate_windows
    from training.synthetic.sources import REGIMES

    reg = REGIMES[regime]

    def make() -> WindowSet:
        print(f"generating {count} crosscheck windows (seed {seed}) ...", file=sys.stderr, flush=True)
        return generate_windows(count, seed, fs=fs, channels=channels, samples=samples, pre_s=reg.onset_s,
                                pre_jitter_s=reg.onset_jitter_s, snr_db=tuple(snr_db), classes=tuple(families),
                                regime=regime, sites=None if sites is None else tuple(sites))

    return _cached("crosscheck", [VERSION, count, seed, sites, channels, list(snr_db), list(families), fs, samples,
                                  regime], make)


def gateway_cut(count: int, seed: int, sites: str = "wide", channels: int = 3,
                snr_db: tuple[float, float] = (-3.0, 30.0), fs: float = 4000.0, samples: int = 4096,
                regime: str = "high", mechanisms: str = "train", board_rates: list[float] | None = None) -> WindowSet:
    """Windows the gateway's trigger cut from synthetic streams (``training.gateway_cut``), cached."""
    from edge.gateway.config import TriggerConfig
    from training.gateway_cut import BOARD_RATES, EVENTS_PER_MIN, STREAM_S, gateway_cut_windows
    from training.synthetic.generate import GENERATOR_VERSION

    rates = list(board_rates or BOARD_RATES[regime])

    def make() -> WindowSet:
        print(f"cutting {count} windows with the gateway's trigger (seed {seed}, boards "
              f"{', '.join(f'{r:g}' for r in rates)} Hz) ...", file=sys.stderr, flush=True)
        return gateway_cut_windows(count, seed, fs=fs, samples=samples, channels=channels, site=sites,
                                   regime=regime, mechanisms=mechanisms, snr_db=tuple(snr_db),
                                   board_rates=tuple(rates))[0]

    key = [GENERATOR_VERSION, count, seed, sites, channels, list(snr_db), fs, samples, regime, mechanisms, rates,
           TriggerConfig().__dict__, EVENTS_PER_MIN[regime], STREAM_S[regime]]
    return _cached("gateway-cut", key, make)


SOURCES = {"synthetic": synthetic, "crosscheck": crosscheck, "gateway_cut": gateway_cut}


def generate(args: dict) -> WindowSet:
    """The windows one plan entry (``synthetic_plan``) describes: one source, or a ``mix`` of parts."""
    a = dict(args)
    source = a.pop("source", "synthetic")
    if source == "mix":
        parts = [generate(p) for p in a["parts"] if p["count"] > 0]
        return concat(parts)
    for k in ("generator", "name", "version"):  # a card's generator entry also names the generator
        a.pop(k, None)
    for k in ("snr_db", "families"):
        if k in a:
            a[k] = tuple(a[k])
    return SOURCES[source](**a)


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


SUITES = ("test", "heldout_sites", "heldout_mechanisms", "crosscheck", "lowsnr", "gateway_cut")  # + openset


def _listed(v: str | list[str]) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _heldout_sites(sites: str | list[str]) -> list[str]:
    """The held-out counterpart of the training sites: the held-out region of the wide distribution for
    ``wide``, the held-out named sites otherwise."""
    return ["wide-heldout"] if "wide" in _listed(sites) else ["heldout"]


def synthetic_plan(cfg: dict) -> dict[str, dict]:
    """The generator arguments of each split (stored in the model card, so that anyone can regenerate
    exactly the same sets): ``train``/``val`` mix the configured sources by share; the suites are
    ``test`` (in distribution, the synthetic benchmark as trained), ``heldout_sites``,
    ``heldout_mechanisms``, ``crosscheck`` (the independent generator; its held-out site types when
    it is in the training mix), ``lowsnr`` (-3..6 dB), ``gateway_cut`` (the gateway's trigger on test
    streams) and ``openset`` (unseen classes of both generators)."""
    from training.crosscheck import SITE_TYPES, UNSEEN
    from training.synthetic.sites import resolve_sites
    from training.synthetic.sources import EVALUATION_ONLY

    d, p = cfg["data"], cfg["preprocess"]
    common = {"channels": d["channels"], "fs": p["fs"], "samples": p["samples"], "regime": d["regime"]}
    snr = list(d["snr_db"])
    sites = _listed(d["sites"])
    xc_train = _listed(d["crosscheck_train_sites"])
    mix = d["mix"]
    xc_test = [s for s in SITE_TYPES if s not in xc_train] if mix["crosscheck"] > 0 else list(SITE_TYPES)

    def syn(count, seed, site_list=sites, mechanisms=d["mechanisms"], snr_db=snr, families=CLASSES) -> dict:
        return {"source": "synthetic", "count": count, "seed": seed, "sites": site_list, "mechanisms": mechanisms,
                "snr_db": snr_db, "families": list(families), **common}

    def xc(count, seed, site_list, families=CLASSES, snr_db=snr) -> dict:
        return {"source": "crosscheck", "count": count, "seed": seed, "sites": site_list, "snr_db": snr_db,
                "families": list(families), **common}

    def cut(count, seed) -> dict:
        # one recording chain (or named site) per stream: the wide distribution, else the first training site
        gsite = "wide" if "wide" in sites else resolve_sites(sites)[0]
        return {"source": "gateway_cut", "count": count, "seed": seed, "sites": gsite,
                "mechanisms": d["mechanisms"], "snr_db": snr, "board_rates": list(d["gateway_board_rates"]),
                **common}

    def mixed(count: int, seed: int) -> dict:
        shares = [(k, v) for k, v in mix.items() if v > 0]
        counts = [int(round(v * count)) for _, v in shares]
        counts[0] += count - sum(counts)
        make = {"synthetic": lambda n, s: syn(n, s), "crosscheck": lambda n, s: xc(n, s + 1_000_003, xc_train),
                "gateway_cut": lambda n, s: cut(n, s + 2_000_003)}
        parts = [make[k](n, seed) for (k, _), n in zip(shares, counts, strict=True)]
        if len(parts) == 1:
            return parts[0]
        return {"source": "mix", "count": count, "seed": seed, "shares": dict(mix), "parts": parts}

    half = d["openset_count"] // 2
    plan = {
        "train": mixed(d["train_count"], d["train_seed"]),
        "val": mixed(d["val_count"], d["val_seed"]),
        "test": syn(d["test_count"], d["test_seed"]),
        "heldout_sites": syn(d["heldout_count"], d["heldout_seed"], _heldout_sites(sites)),
        "heldout_mechanisms": syn(d["heldout_mechanisms_count"], d["heldout_mechanisms_seed"], mechanisms="heldout"),
        "crosscheck": xc(d["crosscheck_count"], d["crosscheck_seed"], xc_test),
        "lowsnr": syn(d["lowsnr_count"], d["lowsnr_seed"], mechanisms="all", snr_db=[-3.0, 6.0]),
        "gateway_cut": cut(d["gateway_cut_count"], d["gateway_cut_seed"]),
        "openset": {"source": "mix", "count": d["openset_count"], "seed": d["openset_seed"], "parts": [
            syn(d["openset_count"] - half, d["openset_seed"], sites + _heldout_sites(sites), mechanisms="all",
                families=EVALUATION_ONLY),
            xc(half, d["openset_seed"] + 1, list(SITE_TYPES), families=UNSEEN)]},
    }
    return {k: v for k, v in plan.items() if v["count"]}


def load_splits(cfg: dict, names: tuple[str, ...] | None = None) -> dict[str, WindowSet]:
    """The named splits of a config (all, or ``names``): train, val and (synthetic) the evaluation suites."""
    d = cfg["data"]
    if d["source"] == "synthetic":
        return {name: generate(a) for name, a in synthetic_plan(cfg).items() if names is None or name in names}
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
        splits["heldout_sites"] = read_windows(d["heldout"])
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
