"""Train, prune, quantize, convert, calibrate and evaluate one model (``stopewatch train``).

Stages, each a function from typed values to typed values (frozen dataclasses):
:func:`prepare_data` (filtered, labelled windows) -> :func:`fit` (dense training with augmentation,
class weighting and early stopping on validation macro-F1, or fine-tuning from a model) ->
:func:`prune_model` (magnitude pruning, PolynomialDecay to the target sparsity, strip_pruning) ->
:func:`export` (float and full-int8 TFLite through a SavedModel; quantization-aware training only if
int8 loses more than the configured macro-F1) -> :func:`calibrate` (temperature, legacy ``unknown``
threshold and the open-set rules, fitted on validation logits of the int8 model) -> :func:`write_model`
(the model directory and its card) -> ``training.report.write_report`` (evaluation of the written model
through ``edge.gateway.model.Classifier`` -- the gateway's own code -- against the configured targets).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.formats import WindowSet
from edge.gateway.model import CARD, CARD_FORMAT, TFLITE, board_rates_hz, sha256_file, softmax, tflite_logits
from edge.gateway.preprocess import PreprocessParams
from edge.vocabulary import CLASSES
from training import data as D
from training import metrics as M
from training.outliers import OUTLIER, make_outliers, outlier_exposure_loss
from training.tf_env import set_seeds, tensorflow

FLOAT_TFLITE = "model_float.tflite"
WEIGHTS = "model.weights.h5"
MISSED_EXIT = 3  # `stopewatch train` exit code when a target is missed (without --allow-missed)


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- stage values
@dataclass(frozen=True)
class Data:
    """Stage 1: the splits as read, and training/validation windows filtered for the network."""

    splits: dict[str, WindowSet]
    params: PreprocessParams
    train: D.Prepared  # known classes only
    val: D.Prepared
    x_val: np.ndarray  # normalised validation input (n, samples, channels)
    seconds: float


@dataclass(frozen=True)
class Fitted:
    """Stage 2: the dense (or fine-tuned) Keras model and its epochs."""

    model: object
    history: tuple[dict, ...]
    self_training: dict | None = None  # the card's adaptation.self_training, when unlabelled windows were given


@dataclass(frozen=True)
class Pruned:
    """Stage 3: the pruned, stripped Keras model."""

    model: object
    history: tuple[dict, ...]  # every epoch so far (fit, then pruning)
    pruning: dict  # the card's ``pruning`` section: schedule, sparsity target, steps
    sparsity: float  # measured share of zero conv/dense kernel weights
    train_seconds: float
    self_training: dict | None = None


@dataclass(frozen=True)
class Exported:
    """Stage 4: the converted models and the int8 model's validation logits."""

    int8: bytes
    float: bytes
    val_logits: np.ndarray
    quantization: dict  # the card's ``quantization`` section
    tflite: dict  # ops and input/output quantization of the int8 model
    history: tuple[dict, ...]  # with quantization-aware epochs if any


@dataclass(frozen=True)
class Calibration:
    """Stage 5: temperature, the legacy confidence threshold and the open-set rules (all fitted on
    validation data of the known classes); ``open_set`` is the configured one, written to the card."""

    temperature: float
    unknown_threshold: float
    open_set: M.OpenSetRule
    candidates: dict[str, M.OpenSetRule]
    decision: M.DecisionBias | None  # None: the configuration asks for no bias


@dataclass(frozen=True)
class Trained:
    """Stage 6: a written model directory with its card, and what the report needs of the fit."""

    out: Path
    card: dict
    model: object  # the stripped Keras model (latency, label efficiency)
    data: Data
    history: tuple[dict, ...]
    calibration: Calibration


# --------------------------------------------------------------------------- fitting
def _predict_logits(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch, verbose=0), dtype=np.float32)


def macro_f1_of(model, x: np.ndarray, y: np.ndarray) -> float:
    """Closed-set macro-F1 of a Keras model on prepared inputs."""
    return M.classification_metrics(y, _predict_logits(model, x).argmax(axis=1))["macro_f1"]


def run_epochs(model, train: D.Prepared, x_val: np.ndarray, y_val: np.ndarray, cfg: dict, *, epochs: int,
               lr: float, patience: int, rng: np.random.Generator, callbacks=(), select_from: int = 0,
               phase: str = "train") -> list[dict]:
    """Epoch loop: fresh augmentation each epoch, cosine learning rate, keep the weights of the best
    validation macro-F1 (among epochs >= ``select_from``), stop after ``patience`` epochs without gain."""
    tf, _, _ = tensorflow()
    clip = cfg["preprocess"]["clip"]
    weights = D.class_weights(train.y, len(CLASSES)) if cfg["train"]["class_weight"] == "balanced" \
        else np.ones(len(CLASSES), np.float32)
    background = train.x[train.y == CLASSES.index("noise")]
    share, weight_out = cfg["train"]["outlier_share"], cfg["train"]["outlier_weight"]
    if share > 0:  # outlier windows weigh `outlier_weight` times a known window of average weight
        weights = np.append(weights, weight_out * float(np.mean(weights[train.y])))
    best, best_weights, since, history = -1.0, None, 0, []
    bar = D.progress_bar(epochs, phase, "epoch")  # a person at a terminal sees a bar; logs get one line per epoch
    say = log if bar is None else bar.write
    for epoch in range(epochs):
        model.optimizer.learning_rate.assign(lr * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs))))
        xa = D.augment(train.x, rng, cfg["augment"], background)
        ya = train.y
        if share > 0:  # fresh outliers each epoch, from this epoch's augmented windows
            out = make_outliers(xa, ya, int(round(share * len(ya))), rng)
            xa, ya = np.concatenate([xa, out]), np.concatenate([ya, np.full(len(out), OUTLIER, ya.dtype)])
        xa = D.to_model_input(xa, clip)
        order = rng.permutation(len(xa))
        t0 = time.perf_counter()
        h = model.fit(xa[order], ya[order], sample_weight=weights[ya[order]],
                      batch_size=cfg["train"]["batch_size"], epochs=epoch + 1, initial_epoch=epoch,
                      shuffle=False, verbose=0 if bar is not None else 2, callbacks=list(callbacks))
        del xa
        f1 = macro_f1_of(model, x_val, y_val)
        history.append({"phase": phase, "epoch": epoch + 1, "loss": float(h.history["loss"][-1]),
                        "val_macro_f1": f1, "seconds": time.perf_counter() - t0})
        say(f"{phase} epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f}, val macro-F1 {f1:.4f}")
        if bar is not None:
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", val_f1=f"{f1:.4f}")
            bar.update(1)
        if epoch < select_from:
            continue
        if f1 > best:
            best, best_weights, since = f1, [w.copy() for w in model.get_weights()], 0
        else:
            since += 1
            if since >= patience:
                say(f"{phase}: early stop (no val macro-F1 gain for {patience} epochs)")
                break
    if bar is not None:
        bar.close()
    if best_weights is not None:
        model.set_weights(best_weights)
    return history


def prune(model, train: D.Prepared, x_val, y_val, cfg: dict, rng, epochs: int, lr: float,
          constant: bool = False) -> tuple[object, list[dict], dict]:
    """Magnitude pruning of every Conv1D/Dense kernel; returns the stripped model."""
    tf, keras, tfmot = tensorflow()
    sp = tfmot.sparsity.keras
    steps = math.ceil(len(train.x) / cfg["train"]["batch_size"])
    total = epochs * steps
    target = cfg["prune"]["final_sparsity"]
    if constant:  # fine-tuning a pruned model: keep its sparsity from step 0
        freq = 1  # re-rank every step so that the last step leaves exactly the target sparsity
        schedule = sp.ConstantSparsity(target, begin_step=0, frequency=freq)
        end = 0
    else:
        freq = max(1, min(cfg["prune"]["frequency"], total // 4))
        # a multiple of the frequency, so that the last mask update reaches the target
        end = freq * max(2, int(cfg["prune"]["end_fraction"] * total) // freq)
        if not freq < end:
            raise UserError(f"prune.frequency = {freq}: must be below the end step {end}")
        schedule = sp.PolynomialDecay(initial_sparsity=0.0, final_sparsity=target, begin_step=0,
                                      end_step=end, frequency=freq)
    pruned = sp.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(optimizer=keras.optimizers.Adam(lr), loss=training_loss(cfg))
    select_from = min(epochs - 1, math.ceil(end / steps)) if end else 0
    hist = run_epochs(pruned, train, x_val, y_val, cfg, epochs=epochs, lr=lr, patience=epochs, rng=rng,
                      callbacks=[sp.UpdatePruningStep()], select_from=select_from, phase="prune")
    stripped = sp.strip_pruning(pruned)
    return stripped, hist, {"schedule": "constant" if constant else "polynomial_decay", "final_sparsity": target,
                            "end_step": end, "frequency": freq, "steps": total}


def kernel_sparsity(model) -> dict:
    """Fraction of zero weights in Conv1D/Dense kernels (the pruned weights), per layer and overall."""
    zeros = total = 0
    per_layer = {}
    for layer in model.layers:
        if type(layer).__name__ in ("Conv1D", "Dense"):
            k = layer.kernel.numpy()
            per_layer[layer.name] = float(np.mean(k == 0))
            zeros += int(np.sum(k == 0))
            total += k.size
    return {"overall": zeros / max(1, total), "per_layer": per_layer, "weights": total}


def training_loss(cfg: dict | None):
    """Cross-entropy from logits; with ``[train] outlier_share`` > 0 the label ``OUTLIER`` (the outlier windows
    ``run_epochs`` adds) trains toward the uniform answer, and ``label_smoothing`` mixes that answer into
    every known label (training.outliers). ``None``: the plain loss (fine-tuning's own loops)."""
    _, keras, _ = tensorflow()
    t = (cfg or {}).get("train", {})
    if t.get("outlier_share", 0) > 0 or t.get("label_smoothing", 0) > 0:
        return outlier_exposure_loss(len(CLASSES), t.get("label_smoothing", 0.0))
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compile_model(model, lr: float, cfg: dict | None = None):
    """Adam and :func:`training_loss`; every model that ``run_epochs`` trains is compiled with its ``cfg``."""
    _, keras, _ = tensorflow()
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=training_loss(cfg))
    return model


# --------------------------------------------------------------------------- conversion
def convert(model, representative: np.ndarray, int8: bool) -> bytes:
    """Convert through a SavedModel with a fixed (1, samples, channels) signature to TFLite."""
    tf, _, _ = tensorflow()
    samples, channels = model.input_shape[1], model.input_shape[2]

    @tf.function(input_signature=[tf.TensorSpec([1, samples, channels], tf.float32, name="window")])
    def serve(window):
        return {"logits": model(window, training=False)}

    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(model, tmp, signatures={"serving_default": serve})
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([r[None].astype(np.float32)] for r in representative)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        import warnings

        from edge.gateway.model import _native_stderr_silenced
        with warnings.catch_warnings(), _native_stderr_silenced():  # the converter's native summary lines
            warnings.simplefilter("ignore")
            return conv.convert()


def representative_set(train: D.Prepared, n: int, clip: float, seed: int) -> np.ndarray:
    """Class-stratified training windows (normalised, no augmentation) for int8 calibration."""
    rng = np.random.default_rng(seed)
    idx = []
    for c in range(len(CLASSES)):
        cand = np.flatnonzero(train.y == c)
        rng.shuffle(cand)
        idx.extend(cand[: max(1, n // len(CLASSES))])
    return D.to_model_input(train.x[np.sort(idx)], clip)


def tflite_ops(content: bytes) -> tuple[list[str], list[str]]:
    """(builtin ops, ops with a float32 tensor) of a converted model, read without the default delegate
    (which would fold most ops into one DELEGATE node): an int8 model runs on LiteRT's int8 kernels
    when the second list is empty."""
    from edge.gateway.model import load_interpreter_class
    cls = load_interpreter_class()
    try:
        from ai_edge_litert.interpreter import OpResolverType
        kw = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    except ImportError:  # tflite_runtime / tf.lite: the op list may show DELEGATE
        kw = {}
    it = cls(model_content=content, num_threads=1, **kw)
    it.allocate_tensors()
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in it.get_tensor_details()}
    ops, floating = set(), set()
    for op in it._get_ops_details():
        ops.add(op["op_name"])
        if any(dtypes[i] == np.float32 for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0):
            floating.add(op["op_name"])
    return sorted(ops), sorted(floating)


def tflite_info(content: bytes) -> dict:
    """Ops (and those computing in float), input/output types and quantization of a converted model."""
    from edge.gateway.model import load_interpreter_class
    it = load_interpreter_class()(model_content=content, num_threads=1)
    it.allocate_tensors()
    ops, float_ops = tflite_ops(content)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    return {"ops": ops, "float_ops": float_ops,
            "input": {"dtype": np.dtype(i["dtype"]).name, "shape": [int(v) for v in i["shape"]],
                      "scale": float(i["quantization"][0]), "zero_point": int(i["quantization"][1])},
            "output": {"dtype": np.dtype(o["dtype"]).name, "scale": float(o["quantization"][0]),
                       "zero_point": int(o["quantization"][1])}}


def quantization_aware(model, train, x_val, y_val, cfg, rng, representative) -> tuple[object, bytes, list]:
    """Quantization-aware fine-tuning that preserves the pruning masks; returns (model, int8 bytes, history)."""
    tf, keras, tfmot = tensorflow()
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    qat = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    compile_model(qat, cfg["train"]["learning_rate"] / 10, cfg)
    hist = run_epochs(qat, train, x_val, y_val, cfg, epochs=cfg["quantize"]["qat_epochs"],
                      lr=cfg["train"]["learning_rate"] / 10, patience=99, rng=rng, phase="qat")
    return qat, convert(qat, representative, int8=True), hist


# --------------------------------------------------------------------------- the stages
def prepare_data(cfg: dict, splits: dict[str, WindowSet]) -> Data:
    """Filter the training and validation windows for the network (known classes only in training)."""
    params = PreprocessParams.from_dict(cfg["preprocess"], "preprocess")
    ch, policy = cfg["data"]["channels"], cfg["model"]["channel_policy"]
    t0 = time.perf_counter()
    train = D.prepare(splits["train"], params, ch, policy)
    val = D.prepare(splits["val"], params, ch, policy)
    keep = train.y >= 0
    train = D.Prepared(train.x[keep], train.y[keep], splits["train"].subset(keep))
    x_val = D.to_model_input(val.x, params.clip)
    seconds = time.perf_counter() - t0
    log(f"prepared {len(train.x)} training and {len(val.x)} validation windows in {seconds:.1f} s")
    return Data(splits, params, train, val, x_val, seconds)


def fit(cfg: dict, data: Data, rng: np.random.Generator, init: Path | None = None,
        unlabelled: D.Prepared | None = None) -> Fitted:
    """Dense training from scratch, or fine-tuning of the model at ``init`` on the data (self-training with
    the site's ``unlabelled`` windows when given)."""
    from training.net import build_model

    model = build_model(cfg["data"]["channels"], data.params.samples, len(CLASSES), cfg["model"])
    if init is not None and unlabelled is not None:
        from training.adapt import self_train

        def fresh():
            m = build_model(cfg["data"]["channels"], data.params.samples, len(CLASSES), cfg["model"])
            m.load_weights(str(init / WEIGHTS))
            return m

        if cfg["finetune"]["replay"] > 0:
            raise UserError("finetune.replay > 0 is not supported with --adapt-unlabelled (self-training); "
                            "set it to 0")
        model, hist, summary = self_train(fresh, data.train, unlabelled, cfg, rng, x_val=data.x_val,
                                          y_val=data.val.y)
        return Fitted(model, tuple(hist), summary)
    if init is not None:  # the recipe of [finetune], chosen by bench/bench_adaptation.py
        from training.adapt import finetune, replay_windows
        model.load_weights(str(init / WEIGHTS))
        ft = cfg["finetune"]
        replay = None
        if ft["replay"] > 0:
            replay = replay_windows(max(len(CLASSES), int(round(ft["replay"] * len(data.train.y)))),
                                    cfg["data"]["train_seed"], data.params, cfg["data"]["channels"],
                                    cfg["model"]["channel_policy"])
        hist = finetune(model, data.train, cfg, rng, replay=replay, x_val=data.x_val, y_val=data.val.y)
    else:
        lr = cfg["train"]["learning_rate"]
        compile_model(model, lr, cfg)
        hist = run_epochs(model, data.train, data.x_val, data.val.y, cfg, epochs=cfg["train"]["epochs"], lr=lr,
                          patience=cfg["train"]["patience"], rng=rng, phase="dense")
    return Fitted(model, tuple(hist))


def prune_model(cfg: dict, data: Data, fitted: Fitted, rng: np.random.Generator, fine_tuned: bool,
                t_start: float) -> Pruned:
    """Magnitude pruning of the fitted model (a fine-tuned model keeps its sparsity from step 0)."""
    if fine_tuned and cfg["finetune"]["prune"] != "reprune":  # masks kept while fine-tuning, or left dense
        model, hist, info = fitted.model, [], {"schedule": f"fine-tuned with finetune.prune = "
                                                           f"{cfg['finetune']['prune']!r}"}
    elif fine_tuned:
        ft = cfg["finetune"]
        model, hist, info = prune(fitted.model, data.train, data.x_val, data.val.y, cfg, rng, ft["prune_epochs"],
                                  ft["learning_rate"] / 2, constant=True)
    elif cfg["prune"]["final_sparsity"] == 0:  # the recipe's default: no pruning stage (see training/config.py)
        model, hist, info = fitted.model, [], {"schedule": "none", "final_sparsity": 0.0}
    else:
        model, hist, info = prune(fitted.model, data.train, data.x_val, data.val.y, cfg, rng,
                                  cfg["prune"]["epochs"], cfg["train"]["learning_rate"] / 3)
    seconds = time.perf_counter() - t_start
    sparsity = kernel_sparsity(model)
    log(f"pruned: {sparsity['overall']:.1%} of {sparsity['weights']} kernel weights are zero")
    return Pruned(model, fitted.history + tuple(hist), info, sparsity["overall"], seconds, fitted.self_training)


def export(cfg: dict, data: Data, pruned: Pruned, rng: np.random.Generator) -> Exported:
    """Float and full-int8 TFLite (quantization-aware training when int8 loses too much validation macro-F1)."""
    rep = representative_set(data.train, cfg["quantize"]["representative"], data.params.clip, cfg["seed"])
    float_bytes = convert(pruned.model, rep, int8=False)
    int8_bytes = convert(pruned.model, rep, int8=True)
    y_val = data.val.y
    f1_float = M.classification_metrics(y_val, tflite_logits(float_bytes, data.x_val).argmax(1))["macro_f1"]
    val_logits = tflite_logits(int8_bytes, data.x_val)
    f1_int8 = M.classification_metrics(y_val, val_logits.argmax(1))["macro_f1"]
    quant = {"method": "post-training full-integer", "val_macro_f1_float": f1_float, "val_macro_f1_int8": f1_int8}
    history = pruned.history
    if f1_float - f1_int8 > cfg["quantize"]["max_f1_loss"] and cfg["quantize"]["qat_epochs"] > 0:
        log(f"int8 loses {f1_float - f1_int8:.4f} val macro-F1 (> {cfg['quantize']['max_f1_loss']}): "
            "quantization-aware training")
        try:
            _, qat_bytes, qh = quantization_aware(pruned.model, data.train, data.x_val, y_val, cfg, rng, rep)
            history += tuple(qh)
            qat_logits = tflite_logits(qat_bytes, data.x_val)
            f1_qat = M.classification_metrics(y_val, qat_logits.argmax(1))["macro_f1"]
            quant["qat_val_macro_f1_int8"] = f1_qat
            if f1_qat > f1_int8:
                int8_bytes, val_logits, quant["method"] = qat_bytes, qat_logits, "quantization-aware training"
        except Exception as exc:  # QAT of some layer types is unsupported in tfmot; keep the PTQ model
            quant["qat_error"] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"quantization-aware training failed ({quant['qat_error']}); keeping post-training int8")
    return Exported(int8_bytes, float_bytes, val_logits, quant, tflite_info(int8_bytes), history)


def calibrate(cfg: dict, data: Data, exported: Exported) -> Calibration:
    """The decision bias (the mine's error costs on validation), then on the biased logits the temperature
    (validation NLL), the legacy confidence threshold, and every open-set score's rule with its threshold
    rejecting the configured share of known validation windows."""
    y_val = data.val.y
    d = cfg["decision"]
    decision = None
    logits = exported.val_logits
    if d["fit"]:
        costs = {k: d[k] for k in ("microseismic_missed", "microseismic_called_blast", "false_microseismic", "other")}
        decision = M.fit_decision_bias(logits, y_val, costs, tuple(d["shift"]))
        logits = logits + np.asarray(decision.bias)
        log(f"decision bias {dict(zip(CLASSES, decision.bias, strict=True))}: validation cost "
            f"{decision.val_cost_before:.4f} -> {decision.val_cost_after:.4f}")
    temperature = M.fit_temperature(logits, y_val)
    threshold = M.unknown_threshold(softmax(logits, temperature), y_val, cfg["calibration"]["reject_fraction"])
    o = cfg["open_set"]
    temps = {"msp": temperature, "energy": o["energy_temperature"], "max_logit": 1.0, "mahalanobis": 1.0}
    candidates = {s: M.fit_open_set(logits, y_val, s, o["reject_fraction"], t) for s, t in temps.items()}
    rule = candidates[o["score"]]
    log(f"calibrated: T={temperature:.3f}; open set: {rule.score} novelty > {rule.threshold:.4g} is unknown")
    return Calibration(temperature, threshold, rule, candidates, decision)


def write_model(cfg: dict, data: Data, pruned: Pruned, exported: Exported, calibration: Calibration, out: Path,
                init: Path | None = None) -> Trained:
    """Write the int8 and float models, the Keras weights and the model card into ``out``."""
    from training.net import macs

    out.mkdir(parents=True, exist_ok=True)
    (out / TFLITE).write_bytes(exported.int8)
    (out / FLOAT_TFLITE).write_bytes(exported.float)
    pruned.model.save_weights(str(out / WEIGHTS))
    splits, params = data.splits, data.params
    manifest = {name: manifest_of(ws) for name, ws in splits.items()}
    if cfg["data"]["source"] == "synthetic":
        from training.crosscheck import VERSION as CROSSCHECK_VERSION
        from training.synthetic.generate import GENERATOR_VERSION
        names = {"synthetic": ("stopewatch.synthetic", GENERATOR_VERSION),
                 "mix": ("stopewatch.mix", GENERATOR_VERSION),
                 "gateway_cut": ("stopewatch.gateway_cut", GENERATOR_VERSION),
                 "crosscheck": ("crosscheck", CROSSCHECK_VERSION)}
        for name, args in D.synthetic_plan(cfg).items():
            if name in manifest:
                gen, version = names[args["source"]]
                manifest[name]["generator"] = {"name": gen, "version": version, **args}
    else:
        for name, path in (("train", cfg["data"]["train"]), ("val", cfg["data"]["val"]),
                           ("test", cfg["data"]["test"]), ("heldout_sites", cfg["data"]["heldout"])):
            if name in manifest:
                manifest[name]["source"] = path or f"held out of {cfg['data']['train']}"
    info = exported.tflite
    rates = cfg["board_rates_hz"] or list(board_rates_hz({"fs": params.fs}))
    card = {
        "format": CARD_FORMAT,
        "name": cfg["name"],
        "version": cfg["version"],
        "sha256": sha256_file(out / TFLITE),
        "files": {TFLITE: sha256_file(out / TFLITE), FLOAT_TFLITE: sha256_file(out / FLOAT_TFLITE),
                  WEIGHTS: sha256_file(out / WEIGHTS)},
        "classes": list(CLASSES),
        "fs": params.fs,
        "board_rates_hz": [float(r) for r in rates],
        "channels": cfg["data"]["channels"],
        "samples": params.samples,
        "channel_policy": cfg["model"]["channel_policy"],
        "input_layout": "(1, samples, channels) after edge.gateway.preprocess.preprocess",
        "preprocessing": params.to_dict(),
        "input_quantization": {"dtype": info["input"]["dtype"], "scale": info["input"]["scale"],
                               "zero_point": info["input"]["zero_point"]},
        "output_quantization": info["output"],
        "output": "logits; probabilities = softmax(logits / temperature)",
        "temperature": calibration.temperature,
        "unknown_threshold": calibration.unknown_threshold,
        "unknown_rule": f"gateways that read 'open_set' answer 'unknown' by that rule; older ones when the "
                        f"calibrated top probability < unknown_threshold (the "
                        f"{cfg['calibration']['reject_fraction']:.0%} quantile of correct validation answers)",
        "open_set": calibration.open_set.card(),
        **({} if calibration.decision is None else {"decision_bias": list(calibration.decision.bias),
                                                    "decision": calibration.decision.card()}),
        "entropy": "Shannon entropy / log(number of classes)",
        "architecture": {k: cfg["model"][k] for k in ("arch", "filters", "kernels", "strides", "dropout")},
        "parameters": int(pruned.model.count_params()),
        "macs": macs(pruned.model),
        "sparsity": pruned.sparsity,
        "tflite_ops": info["ops"],
        "quantization": exported.quantization,
        "pruning": pruned.pruning,
        "seed": cfg["seed"],
        "training_data": manifest,
        "training_seconds": round(pruned.train_seconds, 1),
        **_onset(cfg),
        "fine_tuned_from": None if init is None else json.loads((init / CARD).read_text())["sha256"],
        "adaptation": None if init is None else _adaptation(cfg, data, pruned.self_training),
        "config": cfg,
        "metrics": {},
    }
    write_card(out, card)
    return Trained(out, card, pruned.model, data, exported.history, calibration)


def _onset(cfg: dict) -> dict:
    """``onset_s`` (where the synthetic windows put the onset: the trigger's pre_s should match) for
    the low regime, whose 2 s pre-event part is far from the daemon's default; {} otherwise."""
    if cfg["data"]["source"] != "synthetic" or cfg["data"]["regime"] == "high":
        return {}
    from training.synthetic.sources import REGIMES
    return {"onset_s": REGIMES[cfg["data"]["regime"]].onset_s}


def _adaptation(cfg: dict, data: Data, self_training: dict | None = None) -> dict:
    from training.adapt import finetune_summary
    replayed = int(round(cfg["finetune"]["replay"] * len(data.train.y))) if cfg["finetune"]["replay"] > 0 else 0
    return finetune_summary(cfg, int(len(data.train.y)), replayed, self_training)


def fit_and_export(cfg: dict, splits: dict[str, WindowSet], out: Path, init: Path | None = None,
                   unlabelled: WindowSet | None = None) -> Trained:
    """The stages data -> fit -> prune -> export -> calibrate -> card, into the model directory ``out``
    (``unlabelled``: the site's unlabelled windows, for self-training a fine-tune)."""
    set_seeds(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    t0 = time.perf_counter()
    data = prepare_data(cfg, splits)
    unl = None
    if unlabelled is not None:
        unl = D.prepare(unlabelled, data.params, cfg["data"]["channels"], cfg["model"]["channel_policy"])
        unl = D.Prepared(unl.x, np.full(len(unl.x), -1, np.int64), unl.source)  # their labels, if any, unread
    pruned = prune_model(cfg, data, fit(cfg, data, rng, init, unl), rng, init is not None, t0)
    exported = export(cfg, data, pruned, rng)
    return write_model(cfg, data, pruned, exported, calibrate(cfg, data, exported), out, init)


def write_card(out: Path, card: dict) -> None:
    """Write ``model_card.json`` (sorted keys, atomic)."""
    tmp = out / (CARD + ".part")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / CARD)


def manifest_of(ws) -> dict:
    """What a split holds: count, rate, shape, classes, sites, SNR range, generator seed where known."""
    labels, counts = np.unique(ws.labels, return_counts=True)
    m = {"count": len(ws), "fs": ws.fs, "channels": int(ws.waveforms.shape[1]), "samples": int(ws.waveforms.shape[2]),
         "class_counts": {str(k): int(v) for k, v in zip(labels, counts, strict=True)}}
    if ws.site is not None:
        m["sites"] = sorted(set(ws.site.tolist()))
    if ws.snr_db is not None and np.isfinite(ws.snr_db).any():
        m["snr_db"] = [float(np.nanmin(ws.snr_db)), float(np.nanmax(ws.snr_db))]
    return m


# --------------------------------------------------------------------------- stopewatch train
def run(config_path: str | Path | None, out: str | Path, overrides: dict | None = None,
        init: str | Path | None = None, data: str | Path | None = None,
        unlabelled: str | Path | None = None) -> dict:
    """``stopewatch train``: the full pipeline into ``out``; returns the model card. With ``init``, ``data``
    and ``unlabelled`` (the site's unlabelled windows) the fine-tune self-trains on both."""
    from training.config import load_config
    from training.report import write_report

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / CARD).is_file():
        raise UserError(f"--out {out}: exists, is not empty and holds no model; choose a new directory")
    init_path = None
    if init is not None:
        init_path = Path(init)
        if not (init_path / WEIGHTS).is_file() or not (init_path / CARD).is_file():
            raise UserError(f"--init {init_path}: not a trained model directory (needs {WEIGHTS} and {CARD})")
        if data is None:
            raise UserError("train --init needs --data SITE_DATA (the mine's own labelled windows)")
        base = json.loads((init_path / CARD).read_text()).get("config", {})
        # [finetune] is not inherited: the recipe is this software's (measured), not the base model's
        base = {k: v for k, v in base.items() if k in ("name", "version", "seed", "preprocess", "model", "train",
                                                         "augment", "prune", "quantize", "calibration", "open_set")}
        base["model"] = {k: v for k, v in base.get("model", {}).items()}
        base["data"] = {"source": "files", "train": str(data),
                        "channels": json.loads((init_path / CARD).read_text())["channels"]}
        base["report"] = {"baselines": False, "robustness": False, "label_efficiency": False, "seeds": 1}
        base["name"] = base.get("name", "model") + "-finetuned"
        if config_path is None:
            cfg = load_config(None, {**base, **(overrides or {})})
        else:  # the user's config, but the data are the site's and the architecture is the model's
            cfg = load_config(config_path, overrides)
            cfg["data"].update(base["data"])
            cfg["model"].update(base["model"])
            cfg["preprocess"].update(base.get("preprocess", {}))
    else:
        cfg = load_config(config_path, overrides)
        if data is not None:
            cfg["data"]["source"], cfg["data"]["train"] = "files", str(data)
    unl = None
    if unlabelled is not None:
        if init_path is None:
            raise UserError("train --adapt-unlabelled DIR needs --init MODEL_DIR")
        from training.adapt import read_unlabelled_windows
        unl = read_unlabelled_windows(unlabelled)
    t0 = time.perf_counter()
    splits = D.load_splits(cfg)
    log(f"data: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} ({time.perf_counter() - t0:.0f} s)"
        + (f", unlabelled {len(unl)}" if unl is not None else ""))
    if out.exists():
        shutil.rmtree(out / "plots", ignore_errors=True)
    card = write_report(cfg, fit_and_export(cfg, splits, out, init=init_path, unlabelled=unl))
    log(f"wrote {out} ({time.perf_counter() - t0:.0f} s)")
    return card


def target_summary(card: dict) -> tuple[str, list[str]]:
    """The closing lines of ``stopewatch train``: each target met or MISSED with its figure (from the
    card's metrics and its config's targets), and the keys of the missed ones."""
    from training.report import check_targets

    targets = check_targets(card.get("metrics", {}), card.get("config", {}).get("targets"))
    lines, missed = ["targets:"], []
    for t in targets:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        v = t["measured"]
        figure = "-" if v is None else (str(v) if isinstance(v, bool) else f"{v:.4f}")
        lines.append(f"  {state:<12} {t['what']}: {figure} (target {t['target']})")
        if t["met"] is False:
            missed.append(t["key"])
    lines.append(f"{len(targets) - len(missed)} of {len(targets)} targets met" +
                 (f"; MISSED: {', '.join(missed)}" if missed else ""))
    return "\n".join(lines), missed
