"""Training configuration: TOML (tomllib) merged over defaults and validated.

Every error names the file, the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.vocabulary import CLASSES

DEFAULTS: dict[str, Any] = {
    "name": "stopewatch-triaxial",
    "version": "1.0.0",
    "seed": 1,
    # board rates (Hz) the model serves, [low, high], written to the card; [] = inferred from the
    # model's rate as for old cards (edge.gateway.model.board_rates_hz)
    "board_rates_hz": [],
    "data": {
        "source": "synthetic",  # "synthetic" (the generators) or "files" (datasets on disk)
        "channels": 3,
        "regime": "high",  # "high" (boards >= 2 kHz) or "low" (250-1000 Hz): sets the preprocess defaults
        "sites": "wide",  # "wide" (drawn recording chains), or named sites / groups (train, heldout, all)
        "mechanisms": "train",  # the synthetic mechanism set of training: train, heldout or all
        # Shares of the training and validation windows by source (summing to 1): the synthetic benchmark,
        # windows the gateway's own trigger cut from synthetic streams, the independent crosscheck generator.
        "mix": {"synthetic": 1.0, "gateway_cut": 0.0, "crosscheck": 0.0},
        # crosscheck site types drawn for training; the others are its held-out evaluation suite
        "crosscheck_train_sites": ["grouted_borehole_14hz", "stope_piezo_accelerometer", "high_gain_coarse_adc",
                                   "longwall_node_4p5hz", "open_pit_slope_14hz"],
        "gateway_board_rates": [],  # board rates (Hz) of the gateway-cut streams; empty: the regime's
        "snr_db": [-3.0, 30.0],
        "train_count": 12000,
        "val_count": 1500,
        "test_count": 3000,
        "heldout_count": 2400,  # the heldout_sites suite
        "heldout_mechanisms_count": 2400,
        "crosscheck_count": 2400,
        "lowsnr_count": 2400,
        "gateway_cut_count": 1200,
        "openset_count": 600,  # half from each generator's unseen classes
        "train_seed": 101,
        "val_seed": 202,
        "test_seed": 303,
        "heldout_seed": 404,
        "lowsnr_seed": 505,
        "openset_seed": 606,
        "heldout_mechanisms_seed": 707,
        "crosscheck_seed": 808,
        "gateway_cut_seed": 909,
        "train": "",  # paths, used when source = "files"
        "val": "",
        "test": "",
        "heldout": "",
        "val_fraction": 0.15,  # of "train" when "val" is empty
    },
    "preprocess": {"fs": 4000.0, "samples": 4096, "highpass_hz": 3.0, "lowpass_hz": 1800.0, "order": 4,
                   "clip": 16.0},
    "model": {
        "arch": "cnn",  # cnn, wide_cnn, deep_cnn, gru, attention, ref_cnn (training/net.py)
        "filters": [16, 32, 48, 64, 64],
        "kernels": [16, 9, 9, 5, 3],
        "strides": [4, 4, 2, 2, 2],
        "dropout": 0.15,
        "channel_policy": "",  # "" = zero_fill for triaxial (trained with channel dropout), first for uniaxial
    },
    "train": {
        "epochs": 32,
        "batch_size": 64,
        "learning_rate": 0.003,
        "patience": 8,
        "class_weight": "balanced",  # "balanced" or "none"
        "label_smoothing": 0.0,  # a known label's target: (1 - e) one-hot + e uniform
        # outlier exposure (training/outliers.py): windows no class makes, this share of the training set
        # per epoch, trained toward the uniform answer with this weight; 0 = off
        "outlier_share": 0.0,
        "outlier_weight": 0.5,
    },
    "augment": {
        "time_shift": 0.15,  # max shift as a fraction of the window
        "channel_gain": [0.85, 1.18],  # per-channel relative gain jitter
        "polarity": 0.5,  # probability of flipping the polarity of the whole window
        "background": 0.5,  # probability of adding another window's background
        "background_snr_db": [0.0, 25.0],
        "channel_dropout": 0.1,  # probability of silencing N and E (uniaxial robustness)
    },
    # No pruning: 55 % magnitude pruning changed nothing a target sees (bench/bench_pruning.py, the same small
    # run with and without: int8 .tflite 61,320 bytes both, 5.11 M MACs both, TFLM arena 33,536 bytes both,
    # LiteRT int8 latency 0.074 vs 0.078 ms) because int8 TFLite stores and multiplies the zeros; only a gzip
    # of the file shrank (34,500 vs 51,751 bytes), which no runtime reads; its epochs cost training time. A
    # value > 0 still runs the stage (tfmot magnitude pruning), for a runtime that skips zeros.
    "prune": {
        "final_sparsity": 0.0,
        "epochs": 8,
        "end_fraction": 0.5,  # the target sparsity is reached at this fraction of the pruning steps
        "frequency": 50,  # steps between mask updates (must be below the end step)
    },
    # `stopewatch train --init MODEL --data SITE_DATA` (training/adapt.py). Chosen by bench/bench_adaptation.py
    # at 32 labels per class (float macro-F1, 3 draws; bench/results/adaptation.json). With models 2.0.0 and
    # before, on the high-regime grouted boreholes: training every layer (0.81 at lr 0.001) beat freezing the
    # trunk (0.74) or all but the last block (0.77); lr 0.003 (0.83) beat 0.001 and 0.0003 (0.78); kept masks
    # hold the sparsity at no extra stage (tfmot re-pruning: 0.83 +- 0.03); replay (0.835) and AdaBN off
    # (0.833) were within noise; balanced weights help on an imbalanced draw (0.82 vs 0.81). With 2.1.0, on
    # the crosscheck low regime with bolted 28 Hz geophones (the 40-epoch recipe: 0.831 +- 0.012): 80 epochs
    # 0.844 +- 0.011 (better on every draw, so adopted; 160: 0.849, within noise of 80 at twice the time);
    # LP-FT (10 head epochs, then lr 0.001 / 0.003) 0.830 / 0.842; L2-SP 1 / 10: 0.832 / 0.809; two augmented
    # copies with site noise on 90 % 0.834; early stopping at 80 epochs on 15 % of the draw held out 0.769
    # (the held-out windows are missed more than the stopping gains); lr 0.01 0.809; batch 8 0.834; LP-FT +
    # 80 epochs 0.843; mixup 0.2 + 80 epochs 0.830. Batch 16 so 192 windows still make ~1000 steps.
    "finetune": {
        "epochs": 80,
        "learning_rate": 0.003,
        "batch_size": 16,
        "freeze": "none",  # none, trunk (every conv block) or all_but_last
        "augment": True,  # the training's shift/gain/polarity, background from the site's own noise windows
        "class_weight": "balanced",
        "adabn": True,  # re-estimate BatchNorm statistics on the site windows first
        "prune": "masks",  # masks (keep the base model's zeros), reprune (tfmot, prune_epochs) or none
        "prune_epochs": 3,
        "replay": 0.0,  # synthetic training windows replayed per site window (0 = none)
        "lp_epochs": 0,  # LP-FT: epochs training only the classifier head (trunk frozen) before the full fine-tune
        "lp_learning_rate": 0.003,  # ... at this learning rate (constant)
        "l2_sp": 0.0,  # L2-SP: per-step pull of every kernel toward the base model's (x the learning rate; 0 = off)
        "augment_copies": 1,  # augmented copies of each site window per epoch
        "site_noise": 0.5,  # probability of mixing one of the site's own noise windows into a window
        "mixup": 0.0,  # mixup of site windows and their labels, Beta(a, a) mixing weights (0 = off)
        "patience": 0,  # early stopping on the held-out site split's macro-F1 (best epoch restored; 0 = fixed epochs)
        # Self-training, when unlabelled site windows are given too (`--data L --adapt-unlabelled U`): AdaBN on
        # labelled + unlabelled windows, the fine-tune, then per round the unlabelled windows pseudo-labelled
        # by the last model (class-balanced: the top `pseudo_per_class` of each predicted class with a top
        # probability >= `pseudo_confidence`) and a fresh fine-tune from the base on labels + pseudo-labels
        # (augmented alike, weighted `pseudo_weight`). Measured by bench/bench_adaptation.py --stages selftrain
        # (32 labels per class + 600 unlabelled windows, 3 draws, int8): labels alone 0.835 +- 0.015, one round
        # 0.854 +- 0.001 (better on every draw, +0.003 to +0.039; 96-97 % of its pseudo-labels right), two rounds
        # 0.847 +- 0.006; AdaBN with the unlabelled windows before the fine-tune alone changed nothing (the
        # BatchNorm layers train, so their statistics are re-learned from the batches).
        "self_training_rounds": 1,  # pseudo-labelling rounds (0 = off: the unlabelled windows only join AdaBN)
        "pseudo_per_class": 50,  # at most this many pseudo-labels per predicted class and round
        "pseudo_confidence": 0.5,  # ... each with a top softmax probability >= this
        "pseudo_weight": 1.0,  # sample weight of a pseudo-labelled window relative to a labelled one
    },
    "quantize": {
        "representative": 400,
        "max_f1_loss": 0.005,
        "qat_epochs": 3,
    },
    "calibration": {
        "reject_fraction": 0.01,  # legacy unknown_threshold: share of correct validation windows below it
    },
    "decision": {  # the card's `decision_bias`: logit offsets that minimise the mine's cost of errors
        "fit": True,
        "shift": ["microseismic", "blast"],  # the classes whose logits are offset (the others stay 0)
        "microseismic_missed": 8.0,  # a rock fracture answered anything else
        "microseismic_called_blast": 20.0,  # ... answered blast: it leaves the rock-burst catalogue
        "false_microseismic": 2.0,  # a non-seismic window answered microseismic (a false alarm)
        "other": 1.0,  # every other error
    },
    "open_set": {  # the card's `open_set` rule, which the gateway uses to answer `unknown`
        "score": "msp",  # msp, energy, max_logit or mahalanobis (all four are compared in the report)
        "reject_fraction": 0.05,  # share of known validation windows answered `unknown`
        "energy_temperature": 1.0,
    },
    "targets": {  # `stopewatch train` exits 3 when one is missed (unless --allow-missed)
        "test_macro_f1": 0.97,  # >= in-distribution macro-F1 (int8)
        "ood_macro_f1": 0.90,  # >= macro-F1 of each out-of-distribution suite
        "microseismic_recall": 0.95,  # >= on every suite
        "microseismic_called_blast": 0.02,  # <= on every suite
        "openset_unknown_fraction": 0.80,  # >= share of unseen-class windows answered unknown
        "openset_known_unknown_fraction": 0.05,  # <= share of known (test) windows answered unknown
        "int8_f1_loss": 0.005,  # <= macro-F1 lost by int8 vs float TFLite
        "ece_after": 0.03,  # <= ECE after temperature scaling
        "int8_kbytes": 64.0,  # <= int8 .tflite size
        "int8_latency_ms": 1.0,  # <= int8 latency per window, one core
        "int8_faster_than_float": True,
    },
    "report": {
        "latency_runs": 300,
        "baselines": True,
        "robustness": True,
        "label_efficiency": False,
        "label_sizes": [64, 128, 256, 512],
        "seeds": 1,  # extra full runs with other seeds for mean/spread (>= 3 for the shipped models)
    },
}

MIX_SOURCES = ("synthetic", "gateway_cut", "crosscheck")
# Preprocessing defaults of each rate regime, used for the keys a config does not set itself.
REGIME_PREPROCESS = {"high": {"fs": 4000.0, "samples": 4096, "highpass_hz": 3.0, "lowpass_hz": 1800.0},
                     "low": {"fs": 500.0, "samples": 4096, "highpass_hz": 0.5, "lowpass_hz": 200.0}}
_NAME_LISTS = {"data.sites", "data.crosscheck_train_sites"}  # a name or a list of names

_CHOICES = {
    ("data", "source"): ("synthetic", "files"),
    ("data", "regime"): tuple(REGIME_PREPROCESS),
    ("data", "mechanisms"): ("train", "heldout", "all"),
    ("data", "channels"): (1, 3),
    ("train", "class_weight"): ("balanced", "none"),
    ("model", "channel_policy"): ("", "strict", "first", "zero_fill", "any"),
    ("model", "arch"): ("cnn", "wide_cnn", "deep_cnn", "gru", "attention", "ref_cnn"),
    ("open_set", "score"): ("msp", "energy", "max_logit", "mahalanobis"),
    ("finetune", "freeze"): ("none", "trunk", "all_but_last"),
    ("finetune", "class_weight"): ("balanced", "none"),
    ("finetune", "prune"): ("masks", "reprune", "none"),
}


def _merge(base: dict, over: dict, path: str, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        kp = f"{path}.{key}" if path else key
        if key not in base:
            raise UserError(f"{where}: unknown key '{kp}'; allowed here: {', '.join(sorted(base))}")
        want = base[key]
        if kp == "data.mix":
            out[key] = _mix(value, where)
            continue
        if kp in _NAME_LISTS:
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or not all(isinstance(v, str) for v in names):
                raise UserError(f"{where}: key '{kp}' = {value!r}; expected a name or a list of names")
            out[key] = value
            continue
        if isinstance(want, dict):
            if not isinstance(value, dict):
                raise UserError(f"{where}: key '{kp}' must be a table, got {value!r}")
            out[key] = _merge(want, value, kp, where)
            continue
        if isinstance(want, bool):
            ok = isinstance(value, bool)
        elif isinstance(want, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(want, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(want, list):
            ok = isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)
        else:
            ok = isinstance(value, type(want))
        if not ok:
            raise UserError(f"{where}: key '{kp}' = {value!r}; expected {type(want).__name__} like {want!r}")
        choices = _CHOICES.get(tuple(kp.split(".")))
        if choices is not None and value not in choices:
            raise UserError(f"{where}: key '{kp}' = {value!r}; allowed: {', '.join(map(repr, choices))}")
        out[key] = value
    return out


def _mix(value: object, where: str) -> dict[str, float]:
    """The ``data.mix`` table: every source's share (missing sources get 0), shares summing to 1."""
    if not isinstance(value, dict):
        raise UserError(f"{where}: key 'data.mix' must be a table like {{synthetic = 0.7, gateway_cut = 0.3}}")
    bad = sorted(set(value) - set(MIX_SOURCES))
    if bad:
        raise UserError(f"{where}: key 'data.mix.{bad[0]}': unknown source; allowed: {', '.join(MIX_SOURCES)}")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise UserError(f"{where}: key 'data.mix.{k}' = {v!r}; expected a share >= 0")
    total = sum(float(v) for v in value.values())
    if abs(total - 1.0) > 1e-3:
        raise UserError(f"{where}: key 'data.mix' = {value!r}; the shares must sum to 1 (they sum to {total:g})")
    return {k: float(value.get(k, 0.0)) for k in MIX_SOURCES}


def _check(cfg: dict, where: str) -> None:
    def bad(kp: str, value: Any, allowed: str) -> UserError:
        return UserError(f"{where}: key '{kp}' = {value!r}; allowed: {allowed}")

    m = cfg["model"]
    if not (len(m["filters"]) == len(m["kernels"]) == len(m["strides"]) >= 1):
        raise bad("model.filters", m["filters"], "lists filters/kernels/strides of equal, non-zero length")
    if not 0 <= m["dropout"] < 1:
        raise bad("model.dropout", m["dropout"], "0 <= dropout < 1")
    p = cfg["prune"]
    if not 0 <= p["final_sparsity"] < 1:
        raise bad("prune.final_sparsity", p["final_sparsity"], "0 <= sparsity < 1")
    if not 0 < p["end_fraction"] <= 1:
        raise bad("prune.end_fraction", p["end_fraction"], "0 < fraction <= 1")
    if p["epochs"] < 1 or p["frequency"] < 1:
        raise bad("prune.epochs", p["epochs"], "epochs >= 1 and frequency >= 1")
    for k in ("epochs", "batch_size", "patience"):
        if cfg["train"][k] < 1:
            raise bad(f"train.{k}", cfg["train"][k], "an integer >= 1")
    if not 0 <= cfg["train"]["label_smoothing"] < 1:
        raise bad("train.label_smoothing", cfg["train"]["label_smoothing"], "0 <= smoothing < 1")
    if not 0 <= cfg["train"]["outlier_share"] <= 1:
        raise bad("train.outlier_share", cfg["train"]["outlier_share"], "a share of the training set in 0..1")
    if not 0 <= cfg["train"]["outlier_weight"] < 1e3:
        raise bad("train.outlier_weight", cfg["train"]["outlier_weight"], "a loss weight >= 0")
    f = cfg["finetune"]
    for k in ("epochs", "batch_size", "augment_copies"):
        if f[k] < 1:
            raise bad(f"finetune.{k}", f[k], "an integer >= 1")
    for k in ("lp_epochs", "patience", "prune_epochs", "self_training_rounds"):
        if f[k] < 0:
            raise bad(f"finetune.{k}", f[k], "an integer >= 0")
    for k in ("learning_rate", "lp_learning_rate"):
        if not 0 < f[k] < 1:
            raise bad(f"finetune.{k}", f[k], "a learning rate, 0 < rate < 1")
    for k in ("l2_sp", "replay", "mixup"):
        if f[k] < 0:
            raise bad(f"finetune.{k}", f[k], "a value >= 0")
    if f["pseudo_per_class"] < 1:
        raise bad("finetune.pseudo_per_class", f["pseudo_per_class"], "an integer >= 1")
    if not 0 <= f["pseudo_confidence"] < 1:
        raise bad("finetune.pseudo_confidence", f["pseudo_confidence"], "a probability, 0 <= p < 1")
    if not 0 < f["pseudo_weight"] <= 100:
        raise bad("finetune.pseudo_weight", f["pseudo_weight"], "a weight, 0 < weight <= 100")
    if not 0 <= f["site_noise"] <= 1:
        raise bad("finetune.site_noise", f["site_noise"], "a probability in 0..1")
    rates = cfg["board_rates_hz"]
    if rates and not (len(rates) == 2 and 0 < rates[0] <= rates[1]):
        raise bad("board_rates_hz", rates, "[LOW, HIGH] board rates in Hz with 0 < LOW <= HIGH, or [] to infer")
    for k in ("snr_db",):
        v = cfg["data"][k]
        if len(v) != 2 or v[0] > v[1]:
            raise bad(f"data.{k}", v, "[LOW, HIGH] with LOW <= HIGH")
    a = cfg["augment"]
    for k in ("channel_gain", "background_snr_db"):
        if len(a[k]) != 2 or a[k][0] > a[k][1]:
            raise bad(f"augment.{k}", a[k], "[LOW, HIGH] with LOW <= HIGH")
    for k in ("polarity", "background", "channel_dropout", "time_shift"):
        if not 0 <= a[k] <= 1:
            raise bad(f"augment.{k}", a[k], "a probability/fraction in 0..1")
    d = cfg["decision"]
    for k in ("microseismic_missed", "microseismic_called_blast", "false_microseismic", "other"):
        if not (isinstance(d[k], int | float) and 0 <= d[k] < 1e6):
            raise bad(f"decision.{k}", d[k], "a cost >= 0 (every other error costs `other`)")
    unknown = [c for c in d["shift"] if c not in CLASSES]
    if unknown or not 1 <= len(d["shift"]) <= 3:
        raise bad("decision.shift", d["shift"], f"1 to 3 of {', '.join(CLASSES)}")
    o = cfg["open_set"]
    if not 0 < o["reject_fraction"] < 1:
        raise bad("open_set.reject_fraction", o["reject_fraction"], "a share of known windows, 0 < share < 1")
    if not o["energy_temperature"] > 0:
        raise bad("open_set.energy_temperature", o["energy_temperature"], "a temperature > 0")
    if cfg["report"]["seeds"] < 1:
        raise bad("report.seeds", cfg["report"]["seeds"], "an integer >= 1")
    d = cfg["data"]
    if d["source"] == "files" and not d["train"]:
        raise bad("data.train", d["train"], "a dataset path when data.source = 'files'")
    if d["source"] == "synthetic":
        for k in ("train_count", "val_count", "test_count"):
            if d[k] < len(CLASSES):
                raise bad(f"data.{k}", d[k], f"at least {len(CLASSES)} windows (one per class)")
        from training.crosscheck import SITE_TYPES
        from training.synthetic.sites import resolve_sites
        try:
            resolve_sites([d["sites"]] if isinstance(d["sites"], str) else list(d["sites"]))
        except UserError as exc:
            raise bad("data.sites", d["sites"], str(exc).split("allowed: ", 1)[-1]) from None
        xs = [d["crosscheck_train_sites"]] if isinstance(d["crosscheck_train_sites"], str) \
            else d["crosscheck_train_sites"]
        unknown = [s for s in xs if s not in SITE_TYPES]
        if unknown:
            raise bad("data.crosscheck_train_sites", unknown[0], ", ".join(SITE_TYPES))
        if any(r <= 0 for r in d["gateway_board_rates"]):
            raise bad("data.gateway_board_rates", d["gateway_board_rates"], "board rates in Hz, > 0")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the TOML file at ``path`` (if given), then ``overrides``; validated."""
    cfg = copy.deepcopy(DEFAULTS)
    where = "defaults"
    user: dict = {}
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            with open(path, "rb") as f:
                user = tomllib.load(f)
        except FileNotFoundError:
            raise UserError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path}: not valid TOML ({exc})") from None
        cfg = _merge(cfg, user, "", where)
    if overrides:
        cfg = _merge(cfg, overrides, "", f"{where} (overrides)")
    # The rate regime decides the preprocessing a config leaves unset (a low-rate board model: 500 Hz).
    given = {**user.get("preprocess", {}), **(overrides or {}).get("preprocess", {})}
    for k, v in REGIME_PREPROCESS[cfg["data"]["regime"]].items():
        if k not in given:
            cfg["preprocess"][k] = v
    _check(cfg, where)
    if not cfg["model"]["channel_policy"]:
        cfg["model"]["channel_policy"] = "zero_fill" if cfg["data"]["channels"] == 3 else "first"
    return cfg
