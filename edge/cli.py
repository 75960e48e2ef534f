"""The one command line, ``stopewatch``.

This is the only place that wires firmware_bridge, edge and training together.
Training code is imported lazily inside the subcommands that need it, so the
gateway's commands never load it (and never load TensorFlow).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence

from edge import package_version
from edge.argtypes import (
    classes,
    existing,
    in_file,
    instance,
    number,
    out_dir,
    out_file,
    out_file_in_new_dirs,
    out_path,
)
from edge.errors import UserError
from edge.vocabulary import CLASSES

SEED = number(0, 2**32 - 1, integer=True)  # numpy's seed range
SAMPLES = number(64, 1 << 22, integer=True)  # a window the preprocessing and the model can take
EVENT_RATE = number(0, 600, unit="per minute")
PROBABILITY = number(0, 1)
BOARD_FS = number(1, 1_000_000, unit="Hz")


def _parse_range(text: str, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        raise UserError(f"{name} = {text!r}; expected LOW:HIGH, e.g. -3:30") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and -100 <= lo <= hi <= 200):
        raise UserError(f"{name} = {text!r}; expected finite LOW <= HIGH within -100..200 dB")
    return lo, hi


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


# --------------------------------------------------------------------------- dataset
def _cmd_dataset_generate(args: argparse.Namespace) -> int:
    from training.synthetic import generate

    families = _csv(args.classes) or list(CLASSES)
    snr = _parse_range(args.snr_db, "--snr-db")
    if args.stream is not None:
        path = generate.write_stream_file(
            args.out, seconds=args.stream, seed=args.seed, site=args.site, fs=args.fs,
            channels=args.channels, families=families, snr_db=snr, rate_per_min=args.events_per_min,
            regime=args.regime, mechanisms=args.mechanisms)
        print(f"wrote {path}")
        return 0
    if args.count is None:
        raise UserError("dataset generate: --count N is required (or --stream SECONDS for a stream file)")
    manifest = generate.write_window_dataset(
        args.out, count=args.count, seed=args.seed, sites=_csv(args.sites), fs=args.fs,
        channels=args.channels, samples=args.samples, families=families, snr_db=snr,
        shard_size=args.shard_size, progress=not args.quiet, regime=args.regime, mechanisms=args.mechanisms)
    counts = ", ".join(f"{k} {v}" for k, v in manifest["class_counts"].items())
    print(f"wrote {manifest['count']} windows in {len(manifest['shards'])} shards to {args.out} ({counts})")
    return 0


def _cmd_dataset_import(args: argparse.Namespace) -> int:
    from training.records import import_records

    manifest = import_records(
        args.out, args.labels, args.records, fs=args.fs, samples=args.samples, pre=args.pre,
        channels=args.channels, units=args.units, site=args.site, strict=args.strict,
        shard_size=args.shard_size)
    counts = ", ".join(f"{k} {v}" for k, v in manifest["class_counts"].items() if v)
    print(f"wrote {manifest['count']} windows to {args.out} ({counts}); skipped {manifest['skipped']} rows")
    return 0


def _cmd_dataset_gallery(args: argparse.Namespace) -> int:
    from training.gallery import write_gallery

    picked = write_gallery(args.data, args.out, seed=args.seed, onset_s=args.onset)
    print(f"wrote {args.out} ({len(picked)} classes shown)")
    return 0


def _since(text: str | None) -> str | None:
    from edge.formats import parse_time
    from firmware_bridge.clock import iso_utc

    return None if text is None else iso_utc(parse_time(text, "--since"))


def _cmd_dataset_export(args: argparse.Namespace) -> int:
    from surface.export import export_windows
    from surface.store import open_store

    if args.shard_size < 1:
        raise UserError(f"--shard-size = {args.shard_size}; expected an integer >= 1")
    with open_store(args.db) as store:
        s = export_windows(store, args.out, reviewed_only=args.reviewed_only, since=_since(args.since),
                           shard_size=args.shard_size)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.class_counts.items()))
    skipped = "; skipped " + ", ".join(f"{v} ({k})" for k, v in s.skipped.items()) if s.skipped else ""
    print(f"wrote {s.count} windows to {s.out} ({counts}){skipped}")
    return 0


def _cmd_dataset_quakeml(args: argparse.Namespace) -> int:
    from surface.export import export_quakeml, read_stations
    from surface.store import open_store

    stations = read_stations(args.stations) if args.stations else None
    with open_store(args.db) as store:
        n = export_quakeml(store, args.out, reviewed_only=args.reviewed_only, since=_since(args.since),
                           stations=stations)
    print(f"wrote {n} events to {args.out} (QuakeML 1.2, validated)")
    return 0


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="generate, import and inspect window datasets")
    dsub = p.add_subparsers(dest="dataset_cmd", required=True, metavar="{generate,import,gallery,export,quakeml}")

    g = dsub.add_parser("generate", help="write the synthetic benchmark (windows, or a stream with --stream)")
    g.add_argument("--out", required=True, type=out_path, help="output directory (windows); for --stream an .npz file, "
                   "or a directory that gets stream.npz")
    g.add_argument("--count", type=number(1, 10_000_000, integer=True), help="number of windows")
    g.add_argument("--seed", type=SEED, default=0, help="random seed; the same seed gives the same bytes")
    g.add_argument("--sites", help="comma-separated site profiles, or 'train', 'heldout', 'all' (default train); "
                   "'wide' / 'wide-heldout': every window draws its own recording chain (training / held-out region)")
    g.add_argument("--site", help="site profile of a --stream file, or 'wide' / 'wide-heldout' for one drawn "
                   "recording chain (default: the first training site)")
    g.add_argument("--regime", default="high", help="high: boards at >= 2 kHz, Mw -3..1 within 1 km; "
                   "low: boards at 250-1000 Hz, ML -1..2 up to 8 km (default high)")
    g.add_argument("--mechanisms", default="train", help="source mechanisms drawn: train, heldout "
                   "(only the held-out ones) or all (default train)")
    g.add_argument("--fs", type=number(100, 100_000, unit="Hz"),
                   help="sampling rate in Hz (default: the regime's, 4000 high, 500 low)")
    g.add_argument("--channels", type=int, default=3, choices=(1, 3), help="3 = triaxial (Z,N,E), 1 = uniaxial")
    g.add_argument("--samples", type=SAMPLES, help="samples per window (default: the regime's, 4096)")
    g.add_argument("--classes", type=classes, help=f"comma-separated families (default: {','.join(CLASSES)})")
    g.add_argument("--snr-db", default="-3:30", help="SNR range LOW:HIGH in dB, drawn uniformly (default -3:30)")
    g.add_argument("--shard-size", type=number(1, 1_000_000, integer=True), default=1000,
                   help="windows per shard file (default 1000)")
    g.add_argument("--stream", type=number(0, 3600, lo_open=True, unit="seconds"), metavar="SECONDS",
                   help="write a continuous stream of this length")
    g.add_argument("--events-per-min", type=EVENT_RATE, default=6.0, help="event rate of a --stream (default 6)")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g.set_defaults(func=_cmd_dataset_generate)

    im = dsub.add_parser("import", help="cut labelled windows from the mine's own records "
                         "(miniSEED, SAC, CSV, stream .npz)")
    im.add_argument("records", nargs="*", metavar="RECORD",
                    help="record files or directories (default: the labels' 'file' column)")
    im.add_argument("--labels", required=True, type=in_file,
                    help="CSV: file or station, start_time (onset), label[, site]")
    im.add_argument("--out", required=True, type=out_dir, help="output dataset directory (new or empty)")
    im.add_argument("--fs", type=number(1, 1_000_000, unit="Hz"), default=4000.0,
                    help="window sampling rate in Hz (default 4000)")
    im.add_argument("--samples", type=SAMPLES, default=4096, help="samples per window (default 4096)")
    im.add_argument("--pre", type=number(0, 3600, unit="seconds"), default=0.256,
                    help="seconds before the onset (default 0.256)")
    im.add_argument("--channels", type=int, default=3, choices=(1, 3), help="3 = Z,N,E; 1 = Z only")
    im.add_argument("--units", default="counts", help="units of the record values, noted in the manifest "
                    "(default counts)")
    im.add_argument("--site", help="site name for rows without a 'site' column value")
    im.add_argument("--strict", action="store_true",
                    help="fail on a row whose window does not fit its record (default: skip, warn)")
    im.add_argument("--shard-size", type=number(1, 1_000_000, integer=True), default=1000,
                    help="windows per shard file (default 1000)")
    im.set_defaults(func=_cmd_dataset_import)

    ga = dsub.add_parser("gallery", help="plot one waveform and spectrogram per class (PNG)")
    ga.add_argument("data", metavar="DATA", help="window dataset (.npz file or sharded directory)")
    ga.add_argument("--out", required=True, type=out_file_in_new_dirs, help="output .png file")
    ga.add_argument("--seed", type=SEED, help="pick a random window per class (default: the median-SNR one)")
    ga.add_argument("--onset", type=number(0, 3600, unit="seconds"),
                    help="onset time in the window in seconds, drawn as a line "
                    "(default: the manifest's onset_s)")
    ga.set_defaults(func=_cmd_dataset_gallery)

    ex = dsub.add_parser("export", help="the surface archive's reviewed events with waveforms as a window dataset "
                         "for train --init")
    ex.add_argument("--db", required=True, help="archive URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    ex.add_argument("--out", required=True, help="output dataset directory (new or empty)")
    ex.add_argument("--reviewed-only", action=argparse.BooleanOptionalAction, default=True,
                    help="only events a reviewer labelled (default); --no-reviewed-only adds the model's labels")
    ex.add_argument("--since", help="only events triggered at or after this UTC time (ISO-8601)")
    ex.add_argument("--shard-size", type=int, default=1000, help="windows per shard file (default 1000)")
    ex.set_defaults(func=_cmd_dataset_export)

    qm = dsub.add_parser("quakeml", help="the surface archive's catalogue as QuakeML 1.2 (ObsPy)")
    qm.add_argument("--db", required=True, help="archive URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    qm.add_argument("--out", required=True, help="output QuakeML file (.xml)")
    qm.add_argument("--reviewed-only", action="store_true", help="only events a reviewer labelled")
    qm.add_argument("--since", help="only events triggered at or after this UTC time (ISO-8601)")
    qm.add_argument("--stations", help="CSV site,node,latitude,longitude,depth_m: adds an origin at each node")
    qm.set_defaults(func=_cmd_dataset_quakeml)


# --------------------------------------------------------------------------- train / evaluate / classify
def _cmd_train(args: argparse.Namespace) -> int:
    from training.train import MISSED_EXIT, run, target_summary

    # with --data too, the labelled fine-tune below uses the unlabelled windows as well (self-training)
    if args.adapt_unlabelled is not None and args.data is None:
        if args.init is None or args.config is not None:
            raise UserError("train --adapt-unlabelled DIR needs --init MODEL_DIR (and --data SITE_DATA to "
                            "self-train on both; --config only with --data)")
        from training.adapt import adapt_unlabelled
        card = adapt_unlabelled(args.init, args.adapt_unlabelled, args.out)
        print(f"wrote {args.out}: {card['name']} sha256 {card['sha256'][:12]} (AdaBN on "
              f"{card['adaptation']['site_windows']} site windows; calibration: {card['adaptation']['calibration']})")
        return 0
    if args.config is None and args.init is None:
        raise UserError("train: give --config FILE (e.g. training/configs/triaxial.toml), "
                        "or --init MODEL_DIR --data SITE_DATA to fine-tune")
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds = {args.seeds}; expected an integer >= 1")
    overrides = {"report": {"seeds": args.seeds}} if args.seeds else None
    card = run(args.config, args.out, overrides=overrides, init=args.init, data=args.data,
               unlabelled=args.adapt_unlabelled)
    m = card.get("metrics", {})
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("test_macro_f1", "heldout_sites_macro_f1", "crosscheck_macro_f1",
                                                 "gateway_cut_macro_f1")
                      if isinstance(m.get(k), float))
    print(f"wrote {args.out}: {card['name']} {card['version']} sha256 {card['sha256'][:12]} ({shown})")
    text, missed = target_summary(card)
    print(text)
    if missed and not args.allow_missed:
        print(f"train: {len(missed)} target(s) MISSED (exit {MISSED_EXIT}); --allow-missed accepts the model as it is",
              file=sys.stderr)
        return MISSED_EXIT
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate, summary

    print(summary(evaluate(args.model, args.data, args.out)))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    import json

    from edge.formats import iter_unlabelled
    from edge.gateway.model import Classifier

    clf = Classifier(args.model)
    for wav, fs in iter_unlabelled(args.windows):
        refusal, warning = clf.analysis_refusal(wav.shape[-1], fs)
        if refusal is not None:
            raise UserError(f"{args.windows}: {refusal}")
        if warning:
            print(f"warning: {args.windows}: {warning}", file=sys.stderr)
        for start in range(0, len(wav), 256):
            for fields in clf.classify(wav[start:start + 256], fs):
                print(json.dumps(fields.as_fields(), sort_keys=False))
    return 0


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train, prune, quantize, convert, evaluate; write model, card and report")
    t.add_argument("--config", type=in_file, help="training config (TOML), e.g. training/configs/triaxial.toml")
    t.add_argument("--out", required=True, type=out_dir, help="output model directory")
    t.add_argument("--init", type=existing, help="fine-tune this trained model directory (transfer learning)")
    t.add_argument("--data", type=existing,
                   help="the mine's own labelled windows (file or dataset directory); with --init, "
                   "fine-tunes by the [finetune] recipe")
    t.add_argument("--adapt-unlabelled", metavar="DIR", type=existing,
                   help="with --init: adapt to the mine without labels "
                   "(BatchNorm statistics re-estimated on these windows, int8 re-exported with them); "
                   "with --init and --data: the fine-tune self-trains on these windows too (pseudo-labels; "
                   "[finetune] self_training_rounds, default 1)")
    t.add_argument("--seeds", type=number(1, 100, integer=True),
                   help="repeat the fit with this many seeds for mean/spread in the report "
                   "(overrides report.seeds)")
    t.add_argument("--allow-missed", action="store_true",
                   help="exit 0 even when a target of the config's [targets] is missed (default: exit 3)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="metrics of a model on a labelled window dataset")
    e.add_argument("--model", required=True, type=existing,
                   help="model directory (or its .tflite next to model_card.json)")
    e.add_argument("--data", required=True, type=existing,
                   help="window dataset (.npz file or directory with manifest.json)")
    e.add_argument("--out", type=out_file_in_new_dirs,
                   help="write the report here (JSON; a confusion-matrix PNG is written beside it)")
    e.set_defaults(func=_cmd_evaluate)

    c = sub.add_parser("classify", help="classify windows: one JSON line per window")
    c.add_argument("--model", required=True, type=existing,
                   help="model directory (or its .tflite next to model_card.json)")
    c.add_argument("windows", help="window file (.npz) or dataset directory; labels are not needed")
    c.set_defaults(func=_cmd_classify)


# --------------------------------------------------------------------------- board
def _cmd_board_simulate(args: argparse.Namespace) -> int:
    from firmware_bridge.faults import FaultConfig
    from firmware_bridge.simulator import BoardSimulator, describe, open_port
    from training.synthetic.stream import StreamSynth  # the benchmark's waveform physics (numpy/scipy only)

    try:
        faults = FaultConfig(bit_error_rate=args.bit_error_rate, drop_rate=args.drop_rate,
                             insert_rate=args.insert_rate, garbage_rate=args.garbage_rate,
                             duplicate_rate=args.duplicate_rate, stall_rate=args.stalls_per_min / 60.0,
                             stall_seconds=args.stall_seconds, disconnect_rate=args.disconnects_per_min / 60.0,
                             disconnect_seconds=args.disconnect_seconds)
        source = StreamSynth(fs=args.fs, channels=args.channels, site=args.site, seed=args.seed,
                             families=_csv(args.classes) or list(CLASSES), snr_db=_parse_range(args.snr_db, "--snr-db"),
                             rate_per_min=args.events_per_min)
        # Default scale: background noise of about 10 counts rms, coarse like real high-gain records.
        scale = args.counts_per_unit or 10.0 / float(getattr(source, "noise_rms", 1e-3) or 1e-3)
        sim = BoardSimulator(source, fs=args.fs, channels=args.channels, fmt=args.format, scale=scale,
                             samples_per_frame=args.frame_samples, board_id=args.board_id, timestamps=args.timestamps,
                             text=args.text, faults=faults, seed=args.seed)
        port = open_port(args.port, args.out, args.link)
    except (ValueError, OSError) as exc:
        raise UserError(f"board simulate: {exc}") from None
    print(f"board simulator: {describe(sim)} -> {port.path}"
          + (f" (ground truth -> {args.truth})" if args.truth else ""), flush=True)
    try:
        report = sim.run(port, seconds=args.seconds, speed=args.speed, truth=args.truth)
    except KeyboardInterrupt:
        report = None
    finally:
        port.close()
    if report is not None:
        print(f"sent {report.samples} samples in {report.frames} frames ({report.bytes_written} bytes), "
              f"{report.events} events, {report.clipped} clipped, {report.stalls} stalls, "
              f"{report.disconnects} disconnects in {report.wall_seconds:.1f} s")
    return 0


def _add_board(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("board", help="ADC board tools")
    bsub = p.add_subparsers(dest="board_cmd", required=True, metavar="{simulate}")
    s = bsub.add_parser("simulate", help="stream synthetic board frames to a pseudo-terminal, port or file")
    s.add_argument("--port", help="serial device or pyserial URL to write to (default: create a pty, print its path)")
    s.add_argument("--link", type=out_file,
                   help="with the default pty: a symlink to it that survives simulated reconnects")
    s.add_argument("--out", type=out_file, help="write the byte stream to this file instead (for replay)")
    s.add_argument("--fs", type=number(50, 100_000, unit="Hz"), default=10000.0,
                   help="sampling rate in Hz (default 10000)")
    s.add_argument("--channels", type=int, default=3, choices=(1, 3), help="3 = triaxial, 1 = uniaxial")
    s.add_argument("--format", default="int24", choices=("int16", "int24", "int32", "float32"),
                   help="sample format (default int24)")
    s.add_argument("--frame-samples", type=number(1, 65535, integer=True),
                   help="samples per frame (default: a real board's, about 256 payload bytes and at most 20 ms)")
    s.add_argument("--counts-per-unit", type=number(0, 1e18, lo_open=True),
                   help="ADC counts per physical unit (default: noise ~10 counts)")
    s.add_argument("--speed", type=number(0, 10_000), default=1.0,
                   help="multiple of real time; 0 = as fast as possible")
    s.add_argument("--seconds", type=number(0, 1e7, lo_open=True, unit="seconds"),
                   help="stream length (default: until interrupted)")
    s.add_argument("--seed", type=SEED, default=0, help="random seed")
    s.add_argument("--site", help="site profile of the synthetic background (default: the first training site)")
    s.add_argument("--classes", type=classes, help=f"comma-separated event families (default: {','.join(CLASSES)})")
    s.add_argument("--snr-db", default="-3:30", help="event SNR range LOW:HIGH in dB (default -3:30)")
    s.add_argument("--events-per-min", type=EVENT_RATE, default=6.0, help="event rate (default 6)")
    s.add_argument("--truth", type=out_file,
                   help="append the injected events here (JSONL: sample, time, label, snr_db)")
    s.add_argument("--board-id", type=number(0, 65535, integer=True), default=1,
                   help="board id in the frames (default 1)")
    s.add_argument("--timestamps", action="store_true", help="stamp frames with UTC as a GPS-disciplined board")
    s.add_argument("--text", action="store_true", help="plain text mode: one line of samples per instant")
    f = s.add_argument_group("line faults")
    f.add_argument("--bit-error-rate", type=PROBABILITY, default=0.0, help="per bit, e.g. 1e-4")
    f.add_argument("--drop-rate", type=PROBABILITY, default=0.0, help="dropped bytes, per byte, e.g. 1e-3")
    f.add_argument("--insert-rate", type=PROBABILITY, default=0.0, help="inserted bytes, per byte")
    f.add_argument("--garbage-rate", type=PROBABILITY, default=0.0, help="garbage bursts between frames, per frame")
    f.add_argument("--duplicate-rate", type=PROBABILITY, default=0.0, help="frames sent twice, per frame")
    f.add_argument("--stalls-per-min", type=EVENT_RATE, default=0.0, help="pauses in sending (data is kept)")
    f.add_argument("--stall-seconds", type=number(0, 3600, unit="seconds"), default=0.5,
                   help="length of a stall (default 0.5)")
    f.add_argument("--disconnects-per-min", type=EVENT_RATE, default=0.0, help="simulated USB unplugs (data is lost)")
    f.add_argument("--disconnect-seconds", type=number(0, 3600, unit="seconds"), default=2.0,
                   help="time unplugged (default 2)")
    s.set_defaults(func=_cmd_board_simulate)


# --------------------------------------------------------------------------- gateway
def _cmd_run(args: argparse.Namespace) -> int:
    from edge.gateway.daemon import run

    return run(args.config)


def _cmd_replay(args: argparse.Namespace) -> int:
    import json

    from edge.devtools.replay import replay
    from edge.gateway.config import load_config

    result = replay(load_config(args.config), args.stream, args.events_out, block_s=args.block_s)
    stats = result["stats"]
    print(f"{len(result['messages'])} events from {result['seconds']:.0f} s of stream "
          f"({stats.triggers} triggers, {stats.merged_triggers} merged into their event, "
          f"{stats.short_triggers} too short)" + (f"; wrote {args.events_out}" if args.events_out else ""))
    if result["score"] is not None:
        score = {k: v for k, v in result["score"].items() if k not in ("per_class", "confusion")}
        print("score against the stream's ground truth: " + json.dumps(score))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge.devtools.demo import run_demo

    surface = None
    if args.surface:  # the surface is its own package: edge's demo gets it as a hook, never imports it
        from surface.demo import demo_surface

        surface = demo_surface(args.web_port)
    return run_demo(seconds=args.seconds, model=args.model, site=args.site, seed=args.seed,
                    events_per_min=args.events_per_min, surface=surface)


def _add_gateway(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="the gateway daemon: serial board -> events -> MQTT")
    r.add_argument("--config", required=True, help="daemon configuration (TOML); see edge/stopewatch.example.toml")
    r.set_defaults(func=_cmd_run)

    p = sub.add_parser("replay", help="the daemon's pipeline over a recorded stream file, without serial or MQTT")
    p.add_argument("--config", required=True, help="daemon configuration (TOML): [node], [model], [trigger] apply")
    p.add_argument("stream", metavar="STREAM.npz", help="continuous stream file (docs/data-formats.md)")
    p.add_argument("--events-out", type=out_file,
                   help="write each event message, as it would be published, to this JSONL file")
    p.add_argument("--block-s", type=number(0, 3600, lo_open=True, unit="seconds"), default=0.1,
                   help="seconds per block fed to the pipeline (default 0.1)")
    p.set_defaults(func=_cmd_replay)

    d = sub.add_parser("demo", help="simulated board -> daemon -> local MQTT broker -> live table, scored")
    d.add_argument("--seconds", type=number(0, 86_400, lo_open=True, unit="seconds"), default=None,
                   help="how long to run (default 60, with --surface until Ctrl-C; Ctrl-C ends early)")
    d.add_argument("--model", default=None, type=existing, help="model directory (default: the shipped triaxial model)")
    d.add_argument("--site", default="za-deep-gold", help="synthetic site profile of the simulated board")
    d.add_argument("--seed", type=SEED, default=1, help="seed of the simulated signal")
    d.add_argument("--events-per-min", type=number(0, 600, lo_open=True), default=12.0,
                   help="injected event rate (default 12)")
    d.add_argument("--surface", action="store_true",
                   help="also run the surface collector (SQLite in the demo's temp directory) and its review page, "
                        "print the page's address and a demo login, and run until Ctrl-C (or --seconds)")
    d.add_argument("--web-port", type=number(0, 65_535, integer=True), default=8080,
                   help="the review page's port with --surface (default 8080, else any free one; 0: any free one)")
    d.set_defaults(func=_cmd_demo)


# --------------------------------------------------------------------------- surface
def _cmd_collect(args: argparse.Namespace) -> int:
    import logging

    from surface.collector import run_collect

    cfg = _surface_config(args)
    logging.basicConfig(level=os.environ.get("STOPEWATCH_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_collect(cfg)


def _surface_config(args: argparse.Namespace):
    from surface.config import SurfaceConfig, load_surface_config

    cfg = load_surface_config(args.config) if args.config else SurfaceConfig()
    if getattr(args, "db", None):
        cfg.database.url = args.db
    return cfg


def _cmd_surface_serve(args: argparse.Namespace) -> int:
    import logging

    from surface.web.server import run_serve

    cfg = _surface_config(args)
    if args.host:
        cfg.web.host = args.host
    if args.port is not None:
        cfg.web.port = args.port
    logging.basicConfig(level=os.environ.get("STOPEWATCH_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_serve(cfg)


def _cmd_surface_user(args: argparse.Namespace) -> int:
    from surface import accounts
    from surface.store import open_store

    cfg = _surface_config(args)
    with open_store(cfg.database.url) as store:
        if args.user_cmd == "list":
            users = store.list_users()
            for u in users:
                print(f"{u.username}\t{u.role}\t{u.created}")
            if not users:
                print("no users yet: stopewatch surface user add NAME --role reviewer")
        elif args.user_cmd == "add":
            u = accounts.add_user(store, args.name, args.role, accounts.read_password(args.password_file))
            print(f"added {u.username} ({u.role})")
        elif args.user_cmd == "passwd":
            if store.get_user(args.name) is None:
                raise UserError(f"no user {args.name!r}")
            accounts.change_password(store, args.name, accounts.read_password(args.password_file))
            print(f"password of {args.name} changed; its open sessions end")
        elif args.user_cmd == "role":
            accounts.change_role(store, args.name, args.role)
            print(f"{args.name} is now {args.role}")
        elif args.user_cmd == "remove":
            accounts.remove_user(store, args.name)
            print(f"removed {args.name}; its open sessions end")
    return 0


ROLES = ("viewer", "reviewer", "admin")  # surface.store.ROLES (not imported: the gateway's parser stays light)


def _add_surface(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("collect", help="the surface collector: every node's messages -> archive, alerts "
                       "(and the review page with [web] enabled = true)")
    c.add_argument("--config", help="collector configuration (TOML); see surface/surface.example.toml "
                   "(default: every default, archive sqlite:///surface.db)")
    c.add_argument("--db", help="archive URL, overriding database.url")
    c.set_defaults(func=_cmd_collect)

    s = sub.add_parser("surface", help="the review page and its users")
    ssub = s.add_subparsers(dest="surface_cmd", required=True, metavar="{serve,user}")
    sv = ssub.add_parser("serve", help="serve the review page alone (the collector serves it with [web] enabled)")
    sv.add_argument("--config", help="surface configuration (TOML): [database] and [web] apply")
    sv.add_argument("--db", help="archive URL, overriding database.url")
    sv.add_argument("--host", help="address to bind, overriding web.host (default 127.0.0.1)")
    sv.add_argument("--port", type=number(1, 65_535, integer=True), help="port, overriding web.port (default 8080)")
    sv.set_defaults(func=_cmd_surface_serve)

    u = ssub.add_parser("user", help="add, list, change and remove the review page's users")
    usub = u.add_subparsers(dest="user_cmd", required=True, metavar="{add,list,passwd,role,remove}")

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="surface configuration (TOML): its database.url names the archive")
        p.add_argument("--db", help="archive URL, overriding database.url")
        p.set_defaults(func=_cmd_surface_user)
        return p

    ua = common(usub.add_parser("add", help="a new user; the password is asked for (or read from a file or stdin)"))
    ua.add_argument("name", metavar="NAME", help="user name (1-64 characters, no spaces)")
    ua.add_argument("--role", required=True, choices=ROLES,
                    help="viewer (reads), reviewer (also relabels) or admin (also reads the audit trail)")
    ua.add_argument("--password-file", help="read the password from the first line of this file ('-': stdin)")
    common(usub.add_parser("list", help="the users and their roles"))
    up = common(usub.add_parser("passwd", help="set a user's password (ends the user's sessions)"))
    up.add_argument("name", metavar="NAME", help="user name")
    up.add_argument("--password-file", help="read the password from the first line of this file ('-': stdin)")
    ur = common(usub.add_parser("role", help="change a user's role"))
    ur.add_argument("name", metavar="NAME", help="user name")
    ur.add_argument("role", metavar="ROLE", choices=ROLES, help="viewer, reviewer or admin")
    ud = common(usub.add_parser("remove", help="delete a user (ends the user's sessions; the audit trail stays)"))
    ud.add_argument("name", metavar="NAME", help="user name")


# --------------------------------------------------------------------------- field tools
def _cmd_install(args: argparse.Namespace) -> int:
    import sys as _sys
    from pathlib import Path

    from edge.field.install import Answers, Installer, ask_missing

    answers = Answers(site=args.site, node=args.node, serial_port=args.serial_port, baudrate=args.baudrate,
                      text_mode=True if args.text_mode else None, broker=args.broker,
                      tls=True if args.tls else None, ca_file=args.ca_file, cert_file=args.cert_file,
                      key_file=args.key_file, username=args.username, password_file=args.password_file,
                      board_fs=args.board_fs, board_channels=args.board_channels, model=args.model)
    inst = Installer(answers, root=Path(args.root or "/").absolute(), instance=args.instance,
                     prefix=args.prefix or _sys.prefix, start=not args.no_start, force_model=args.force)
    if not args.yes and _sys.stdin.isatty():
        ask_missing(answers, inst._existing())
    inst.run(dry_run=args.dry_run)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from edge.field.doctor import CHECKS, doctor

    for option, names in (("--only", _csv(args.only)), ("--skip", _csv(args.skip))):
        unknown = [n for n in names or [] if n not in CHECKS]
        if unknown:
            raise UserError(f"doctor {option} {unknown[0]!r}: no such check; allowed: {', '.join(CHECKS)}")
    only = tuple(_csv(args.only) or CHECKS)
    only = tuple(c for c in only if c not in (_csv(args.skip) or []))
    text, code = doctor(args.config, only, as_json=args.json, serial_seconds=args.serial_seconds,
                        broker_timeout=args.broker_timeout, unit=args.unit,
                        progress=None if args.json else lambda n: print(f"checking {n} ...", file=sys.stderr))
    print(text)
    return code


def _store_for(args: argparse.Namespace):
    from edge.field.install import under_root
    from edge.field.model_store import ModelStore, models_dir
    from edge.gateway.config import load_config

    cfg = load_config(under_root(args.root, args.config) if args.root else args.config)
    state = under_root(args.root, cfg.node.state_dir)
    owner = None
    if state.exists():
        st = state.stat()
        owner = (st.st_uid, st.st_gid)  # new files belong to whoever owns the state directory (the daemon)
    return cfg, state, ModelStore(under_root(args.root, models_dir(cfg.node.state_dir)), owner=owner)


def _reload_after_swap(args: argparse.Namespace) -> None:
    from edge.field.model_store import reload_daemon, unit_for_config

    if args.root or args.no_reload:
        print("not asking the daemon to reload (--root/--no-reload)")
        return
    print(reload_daemon(None if args.pid else (args.unit or unit_for_config(args.config)), args.pid))


def _cmd_model_install(args: argparse.Namespace) -> int:
    from edge.field.model_store import Board, read_board

    cfg, state, store = _store_for(args)
    if (args.board_fs is None) != (args.board_channels is None):
        raise UserError("give both --board-fs and --board-channels, or neither")
    board = Board(args.board_fs, args.board_channels, "command line") if args.board_fs else read_board(state)
    if board is None:
        print("note: the board's rate and channels are unknown (run stopewatch doctor once to measure them); "
              "checking the window only")
    r = store.install(args.source, board=board, pre_s=cfg.trigger.pre_s, force=args.force)
    for w in r.warnings:
        print(f"warning: {w}")
    if not r.changed:
        print(f"{r.name} {r.version} ({r.sha256[:12]}) is already the current model")
        return 0
    print(f"installed {r.name} {r.version} ({r.sha256[:12]}) as current in {store.root}"
          + (f"; previous {r.previous}" if r.previous else ""))
    _reload_after_swap(args)
    return 0


def _cmd_model_list(args: argparse.Namespace) -> int:
    _cfg, _state, store = _store_for(args)
    rows = store.list()
    if not rows:
        print(f"no models installed in {store.root}")
        return 0
    print(f"{'ROLE':<9} {'KEY':<17} {'NAME':<24} {'VERSION':<9} {'FS':>7} {'CH':>3} {'F1':>6} {'OK':<3} INSTALLED")
    for r in rows:
        if "problem" in r:
            print(f"{r['role']:<9} {r['key']:<17} {r['problem']}")
            continue
        f1 = f"{r['macro_f1']:.3f}" if r["macro_f1"] is not None else "-"
        print(f"{r['role']:<9} {r['key']:<17} {r['name']:<24} {r['version']:<9} {r['fs']:>7g} {r['channels']:>3} "
              f"{f1:>6} {'yes' if r['sha_ok'] else 'NO':<3} {r['installed']}")
    return 0


def _cmd_model_rollback(args: argparse.Namespace) -> int:
    _cfg, _state, store = _store_for(args)
    new, old = store.rollback()
    print(f"current model is now {new} (was {old}; rollback again to return)")
    _reload_after_swap(args)
    return 0


def _cmd_model_test(args: argparse.Namespace) -> int:
    import json
    import platform

    from edge.field.doctor import run_selftest
    from edge.gateway.model import Classifier

    if args.path is None:
        from edge.gateway.config import load_config

        args.path = load_config(args.config).model.path
    clf = Classifier(args.path)
    result = run_selftest(clf)
    result.update(model=clf.identity, machine=platform.machine(), python=platform.python_version())
    if args.json:
        print(json.dumps(result))
    else:
        for w in result["windows"]:
            mark = "ok" if w["label"] == w["expected"] else "WRONG"
            print(f"{w['expected']:<13} -> {w['label']:<13} {w['confidence']:.3f}  {mark}")
        print(f"{result['right']}/{result['total']} right, {result['ms_per_window']:.2f} ms per window "
              f"({clf.card['name']} on {result['machine']}, Python {result['python']})")
    return 0 if result["right"] == result["total"] else 1


def _cmd_station_xml(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.field.stationxml import station_xml
    from edge.formats import parse_time
    from edge.gateway.config import load_config

    cfg = load_config(args.config)
    fs = args.fs if args.fs is not None else cfg.board.text_fs
    if not 0 < fs <= 1e6:
        raise UserError(f"station-xml --fs = {fs:g}; expected a rate in Hz above 0 and up to 1e6")
    if not 1 <= args.channels <= 9:
        raise UserError(f"station-xml --channels = {args.channels}; expected 1-9")
    start = parse_time(args.start, "station-xml --start") if args.start else None
    doc = station_xml(cfg, fs, args.channels, start)
    if args.out in (None, "-"):
        sys.stdout.buffer.write(doc)
    else:
        try:
            Path(args.out).write_bytes(doc)
        except OSError as exc:
            raise UserError(f"station-xml --out {args.out}: cannot write ({exc.strerror or exc})") from None
        print(f"wrote {args.out}: {args.channels} channels at {fs:g} Hz", file=sys.stderr)
    return 0


def _add_field(sub: argparse._SubParsersAction) -> None:
    conf = "/etc/stopewatch/stopewatch.toml"
    x = sub.add_parser("station-xml", help="write the node's inventory (channels, orientation, rate, sensitivity) "
                       "as FDSN StationXML")
    x.add_argument("--config", default=conf, help=f"daemon configuration (default {conf}): [stream], [board]")
    x.add_argument("--fs", type=float, help="the board's sampling rate in Hz (default: board.text_fs)")
    x.add_argument("--channels", type=int, default=3, help="the board's channels (default 3)")
    x.add_argument("--start", help="start of the channels' epoch, ISO-8601 UTC (default: today 00:00 UTC)")
    x.add_argument("--out", help="file to write (default: standard output)")
    x.set_defaults(func=_cmd_station_xml)

    i = sub.add_parser("install", help="set this gateway up as a systemd service (run as root)")
    i.add_argument("--site", help="mine site id")
    i.add_argument("--node", help="this gateway's node id")
    i.add_argument("--serial-port", help="the ADC board's serial device (e.g. /dev/serial/by-id/usb-...)")
    i.add_argument("--baudrate", type=number(300, 20_000_000, integer=True), help="serial baud rate (default 921600)")
    i.add_argument("--text-mode", action="store_true", help="the board sends text lines (prototype boards)")
    i.add_argument("--broker", help="MQTT broker HOST[:PORT]")
    i.add_argument("--tls", action="store_true", help="connect to the broker over TLS (needs --ca-file)")
    i.add_argument("--ca-file", help="CA certificate of the broker (copied to /etc/stopewatch/tls)")
    i.add_argument("--cert-file", help="client certificate (copied to /etc/stopewatch/tls)")
    i.add_argument("--key-file", help="client key (copied to /etc/stopewatch/tls)")
    i.add_argument("--username", help="MQTT user name")
    i.add_argument("--password-file", help="file holding the MQTT password (copied to /etc/stopewatch)")
    i.add_argument("--board-fs", type=BOARD_FS, help="the board's sampling rate in Hz (checked against models)")
    i.add_argument("--board-channels", type=int, choices=(1, 3), help="the board's channels (1 or 3)")
    i.add_argument("--model", help="model to install (default: the shipped one for the board's channels)")
    i.add_argument("--force", action="store_true", help="install the model even if it does not fit the board")
    i.add_argument("--instance", type=instance,
                   help="a second board on this gateway: stopewatch@NAME with /etc/stopewatch/NAME.toml")
    i.add_argument("--prefix", help="the venv holding stopewatch, for ExecStart (default: this one)")
    i.add_argument("--no-start", action="store_true", help="enable the service but do not (re)start it")
    i.add_argument("--yes", action="store_true", help="never ask: take flags, the existing config, then defaults")
    i.add_argument("--dry-run", action="store_true", help="print every step without doing any")
    i.add_argument("--root", type=out_dir, help="install into this staging root instead of / (nothing is started)")
    i.set_defaults(func=_cmd_install)

    d = sub.add_parser("doctor", help="check config, board, model, broker, clock, disk, service; say how to fix")
    d.add_argument("--config", default=conf, help=f"daemon configuration (default {conf})")
    d.add_argument("--only", help="comma-separated checks to run (config,serial,model,broker,clock,disk,service)")
    d.add_argument("--skip", help="comma-separated checks to leave out")
    d.add_argument("--serial-seconds", type=number(0, 3600, lo_open=True, unit="seconds"), default=3.0,
                   help="how long to read the board (default 3)")
    d.add_argument("--broker-timeout", type=number(0, 600, lo_open=True, unit="seconds"), default=5.0,
                   help="seconds to wait for the broker (default 5)")
    d.add_argument("--unit", help="systemd unit to ask about (default: from the config file name)")
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.set_defaults(func=_cmd_doctor)

    m = sub.add_parser("model", help="install, list, roll back and test the gateway's models")
    msub = m.add_subparsers(dest="model_cmd", required=True, metavar="{install,list,rollback,test}")

    def common(p: argparse.ArgumentParser, reload: bool = False) -> None:
        p.add_argument("--config", default=conf, help=f"daemon configuration (default {conf})")
        p.add_argument("--root", type=out_dir, help="operate on a staging root instead of /")
        if reload:
            p.add_argument("--unit", help="systemd unit to reload (default: from the config file name)")
            p.add_argument("--pid", type=number(1, 2**22, integer=True),
                           help="send SIGHUP to this daemon process instead of systemctl reload")
            p.add_argument("--no-reload", action="store_true", help="do not ask the running daemon to reload")

    mi = msub.add_parser("install", help="verify a model (sha256, fit to the board) and make it current")
    mi.add_argument("source", help="model directory, its model.tflite, or a .tar.gz/.zip holding both files")
    mi.add_argument("--board-fs", type=BOARD_FS, help="the board's rate in Hz (default: as measured by doctor)")
    mi.add_argument("--board-channels", type=int, choices=(1, 3), help="the board's channels")
    mi.add_argument("--force", action="store_true",
                    help="install even if the card does not fit the board or fails the self-test (recorded)")
    common(mi, reload=True)
    mi.set_defaults(func=_cmd_model_install)
    ml = msub.add_parser("list", help="installed models; which is current and previous")
    common(ml)
    ml.set_defaults(func=_cmd_model_list)
    mr = msub.add_parser("rollback", help="swap back to the previous model")
    common(mr, reload=True)
    mr.set_defaults(func=_cmd_model_rollback)
    mt = msub.add_parser("test", help="classify the built-in test windows (the self-test) and time them")
    mt.add_argument("path", nargs="?", help="model directory (default: the configured model)")
    mt.add_argument("--config", default=conf, help=f"daemon configuration (default {conf})")
    mt.add_argument("--json", action="store_true", help="one JSON object")
    mt.set_defaults(func=_cmd_model_test)


# --------------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``stopewatch`` argument parser with every implemented subcommand."""
    parser = _Parser(
        prog="stopewatch", description="Edge classification of mine microseismic signals.")
    parser.add_argument("--version", action="version", version=f"stopewatch {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_dataset(sub)
    _add_gateway(sub)
    _add_model_commands(sub)
    _add_board(sub)
    _add_field(sub)
    _add_surface(sub)
    _defer_path_checks(parser)
    return parser


PATH_CHECKS = (out_dir, out_file, out_file_in_new_dirs, out_path, in_file, existing)


def _defer_path_checks(parser: argparse.ArgumentParser) -> None:
    """Take the path checks (files that must exist, directories to write into) out of parsing and keep them
    in the namespace as ``_path_checks``: the parser stays free of I/O (a documented example parses on any
    machine), and :func:`main` runs them before the command does any work."""
    checks = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in {id(p): p for p in action.choices.values()}.values():
                _defer_path_checks(sub)
        elif action.type in PATH_CHECKS:
            checks[action.dest] = (action.option_strings[0] if action.option_strings else action.dest, action.type)
            action.type = None
    if checks:
        parser.set_defaults(_path_checks=checks)


def _check_paths(args: argparse.Namespace) -> None:
    for dest, (option, check) in (getattr(args, "_path_checks", None) or {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            try:
                check(value)
            except argparse.ArgumentTypeError as exc:
                raise UserError(f"argument {option}: {exc}") from None


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--snr-db -3:6`` -> ``--snr-db=-3:6``: argparse would take a value like -3:6 for an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.fullmatch(r"-\d[\d.:eE+-]*", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        _check_paths(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"stopewatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopewatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `stopewatch classify ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except OSError as exc:  # the machine refused (disk full, permissions, /proc): one line naming the file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"stopewatch: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
