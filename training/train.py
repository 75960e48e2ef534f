"""Train, prune, quantize, convert, calibrate and evaluate one model (``stopewatch train``).

Phases: (1) dense training with augmentation, class weighting and early stopping on
validation macro-F1; (2) magnitude pruning (PolynomialDecay to the target sparsity)
and strip_pruning; (3) export through a SavedModel to float and full-int8 TFLite
(representative data from the training set); quantization-aware training only if
int8 loses more than the configured macro-F1; (4) temperature and ``unknown``
threshold fitted on validation logits of the int8 model; (5) evaluation of the
written model through ``edge.gateway.model.Classifier`` -- the gateway's own code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.gateway.model import CARD, CARD_FORMAT, TFLITE, Classifier, sha256_file
from edge.gateway.preprocess import PreprocessParams
from edge.vocabulary import CLASSES
from training import data as D
from training import metrics as M
from training.tf_env import set_seeds, tensorflow

FLOAT_TFLITE = "model_float.tflite"
WEIGHTS = "model.weights.h5"


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


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
    best, best_weights, since, history = -1.0, None, 0, []
    verbose = 1 if sys.stderr.isatty() else 2
    for epoch in range(epochs):
        model.optimizer.learning_rate.assign(lr * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs))))
        xa = D.to_model_input(D.augment(train.x, rng, cfg["augment"], background), clip)
        order = rng.permutation(len(xa))
        t0 = time.perf_counter()
        h = model.fit(xa[order], train.y[order], sample_weight=weights[train.y[order]],
                      batch_size=cfg["train"]["batch_size"], epochs=epoch + 1, initial_epoch=epoch,
                      shuffle=False, verbose=verbose, callbacks=list(callbacks))
        del xa
        f1 = macro_f1_of(model, x_val, y_val)
        history.append({"phase": phase, "epoch": epoch + 1, "loss": float(h.history["loss"][-1]),
                        "val_macro_f1": f1, "seconds": time.perf_counter() - t0})
        log(f"{phase} epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f}, val macro-F1 {f1:.4f}")
        if epoch < select_from:
            continue
        if f1 > best:
            best, best_weights, since = f1, [w.copy() for w in model.get_weights()], 0
        else:
            since += 1
            if since >= patience:
                log(f"{phase}: early stop (no val macro-F1 gain for {patience} epochs)")
                break
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
    pruned.compile(optimizer=keras.optimizers.Adam(lr),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
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


def compile_model(model, lr: float):
    _, keras, _ = tensorflow()
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
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
        with warnings.catch_warnings():
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


def tflite_logits(content_or_path, x: np.ndarray) -> np.ndarray:
    """Logits of prepared inputs (n, samples, channels) through the LiteRT interpreter (dequantized)."""
    from edge.gateway.model import dequantize, load_interpreter_class, quantize
    cls = load_interpreter_class()
    kw = {"model_content": content_or_path} if isinstance(content_or_path, bytes) \
        else {"model_path": str(content_or_path)}
    it = cls(num_threads=1, **kw)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = np.empty((len(x), o["shape"][-1]), np.float32)
    for k in range(len(x)):
        w = x[k:k + 1]
        if i["dtype"] == np.int8:
            w = quantize(w, *i["quantization"])
        it.set_tensor(i["index"], w)
        it.invoke()
        y = it.get_tensor(o["index"])[0]
        out[k] = dequantize(y, *o["quantization"]) if o["dtype"] == np.int8 else y
    return out


def tflite_info(content: bytes) -> dict:
    """Ops, input/output types and quantization, and int8 weight sparsity of a converted model."""
    from edge.gateway.model import load_interpreter_class
    it = load_interpreter_class()(model_content=content, num_threads=1)
    it.allocate_tensors()
    ops = sorted({op["op_name"] for op in it._get_ops_details()})
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    return {"ops": ops, "input": {"dtype": np.dtype(i["dtype"]).name, "shape": [int(v) for v in i["shape"]],
                                  "scale": float(i["quantization"][0]), "zero_point": int(i["quantization"][1])},
            "output": {"dtype": np.dtype(o["dtype"]).name, "scale": float(o["quantization"][0]),
                       "zero_point": int(o["quantization"][1])}}


def quantization_aware(model, train, x_val, y_val, cfg, rng, representative) -> tuple[object, bytes, list]:
    """Quantization-aware fine-tuning that preserves the pruning masks; returns (model, int8 bytes, history)."""
    tf, keras, tfmot = tensorflow()
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    qat = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    compile_model(qat, cfg["train"]["learning_rate"] / 10)
    hist = run_epochs(qat, train, x_val, y_val, cfg, epochs=cfg["quantize"]["qat_epochs"],
                      lr=cfg["train"]["learning_rate"] / 10, patience=99, rng=rng, phase="qat")
    return qat, convert(qat, representative, int8=True), hist


# --------------------------------------------------------------------------- one full fit
def fit_and_export(cfg: dict, splits: dict, out: Path, init: Path | None = None, quiet_extras: bool = False) -> dict:
    """Train (or fine-tune from ``init``), prune, convert, calibrate; write the model directory.
    Returns a dict with the card, the stripped Keras model, prepared validation data and history."""
    tf, keras, _ = tensorflow()
    from training.net import build_model, macs

    seed = cfg["seed"]
    set_seeds(seed)
    rng = np.random.default_rng(seed)
    params = PreprocessParams.from_dict(cfg["preprocess"], "preprocess")
    ch, policy = cfg["data"]["channels"], cfg["model"]["channel_policy"]
    t0 = time.perf_counter()
    train = D.prepare(splits["train"], params, ch, policy)
    val = D.prepare(splits["val"], params, ch, policy)
    keep = train.y >= 0
    train = D.Prepared(train.x[keep], train.y[keep], splits["train"].subset(keep))
    x_val = D.to_model_input(val.x, params.clip)
    log(f"prepared {len(train.x)} training and {len(val.x)} validation windows in {time.perf_counter() - t0:.1f} s")

    model = build_model(ch, params.samples, len(CLASSES), cfg["model"])
    history: list[dict] = []
    if init is not None:
        model.load_weights(str(init / WEIGHTS))
        ft = cfg["finetune"]
        compile_model(model, ft["learning_rate"])
        history += run_epochs(model, train, x_val, val.y, cfg, epochs=ft["epochs"], lr=ft["learning_rate"],
                              patience=cfg["train"]["patience"], rng=rng, phase="finetune")
        model, h, prune_info = prune(model, train, x_val, val.y, cfg, rng, ft["prune_epochs"],
                                     ft["learning_rate"] / 2, constant=True)
    else:
        lr = cfg["train"]["learning_rate"]
        compile_model(model, lr)
        history += run_epochs(model, train, x_val, val.y, cfg, epochs=cfg["train"]["epochs"], lr=lr,
                              patience=cfg["train"]["patience"], rng=rng, phase="dense")
        model, h, prune_info = prune(model, train, x_val, val.y, cfg, rng, cfg["prune"]["epochs"], lr / 3)
    history += h
    train_seconds = time.perf_counter() - t0
    sparsity = kernel_sparsity(model)
    log(f"pruned: {sparsity['overall']:.1%} of {sparsity['weights']} kernel weights are zero")

    rep = representative_set(train, cfg["quantize"]["representative"], params.clip, seed)
    float_bytes = convert(model, rep, int8=False)
    int8_bytes = convert(model, rep, int8=True)
    f1_float = M.classification_metrics(val.y, tflite_logits(float_bytes, x_val).argmax(1))["macro_f1"]
    val_logits = tflite_logits(int8_bytes, x_val)
    f1_int8 = M.classification_metrics(val.y, val_logits.argmax(1))["macro_f1"]
    quant = {"method": "post-training full-integer", "val_macro_f1_float": f1_float, "val_macro_f1_int8": f1_int8}
    if f1_float - f1_int8 > cfg["quantize"]["max_f1_loss"] and cfg["quantize"]["qat_epochs"] > 0:
        log(f"int8 loses {f1_float - f1_int8:.4f} val macro-F1 (> {cfg['quantize']['max_f1_loss']}): "
            "quantization-aware training")
        try:
            _, qat_bytes, qh = quantization_aware(model, train, x_val, val.y, cfg, rng, rep)
            history += qh
            qat_logits = tflite_logits(qat_bytes, x_val)
            f1_qat = M.classification_metrics(val.y, qat_logits.argmax(1))["macro_f1"]
            quant["qat_val_macro_f1_int8"] = f1_qat
            if f1_qat > f1_int8:
                int8_bytes, val_logits, quant["method"] = qat_bytes, qat_logits, "quantization-aware training"
        except Exception as exc:  # QAT of some layer types is unsupported in tfmot; keep the PTQ model
            quant["qat_error"] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"quantization-aware training failed ({quant['qat_error']}); keeping post-training int8")

    temperature = M.fit_temperature(val_logits, val.y)
    probs = M.softmax(val_logits, temperature)
    threshold = M.unknown_threshold(probs, val.y, cfg["calibration"]["reject_fraction"])
    info = tflite_info(int8_bytes)

    out.mkdir(parents=True, exist_ok=True)
    (out / TFLITE).write_bytes(int8_bytes)
    (out / FLOAT_TFLITE).write_bytes(float_bytes)
    model.save_weights(str(out / WEIGHTS))
    manifest = {name: manifest_of(ws) for name, ws in splits.items()}
    if cfg["data"]["source"] == "synthetic":
        from training.synthetic.generate import GENERATOR_VERSION
        for name, args in D.synthetic_plan(cfg).items():
            if name in manifest:
                manifest[name]["generator"] = {"name": "stopewatch.synthetic", "version": GENERATOR_VERSION, **args}
    else:
        for name, path in (("train", cfg["data"]["train"]), ("val", cfg["data"]["val"]),
                           ("test", cfg["data"]["test"]), ("heldout", cfg["data"]["heldout"])):
            if name in manifest:
                manifest[name]["source"] = path or f"held out of {cfg['data']['train']}"
    card = {
        "format": CARD_FORMAT,
        "name": cfg["name"],
        "version": cfg["version"],
        "sha256": sha256_file(out / TFLITE),
        "files": {TFLITE: sha256_file(out / TFLITE), FLOAT_TFLITE: sha256_file(out / FLOAT_TFLITE),
                  WEIGHTS: sha256_file(out / WEIGHTS)},
        "classes": list(CLASSES),
        "fs": params.fs,
        "channels": ch,
        "samples": params.samples,
        "channel_policy": policy,
        "input_layout": "(1, samples, channels) after edge.gateway.preprocess.preprocess",
        "preprocessing": params.to_dict(),
        "input_quantization": {"dtype": info["input"]["dtype"], "scale": info["input"]["scale"],
                               "zero_point": info["input"]["zero_point"]},
        "output_quantization": info["output"],
        "output": "logits; probabilities = softmax(logits / temperature)",
        "temperature": temperature,
        "unknown_threshold": threshold,
        "unknown_rule": f"label 'unknown' when calibrated top probability < unknown_threshold (the "
                        f"{cfg['calibration']['reject_fraction']:.0%} quantile of correct validation answers)",
        "entropy": "Shannon entropy / log(number of classes)",
        "architecture": {k: cfg["model"][k] for k in ("filters", "kernels", "strides", "dropout")},
        "parameters": int(model.count_params()),
        "macs": macs(model),
        "sparsity": sparsity["overall"],
        "tflite_ops": info["ops"],
        "quantization": quant,
        "pruning": prune_info,
        "seed": seed,
        "training_data": manifest,
        "training_seconds": round(train_seconds, 1),
        "fine_tuned_from": None if init is None else json.loads((init / CARD).read_text())["sha256"],
        "config": cfg,
        "metrics": {},
    }
    write_card(out, card)
    return {"card": card, "model": model, "val": val, "x_val": x_val, "history": history, "train": train}


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


# --------------------------------------------------------------------------- evaluation of a written model
def evaluate_model(model_path: str | Path, ws, classifier: Classifier | None = None) -> dict:
    """The evaluation report of a model file on a WindowSet, through the gateway's Classifier."""
    clf = classifier or Classifier(model_path)
    known = np.isin(ws.labels, clf.classes)
    if not known.any():
        raise UserError(f"none of the windows carries a label the model knows ({', '.join(clf.classes)})")
    ws = ws.subset(known)
    logits = clf.logits_prepared(clf.prepare(ws.waveforms, ws.fs))
    y = np.array([clf.classes.index(str(v)) for v in ws.labels])
    rep = M.evaluate_logits(logits, y, clf.temperature, clf.threshold, ws.snr_db, ws.site, tuple(clf.classes))
    rep["model"] = {"path": str(clf.tflite_path), **clf.identity, "input_dtype": clf.input_dtype.name}
    return rep


def open_set_report(model_path: str | Path, ws) -> dict:
    """Answers of a model to windows of a family it never saw."""
    clf = Classifier(model_path)
    logits = clf.logits_prepared(clf.prepare(ws.waveforms, ws.fs))
    rep = M.open_set(logits, clf.temperature, clf.threshold, tuple(clf.classes))
    rep["family"] = sorted(set(ws.labels.tolist()))
    return rep


def run(config_path: str | Path | None, out: str | Path, overrides: dict | None = None,
        init: str | Path | None = None, data: str | Path | None = None) -> dict:
    """``stopewatch train``: the full pipeline into ``out``; returns the model card."""
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
        base = {k: v for k, v in base.items() if k in ("name", "version", "seed", "preprocess", "model", "train",
                                                         "augment", "prune", "finetune", "quantize",
                                                         "calibration")}
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
    t0 = time.perf_counter()
    splits = D.load_splits(cfg)
    log(f"data: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} ({time.perf_counter() - t0:.0f} s)")
    if out.exists():
        shutil.rmtree(out / "plots", ignore_errors=True)
    result = fit_and_export(cfg, splits, out, init=init_path)
    card = write_report(cfg, splits, out, result)
    log(f"wrote {out} ({time.perf_counter() - t0:.0f} s)")
    return card
