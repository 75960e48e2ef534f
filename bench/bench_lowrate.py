"""The low-rate family out of distribution, and which family serves a board between the regimes.

1. Out of distribution (int8, through the gateway's Classifier): the low-rate model on held-out
   mechanisms (the generator's ``--mechanisms heldout`` in the low regime, wide sites) and on the
   independently written crosscheck generator in its low regime (its eight site types, 500 Hz, onset 2 s
   in); the card's in-distribution and wide-heldout figures beside them.
2. Rates between the families (1-2 kHz): records at ``--between-fs`` (1500 Hz) of each kind of mine --
   low-regime events (coal / open pit: ML -1..2, kilometres) and high-regime events (hard rock: Mw -3..1,
   within 1 km) -- cut as each family's window (8.192 s with the onset 2 s in for the low-rate family,
   1.024 s with the onset 0.25 s in for the 4 kHz family) and classified by both: the low-rate model
   resamples them down to 500 Hz, the 4 kHz model up to 4 kHz (empty above 750 Hz).

Seeds 7100+ are never used by training. Prints and saves bench/results/lowrate.json.

    .venv/bin/python bench/bench_lowrate.py [--count 1800] [--between-count 600] [--between-fs 1500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge.formats import WindowSet
from edge.gateway.model import Classifier
from edge.vocabulary import CLASSES
from training.evaluate import evaluate_split

ROOT = Path(__file__).resolve().parents[1]
SEED = 7100


def heldout_mechanisms(count: int, channels: int) -> WindowSet:
    """Low-regime windows of the mechanisms training never draws, on wide-site chains."""
    from training.synthetic.generate import generate_windows
    return generate_windows(count, SEED, sites=["wide"], channels=channels, regime="low", mechanisms="heldout")


def crosscheck(count: int, channels: int) -> WindowSet:
    """The independent generator's low regime: 500 Hz, 4096 samples, onset 2 s (+- 0.3 s) in."""
    from training.crosscheck.generate import LOW_REGIME_DEFAULTS, generate_windows
    d = LOW_REGIME_DEFAULTS
    return generate_windows(count, SEED + 1, fs=float(d["fs"]), channels=channels, samples=int(d["samples"]),
                            pre_s=float(d["pre_s"]), pre_jitter_s=float(d["pre_jitter_s"]), regime="low")


def between(count: int, fs: float, physics: str, samples: int, onset_s: float, jitter_s: float, channels: int,
            seed: int) -> WindowSet:
    """``count`` class-balanced windows of ``physics`` (a regime's events) recorded at ``fs`` on wide-site
    chains, ``samples`` long with the onset ``onset_s`` (+- ``jitter_s``) in.

    High-regime sources assume a board of >= 2 kHz (ringing up to 1.8 kHz): they are recorded at the
    regime's 4 kHz and decimated to ``fs`` (polyphase, anti-aliased), as a slower board's anti-alias
    filter would record them; low-regime events are recorded at ``fs`` directly.
    """
    from fractions import Fraction

    from scipy.signal import resample_poly

    from training.synthetic.generate import synthesize_window
    from training.synthetic.sources import REGIMES
    gen_fs = fs if physics == "low" else max(fs, REGIMES[physics].fs)
    ratio = Fraction(fs / gen_fs).limit_denominator(1000)
    gen_samples = int(round(samples / ratio))
    labels = np.resize(np.array(CLASSES), count)
    waves = np.empty((count, channels, samples), np.float32)
    snrs = np.empty(count, np.float32)
    for i, label in enumerate(labels):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        snr = float(rng.uniform(-3.0, 30.0))
        w, meta = synthesize_window(rng, str(label), "wide", gen_fs, channels, gen_samples, snr,
                                    onset_s=onset_s + float(rng.uniform(-jitter_s, jitter_s)), regime=physics)
        if ratio != 1:
            w = resample_poly(w, ratio.numerator, ratio.denominator, axis=-1)
        waves[i] = w[:, :samples]
        snrs[i] = meta["snr_db"]
    return WindowSet(waves, labels.astype(str), fs, snrs, np.full(count, "wide"), None)


def scores(clf: Classifier, ws: WindowSet) -> dict:
    """Macro-F1 and the mine-cost shares of one set."""
    r = evaluate_split(clf, ws).report
    return {"macro_f1": round(r["macro_f1"], 4), "windows": len(ws),
            **{k: (round(r[k], 4) if isinstance(r.get(k), float) else r.get(k))
               for k in ("microseismic_recall", "microseismic_called_blast", "nonseismic_called_microseismic")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "lowrate_triaxial"), help="the low-rate model")
    parser.add_argument("--high-model", default=str(ROOT / "models" / "triaxial"), help="the 4 kHz model")
    parser.add_argument("--count", type=int, default=1800, help="windows per out-of-distribution set")
    parser.add_argument("--between-count", type=int, default=600, help="windows per (events, family) cell")
    parser.add_argument("--between-fs", type=float, default=1500.0)
    args = parser.parse_args()
    low, high = Classifier(args.model), Classifier(args.high_model)
    ch = low.channels
    t0 = time.perf_counter()
    m = low.card.get("metrics", {})
    result: dict = {"model": low.card["name"], "model_sha256": low.card["sha256"],
                    "in_distribution_macro_f1": m.get("test_macro_f1"),
                    "wide_heldout_sites_macro_f1": m.get("heldout_macro_f1"),
                    "lowsnr_macro_f1": m.get("lowsnr_macro_f1")}
    result["heldout_mechanisms"] = scores(low, heldout_mechanisms(args.count, ch))
    print("held-out mechanisms", json.dumps(result["heldout_mechanisms"]), flush=True)
    result["crosscheck_low"] = scores(low, crosscheck(args.count, ch))
    print("crosscheck (low regime)", json.dumps(result["crosscheck_low"]), flush=True)
    fs = args.between_fs
    cells: dict = {}
    for k, physics in enumerate(("low", "high")):
        for clf, family, window_s, onset, jitter in ((low, "lowrate", low.samples / low.fs, 2.0, 0.5),
                                                      (high, "high", high.samples / high.fs, 0.25, 0.075)):
            ws = between(args.between_count, fs, physics, int(round(window_s * fs)), onset, jitter, ch,
                         SEED + 10 + k)
            cells[f"{physics}_events/{family}_family"] = scores(clf, ws)
            print(f"{fs:g} Hz, {physics}-regime events, {family} family:", json.dumps(cells[f"{physics}_events/"
                                                                                           f"{family}_family"]),
                  flush=True)
    result["between_rates"] = {"fs": fs, "windows": "class-balanced, SNR -3..30 dB, wide-site chains", **cells,
                               "models": {"lowrate": low.card["name"], "high": high.card["name"]}}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out = ROOT / "bench" / "results" / ("lowrate.json" if ch == 3 else "lowrate_uniaxial.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
