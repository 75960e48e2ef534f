"""Adapting a model to a mine it was not trained on: few-label fine-tuning recipes, the unlabelled path
(AdaBN) and the label-efficiency curve, on the independent crosscheck generator.

The "mine" is ``training.crosscheck`` (another author's physics and recording chains) at the model's
rate and length: by default its low regime (coal / open pit: softer rock, corners of 5-100 Hz, codas of
seconds) on bolted 28 Hz wall geophones, neither of which the 4 kHz models train on. The earlier default, the
high regime on grouted 14 Hz boreholes, no longer qualifies as unseen: models trained with
``[data] mix.crosscheck`` > 0 (2.1.0 and later) see that site type in training and score ~0.90 on it
with no site labels (``--regime high --sites grouted_borehole_14hz`` re-runs it).
The labelled pool, the unlabelled windows and the test set come from disjoint seeds;
each labelled subset is drawn (per class) from the pool with its own draw seed.

Stages (``--stages``):
  strategy    fine-tuning recipes at ``--per-class`` labels per class, one factor at a time around the
              ``[finetune]`` defaults (float Keras on the test set, mean +- std over the draws)
  unlabelled  AdaBN + int8 re-export with mine windows, no labels (int8 through the gateway's Classifier)
  decision    the card's decision bias on the site (int8): the base model's, none, or re-fitted on a share
              of the draw held out for calibration
  curve       8/16/32/64 labels per class: fine-tuned (the defaults) vs trained from scratch on the same
              windows for the same epochs, int8 through the gateway's Classifier, plus a PNG
  selftrain   at ``--per-class`` labels per class plus ``--unlabelled-count`` unlabelled mine windows: the
              default labelled fine-tune vs self-training (round 0: AdaBN on labelled + unlabelled, then the
              fine-tune; rounds 1..``--rounds``: pseudo-labels from the last round, a fresh fine-tune on
              labels + pseudo-labels), the same epochs for all, int8 through the gateway's Classifier

Sizes are reduced to fit about 40 minutes of the shared 2-core machine (a test set of 600 windows, 3
draws); the JSON records them. ``--base`` takes any trained model directory so the measurement can be
re-run on a new shipped model.

    python bench/bench_adaptation.py --base models/triaxial [--stages strategy,unlabelled,curve]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.formats import WindowSet  # noqa: E402
from edge.gateway.model import Classifier  # noqa: E402
from edge.gateway.preprocess import PreprocessParams  # noqa: E402
from edge.vocabulary import CLASSES  # noqa: E402
from training import adapt as A  # noqa: E402
from training import data as D  # noqa: E402
from training import metrics as M  # noqa: E402
from training.config import load_config  # noqa: E402

# One factor at a time around the defaults; each entry overrides [finetune] (or [augment]).
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "freeze_trunk": {"freeze": "trunk"},
    "freeze_all_but_last": {"freeze": "all_but_last"},
    "lr_3e-4": {"learning_rate": 0.0003},
    "lr_1e-3": {"learning_rate": 0.001},
    "epochs_20": {"epochs": 20},
    "epochs_80": {"epochs": 80},
    "no_augment": {"augment": False},
    "no_adabn": {"adabn": False},
    "class_weight_balanced_imbalanced": {},
    "class_weight_none_imbalanced": {"class_weight": "none"},
    "prune_reprune": {"prune": "reprune"},
    "replay_1x": {"replay": 1.0},
    "old_recipe": {"epochs": 12, "batch_size": 64, "adabn": False, "prune": "reprune", "freeze": "none",
                   "learning_rate": 0.001},
    # few-shot transfer recipes: LP-FT (head first, then everything at a lower rate), L2-SP, stronger site
    # augmentation, more epochs stopped early on a split held out of the draw
    "lp_ft": {"lp_epochs": 10, "lp_learning_rate": 0.003, "learning_rate": 0.001},
    "lp_ft_lr_3e-3": {"lp_epochs": 10, "lp_learning_rate": 0.003},
    "l2_sp_1": {"l2_sp": 1.0},
    "l2_sp_10": {"l2_sp": 10.0},
    "augment_strong": {"augment_copies": 2, "site_noise": 0.9},
    "epochs_80_early_stop": {"epochs": 80, "patience": 15},
    "lr_1e-2": {"learning_rate": 0.01},
    "batch_8": {"batch_size": 8},
    "lp_ft_lr_3e-3_epochs_80": {"lp_epochs": 10, "lp_learning_rate": 0.003, "epochs": 80},
    "mixup_0.2_epochs_80": {"mixup": 0.2, "epochs": 80},
    "epochs_160": {"epochs": 160},
}
STAGE_KEYS = ("strategy", "unlabelled", "curve", "decision", "selftrain")
VAL_SHARE = 0.15  # of a draw held out (per class) when a recipe stops early or the decision bias is re-fitted
IMBALANCED = (1.5, 0.5, 1.0, 0.75, 1.0, 1.25)  # per-class share of the same total (few blasts, many noise)


def crosscheck(count: int, seed: int, params: PreprocessParams, sites: list[str] | None, regime: str = "high"):
    """Crosscheck windows at the model's rate and length (onset 0.256 s in)."""
    from training.crosscheck import generate_windows
    return generate_windows(count, seed, fs=params.fs, samples=params.samples, pre_s=0.256, sites=sites,
                            regime=regime)


def draw(pool: D.Prepared, per_class: int | tuple[int, ...], seed: int) -> D.Prepared:
    """A labelled subset: ``per_class`` windows of each class drawn from the pool."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, tuple) else (per_class,) * len(CLASSES)
    idx = np.concatenate([rng.permutation(np.flatnonzero(pool.y == c))[:n] for c, n in enumerate(counts)])
    idx = np.sort(idx)
    return D.Prepared(pool.x[idx], pool.y[idx], pool.source.subset(idx))


def split_draw(sub: D.Prepared, share: float, seed: int) -> tuple[D.Prepared, D.Prepared]:
    """(fit, held out): ``share`` of each class's windows held out, at least one per class."""
    rng = np.random.default_rng(seed + 99)
    held = []
    for c in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(sub.y == c))
        held.append(idx[:max(1, int(round(share * len(idx))))])
    h = np.zeros(len(sub.y), bool)
    h[np.concatenate(held)] = True
    a, b = np.flatnonzero(~h), np.flatnonzero(h)
    return (D.Prepared(sub.x[a], sub.y[a], sub.source.subset(a)), D.Prepared(sub.x[b], sub.y[b], sub.source.subset(b)))


def keras_f1(model, x: np.ndarray, y: np.ndarray) -> float:
    """Closed-set macro-F1 of a Keras model."""
    return M.classification_metrics(y, np.asarray(model.predict(x, batch_size=256, verbose=0)).argmax(1))["macro_f1"]


def mean_std(v: list[float]) -> dict:
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": [float(a) for a in v]}


def fine_tuned(base: Path, sub: D.Prepared, cfg: dict, seed: int, replay: D.Prepared | None):
    """The base model fine-tuned on ``sub`` with ``cfg['finetune']`` (pruning re-applied when asked)."""
    from training.tf_env import set_seeds
    from training.train import prune
    set_seeds(seed)
    rng = np.random.default_rng(seed)
    model = A.load_base(base)
    rep = None
    if cfg["finetune"]["replay"] > 0 and replay is not None:
        rep = draw(replay, int(round(cfg["finetune"]["replay"] * len(sub.y) / len(CLASSES))), seed)
    if cfg["finetune"]["patience"] > 0:  # early stopping needs a held-out split: it comes out of the draw
        sub, val = split_draw(sub, VAL_SHARE, seed)
        A.finetune(model, sub, cfg, rng, replay=rep, x_val=D.to_model_input(val.x, cfg["preprocess"]["clip"]),
                   y_val=val.y)
    else:
        A.finetune(model, sub, cfg, rng, replay=rep)
    if cfg["finetune"]["prune"] == "reprune":
        x_sub = D.to_model_input(sub.x, cfg["preprocess"]["clip"])
        c = copy.deepcopy(cfg)
        c["train"]["batch_size"] = cfg["finetune"]["batch_size"]
        model, _, _ = prune(model, sub, x_sub, sub.y, c, rng, cfg["finetune"]["prune_epochs"],
                            cfg["finetune"]["learning_rate"] / 2, constant=True)
    return model


def from_scratch(sub: D.Prepared, cfg: dict, card: dict, seed: int):
    """A new network trained on ``sub`` only, same epochs and augmentation, the training's learning rate."""
    from training.net import build_model
    from training.tf_env import set_seeds
    set_seeds(seed)
    model = build_model(int(card["channels"]), int(card["samples"]), len(CLASSES), card["config"]["model"])
    c = copy.deepcopy(cfg)
    c["finetune"].update({"freeze": "none", "adabn": False, "prune": "none", "replay": 0.0, "lp_epochs": 0,
                          "l2_sp": 0.0, "patience": 0, "learning_rate": cfg["train"]["learning_rate"]})
    A.finetune(model, sub, c, np.random.default_rng(seed), phase="scratch")
    return model


def int8_f1(model, base: Path, sub: D.Prepared, test_ws, clip: float, what: str, cal: D.Prepared | None = None,
            decision_bias: str = "keep", costs: dict | None = None) -> dict:
    """Write ``model`` as a gateway model (int8, representative set from the site windows; temperature, and
    the decision bias when re-fitted, on ``cal``, default ``sub``) and score it through
    ``edge.gateway.model.Classifier``."""
    from training.evaluate import evaluate_split
    cal = sub if cal is None else cal
    with tempfile.TemporaryDirectory() as tmp:
        A.write_adapted(Path(tmp) / "m", base, model, D.to_model_input(sub.x, clip), {"method": what},
                        (D.to_model_input(cal.x, clip), cal.y), decision_bias, costs)
        rep = evaluate_split(Classifier(Path(tmp) / "m"), test_ws).report
    return {"macro_f1": rep["macro_f1"], "microseismic_recall": rep["microseismic_recall"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default=str(ROOT / "models" / "triaxial"), help="trained model directory")
    ap.add_argument("--sites", default="bolted_wall_28hz",
                    help="the mine's crosscheck site types, comma-separated ('' for all eight)")
    ap.add_argument("--regime", default="low", choices=("high", "low"),
                    help="the mine's crosscheck regime: high (hard rock) or low (coal / open pit: lower corners, "
                    "longer codas), generated at the model's rate")
    ap.add_argument("--stages", default="strategy,unlabelled,curve")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="strategy variants to run")
    ap.add_argument("--per-class", type=int, default=32)
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--test-count", type=int, default=600)
    ap.add_argument("--pool-seed", type=int, default=7100)
    ap.add_argument("--unlabelled-seed", type=int, default=7200)
    ap.add_argument("--test-seed", type=int, default=7300)
    ap.add_argument("--unlabelled-count", type=int, default=600, help="unlabelled mine windows (selftrain)")
    ap.add_argument("--rounds", type=int, default=2, help="self-training rounds scored (selftrain)")
    ap.add_argument("--pseudo-per-class", type=int, help="pseudo-labels per class and round (selftrain; "
                    "default the [finetune] one)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "adaptation.json"))
    ap.add_argument("--merge", action="store_true", help="keep the other stages and strategy variants already "
                    "in --out (partial runs compose)")
    args = ap.parse_args(argv)

    t_all = time.perf_counter()
    base = Path(args.base)
    card = A.card_of(base)
    cfg = load_config(None, {"preprocess": card["preprocessing"]})
    params = PreprocessParams.from_dict(card["preprocessing"])
    ch, policy, clip = int(card["channels"]), card.get("channel_policy", "zero_fill"), params.clip
    sites = [s for s in args.sites.split(",") if s] or None
    sizes = [int(v) for v in args.sizes.split(",")]
    stages = set(args.stages.split(","))
    pool_per_class = max(max(sizes), args.per_class) * 2
    t0 = time.perf_counter()
    pool_ws = crosscheck(pool_per_class * len(CLASSES), args.pool_seed, params, sites, args.regime)
    test_ws = crosscheck(args.test_count, args.test_seed, params, sites, args.regime)
    pool = D.prepare(pool_ws, params, ch, policy)
    test = D.prepare(test_ws, params, ch, policy)
    x_test = D.to_model_input(test.x, clip)
    gen_s = time.perf_counter() - t0
    replay = A.replay_windows(pool_per_class * len(CLASSES), 8100, params, ch, policy)
    zero_shot_float = keras_f1(A.load_base(base), x_test, test.y)
    from training.evaluate import evaluate_split
    zero_shot_int8 = evaluate_split(Classifier(base), test_ws).report["macro_f1"]
    res: dict = {
        "what": "adaptation of a trained model to the crosscheck generator (a mine it never saw)",
        "base": {"path": str(base), "sha256": card["sha256"], "name": card.get("name")},
        "domain": {"generator": "training.crosscheck", "sites": sites or "all eight site types", "regime": args.regime,
                   "fs": params.fs, "samples": params.samples, "pre_s": 0.256,
                   "pool": {"seed": args.pool_seed, "per_class": pool_per_class},
                   "test": {"seed": args.test_seed, "count": len(test.y)},
                   "unlabelled": {"seed": args.unlabelled_seed}, "draw_seeds": list(range(args.draws)),
                   "replay": {"generator": "training.synthetic (training sites)", "seed": 8100}},
        "zero_shot": {"float_keras_macro_f1": zero_shot_float, "int8_macro_f1": zero_shot_int8},
        "reduced_sizes": f"test set {len(test.y)} windows, {args.draws} draws per setting, float Keras for the "
                         "recipe comparison (int8 for the unlabelled path and the curve)",
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "generate_seconds": gen_s,
    }
    if args.merge and Path(args.out).is_file():
        res = {**{k: v for k, v in json.loads(Path(args.out).read_text()).items() if k in STAGE_KEYS}, **res}
    print(f"zero-shot on the mine: float {zero_shot_float:.4f}, int8 {zero_shot_int8:.4f}", flush=True)

    if "strategy" in stages:
        t1 = time.perf_counter()
        out = {}
        for name in args.variants.split(","):
            c = copy.deepcopy(cfg)
            c["finetune"].update(VARIANTS[name])
            per = tuple(int(round(s * args.per_class)) for s in IMBALANCED) if "imbalanced" in name \
                else args.per_class
            f1s, secs, sparsity = [], [], []
            for d in range(args.draws):
                sub = draw(pool, per, 1000 * d + 17)
                ts = time.perf_counter()
                model = fine_tuned(base, sub, c, seed=d + 1, replay=replay)
                secs.append(time.perf_counter() - ts)
                f1s.append(keras_f1(model, x_test, test.y))
                from training.train import kernel_sparsity
                sparsity.append(kernel_sparsity(model)["overall"])
            out[name] = {"override": VARIANTS[name], "finetune": c["finetune"], "draws": args.draws,
                         "labels": per if isinstance(per, tuple) else [per] * 6,
                         "float_macro_f1": mean_std(f1s), "sparsity": float(np.mean(sparsity)),
                         "seconds_per_fit": float(np.mean(secs))}
            res["strategy_partial"] = out
            _save(args.out, res)
            print(f"strategy {name:<34} macro-F1 {np.mean(f1s):.4f} +- {np.std(f1s):.4f} "
                  f"sparsity {np.mean(sparsity):.2f} ({np.mean(secs):.0f} s/fit)", flush=True)
        del res["strategy_partial"]
        res["strategy"] = {"per_class": args.per_class, "defaults": cfg["finetune"], "variants": out,
                           "seconds": time.perf_counter() - t1}
        if args.merge and Path(args.out).is_file():  # partial runs (a few variants each) compose
            old = json.loads(Path(args.out).read_text()).get("strategy", {})
            res["strategy"]["variants"] = {**old.get("variants", {}), **out}
            res["strategy"]["seconds"] += old.get("seconds", 0.0)
        _save(args.out, res)

    if "unlabelled" in stages:
        t1 = time.perf_counter()
        unl_ws = crosscheck(600, args.unlabelled_seed, params, sites, args.regime)
        unl_ws = WindowSet(unl_ws.waveforms, np.full(len(unl_ws), "", dtype="<U1"), unl_ws.fs)  # labels dropped
        with tempfile.TemporaryDirectory() as tmp:
            from edge.formats import write_windows
            write_windows(Path(tmp) / "unlabelled.npz", unl_ws)
            rows = {}
            for n in (50, 200, 600):
                sub_path = Path(tmp) / f"u{n}.npz"
                write_windows(sub_path, unl_ws.subset(np.arange(n)))
                A.adapt_unlabelled(base, sub_path, Path(tmp) / f"a{n}")
                rows[str(n)] = evaluate_split(Classifier(Path(tmp) / f"a{n}"), test_ws).report["macro_f1"]
                print(f"unlabelled AdaBN on {n} windows: int8 macro-F1 {zero_shot_int8:.4f} -> {rows[str(n)]:.4f}",
                      flush=True)
        res["unlabelled"] = {"method": "AdaBN + int8 re-export with site windows as representative set",
                             "int8_macro_f1_before": zero_shot_int8, "int8_macro_f1_after_by_windows": rows,
                             "seconds": time.perf_counter() - t1}
        _save(args.out, res)

    if "decision" in stages:  # the card's decision bias on the site: the base model's, none, or re-fitted
        t1 = time.perf_counter()
        modes = {m: [] for m in A.DECISION_BIAS}
        for d in range(args.draws):
            sub, cal = split_draw(draw(pool, args.per_class, 1000 * d + 17), VAL_SHARE, d + 1)
            model = fine_tuned(base, sub, cfg, d + 1, replay)
            for m in modes:
                modes[m].append(int8_f1(model, base, sub, test_ws, clip, "fine-tuned", cal, m, cfg["decision"]))
            print("decision bias " + ", ".join(f"{m} {modes[m][-1]['macro_f1']:.4f}" for m in modes), flush=True)
        res["decision"] = {"per_class": args.per_class, "held_out_share": VAL_SHARE,
                           "base_decision_bias": card.get("decision_bias"),
                           "what": "fine-tuned (defaults) on the draw less its held-out share; temperature (and the "
                                   "bias when re-fitted) on the held-out share; int8 through the Classifier",
                           **{m: {"macro_f1": mean_std([r["macro_f1"] for r in v]),
                                  "microseismic_recall": mean_std([r["microseismic_recall"] for r in v])}
                              for m, v in modes.items()},
                           "seconds": time.perf_counter() - t1}
        _save(args.out, res)

    if "selftrain" in stages:
        res["selftrain"] = selftrain_stage(args, base, pool, test_ws, cfg, replay, clip, params, ch, policy, sites,
                                           lambda part: _save(args.out, {**res, "selftrain": part}))
        _save(args.out, res)

    if "curve" in stages:
        t1 = time.perf_counter()
        curve = {"sizes_per_class": sizes, "finetuned": [], "scratch": [], "epochs": cfg["finetune"]["epochs"]}
        for n in sizes:
            ft, sc = [], []
            for d in range(args.draws):
                sub = draw(pool, n, 1000 * d + 17)
                ft.append(int8_f1(fine_tuned(base, sub, cfg, d + 1, replay), base, sub, test_ws, clip,
                                  "fine-tuned")["macro_f1"])
                sc.append(int8_f1(from_scratch(sub, cfg, card, d + 1), base, sub, test_ws, clip,
                                  "from scratch")["macro_f1"])
            curve["finetuned"].append(mean_std(ft))
            curve["scratch"].append(mean_std(sc))
            res["curve"] = {**curve, "done_sizes": sizes[:len(curve["finetuned"])]}
            _save(args.out, res)
            print(f"curve {n:>3} per class: fine-tuned {np.mean(ft):.4f} +- {np.std(ft):.4f}, "
                  f"scratch {np.mean(sc):.4f} +- {np.std(sc):.4f}", flush=True)
        curve["seconds"] = time.perf_counter() - t1
        res["curve"] = curve
        png = Path(args.out).with_suffix(".png")
        _plot(curve, zero_shot_int8, png)
        res["curve"]["plot"] = str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png)
    res["seconds"] = time.perf_counter() - t_all
    _save(args.out, res)
    print(f"wrote {args.out} ({res['seconds']:.0f} s)")
    return 0


def selftrain_stage(args, base: Path, pool: D.Prepared, test_ws, cfg: dict, replay, clip: float, params, ch: int,
                    policy: str, sites, save) -> dict:
    """The default labelled fine-tune vs self-training with the mine's unlabelled windows, per draw; each
    self-training round scored (int8 through the Classifier) as it finishes, with its pseudo-labels'
    accuracy against the windows' true labels (which the self-training never reads)."""
    from training.tf_env import set_seeds
    t1 = time.perf_counter()
    c = copy.deepcopy(cfg)
    c["finetune"]["self_training_rounds"] = args.rounds
    if args.pseudo_per_class:
        c["finetune"]["pseudo_per_class"] = args.pseudo_per_class
    unl_ws = crosscheck(args.unlabelled_count, args.unlabelled_seed, params, sites, args.regime)
    truth = D.prepare(unl_ws, params, ch, policy).y
    unl = D.prepare(WindowSet(unl_ws.waveforms, np.full(len(unl_ws), "", dtype="<U1"), unl_ws.fs), params, ch,
                    policy)  # labels dropped
    out: dict = {"per_class": args.per_class, "unlabelled_windows": len(unl.y), "unlabelled_seed": args.unlabelled_seed,
                 "unlabelled_class_counts": {k: int((truth == i).sum()) for i, k in enumerate(CLASSES)},
                 "epochs": c["finetune"]["epochs"], "finetune": c["finetune"], "draws": args.draws,
                 "what": "int8 macro-F1 through the Classifier; baseline: the [finetune] defaults on the labels alone; "
                         "round 0: AdaBN on labelled + unlabelled windows, then the same fine-tune; round r: a fresh "
                         "fine-tune from the base on labels + pseudo-labels of round r-1's model; every fine-tune "
                         f"{c['finetune']['epochs']} epochs",
                 "baseline": [], "rounds": {str(r): [] for r in range(args.rounds + 1)}, "pseudo": []}
    for d in range(args.draws):
        sub = draw(pool, args.per_class, 1000 * d + 17)
        base_f1 = int8_f1(fine_tuned(base, sub, cfg, d + 1, replay), base, sub, test_ws, clip, "fine-tuned")
        out["baseline"].append(base_f1["macro_f1"])
        print(f"selftrain draw {d}: baseline {base_f1['macro_f1']:.4f}", flush=True)
        set_seeds(d + 1)

        def scored(r: int, model, rec: dict, d: int = d, sub: D.Prepared = sub) -> None:
            f1 = int8_f1(model, base, sub, test_ws, clip, f"self-trained, round {r}")["macro_f1"]
            out["rounds"][str(r)].append(f1)
            if r > 0:
                right = truth[rec["indices"]] == rec["labels"]
                out["pseudo"].append({"draw": d, "round": r, "count": int(len(rec["indices"])),
                                      "accuracy": float(right.mean()) if len(right) else None,
                                      "per_class": rec["pseudo_labels"], "mean_confidence": rec["mean_confidence"]})
                print(f"selftrain draw {d} round {r}: {f1:.4f} ({len(right)} pseudo-labels, "
                      f"{right.mean():.3f} right)", flush=True)
            else:
                print(f"selftrain draw {d} round 0 (AdaBN on labelled + unlabelled): {f1:.4f}", flush=True)
            save(out)

        A.self_train(lambda: A.load_base(base), sub, unl, c, np.random.default_rng(d + 1), on_round=scored)
    out["summary"] = {"baseline": mean_std(out["baseline"]),
                      **{f"round_{r}": mean_std(v) for r, v in out["rounds"].items()}}
    out["seconds"] = time.perf_counter() - t1
    for k, v in out["summary"].items():
        print(f"selftrain {k:<9} int8 macro-F1 {v['mean']:.4f} +- {v['std']:.4f}", flush=True)
    return out


def _plot(curve: dict, zero_shot: float, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    n = curve["sizes_per_class"]
    for key, label in (("finetuned", "fine-tuned from the shipped model"), ("scratch", "trained from scratch")):
        m = [r["mean"] for r in curve[key]]
        s = [r["std"] for r in curve[key]]
        ax.errorbar(n, m, yerr=s, marker="o", capsize=3, label=label)
    ax.axhline(zero_shot, color="grey", ls="--", label="shipped model, no site labels")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(v) for v in n])
    ax.set_xlabel("labelled site windows per class")
    ax.set_ylabel("macro-F1 (int8, gateway Classifier)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Label efficiency on an unseen generator (crosscheck)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def _save(path: str, res: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(res, indent=2, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
                          + "\n")


if __name__ == "__main__":
    sys.exit(main())
