"""The training report: evaluations through the gateway's classifier (``training.evaluate``), targets
met or missed, report.json, report.md and PNG plots; the headline metrics go into the model card."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from edge.gateway.model import TFLITE, Classifier, softmax
from training import data as D
from training import experiments as X
from training import metrics as M
from training.config import DEFAULTS
from training.evaluate import confusion_figure, evaluate_split, open_set_split, share

# How each target of the config's [targets] table is compared, and what it measures. Per-suite targets
# ("{suite}") are checked on every suite that was evaluated, each as its own line.
OOD_SUITES = tuple(s for s in D.SUITES if s != "test")
SUITE_NAMES = {"test": "in-distribution", "heldout_sites": "held-out sites",
               "heldout_mechanisms": "held-out mechanisms",
               "crosscheck": "independent generator", "lowsnr": "SNR -3..6 dB", "gateway_cut": "gateway-cut windows"}
TARGETS = {
    "test_macro_f1": (">=", "in-distribution macro-F1 (int8)"),
    **{f"{s}_macro_f1": (">=", f"{SUITE_NAMES[s]} macro-F1 (int8)") for s in OOD_SUITES},
    **{f"{s}_microseismic_recall": (">=", f"{SUITE_NAMES[s]} microseismic recall") for s in D.SUITES},
    **{f"{s}_microseismic_called_blast": ("<=", f"{SUITE_NAMES[s]} microseismic called blast") for s in D.SUITES},
    "openset_unknown_fraction": (">=", "open set: share of unseen-class windows answered unknown"),
    "openset_known_unknown_fraction": ("<=", "open set: share of known (test) windows answered unknown"),
    "int8_f1_loss": ("<=", "macro-F1 lost by int8 vs float TFLite (test)"),
    "ece_after": ("<=", "ECE after temperature scaling (int8, test)"),
    "int8_kbytes": ("<=", "int8 .tflite size (KB = 1024 bytes)"),
    "int8_latency_ms": ("<=", "int8 latency per window, one core (median ms)"),
    "int8_faster_than_float": ("==", "int8 faster than float TFLite"),
}


def _target_value(key: str, values: dict):
    """The required figure of a target key: its own entry, else the generic one it expands from."""
    if key in values:
        return values[key]
    for generic in ("microseismic_recall", "microseismic_called_blast"):
        if key.endswith("_" + generic):
            return values[generic]
    return values["ood_macro_f1"]


def check_targets(h: dict, values: dict | None = None) -> list[dict]:
    """Every target with its measured figure and whether it is met; ``values`` is the config's [targets]
    table (default: the defaults'). Per-suite targets of suites that were not evaluated are left out
    (a set a config does not generate); every other target is listed, measured or not."""
    values = {**DEFAULTS["targets"], **(values or {})}
    out = []
    for key, (op, what) in TARGETS.items():
        target = _target_value(key, values)
        value = h.get(key)
        suite = next((s for s in D.SUITES if key.startswith(s + "_")), None)
        if value is None and suite is not None and suite != "test" and f"{suite}_n" not in h:
            continue
        if value is None:
            out.append({"key": key, "what": what, "target": f"{op} {target}", "measured": None, "met": None})
            continue
        met = {">=": value >= target, "<=": value <= target, "==": value == target}[op]
        out.append({"key": key, "what": what, "target": f"{op} {target}", "measured": value, "met": bool(met)})
    return out


def _mean_std(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "n": int(len(v)), "values": v.tolist()}


def write_report(cfg: dict, trained) -> dict:
    """Evaluate the written model (a ``training.train.Trained``), run the configured experiments, write
    report.json/.md and plots, and store the headline metrics in the model card. Returns the card."""
    from training.train import FLOAT_TFLITE, log, write_card

    t0 = time.perf_counter()
    out, card, splits = trained.out, trained.card, trained.data.splits
    params = trained.data.params
    ch, policy = cfg["data"]["channels"], cfg["model"]["channel_policy"]
    rc = cfg["report"]
    clf8 = Classifier(out)
    clff = Classifier(out / FLOAT_TFLITE)
    evals: dict = {}
    logits_test = y_test = None
    for split in D.SUITES:
        if split not in splits:
            continue
        e8 = evaluate_split(clf8, splits[split])
        r8, rf = e8.report, evaluate_split(clff, splits[split]).report
        evals[split] = {"int8": r8, "float": rf}
        if split == "test":
            logits_test, y_test = e8.logits, e8.y
        log(f"{split}: int8 macro-F1 {r8['macro_f1']:.4f}, float {rf['macro_f1']:.4f}; "
            f"microseismic recall {share(r8['microseismic_recall'])}, called blast "
            f"{share(r8['microseismic_called_blast'])}, others called microseismic "
            f"{share(r8['nonseismic_called_microseismic'])}")
    if ch == 3 and "test" in splits and policy in ("zero_fill", "any"):
        t = splits["test"]
        uni = t.subset(np.arange(len(t)))
        uni.waveforms = np.ascontiguousarray(t.waveforms[:, :1])
        evals["test_vertical_only"] = {"int8": evaluate_split(clf8, uni).report}
    openset = None
    if "openset" in splits:
        candidates = {name: rule.card() for name, rule in trained.calibration.candidates.items()}
        openset = open_set_split(clf8, splits["openset"], logits_test, candidates)
        chosen = openset.get("scores", {}).get(openset["rule"]["score"], {})
        log(f"open set ({', '.join(openset['family'])}): {openset['unknown_fraction']:.1%} unknown by the "
            f"{openset['rule']['score']} rule" + (f", AUROC {chosen['auroc']:.3f}" if chosen.get("auroc") else ""))

    x1 = trained.data.x_val[:1]
    latency = {"int8_litert": X.tflite_latency(out / TFLITE, x1, rc["latency_runs"]),
               "float_litert": X.tflite_latency(out / FLOAT_TFLITE, x1, rc["latency_runs"]),
               "keras": X.keras_latency(trained.model, x1, max(50, rc["latency_runs"] // 3)),
               "machine": f"{os.cpu_count()}-core {os.uname().machine}, one core pinned, num_threads=1"}
    sizes = {"int8": X.size_of(out / TFLITE), "float": X.size_of(out / FLOAT_TFLITE)}

    extras: dict = {}
    tests_prep = {}
    if rc["baselines"] or rc["robustness"] or rc["label_efficiency"]:
        for split in D.SUITES:
            if split in splits:
                tests_prep[split] = D.prepare(splits[split], params, ch, policy)
    if rc["baselines"]:
        log("classical baselines ...")
        extras["baselines"] = X.baselines(trained.data.train, tests_prep, params.fs, cfg["seed"])
    if rc["robustness"] and "test" in tests_prep:
        log("robustness curves ...")
        extras["robustness"] = X.robustness(out / TFLITE, tests_prep["test"], params, cfg["seed"])
    if rc["label_efficiency"] and "heldout_sites" in splits and splits["heldout_sites"].site is not None:
        held = splits["heldout_sites"]
        site = sorted(set(held.site.tolist()))[0]
        sel = held.site == site
        prep = tests_prep["heldout_sites"]
        test_site = D.Prepared(prep.x[sel], prep.y[sel], held.subset(sel))
        extras["label_efficiency"] = X.label_efficiency(cfg, out, site, test_site, rc["label_sizes"])

    h: dict = {}
    if "test" in evals:
        h["test_macro_f1"] = evals["test"]["int8"]["macro_f1"]
        h["test_macro_f1_float"] = evals["test"]["float"]["macro_f1"]
        h["int8_f1_loss"] = h["test_macro_f1_float"] - h["test_macro_f1"]
        h["ece_before"] = evals["test"]["int8"]["ece_before"]
        h["ece_after"] = evals["test"]["int8"]["ece"]
    for split in OOD_SUITES:
        if split in evals:
            h[f"{split}_macro_f1"] = evals[split]["int8"]["macro_f1"]
    for split in D.SUITES:
        if split in evals:
            h[f"{split}_n"] = evals[split]["int8"]["n"]
            h.update({f"{split}_{k}": evals[split]["int8"][k] for k in M.MINE_COST})
    h["int8_bytes"] = sizes["int8"]["bytes"]
    h["int8_kbytes"] = sizes["int8"]["bytes"] / 1024
    h["int8_gzip_bytes"] = sizes["int8"]["gzip_bytes"]
    h["int8_latency_ms"] = latency["int8_litert"]["median_ms"]
    h["float_latency_ms"] = latency["float_litert"]["median_ms"]
    h["keras_latency_ms"] = latency["keras"]["median_ms"]
    h["int8_faster_than_float"] = h["int8_latency_ms"] < h["float_latency_ms"]
    h["sparsity"] = card["sparsity"]
    h["parameters"] = card["parameters"]
    h["macs"] = card["macs"]
    if openset:
        h["openset_unknown_fraction"] = openset["unknown_fraction"]
        h["openset_called_microseismic"] = openset["labels"].get("microseismic", 0.0)
        if "known_rejected_fraction" in openset:
            h["openset_known_unknown_fraction"] = openset["known_rejected_fraction"]
        chosen = openset.get("scores", {}).get(openset["rule"]["score"])
        if chosen and chosen["auroc"] is not None:
            h["openset_auroc"], h["openset_fpr_at_95_tpr"] = chosen["auroc"], chosen["fpr_at_95_tpr"]

    def finish() -> None:
        """Write report.json, report.md, plots and the card's metrics from what is measured so far."""
        targets = check_targets(h, cfg.get("targets"))
        report = {
            "model": {"name": card["name"], "version": card["version"], "sha256": card["sha256"]},
            "headline": h, "targets": targets, "evaluations": evals, "open_set": openset, "latency": latency,
            "size": sizes, "sparsity": card["sparsity"], "pruning": card["pruning"],
            "quantization": card["quantization"], "temperature": card["temperature"],
            "unknown_threshold": card["unknown_threshold"], "history": list(trained.history), **extras,
            "data": card["training_data"], "report_seconds": time.perf_counter() - t0,
            "training_seconds": card["training_seconds"],
        }
        # The top-level keys of an evaluation report (docs/cli.md, `evaluate`), from the in-distribution int8 test.
        if "test" in evals:
            for k in ("macro_f1", "accuracy", "balanced_accuracy", "per_class", "confusion", "ece", "by_snr",
                      "by_site", *M.MINE_COST):
                report[k] = evals["test"]["int8"].get(k)
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
        plots = write_plots(out, report, logits_test, y_test, card["temperature"])
        (out / "report.md").write_text(markdown(report, card, plots))
        card["metrics"] = {**h, "targets": {t["key"]: t["met"] for t in targets}}
        if "seeds" in extras:
            card["metrics"]["seeds"] = extras["seeds"]["summary"]
        card["metrics_test_set"] = {k: card["training_data"][k] for k in (*D.SUITES, "openset")
                                    if k in card["training_data"]}
        write_card(out, card)

    finish()  # a complete model directory even if the seed runs below are interrupted
    if rc["seeds"] > 1:
        runs = [{"seed": cfg["seed"], "sparsity": card["sparsity"],
                 **{s: evals[s]["int8"]["macro_f1"] for s in D.SUITES if s in evals}}]
        runs += X.other_seeds(cfg, splits, rc["seeds"])
        extras["seeds"] = {"runs": runs, "summary": {k: _mean_std([r.get(k) for r in runs])
                                                     for k in (*D.SUITES, "sparsity")
                                                     if any(k in r for r in runs)}}
        finish()
    return card


# --------------------------------------------------------------------------- plots
def write_plots(out: Path, report: dict, logits, y, temperature: float) -> list[str]:
    """PNG plots: confusion, training curves, reliability, SNR, robustness, label efficiency."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pdir = out / "plots"
    pdir.mkdir(exist_ok=True)
    names = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(pdir / name, dpi=90, metadata={"Software": None})
        plt.close(fig)
        names.append(f"plots/{name}")

    for split, ev in report["evaluations"].items():
        if split not in D.SUITES:
            continue
        save(confusion_figure(ev["int8"]["confusion"], ev["int8"]["classes"],
                              f"{split} (int8), macro-F1 {ev['int8']['macro_f1']:.4f}"), f"confusion_{split}.png")
    hist = report["history"]
    if hist:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(range(1, len(hist) + 1), [h["val_macro_f1"] for h in hist], "o-", ms=3)
        ax.set_xlabel("epoch (dense, then pruning)")
        ax.set_ylabel("validation macro-F1")
        ax.grid(alpha=0.3)
        save(fig, "training.png")
    if logits is not None:
        fig, ax = plt.subplots(figsize=(4.2, 4))
        for t, lab in ((1.0, "before"), (temperature, f"after (T={temperature:.2f})")):
            p = softmax(logits, t)
            conf, ok = p.max(1), p.argmax(1) == y
            edges = np.linspace(0, 1, 16)
            which = np.clip(np.digitize(conf, edges[1:-1]), 0, 14)
            xs = [conf[which == b].mean() for b in range(15) if (which == b).any()]
            ys = [ok[which == b].mean() for b in range(15) if (which == b).any()]
            ax.plot(xs, ys, "o-", ms=3, label=f"{lab}, ECE {M.ece(p, y):.3f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
        save(fig, "reliability.png")
    if "test" in report["evaluations"] and report["evaluations"]["test"]["int8"].get("by_snr"):
        fig, ax = plt.subplots(figsize=(6, 3))
        for split in D.SUITES:
            if split in report["evaluations"]:
                b = report["evaluations"][split]["int8"]["by_snr"]
                keys = [k for k in b if k.endswith("dB")]
                ax.plot(keys, [b[k]["macro_f1"] for k in keys], "o-", label=split)
        ax.set_ylabel("macro-F1 (int8)")
        ax.set_xlabel("SNR bucket")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "by_snr.png")
    rob = report.get("robustness")
    if rob:
        fig, axs = plt.subplots(1, 3, figsize=(10, 3))
        axs[0].plot([str(r["added_noise_snr_db"]) for r in rob["noise"]], [r["macro_f1"] for r in rob["noise"]], "o-")
        axs[0].set_xlabel("added noise, SNR dB (None = clean)")
        axs[1].plot([r["shift_s"] for r in rob["time_shift"]], [r["macro_f1"] for r in rob["time_shift"]], "o-")
        axs[1].set_xlabel("time shift (s)")
        axs[2].semilogx([r["scale"] for r in rob["amplitude"]], [r["macro_f1"] for r in rob["amplitude"]], "o-")
        axs[2].set_xlabel("amplitude scale")
        for ax in axs:
            ax.set_ylabel("macro-F1")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        save(fig, "robustness.png")
    le = report.get("label_efficiency")
    if le:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(le["sizes"], le["finetuned"], "o-", label="fine-tuned from the model")
        ax.plot(le["sizes"], le["scratch"], "s-", label="trained from scratch")
        ax.axhline(le["zero_shot"], color="k", ls=":", label="no site data")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"labelled windows from {le['site']}")
        ax.set_ylabel("macro-F1 on that site")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "label_efficiency.png")
    return names


# --------------------------------------------------------------------------- markdown
def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _unknown_rule(card: dict) -> str:
    o = card.get("open_set")
    if o is None:
        return f"calibrated confidence below {card['unknown_threshold']:.3f}"
    return f"{o['score']} novelty above {o['threshold']:.4g} ({o['reject_fraction']:.0%} of known validation rejected)"


def _mine_cells(m: dict) -> str:
    return " | ".join(share(m[k]) for k in M.MINE_COST)


def markdown(report: dict, card: dict, plots: list[str]) -> str:
    """report.md: targets table, headline, per-split results, experiments, plots."""
    h = report["headline"]
    lines = [f"# {card['name']} {card['version']}", "",
             f"sha256 `{card['sha256']}` -- {card['channels']} channel(s) x {card['samples']} samples at "
             f"{card['fs']:g} Hz; {card['parameters']} parameters, {card['macs']} MACs, "
             f"{card['sparsity']:.1%} kernel sparsity; temperature {card['temperature']:.3f}, "
             f"unknown: {_unknown_rule(card)}.", "",
             "All figures below are from test sets generated from seeds never used in training "
             "(see model_card.json `metrics_test_set`), through `edge.gateway.model.Classifier`, "
             "the gateway's code.", "",
             "## Targets", "", "| target | required | measured | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = {True: "yes", False: "**MISSED**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['what']} | {t['target']} | {_fmt(t['measured'])} | {met} |")
    lines += ["", "## Results per test set (int8 vs float TFLite)", "",
              "Mine cost: *ms recall* = share of microseismic windows found; *ms -> blast* = share of them "
              "answered blast; *other -> ms* = share of windows of the other classes answered microseismic.", "",
              "| set | n | macro-F1 int8 | macro-F1 float | ms recall | ms -> blast | other -> ms | "
              "balanced acc. int8 | ECE before | ECE after | unknown fraction |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for split, ev in report["evaluations"].items():
        r8, rf = ev["int8"], ev.get("float", {})
        lines.append(f"| {split} | {r8['n']} | {r8['macro_f1']:.4f} | {_fmt(rf.get('macro_f1'))} | "
                     f"{_mine_cells(r8)} | {r8['balanced_accuracy']:.4f} | {r8['ece_before']:.4f} | "
                     f"{r8['ece']:.4f} | {r8['with_unknown']['unknown_fraction']:.4f} |")
    if "test" in report["evaluations"]:
        r8 = report["evaluations"]["test"]["int8"]
        lines += ["", "Per class (test, int8):", "", "| class | precision | recall | F1 | support |",
                  "|---|---|---|---|---|"]
        for c, m in r8["per_class"].items():
            lines.append(f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |")
    for key, title in (("by_snr", "SNR bucket"), ("by_site", "site")):
        rows = [(split, name, m) for split in D.SUITES
                if split in report["evaluations"]
                for name, m in report["evaluations"][split]["int8"].get(key, {}).items()]
        if rows:
            lines += ["", f"By {title} (int8):", "",
                      f"| set | {title} | n | macro-F1 | ms recall | ms -> blast | other -> ms |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {split} | {name} | {m['n']} | {m['macro_f1']:.4f} | {_mine_cells(m)} |"
                      for split, name, m in rows]
    lat, size = report["latency"], report["size"]
    lines += ["", "## Size and latency", "",
              f"int8 {size['int8']['bytes']} bytes ({size['int8']['gzip_bytes']} gzip); float "
              f"{size['float']['bytes']} bytes ({size['float']['gzip_bytes']} gzip).", "",
              f"Latency per window ({lat['machine']}): int8 LiteRT {lat['int8_litert']['median_ms']:.3f} ms, "
              f"float TFLite {lat['float_litert']['median_ms']:.3f} ms, Keras {lat['keras']['median_ms']:.3f} ms "
              "(medians)."]
    q = report["quantization"]
    lines += ["", f"Quantization: {q['method']}; validation macro-F1 float {q['val_macro_f1_float']:.4f}, "
                  f"int8 {q['val_macro_f1_int8']:.4f}."]
    os_ = report.get("open_set")
    if os_:
        top = ", ".join(f"{k} {v:.1%}" for k, v in sorted(os_["labels"].items(), key=lambda kv: -kv[1]) if v > 0)
        rule = os_["rule"]
        lines += ["", "## Open set", "",
                  f"{os_['n']} windows of {', '.join(os_['family'])} (never seen in training): "
                  f"{os_['unknown_fraction']:.1%} answered `unknown` by the card's `{rule['score']}` rule "
                  f"(threshold {rule['threshold']:.4g}"
                  + (f", {os_['known_rejected_fraction']:.1%} of known test windows rejected" if "n_known" in os_
                     else "") + f"); answers: {top}."]
        if os_.get("scores"):
            lines += ["", "Separating them from the known test windows (novelty scores fitted on validation; "
                          "FPR at 95 % TPR = share of unknown windows still accepted when 95 % of known windows "
                          "are):", "", "| score | AUROC | FPR at 95 % TPR |", "|---|---|---|"]
            for name, sc in os_["scores"].items():
                mark = " (the card's)" if name == rule["score"] else ""
                lines.append(f"| {name}{mark} | {_fmt(sc['auroc'])} | {_fmt(sc['fpr_at_95_tpr'])} |")
    b = report.get("baselines")
    if b:
        splits = [s for s in D.SUITES if s in next(iter(b["models"].values()))]
        lines += ["", "## Classical baselines (same split, macro-F1)", "",
                  "| method | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        cnn = " | ".join(f"{h.get(s + '_macro_f1', float('nan')):.4f}" for s in splits)
        lines.append(f"| this CNN (int8) | {cnn} |")
        for name, r in b["models"].items():
            lines.append(f"| {name} | " + " | ".join(f"{r[s]:.4f}" for s in splits) + " |")
        lines += ["", f"Features: {', '.join(b['features'])}."]
    rob = report.get("robustness")
    if rob:
        lines += ["", f"## Robustness (int8, {rob['n']} test windows)", "",
                  "Added band-limited noise (SNR dB vs the window): " + ", ".join(
                      f"{r['added_noise_snr_db']}: {r['macro_f1']:.3f}" for r in rob["noise"]),
                  "", "Time shift (samples): " + ", ".join(f"{r['shift_samples']}: {r['macro_f1']:.3f}"
                                                           for r in rob["time_shift"]),
                  "", "Amplitude scale: " + ", ".join(f"{r['scale']:g}: {r['macro_f1']:.3f}"
                                                      for r in rob["amplitude"])]
    le = report.get("label_efficiency")
    if le:
        lines += ["", f"## Label efficiency (held-out site {le['site']}, float Keras, {le['test_n']} test windows)", "",
                  f"No site data: {le['zero_shot']:.4f}.", "", "| site windows | fine-tuned | from scratch |",
                  "|---|---|---|"]
        for n, a, c in zip(le["sizes"], le["finetuned"], le["scratch"], strict=True):
            lines.append(f"| {n} | {a:.4f} | {c:.4f} |")
    s = report.get("seeds")
    if s:
        lines += ["", f"## Seeds ({len(s['runs'])} full runs)", "", "| metric | mean | std | min |",
                  "|---|---|---|---|"]
        for k, v in s["summary"].items():
            lines.append(f"| {k} | {v['mean']:.4f} | {v['std']:.4f} | {v['min']:.4f} |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)
