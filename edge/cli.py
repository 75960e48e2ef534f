"""The one command line, ``stopewatch``.

This is the only place that wires firmware_bridge, edge and training together.
Training code is imported lazily inside the subcommands that need it, so the
gateway's commands never load it (and never load TensorFlow).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from edge.errors import UserError
from edge.vocabulary import CLASSES


def _parse_range(text: str, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        raise UserError(f"{name} = {text!r}; expected LOW:HIGH, e.g. -3:30") from None
    if not lo <= hi:
        raise UserError(f"{name} = {text!r}; LOW must not exceed HIGH")
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
            channels=args.channels, families=families, snr_db=snr, rate_per_min=args.events_per_min)
        print(f"wrote {path}")
        return 0
    if args.count is None:
        raise UserError("dataset generate: --count N is required (or --stream SECONDS for a stream file)")
    manifest = generate.write_window_dataset(
        args.out, count=args.count, seed=args.seed, sites=_csv(args.sites), fs=args.fs,
        channels=args.channels, samples=args.samples, families=families, snr_db=snr,
        shard_size=args.shard_size, progress=not args.quiet)
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


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="generate, import and inspect window datasets")
    dsub = p.add_subparsers(dest="dataset_cmd", required=True, metavar="{generate,import,gallery}")

    g = dsub.add_parser("generate", help="write the synthetic benchmark (windows, or a stream with --stream)")
    g.add_argument("--out", required=True, help="output directory (windows) or .npz file (stream)")
    g.add_argument("--count", type=int, help="number of windows")
    g.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes")
    g.add_argument("--sites", help="comma-separated site profiles, or 'train', 'heldout', 'all' (default train)")
    g.add_argument("--site", help="site profile of a --stream file (default: the first training site)")
    g.add_argument("--fs", type=float, default=4000.0, help="sampling rate in Hz (default 4000)")
    g.add_argument("--channels", type=int, default=3, choices=(1, 3), help="3 = triaxial (Z,N,E), 1 = uniaxial")
    g.add_argument("--samples", type=int, default=4096, help="samples per window (default 4096)")
    g.add_argument("--classes", help=f"comma-separated families (default: {','.join(CLASSES)})")
    g.add_argument("--snr-db", default="-3:30", help="SNR range LOW:HIGH in dB, drawn uniformly (default -3:30)")
    g.add_argument("--shard-size", type=int, default=1000, help="windows per shard file (default 1000)")
    g.add_argument("--stream", type=float, metavar="SECONDS", help="write a continuous stream of this length")
    g.add_argument("--events-per-min", type=float, default=6.0, help="event rate of a --stream (default 6)")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g.set_defaults(func=_cmd_dataset_generate)

    im = dsub.add_parser("import", help="cut labelled windows from the mine's own records "
                         "(miniSEED, SAC, CSV, stream .npz)")
    im.add_argument("records", nargs="*", metavar="RECORD",
                    help="record files or directories (default: the labels' 'file' column)")
    im.add_argument("--labels", required=True, help="CSV: file or station, start_time (onset), label[, site]")
    im.add_argument("--out", required=True, help="output dataset directory (new or empty)")
    im.add_argument("--fs", type=float, default=4000.0, help="window sampling rate in Hz (default 4000)")
    im.add_argument("--samples", type=int, default=4096, help="samples per window (default 4096)")
    im.add_argument("--pre", type=float, default=0.256, help="seconds before the onset (default 0.256)")
    im.add_argument("--channels", type=int, default=3, choices=(1, 3), help="3 = Z,N,E; 1 = Z only")
    im.add_argument("--units", default="counts", help="units of the record values, noted in the manifest "
                    "(default counts)")
    im.add_argument("--site", help="site name for rows without a 'site' column value")
    im.add_argument("--strict", action="store_true",
                    help="fail on a row whose window does not fit its record (default: skip, warn)")
    im.add_argument("--shard-size", type=int, default=1000, help="windows per shard file (default 1000)")
    im.set_defaults(func=_cmd_dataset_import)

    ga = dsub.add_parser("gallery", help="plot one waveform and spectrogram per class (PNG)")
    ga.add_argument("data", metavar="DATA", help="window dataset (.npz file or sharded directory)")
    ga.add_argument("--out", required=True, help="output .png file")
    ga.add_argument("--seed", type=int, help="pick a random window per class (default: the median-SNR one)")
    ga.add_argument("--onset", type=float, help="onset time in the window in seconds, drawn as a line "
                    "(default: the manifest's onset_s)")
    ga.set_defaults(func=_cmd_dataset_gallery)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The ``stopewatch`` argument parser with every implemented subcommand."""
    parser = argparse.ArgumentParser(
        prog="stopewatch", description="Edge classification of mine microseismic signals.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_dataset(sub)
    return parser


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
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"stopewatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopewatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
