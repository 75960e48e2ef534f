"""The training report's experiments: latency, size, classical baselines, robustness
curves, label efficiency, and repeated runs over seeds."""

from __future__ import annotations

import contextlib
import copy
import gzip
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.gateway.features import baseline_names, baseline_vector
from edge.gateway.model import Classifier, load_interpreter_class, quantize, tflite_logits
from edge.gateway.preprocess import PreprocessParams, filter_windows
from edge.vocabulary import CLASSES
from training import data as D
from training import metrics as M


@contextlib.contextmanager
def one_core():
    """Pin this process to a single CPU for the duration (latency on one core)."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def timed(fn, runs: int) -> dict:
    """Wall time of ``fn`` over ``runs`` calls after a warm-up: median, p90, p99 and mean in ms."""
    for _ in range(max(5, runs // 10)):
        fn()
    t = np.empty(runs)
    for k in range(runs):
        t0 = time.perf_counter()
        fn()
        t[k] = time.perf_counter() - t0
    return {"median_ms": float(np.median(t) * 1e3), "p90_ms": float(np.percentile(t, 90) * 1e3),
            "p99_ms": float(np.percentile(t, 99) * 1e3), "mean_ms": float(t.mean() * 1e3), "runs": runs}


def tflite_latency(path: Path, x: np.ndarray, runs: int) -> dict:
    """Per-window invoke latency (set_tensor + invoke + get_tensor) with num_threads=1 on one core."""
    it = load_interpreter_class()(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    w = x[:1]
    if i["dtype"] == np.int8:
        w = quantize(w, *i["quantization"])

    def call():
        it.set_tensor(i["index"], w)
        it.invoke()
        it.get_tensor(o["index"])

    with one_core():
        return timed(call, runs)


def keras_latency(model, x: np.ndarray, runs: int) -> dict:
    """Per-window latency of the Keras model (a traced tf.function call) on one core."""
    from training.tf_env import tensorflow
    tf, _, _ = tensorflow()
    fn = tf.function(lambda t: model(t, training=False))
    w = tf.constant(x[:1])
    with one_core():
        return timed(lambda: fn(w).numpy(), runs)


def size_of(path: Path) -> dict:
    """Bytes and gzip bytes of a file."""
    raw = path.read_bytes()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9, mtime=0))}


# --------------------------------------------------------------------------- classical baselines
def features_of(prep: D.Prepared, fs: float) -> np.ndarray:
    """Baseline feature matrix of filtered windows."""
    return np.stack([baseline_vector(w, fs) for w in prep.x]) if len(prep.x) else np.zeros((0, len(baseline_names(fs))))


def baselines(train: D.Prepared, tests: dict[str, D.Prepared], fs: float, seed: int) -> dict:
    """Logistic regression, decision tree, naive Bayes, SVM and random forest on classical features,
    trained on the same training split, macro-F1 on each test split."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    t0 = time.perf_counter()
    xtr = np.nan_to_num(features_of(train, fs))
    feats = {k: np.nan_to_num(features_of(p, fs)) for k, p in tests.items()}
    models = {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "decision_tree": DecisionTreeClassifier(random_state=seed, min_samples_leaf=2),
        "naive_bayes": make_pipeline(StandardScaler(), GaussianNB()),
        "svm_rbf": make_pipeline(StandardScaler(), SVC(C=10.0, gamma="scale")),
        "random_forest": RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1),
    }
    out: dict = {"features": baseline_names(fs), "feature_seconds": time.perf_counter() - t0, "models": {}}
    for name, clf in models.items():
        t1 = time.perf_counter()
        clf.fit(xtr, train.y)
        res = {"fit_seconds": time.perf_counter() - t1}
        for split, xf in feats.items():
            res[split] = M.classification_metrics(tests[split].y, clf.predict(xf))["macro_f1"]
        out["models"][name] = res
    return out


# --------------------------------------------------------------------------- robustness
def robustness(int8_path: Path, test: D.Prepared, params: PreprocessParams, seed: int, n: int = 900) -> dict:
    """Macro-F1 of the int8 model vs added band-limited white noise, time shift and amplitude scale."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(test.x))[:n])
    x, y = test.x[idx], test.y[idx]
    clip = params.clip

    def f1(xf):
        return M.classification_metrics(y, tflite_logits(int8_path, D.to_model_input(xf, clip)).argmax(1))["macro_f1"]

    noise = filter_windows(rng.standard_normal(x.shape).astype(np.float32), params)
    rms_x = np.sqrt(np.mean(x ** 2, axis=(1, 2), keepdims=True))
    rms_n = np.sqrt(np.mean(noise ** 2, axis=(1, 2), keepdims=True))
    res = {"n": int(len(y)), "noise": [], "time_shift": [], "amplitude": []}
    for snr in (None, 20.0, 10.0, 5.0, 0.0, -5.0):
        xf = x if snr is None else x + noise * (rms_x / rms_n * 10 ** (-snr / 20))
        res["noise"].append({"added_noise_snr_db": snr, "macro_f1": f1(xf)})
    for shift in (-800, -400, 0, 400, 800, 1600):
        res["time_shift"].append({"shift_samples": shift, "shift_s": shift / params.fs,
                                  "macro_f1": f1(np.roll(x, shift, axis=-1))})
    for scale in (1e-3, 0.1, 1.0, 10.0, 1e3):
        res["amplitude"].append({"scale": scale, "macro_f1": f1(x * np.float32(scale))})
    return res


# --------------------------------------------------------------------------- label efficiency
def _fit_fixed(model, prep: D.Prepared, cfg: dict, epochs: int, lr: float, seed: int) -> None:
    """Train for a fixed number of epochs (too few site samples to hold out a validation set)."""
    from training.train import compile_model
    rng = np.random.default_rng(seed)
    compile_model(model, lr)
    w = D.class_weights(prep.y, len(CLASSES))
    background = prep.x[prep.y == CLASSES.index("noise")]
    for e in range(epochs):
        model.optimizer.learning_rate.assign(lr * 0.5 * (1 + np.cos(np.pi * e / epochs)))
        xa = D.to_model_input(D.augment(prep.x, rng, cfg["augment"], background), cfg["preprocess"]["clip"])
        order = rng.permutation(len(xa))
        model.fit(xa[order], prep.y[order], sample_weight=w[prep.y[order]],
                  batch_size=min(32, len(xa)), epochs=1, verbose=0)


def label_efficiency(cfg: dict, model_dir: Path, site: str, test: D.Prepared, sizes: list[int]) -> dict:
    """Macro-F1 on one held-out site with n site samples: fine-tuned from the trained model vs from scratch
    (float Keras models, same augmentation, fixed epochs)."""
    from training.net import build_model
    from training.train import WEIGHTS, log

    params = PreprocessParams.from_dict(cfg["preprocess"])
    ch, policy = cfg["data"]["channels"], cfg["model"]["channel_policy"]
    pool_ws = D.synthetic(max(sizes), cfg["data"]["heldout_seed"] + 7, [site], channels=ch,
                          snr_db=tuple(cfg["data"]["snr_db"]), fs=params.fs, samples=params.samples)
    pool = D.prepare(pool_ws, params, ch, policy)
    x_test = D.to_model_input(test.x, params.clip)
    res = {"site": site, "test_n": int(len(test.y)), "sizes": [], "finetuned": [], "scratch": []}
    for n in sizes:
        sub = D.Prepared(pool.x[:n], pool.y[:n], pool_ws.subset(np.arange(n)))
        ft = build_model(ch, params.samples, len(CLASSES), cfg["model"])
        ft.load_weights(str(model_dir / WEIGHTS))
        zero_shot = M.classification_metrics(test.y, ft.predict(x_test, verbose=0).argmax(1))["macro_f1"]
        _fit_fixed(ft, sub, cfg, epochs=10, lr=cfg["finetune"]["learning_rate"], seed=cfg["seed"] + n)
        sc = build_model(ch, params.samples, len(CLASSES), cfg["model"])
        _fit_fixed(sc, sub, cfg, epochs=40, lr=cfg["train"]["learning_rate"], seed=cfg["seed"] + n)
        res["sizes"].append(n)
        res["finetuned"].append(M.classification_metrics(test.y, ft.predict(x_test, verbose=0).argmax(1))["macro_f1"])
        res["scratch"].append(M.classification_metrics(test.y, sc.predict(x_test, verbose=0).argmax(1))["macro_f1"])
        res["zero_shot"] = zero_shot
        log(f"label efficiency {site} n={n}: fine-tuned {res['finetuned'][-1]:.4f}, scratch {res['scratch'][-1]:.4f}")
    return res


# --------------------------------------------------------------------------- seeds
def other_seeds(cfg: dict, splits: dict, count: int) -> list[dict]:
    """Repeat the whole fit (dense, prune, int8) with seeds cfg.seed+1.. and evaluate each int8 model."""
    from training.evaluate import evaluate_split
    from training.train import fit_and_export, log

    runs = []
    for k in range(1, count):
        c = copy.deepcopy(cfg)
        c["seed"] = cfg["seed"] + k
        tmp = Path(tempfile.mkdtemp(prefix=f"stopewatch-seed{c['seed']}-"))
        try:
            log(f"seed run {k + 1}/{count} (seed {c['seed']})")
            trained = fit_and_export(c, splits, tmp)
            run = {"seed": c["seed"], "sparsity": trained.card["sparsity"]}
            clf = Classifier(tmp)
            for split in D.SUITES:
                if split in splits:
                    run[split] = evaluate_split(clf, splits[split]).report["macro_f1"]
            runs.append(run)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return runs
