"""Adapting a trained model to one mine: few-label fine-tuning and the unlabelled path.

Fine-tuning (:func:`finetune`) runs a fixed number of epochs on the site's labelled windows by default --
with a few dozen windows per class, holding some out to stop early cost more than it gained
(bench/bench_adaptation.py) -- with the choices of the ``[finetune]`` table: which layers are frozen,
learning rate, epochs, batch size, the training's augmentation (background drawn from the site's own
noise windows, optionally several copies per epoch and mixup), class weighting, a replay of synthetic
windows against forgetting, BatchNorm statistics re-estimated on the site first (AdaBN), how the pruning
survives (the base model's zero masks kept at every step, tfmot pruning re-applied after, or neither),
and, off by default because they did not help there, LP-FT (the head alone first), L2-SP (a pull toward
the starting weights) and early stopping on the held-out site split.

With unlabelled site windows as well (``--data L --adapt-unlabelled U``), :func:`self_train` runs the
fine-tune with AdaBN on labelled and unlabelled windows and then, for ``self_training_rounds`` rounds,
pseudo-labels the unlabelled windows (:func:`pseudo_labels`: class-balanced, the most confident per
predicted class) and fine-tunes afresh from the base on labels plus pseudo-labels.

The unlabelled path (:func:`adapt_unlabelled`, ``stopewatch train --init MODEL --adapt-unlabelled DIR``)
needs no labels: the BatchNorm statistics of every block are re-estimated on the mine's windows (they
fold into the convolutions at conversion, so the int8 model pays nothing) and the int8 model is
re-exported with a representative set drawn from those windows. Calibration stays the source domain's
unless the windows carry labels.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.formats import WindowSet, iter_unlabelled, read_npz, read_windows, window_files
from edge.gateway.model import CARD, TFLITE, sha256_file, softmax, tflite_logits
from edge.gateway.preprocess import PreprocessParams
from edge.vocabulary import CLASSES
from training import data as D
from training import metrics as M

FREEZE = ("none", "trunk", "all_but_last")  # nothing / every conv block / every block but the last
PRUNE = ("masks", "reprune", "none")  # keep the base zeros each step / tfmot constant sparsity after / dense


# --------------------------------------------------------------------------- the model
def card_of(model_dir: Path) -> dict:
    """The model card of a trained model directory (one line naming the file when it is not one)."""
    from training.train import WEIGHTS

    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS).is_file() or not (model_dir / CARD).is_file():
        raise UserError(f"--init {model_dir}: not a trained model directory (needs {WEIGHTS} and {CARD})")
    return json.loads((model_dir / CARD).read_text())


def load_base(model_dir: Path):
    """The Keras model of a trained model directory (architecture from its card, weights from its .h5)."""
    from training.net import build_model
    from training.train import WEIGHTS

    card = card_of(model_dir)
    model = build_model(int(card["channels"]), int(card["samples"]), len(CLASSES), card["config"]["model"])
    model.load_weights(str(Path(model_dir) / WEIGHTS))
    return model


def blocks(model) -> int:
    """Number of conv blocks (``conv{i}``/``bn{i}``) of the network."""
    return sum(1 for layer in model.layers if layer.name.startswith("conv"))


def set_frozen(model, freeze: str) -> None:
    """Freeze nothing, the whole conv trunk, or every block but the last (frozen BatchNorm layers run in
    inference mode, on their stored statistics)."""
    if freeze not in FREEZE:
        raise UserError(f"finetune.freeze = {freeze!r}; allowed: {', '.join(FREEZE)}")
    n = blocks(model)
    frozen = {"none": 0, "trunk": n, "all_but_last": n - 1}[freeze]
    for layer in model.layers:
        if layer.name.startswith(("conv", "bn")):
            layer.trainable = int(layer.name[-1]) >= frozen if layer.name[-1].isdigit() else True
        else:
            layer.trainable = True


def reestimate_batchnorm(model, x: np.ndarray, batch: int = 128) -> dict:
    """AdaBN: each BatchNorm layer's moving mean and variance set to the statistics of its input over
    ``x`` (model input, (n, samples, channels)), block by block so that each sees the re-normalised
    output of the blocks before it. Returns the mean shift per layer (in source standard deviations)."""
    _, keras, _ = tensorflow_keras()
    shifts = {}
    for i in range(blocks(model)):
        bn = model.get_layer(f"bn{i}")
        probe = keras.Model(model.input, model.get_layer(f"conv{i}").output)
        s1 = s2 = None
        count = 0
        for a in range(0, len(x), batch):
            z = np.asarray(probe(x[a:a + batch], training=False), dtype=np.float64)
            z = z.reshape(-1, z.shape[-1])
            s1 = z.sum(0) if s1 is None else s1 + z.sum(0)
            s2 = (z ** 2).sum(0) if s2 is None else s2 + (z ** 2).sum(0)
            count += len(z)
        mean = s1 / count
        var = np.maximum(s2 / count - mean ** 2, 0.0)
        old_mean, old_var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        shifts[bn.name] = float(np.mean(np.abs(mean - old_mean) / np.sqrt(old_var + bn.epsilon)))
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(var.astype(np.float32))
    return shifts


def tensorflow_keras():
    """(tf, tf_keras, tfmot), imported quietly with Keras 2."""
    from training.tf_env import tensorflow
    return tensorflow()


def kernel_masks(model) -> dict[str, np.ndarray]:
    """Non-zero pattern of every Conv1D/Dense kernel (the pruning masks of a pruned model)."""
    return {layer.name: (layer.kernel.numpy() != 0).astype(np.float32) for layer in model.layers
            if type(layer).__name__ in ("Conv1D", "Dense")}


def _mask_callback(model, masks: dict[str, np.ndarray]):
    """Re-zero the pruned weights after every step (the optimizer's update moves them off zero)."""
    _, keras, _ = tensorflow_keras()
    layers = [(model.get_layer(k), v) for k, v in masks.items()]

    class KeepMasks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for layer, m in layers:
                layer.kernel.assign(layer.kernel * m)

    return KeepMasks()


# --------------------------------------------------------------------------- fine-tuning
def replay_windows(count: int, seed: int, params: PreprocessParams, channels: int, policy: str) -> D.Prepared:
    """``count`` synthetic training-site windows (balanced classes), filtered for the network."""
    ws = D.synthetic(count, seed, "train", channels=channels, fs=params.fs, samples=params.samples)
    return D.prepare(ws, params, channels, policy)


def _l2sp_callback(model, lr_of):
    """L2-SP, decoupled: after every step each kernel moves toward the base model's by ``lr * l2_sp`` of the
    difference (weight decay toward the pretrained weights instead of toward zero)."""
    _, keras, _ = tensorflow_keras()
    layers = [(layer, layer.kernel.numpy()) for layer in model.layers if type(layer).__name__ in ("Conv1D", "Dense")]

    class PullToBase(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            keep = 1.0 - min(1.0, lr_of())
            for layer, w0 in layers:
                layer.kernel.assign(w0 + (layer.kernel - w0) * keep)

    return PullToBase()


def finetune(model, site: D.Prepared, cfg: dict, rng: np.random.Generator, *, replay: D.Prepared | None = None,
             x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, phase: str = "finetune",
             adabn_x: np.ndarray | None = None, pseudo: D.Prepared | None = None) -> list[dict]:
    """Fine-tune ``model`` in place on the site's filtered windows with ``cfg['finetune']``: optionally
    ``lp_epochs`` of the classifier head alone (LP-FT), then ``epochs`` of the layers ``freeze`` leaves
    trainable with a cosine learning rate, optionally pulled toward the base weights (``l2_sp``). Validation
    macro-F1 per epoch is recorded when given, and with ``patience`` > 0 stops the fine-tune and restores the
    best epoch. AdaBN runs on ``adabn_x`` (filtered windows; default the site's labelled ones); ``pseudo``
    (pseudo-labelled site windows) are trained on with the labelled ones, weighted ``pseudo_weight``, with
    the same augmentation. Returns the epoch history."""
    from training.train import log

    ft = cfg["finetune"]
    clip = cfg["preprocess"]["clip"]
    masks = kernel_masks(model) if ft["prune"] == "masks" else None
    if ft["adabn"]:
        reestimate_batchnorm(model, D.to_model_input(site.x if adabn_x is None else adabn_x, clip))
    x, y = site.x, site.y
    is_pseudo = np.zeros(len(y), bool)
    if pseudo is not None and len(pseudo.y):
        x, y = np.concatenate([x, pseudo.x]), np.concatenate([y, pseudo.y])
        is_pseudo = np.concatenate([is_pseudo, np.ones(len(pseudo.y), bool)])
    w_site = D.class_weights(y, len(CLASSES)) if ft["class_weight"] == "balanced" else np.ones(len(CLASSES),
                                                                                                np.float32)
    sw = w_site[y] * np.where(is_pseudo, ft["pseudo_weight"], 1.0).astype(np.float32)
    if replay is not None and len(replay.x):
        x = np.concatenate([x, replay.x])
        y = np.concatenate([y, replay.y])
        # replayed windows weigh as much in total as the site's own: the site stays the target
        sw = np.concatenate([sw, np.full(len(replay.y), len(site.y) / len(replay.y), np.float32)])
    # the augmentation's background: the site's own labelled noise windows (not pseudo-labelled ones)
    background = site.x[site.y == CLASSES.index("noise")]  # the site's own background, not the synthetic one
    aug = {**cfg["augment"], "background": ft["site_noise"]}
    copies = ft["augment_copies"] if ft["augment"] else 1
    xs, ys, sws = np.concatenate([x] * copies), np.concatenate([y] * copies), np.concatenate([sw] * copies)
    history: list[dict] = []
    best: tuple[float, int, list] | None = None

    def run(epochs: int, freeze: str, lr_at, tag: str, patience: int = 0) -> None:
        nonlocal best
        set_frozen(model, freeze)
        from training.train import compile_model
        compile_model(model, lr_at(0))
        if ft["mixup"] > 0:  # soft targets: the same optimizer, a cross-entropy that takes distributions
            _, keras, _ = tensorflow_keras()
            model.compile(optimizer=keras.optimizers.Adam(lr_at(0)),
                          loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        callbacks = [_l2sp_callback(model, lambda: float(model.optimizer.learning_rate) * ft["l2_sp"])] \
            if ft["l2_sp"] > 0 and tag == phase else []
        if masks is not None:
            callbacks.append(_mask_callback(model, masks))  # after the pull: the zeros stay zeros
        since = 0
        for epoch in range(epochs):
            model.optimizer.learning_rate.assign(lr_at(epoch))
            xa = D.augment(xs, rng, aug, background if len(background) else None) if ft["augment"] else xs
            xa = D.to_model_input(xa, clip)
            order = rng.permutation(len(xa))
            xb, yb, wb = xa[order], ys[order], sws[order]
            if ft["mixup"] > 0:  # mixup: convex pairs of site windows and of their one-hot labels
                lam = rng.beta(ft["mixup"], ft["mixup"], len(xb)).astype(np.float32)
                lam = np.maximum(lam, 1 - lam)  # the first window dominates: its weight stays its own
                pair = rng.permutation(len(xb))
                xb = lam[:, None, None] * xb + (1 - lam[:, None, None]) * xb[pair]
                onehot = np.eye(len(CLASSES), dtype=np.float32)
                yb = lam[:, None] * onehot[yb] + (1 - lam[:, None]) * onehot[yb[pair]]
            t0 = time.perf_counter()
            h = model.fit(xb, yb, sample_weight=wb, batch_size=ft["batch_size"], epochs=1,
                          shuffle=False, verbose=0, callbacks=callbacks)
            rec = {"phase": tag, "epoch": epoch + 1, "loss": float(h.history["loss"][-1]),
                   "seconds": time.perf_counter() - t0}
            if x_val is not None and len(x_val):
                pred = np.asarray(model.predict(x_val, batch_size=256, verbose=0)).argmax(1)
                rec["val_macro_f1"] = M.classification_metrics(y_val, pred)["macro_f1"]
            history.append(rec)
            if patience > 0 and "val_macro_f1" in rec:
                if best is None or rec["val_macro_f1"] > best[0]:
                    best, since = (rec["val_macro_f1"], len(history), model.get_weights()), 0
                else:
                    since += 1
                    if since >= patience:
                        break

    if ft["lp_epochs"] > 0:  # LP-FT: a head fitted to the kept features first, so the full fine-tune starts near
        run(ft["lp_epochs"], "trunk", lambda e: ft["lp_learning_rate"], phase + "-head")
    n = ft["epochs"]
    run(n, ft["freeze"], lambda e: ft["learning_rate"] * 0.5 * (1 + math.cos(math.pi * e / n)), phase,
        ft["patience"] if x_val is not None and len(x_val) else 0)
    if best is not None:
        model.set_weights(best[2])
        history.append({"phase": phase, "restored_epoch": best[1], "val_macro_f1": best[0]})
    if history:
        done = [h for h in history if "loss" in h]
        last = done[-1]
        log(f"{phase}: {len(done)} epochs on {len(site.y)} site windows"
            + (f" + {len(replay.y)} replayed" if replay is not None else "")
            + (f" + {len(pseudo.y)} pseudo-labelled" if pseudo is not None else "")
            + f", loss {last['loss']:.4f}" + (f", val macro-F1 {history[-1]['val_macro_f1']:.4f}"
                                              if "val_macro_f1" in history[-1] else "")
            + (f" (epoch {best[1]} restored)" if best is not None else ""))
    set_frozen(model, "none")
    return history


def pseudo_labels(model, x: np.ndarray, per_class: int, confidence: float) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """Class-balanced pseudo-labels of unlabelled windows ``x`` (model input): for each class, the (at most)
    ``per_class`` windows the model predicts as that class most confidently, with a top probability of at
    least ``confidence``. Returns (indices into ``x``, labels, confidences), sorted by index."""
    logits = np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float64)
    p = softmax(logits, 1.0)
    pred, conf = p.argmax(1), p.max(1)
    picked = []
    for c in range(len(CLASSES)):
        cand = np.flatnonzero((pred == c) & (conf >= confidence))
        picked.append(cand[np.argsort(-conf[cand], kind="stable")][:per_class])
    idx = np.sort(np.concatenate(picked)).astype(np.int64)
    return idx, pred[idx], conf[idx]


def self_train(load_model, site: D.Prepared, unlabelled: D.Prepared, cfg: dict, rng: np.random.Generator, *,
               x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, on_round=None):
    """Self-training on the site's labelled windows and its unlabelled ones (``unlabelled``, filtered; their
    labels, if any, are not read). Round 0 fine-tunes a fresh model (``load_model()``) on the labelled
    windows with AdaBN on labelled and unlabelled windows together; each of the ``self_training_rounds``
    rounds after pseudo-labels the unlabelled windows with the previous round's model
    (:func:`pseudo_labels`, ``pseudo_per_class`` / ``pseudo_confidence``) and fine-tunes a fresh model on
    labels plus pseudo-labels (augmented alike). ``on_round(round, model, record)`` is called after each
    round (the bench scores them). Returns (model, history, the card's ``self_training`` summary)."""
    from training.train import log

    ft = cfg["finetune"]
    clip = cfg["preprocess"]["clip"]
    adabn_x = np.concatenate([site.x, unlabelled.x])
    x_unl = D.to_model_input(unlabelled.x, clip)
    model = load_model()
    history = finetune(model, site, cfg, rng, x_val=x_val, y_val=y_val, adabn_x=adabn_x)
    rounds: list[dict] = []
    if on_round is not None:
        on_round(0, model, {"round": 0, "indices": np.zeros(0, np.int64), "labels": np.zeros(0, np.int64)})
    for r in range(1, ft["self_training_rounds"] + 1):
        idx, lab, conf = pseudo_labels(model, x_unl, ft["pseudo_per_class"], ft["pseudo_confidence"])
        counts = {c: int((lab == i).sum()) for i, c in enumerate(CLASSES)}
        log(f"self-training round {r}: {len(idx)} of {len(x_unl)} unlabelled windows pseudo-labelled "
            f"({', '.join(f'{c} {n}' for c, n in counts.items())}), mean confidence "
            f"{float(conf.mean()) if len(conf) else 0.0:.3f}")
        pseudo = D.Prepared(unlabelled.x[idx], lab, unlabelled.source.subset(idx) if unlabelled.source is not None
                            else None)
        model = load_model()  # from the base again: the pseudo-labels teach, the previous student is not kept
        history += finetune(model, site, cfg, rng, x_val=x_val, y_val=y_val, adabn_x=adabn_x, pseudo=pseudo,
                            phase=f"self-training-{r}")
        rec = {"round": r, "pseudo_labels": counts,
               "mean_confidence": float(conf.mean()) if len(conf) else None}
        rounds.append(rec)
        if on_round is not None:
            on_round(r, model, {**rec, "indices": idx, "labels": lab})
    summary = {"unlabelled_windows": int(len(x_unl)), "rounds": ft["self_training_rounds"],
               "pseudo_per_class": ft["pseudo_per_class"], "pseudo_confidence": ft["pseudo_confidence"],
               "pseudo_weight": ft["pseudo_weight"],
               "adabn": "on labelled and unlabelled site windows" if ft["adabn"] else "off",
               "pseudo_labels_per_class": rounds[-1]["pseudo_labels"] if rounds
               else {c: 0 for c in CLASSES}, "by_round": rounds}
    return model, history, summary


def finetune_summary(cfg: dict, site_windows: int, replayed: int, self_training: dict | None = None) -> dict:
    """The card's ``adaptation`` section of a labelled fine-tune: the recipe and what it saw (with the
    ``self_training`` summary when unlabelled site windows were given)."""
    ft = cfg["finetune"]
    return {"method": "fine-tuned on labelled site windows" if self_training is None else
            ("self-trained on labelled and pseudo-labelled site windows" if self_training["rounds"] > 0
             else "fine-tuned on labelled site windows, AdaBN on labelled and unlabelled ones"),
            "site_windows": site_windows, "replayed_synthetic_windows": replayed,
            **({} if self_training is None else {"self_training": self_training}),
            **{k: ft[k] for k in ("freeze", "epochs", "learning_rate", "batch_size", "augment", "class_weight",
                                  "adabn", "prune", "prune_epochs", "replay", "lp_epochs", "lp_learning_rate",
                                  "l2_sp", "augment_copies", "site_noise", "patience", "mixup",
                                  "self_training_rounds", "pseudo_per_class", "pseudo_confidence",
                                  "pseudo_weight")},
            "calibration": "temperature and thresholds re-fitted on held-out labelled site windows",
            "decision_bias": "re-fitted on held-out labelled site windows with the [decision] costs"
            if cfg["decision"]["fit"] else "none"}


# --------------------------------------------------------------------------- the unlabelled path
def read_site_windows(path: str | Path) -> WindowSet:
    """Every window of a file or dataset; labels are optional (unlabelled windows get the label '')."""
    files = window_files(path)
    if all("labels" in read_npz(f) for f in files):
        return read_windows(path, vocabulary=None)
    parts = [WindowSet(wav, np.full(len(wav), "", dtype="<U1"), fs) for wav, fs in iter_unlabelled(path)]
    if len({p.fs for p in parts}) > 1:
        raise UserError(f"{path}: files have different sampling rates {sorted({p.fs for p in parts})}; expected one")
    return D.concat(parts)


MIN_UNLABELLED = 16  # site windows needed to estimate BatchNorm statistics or to pseudo-label from


def read_unlabelled_windows(path: str | Path) -> WindowSet:
    """The mine's windows for ``--adapt-unlabelled`` (:func:`read_site_windows`), refused with one line when
    there are fewer than ``MIN_UNLABELLED``."""
    ws = read_site_windows(path)
    if len(ws) < MIN_UNLABELLED:
        raise UserError(f"--adapt-unlabelled {path}: {len(ws)} windows; at least {MIN_UNLABELLED} are needed "
                        "(a few hundred are better)")
    return ws


DECISION_BIAS = ("keep", "refit", "none")  # the base card's / re-fitted on the labelled site windows / dropped


def write_adapted(out: Path, base_dir: Path, model, representative: np.ndarray, adaptation: dict,
                  labelled: tuple[np.ndarray, np.ndarray] | None = None, decision_bias: str = "keep",
                  costs: dict | None = None) -> dict:
    """Convert ``model`` to float and int8 TFLite (int8 calibrated on ``representative``, model input) and
    write it into ``out`` with the base card updated: hashes, quantization, ``adaptation`` and
    ``fine_tuned_from``. The decision bias is the base card's (``keep``), dropped (``none``) or re-fitted on
    ``labelled`` with the ``[decision]`` ``costs`` (``refit``); temperature and the unknown threshold are
    re-fitted on ``labelled`` (model input, labels) when given, else kept from the source domain and the card
    says so. Returns the card."""
    from training.train import FLOAT_TFLITE, WEIGHTS, convert, kernel_sparsity, tflite_info, write_card

    base = card_of(base_dir)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / CARD).is_file():
        raise UserError(f"--out {out}: exists, is not empty and holds no model; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "plots", ignore_errors=True)
    int8 = convert(model, representative, int8=True)
    (out / TFLITE).write_bytes(int8)
    (out / FLOAT_TFLITE).write_bytes(convert(model, representative, int8=False))
    model.save_weights(str(out / WEIGHTS))
    info = tflite_info(int8)
    card = {k: v for k, v in base.items() if k not in ("metrics", "metrics_test_set", "open_set")}
    adaptation = dict(adaptation)
    if decision_bias not in DECISION_BIAS:
        raise UserError(f"decision_bias = {decision_bias!r}; allowed: {', '.join(DECISION_BIAS)}")
    if decision_bias == "refit" and (labelled is None or not len(labelled[1]) or costs is None):
        raise UserError("decision_bias = 'refit' needs labelled site windows and the [decision] costs")
    if decision_bias == "none":
        card.pop("decision_bias", None)
        card.pop("decision", None)
    elif decision_bias == "refit":
        fitted = M.fit_decision_bias(tflite_logits(int8, labelled[0]), labelled[1],
                                     {k: costs[k] for k in ("microseismic_missed", "microseismic_called_blast",
                                                            "false_microseismic", "other")},
                                     tuple(costs.get("shift", ("microseismic", "blast"))))
        card["decision_bias"] = list(fitted.bias)
        card["decision"] = fitted.card()
    adaptation["decision_bias"] = {"keep": "the base model's", "none": "none",
                                   "refit": f"re-fitted on {0 if labelled is None else len(labelled[1])} labelled "
                                            "site windows"}[decision_bias]
    if labelled is not None and len(labelled[1]):
        # the decision bias (the mine's error costs) is part of the logits the gateway reads
        logits = tflite_logits(int8, labelled[0]) + np.asarray(card.get("decision_bias") or 0.0)
        t = M.fit_temperature(logits, labelled[1])
        reject = base.get("config", {}).get("calibration", {}).get("reject_fraction", 0.01)
        card["temperature"] = t
        card["unknown_threshold"] = M.unknown_threshold(softmax(logits, t), labelled[1], reject)
        adaptation["calibration"] = f"temperature and unknown threshold re-fitted on {len(labelled[1])} labelled " \
                                    "site windows"
    else:
        adaptation["calibration"] = "source domain: temperature and unknown threshold are the base model's " \
                                    "(no site labels to re-fit them); probabilities may be over-confident here"
    if "open_set" in base:  # its thresholds and class means were fitted on source logits
        adaptation["open_set"] = "dropped: the base rule was fitted on source-domain logits; the gateway falls " \
                                 "back to the confidence rule"
    card.update({
        "name": base.get("name", "model") + "-adapted",
        "sha256": sha256_file(out / TFLITE),
        "files": {TFLITE: sha256_file(out / TFLITE), FLOAT_TFLITE: sha256_file(out / FLOAT_TFLITE),
                  WEIGHTS: sha256_file(out / WEIGHTS)},
        "input_quantization": {"dtype": info["input"]["dtype"], "scale": info["input"]["scale"],
                               "zero_point": info["input"]["zero_point"]},
        "output_quantization": info["output"],
        "tflite_ops": info["ops"],
        "sparsity": kernel_sparsity(model)["overall"],
        "quantization": {"method": "post-training full-integer",
                         "representative": f"{len(representative)} site windows"},
        "fine_tuned_from": base["sha256"],
        "adaptation": adaptation,
        "metrics": {},
    })
    write_card(out, card)
    return card


def adapt_unlabelled(init: str | Path, windows: str | Path, out: str | Path, representative: int = 400,
                     seed: int = 1) -> dict:
    """``stopewatch train --init MODEL --adapt-unlabelled DIR --out OUT``: AdaBN on the mine's windows,
    int8 re-exported with a representative set from them; returns the card."""
    from training.train import log

    init = Path(init)
    base = card_of(init)
    ws = read_unlabelled_windows(windows)
    params = PreprocessParams.from_dict(base["preprocessing"], "preprocessing")
    prep = D.prepare(ws, params, int(base["channels"]), base.get("channel_policy", "zero_fill"))
    x = D.to_model_input(prep.x, params.clip)
    model = load_base(init)
    shifts = reestimate_batchnorm(model, x)
    log(f"AdaBN on {len(x)} site windows: mean shift per layer "
        + ", ".join(f"{k} {v:.2f} sd" for k, v in shifts.items()))
    rng = np.random.default_rng(seed)
    rep = x[np.sort(rng.permutation(len(x))[:representative])]
    known = prep.y >= 0
    labelled = (x[known], prep.y[known]) if known.sum() >= 2 * len(CLASSES) else None
    adaptation = {"method": "AdaBN: BatchNorm statistics re-estimated on unlabelled site windows",
                  "site_windows": int(len(x)), "source": str(windows), "bn_mean_shift_sd": shifts,
                  "labels_used": "for calibration only" if labelled is not None else "none"}
    card = write_adapted(Path(out), init, model, rep, adaptation, labelled)
    log(f"wrote {out}: sha256 {card['sha256'][:12]}")
    return card
