"""Event-level scoring of the daemon's pipeline (``replay``) on generated streams.

Targets: event recall >= 0.98 for events at SNR >= 6 dB; false triggers on
event-free background <= 1 per hour; event-level classification macro-F1 >= 0.95 against
the injected ground truth. Streams come from every site profile (training and held-out),
with seeds never used for training. Prints and saves bench/results/replay.json (replay_uniaxial, replay_wide,
replay_wide_prewhitened ... by the options given).

``--regime low``: 500 Hz streams of the low regime (events of ML -1..2 kilometres away, seconds long),
each from its own recording chain drawn from the wide site distribution (``--streams`` per region,
training region and wide-heldout), replayed with edge/stopewatch.lowrate.example.toml's trigger and the
low-rate model; the background streams (``--site wide``: drifting machinery lines, level drift, mains,
spikes) are event-free. A trigger up to the config's pre_s (2 s) after an onset detects the event (the
onset is then still inside the model's window). Saves bench/results/replay_lowrate[_uniaxial].json.

    .venv/bin/python bench/bench_replay.py [--minutes 10] [--background-hours 1] [--model models/triaxial]
    .venv/bin/python bench/bench_replay.py --regime low [--streams 3] [--model models/lowrate_triaxial]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

from edge.devtools.replay import replay
from edge.devtools.scoring import macro_f1
from edge.gateway.config import TriggerConfig, load_config
from edge.gateway.model import Classifier
from edge.vocabulary import CLASSES
from training.synthetic.generate import write_stream_file
from training.synthetic.sites import HELDOUT_SITES, SITES

ROOT = Path(__file__).resolve().parents[1]
SEED = 9000  # stream seeds 9000+: never used by training


def overridden(trigger: TriggerConfig, args: argparse.Namespace) -> TriggerConfig:
    """The config's trigger with the command line's prewhitening and dropout settings, where given."""
    changes = {k: v for k, v in (("prewhiten_order", args.prewhiten_order),
                                 ("dropout_min_run", args.dropout_min_run)) if v is not None}
    return replace(trigger, **changes)


def tally(score: dict, truth: list[str], pred: list[str], hits: int, total: int) -> tuple[int, int]:
    """Add one stream's score: its detected events' (truth, published label) pairs, and its strong events."""
    strong = score["events_snr_ge_floor"]
    hits += round(score["recall_snr_ge_6db"] * strong) if strong else 0
    for t, row in score["confusion"].items():
        for p, c in row.items():
            if p != "(missed)":
                truth += [t] * c
                pred += [p] * c
    return hits, total + strong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="stream length per site (with events)")
    parser.add_argument("--background-hours", type=float, default=1.0, help="event-free stream per site")
    parser.add_argument("--model", default=str(ROOT / "models" / "triaxial"))
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--regime", choices=("high", "low"), default="high")
    parser.add_argument("--streams", type=int, default=3, help="low regime or --sites wide: streams per region")
    parser.add_argument("--sites", choices=("named", "wide"), default="named",
                        help="high regime: the 8 named site profiles, or drawn recording chains of the wide "
                             "distribution (training region and wide-heldout; backgrounds with drifting machinery "
                             "lines, level drift and mains)")
    parser.add_argument("--prewhiten-order", type=int, default=None,
                        help="trigger.prewhiten_order for this run (default: the config's; 0 = plain STA/LTA)")
    parser.add_argument("--dropout-min-run", type=int, default=None,
                        help="trigger.dropout_min_run for this run (default: the config's; 0 = no dropout mask)")
    parser.add_argument("--out", default=None, help="the JSON file (default: bench/results/replay*.json)")
    args = parser.parse_args()
    if args.regime == "low":
        return low_regime(args)
    cfg = load_config(ROOT / "edge" / "stopewatch.example.toml")
    cfg.model.path = args.model
    cfg.trigger = overridden(cfg.trigger, args)
    classifier = Classifier(args.model)
    per_site, truth_all, pred_all = {}, [], []
    hits_strong = total_strong = false_bg = 0
    bg_hours = 0.0
    # (name, site argument of the stream generator): named profiles, or one drawn chain per stream
    streams = [(s, s) for s in SITES] if args.sites == "named" else \
        [(f"{region}-{i}", region) for region in ("wide", "wide-heldout") for i in range(args.streams)]
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, site) in enumerate(streams):
            path = Path(tmp) / f"{name}.npz"
            write_stream_file(path, args.minutes * 60, SEED + k + (500 if args.sites == "wide" else 0), site=site,
                              channels=args.channels, rate_per_min=6.0)
            r = replay(cfg, path, classifier=classifier)["score"]
            strong = r["events_snr_ge_floor"]
            hits_strong, total_strong = tally(r, truth_all, pred_all, hits_strong, total_strong)
            bg = Path(tmp) / f"{name}-background.npz"
            write_stream_file(bg, args.background_hours * 3600, SEED + 100 + k + (500 if args.sites == "wide" else 0),
                              site=site, channels=args.channels, rate_per_min=0.0)
            b = replay(cfg, bg, classifier=classifier)
            false_bg += len(b["messages"])
            bg_hours += args.background_hours
            per_site[name] = {"heldout": site in HELDOUT_SITES or site == "wide-heldout", "events": r["events"],
                              "detected": r["detected"],
                              "recall_snr_ge_6db": r["recall_snr_ge_6db"], "events_snr_ge_6db": strong,
                              "false_triggers_in_event_stream": r["false_triggers"],
                              "classification_macro_f1": r["classification_macro_f1"],
                              "background_false_triggers": len(b["messages"]),
                              "background_false_labels": dict(Counter(m["label"] for m in b["messages"]))}
            print(name, json.dumps(per_site[name]), flush=True)
    f1, per_class = macro_f1(truth_all, pred_all, [c for c in CLASSES if c != "noise"])
    recall = hits_strong / total_strong if total_strong else float("nan")
    result = {
        "model": classifier.card["name"], "model_sha256": classifier.card["sha256"],
        "streams": f"{len(streams)} {'sites' if args.sites == 'named' else 'drawn chains'} x {args.minutes:g} min "
                   "with events (6/min, SNR -3..30 dB) "
                   f"+ {args.background_hours:g} h event-free background each; seeds {SEED}+",
        "event_recall_snr_ge_6db": round(recall, 4), "events_snr_ge_6db": total_strong,
        "false_triggers_per_hour_background": round(false_bg / bg_hours, 3), "background_hours": bg_hours,
        "classification_macro_f1": round(f1, 4), "classified_events": len(truth_all),
        "per_class": per_class, "per_site": per_site,
        "trigger": {k: getattr(cfg.trigger, k) for k in ("prewhiten_order", "prewhiten_s", "dropout_min_run")},
        "targets": {"recall": ">= 0.98", "false_per_hour": "<= 1", "macro_f1": ">= 0.95"},
        "met": {"recall": recall >= 0.98, "false_per_hour": false_bg / bg_hours <= 1, "macro_f1": f1 >= 0.95},
    }
    suffix = ("" if args.channels == 3 else "_uniaxial") + ("" if args.sites == "named" else "_wide") \
        + ("_prewhitened" if cfg.trigger.prewhiten_order else "")  # a run with prewhitening keeps its own file
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"replay{suffix}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_site", "per_class")}, indent=2))


def low_regime(args: argparse.Namespace) -> None:
    """The ``--regime low`` benchmark: wide and wide-heldout chains at 500 Hz, low-rate trigger and model."""
    model = args.model if args.model != str(ROOT / "models" / "triaxial") else \
        str(ROOT / "models" / ("lowrate_triaxial" if args.channels == 3 else "lowrate_uniaxial"))
    cfg = load_config(ROOT / "edge" / "stopewatch.lowrate.example.toml")
    cfg.model.path = model
    cfg.trigger = overridden(cfg.trigger, args)
    if args.channels == 1:  # one channel cannot be in coincidence with another
        cfg.trigger = replace(cfg.trigger, coincidence=1)
    classifier = Classifier(model)
    after_s = cfg.trigger.pre_s
    rows, truth_all, pred_all = {}, [], []
    hits_strong = total_strong = false_bg = 0
    bg_hours = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(2 * args.streams):
            region = "wide" if k < args.streams else "wide-heldout"
            name = f"{region}-{k}"
            path = Path(tmp) / f"{name}.npz"
            write_stream_file(path, args.minutes * 60, SEED + 200 + k, site=region, channels=args.channels,
                              rate_per_min=3.0, regime="low")
            r = replay(cfg, path, classifier=classifier, after_s=after_s)["score"]
            strong = r["events_snr_ge_floor"]
            hits_strong, total_strong = tally(r, truth_all, pred_all, hits_strong, total_strong)
            rows[name] = {"events": r["events"], "detected": r["detected"], "recall_snr_ge_6db": r["recall_snr_ge_6db"],
                          "events_snr_ge_6db": strong, "false_triggers_in_event_stream": r["false_triggers"],
                          "classification_macro_f1": r["classification_macro_f1"], "confusion": r["confusion"]}
            if region == "wide":  # event-free background of the training region (a chain of its own)
                bg = Path(tmp) / f"{name}-background.npz"
                write_stream_file(bg, args.background_hours * 3600, SEED + 300 + k, site="wide",
                                  channels=args.channels, rate_per_min=0.0, regime="low")
                b = replay(cfg, bg, classifier=classifier)
                false_bg += len(b["messages"])
                bg_hours += args.background_hours
                rows[name]["background_false_triggers"] = len(b["messages"])
                rows[name]["background_false_labels"] = dict(Counter(m["label"] for m in b["messages"]))
            print(name, json.dumps({k: v for k, v in rows[name].items() if k != "confusion"}), flush=True)
    f1, per_class = macro_f1(truth_all, pred_all, [c for c in CLASSES if c != "noise"])
    recall = hits_strong / total_strong if total_strong else float("nan")
    t = cfg.trigger
    result = {
        "model": classifier.card["name"], "model_sha256": classifier.card["sha256"], "regime": "low",
        "streams": f"{2 * args.streams} streams at 500 Hz x {args.minutes:g} min with events (3/min, SNR -3..30 dB), "
                   f"{args.streams} training-region and {args.streams} wide-heldout chains, + "
                   f"{args.background_hours:g} h event-free wide background each for the first {args.streams}; "
                   f"seeds {SEED + 200}+",
        "trigger": {k: getattr(t, k) for k in ("highpass_hz", "lowpass_hz", "sta_s", "lta_s", "on", "off",
                                                "coincidence", "min_duration_s", "refractory_s", "pre_s",
                                                "prewhiten_order", "prewhiten_s", "dropout_min_run")},
        "detection_window_s": [-0.3, after_s],
        "event_recall_snr_ge_6db": round(recall, 4), "events_snr_ge_6db": total_strong,
        "false_triggers_per_hour_background": round(false_bg / bg_hours, 3) if bg_hours else None,
        "background_hours": bg_hours,
        "classification_macro_f1": round(f1, 4), "classified_events": len(truth_all),
        "per_class": per_class, "per_stream": rows,
        "targets": {"recall": ">= 0.98", "false_per_hour": "<= 1", "macro_f1": ">= 0.95"},
        "met": {"recall": recall >= 0.98, "false_per_hour": bool(bg_hours) and false_bg / bg_hours <= 1,
                "macro_f1": f1 >= 0.95},
    }
    out = Path(args.out) if args.out else \
        ROOT / "bench" / "results" / ("replay_lowrate.json" if args.channels == 3 else "replay_lowrate_uniaxial.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_stream", "per_class")}, indent=2))


if __name__ == "__main__":
    main()
