"""Labelled event windows and continuous streams of the synthetic benchmark.

Each window is drawn from its own random stream, seeded by (seed, index), so a
dataset is the same bytes for the same seed whatever the shard size, and any
window can be regenerated alone.
"""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.formats import WINDOWS_FORMAT, Stream, WindowSet, write_manifest, write_npz, write_stream
from edge.vocabulary import CLASSES
from firmware_bridge.clock import iso_utc
from training.synthetic import sources
from training.synthetic.recording import digitise, make_background, record, snr_gain
from training.synthetic.sites import (
    HELDOUT_SITES,
    SITES,
    TRAIN_SITES,
    WIDE,
    WIDE_SITES,
    RecordingChain,
    SiteProfile,
    draw_chain,
    resolve_sites,
)

GENERATOR_VERSION = "2.0.0"
REGIMES = sources.REGIMES
ONSET_S = REGIMES["high"].onset_s  # first energy ~0.25 s after the window opens (high regime) ...
ONSET_JITTER_S = REGIMES["high"].onset_jitter_s  # ... give or take this much
KNOWN_FAMILIES: tuple[str, ...] = (*CLASSES, *sources.EVALUATION_ONLY)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
BLAST_HOURS = (6, 18)  # production blasts fire at shift change


def parameter_ranges(regime: str = "high") -> dict:
    """The ranges each window's parameters are drawn from under ``regime`` (documented in every manifest)."""
    r = REGIMES[regime]
    slow = r.slow
    return {
        "regime": r.as_dict(),
        "onset_s": [r.onset_s - r.onset_jitter_s, r.onset_s + r.onset_jitter_s],
        "microseismic": {"mw": list(r.mw), "stress_drop_mpa": list(r.stress_drop_mpa), "fc_hz": list(r.fc_hz),
                         "beta_m_s": [3000, 3500], "vp_vs": [1.65, 1.8], "distance_m": list(r.distance_m),
                         "radiation": "random: S/P = (vp/vs)^3 x [0.9, 2.0]; double_couple: random strike, dip, "
                                      "rake; implosive: -(a I + b n n^T), a in [0.5, 1.5], b in [0.5, 2]",
                         "coda_tau_s": f"{list(r.coda_tau_s)} + 0.3 (S-P)", "coda_level": list(r.coda_level),
                         "aftershock_gap_s": list(r.aftershock_gap_s), "second_event_amplitude": [0.32, 1.0]},
        "blast": {"holes": {"delay_fired_classic": [2, 12], "delay_fired": [2, 24], "production_ring": [13, 60],
                            "single_charge": 1, "decked_holes": [3, 15]},
                  "delay_ms": [17, 100], "delay_scatter": [0.005, 0.05], "misfire_probability": 0.3,
                  "air_blast_probability": {"delay_fired": 0.3, "production_ring": 0.3, "single_charge": 0.5,
                                            "decked_holes": 0.2},
                  "air_blast_hz": "fc_p / [4, 10], within [2, 60]", "mw": list(r.blast_mw),
                  "distance_m": list(r.blast_distance_m), "s_p_ratio": [0.2, 0.8],
                  "coda_tau_s": list(r.blast_coda_tau_s)},
        "drilling": {"blow_rate_hz": {"top_hammer": [15, 60], "down_the_hole": [10, 25], "jackleg": [25, 45]},
                     "ring_hz": list(r.ring_hz), "rotary_rotation_hz": [2, 20], "distance_m": [5, 300],
                     "already_running": 0.35},
        "electrical": {"kinds": ["mains_burst (clean, clipped, chopped)", "switching (step, decay)", "lc_ringing",
                                 "pulse_train (square, bipolar, AC-coupled)"],
                       "burst_s": [0.05 * slow, 0.6 * slow], "switching_tau_ms": [0.3, 300],
                       "lc_q": [5, 50], "channel_gain_sd": [0.01, 0.3], "channel_sign_flip": 0.2},
        "mechanical": {"f1_hz": [8, 120], "rise_s": [0.15 * slow, 0.7 * slow], "drift": [0.005, 0.03],
                       "run_up_tau_s": [0.1 * slow, 0.5 * slow], "run_down_tau_s": [0.2 * slow, 1.0 * slow],
                       "idler_hz": [4, 15], "crusher_impacts_per_s": [2, 15], "vehicle_speed_m_s": [2, 8],
                       "knocks_per_s": [0.5 / slow ** 0.5, 5 / slow ** 0.5]},
        "noise": {"background_small_transient": 0.3, "small_transient_snr_db": [-20, -10],
                  "noise_burst_db": [0, 8], "noise_burst_s": [0.05 * slow, 0.4 * slow], "spike_peak_db": [14, 32],
                  "ventilation_gust_db": [0, 6], "ventilation_gust_s": [0.4 * slow, 0.9 * slow]},
        "rockfall": {"duration_s": [0.3 * slow, 1.0 * slow], "impacts_per_s": [8, 40], "fc_hz": [20, 150]},
        "orepass": {"duration_s": [0.5 * slow, 1.5 * slow], "impacts_per_s": [60, 300]},
        "test_pulse": {"width_s": [0.05, 0.3]},
        "site_jitter": {"noise_level_db": [-4, 4], "hum_db": [-4, 4], "red_db": [-4, 4]},
    }


PARAMETER_RANGES = parameter_ranges("high")


@lru_cache(maxsize=16)
def _grid(fs: float, n: int) -> sources.Grid:
    return sources.Grid.make(fs, n)


def make_source(family: str, rng: np.random.Generator, grid: sources.Grid, onset_s: float,
                site: SiteProfile | RecordingChain, allow_ongoing: bool = True, regime: str = "high",
                mechanisms: str = "train") -> sources.Source:
    """Draw one ``family`` source on ``grid`` with its first energy at ``onset_s`` (buffer time).

    ``mechanisms`` picks the set its mechanism is drawn from ('train', 'heldout', 'all').
    """
    ctx = sources.Context(site.q_range, site.mains_hz, REGIMES[regime], allow_ongoing)
    return sources.draw(family, rng, grid, onset_s, ctx, mechanisms)


def _to_channels(rec: np.ndarray, channels: int, common_mode: bool, rng: np.random.Generator) -> np.ndarray:
    """Keep Z, N, E for triaxial sensors; a uniaxial sensor is vertical or along a random borehole axis."""
    if channels == 3:
        return rec
    if common_mode:
        return rec[:1]
    axis = np.array([1.0, 0.0, 0.0]) if rng.random() < 0.5 else sources.unit_vector(rng)
    return (axis @ rec)[None, :]


def recorded_event(family: str, rng: np.random.Generator, site: SiteProfile | RecordingChain, fs: float,
                   channels: int, n: int, onset_s: float, allow_ongoing: bool = True, regime: str = "high",
                   mechanisms: str = "train") -> tuple[np.ndarray, sources.Source]:
    """A clean (noise-free) recording of one source: through the site's sensor, on ``channels``."""
    src = make_source(family, rng, _grid(fs, n), onset_s, site, allow_ongoing, regime, mechanisms)
    if not np.any(src.signal):  # the plain background: nothing to record
        return np.zeros((channels, n)), src
    # Fade the grid's last 0.1 s: sources that run to its end would otherwise stop with a step, and the
    # circular sensor filter would wrap that step's ringing round to the start. Callers discard the tail.
    fade = min(int(0.1 * fs), n // 8)
    src.signal[:, n - fade:] *= np.linspace(1.0, 0.0, fade)
    rec = record(site, fs, src.signal, src.through_sensor)
    return _to_channels(rec, channels, not src.through_sensor, rng), src


def resolve_profile(site_name: str | RecordingChain, rng: np.random.Generator) -> SiteProfile | RecordingChain:
    """A named profile, a given chain, or for ``wide``/``wide-heldout`` a chain drawn from ``rng``."""
    if isinstance(site_name, RecordingChain):
        return site_name
    if site_name in WIDE_SITES:
        return draw_chain(rng, WIDE, WIDE_SITES[site_name])
    return SITES[site_name]


def synthesize_window(rng: np.random.Generator, family: str, site_name: str | RecordingChain,
                      fs: float | None = None, channels: int = 3, samples: int | None = None,
                      snr_db: float = 10.0, onset_s: float | None = None, regime: str = "high",
                      mechanisms: str = "train") -> tuple[np.ndarray, dict]:
    """One recorded window (channels, samples) float32 of ``family`` at ``site_name`` and ``snr_db``.

    ``site_name`` is a named profile, ``wide``/``wide-heldout`` (a chain drawn for this window) or a
    drawn :class:`RecordingChain`; ``fs`` and ``samples`` default to the regime's. Returns the window and
    what made it: onset sample, mechanism, clean event (before noise, and for noise windows whatever
    transient they hold), source parameters, and the chain where one was drawn.
    """
    site, reg = resolve_profile(site_name, rng), REGIMES[regime]
    fs = reg.fs if fs is None else fs
    samples = reg.samples if samples is None else samples
    duration = samples / fs
    if onset_s is None:
        full = reg.samples / reg.fs
        centre = reg.onset_s if duration >= 2 * reg.onset_s else duration / 4
        onset_s = centre + rng.uniform(-reg.onset_jitter_s, reg.onset_jitter_s) * min(1.0, duration / full)
    pad = max(samples // 4, int(0.3 * fs))
    n = samples + 2 * pad
    background = make_background(site, fs, channels, rng)
    noise = background.block(n)[:, pad:pad + samples]
    noise_rms = float(np.sqrt(np.mean(noise**2)))
    meta: dict = {"family": family, "site": site.name, "onset": int(round(onset_s * fs)), "snr_db": snr_db,
                  "regime": regime}
    if isinstance(site, RecordingChain):
        meta["chain"] = site
    rec, src = recorded_event(family, rng, site, fs, channels, n, pad / fs + onset_s, regime=regime,
                              mechanisms=mechanisms)
    rec = rec[:, pad:pad + samples]
    meta["mechanism"] = src.meta["mechanism"]
    if family == "noise":  # what a trigger may fire on with no event, at a level relative to the background
        level = src.meta.get("level_db")
        if level is None and rng.random() < 0.3:  # the plain background: sometimes a transient far below it
            rec, _ = recorded_event("microseismic", rng, site, fs, channels, n, pad / fs + onset_s, regime=regime)
            rec, level = rec[:, pad:pad + samples], rng.uniform(-20.0, -10.0)
        if level is None:
            clean = np.zeros_like(noise)
        elif src.meta.get("level") == "peak":
            clean = rec * noise_rms * 10.0 ** (level / 20.0) / (np.max(np.abs(rec)) + 1e-30)
        else:
            clean = snr_gain(rec, noise_rms, level) * rec
        meta["snr_db"] = float("nan")
        meta["source"] = {"level_db": level}
    else:
        clean = snr_gain(rec, noise_rms, snr_db) * rec
        meta["onset"] = src.onset - pad + getattr(site, "delay_samples", 0)
        # Sample positions in the source's metadata refer to the padded grid: make them window positions.
        meta["source"] = {k: (np.asarray(v) - pad).tolist() if k.endswith(("_sample", "_samples")) else v
                          for k, v in src.meta.items()}
    wave, n_spikes, clipped = digitise(noise + clean, site, noise_rms, rng, fs)
    meta.update(noise_rms=noise_rms, spikes=n_spikes, clipped=clipped, clean=clean)
    return wave, meta


def _plan(seed: int, count: int, families: tuple[str, ...], sites: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """Balanced labels, sites and UTC times of ``count`` windows, fixed by ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x91A4]))
    labels = np.resize(np.array(families), count)
    rng.shuffle(labels)
    site = np.array(sites)[rng.integers(0, len(sites), count)]
    day = rng.integers(0, 365, count)
    seconds = rng.uniform(0.0, 86400.0, count)
    blast_hour = np.array(BLAST_HOURS)[rng.integers(0, len(BLAST_HOURS), count)]
    blast_s = blast_hour * 3600.0 + rng.uniform(-600.0, 1200.0, count)
    seconds = np.where(labels == "blast", blast_s, seconds)
    times = np.array([iso_utc(EPOCH + timedelta(days=int(d), seconds=float(s)))
                      for d, s in zip(day, seconds, strict=True)])
    return labels, site, times


def _check_args(count: int, fs: float, channels: int, samples: int, families: list[str] | tuple[str, ...],
                snr_db: tuple[float, float], regime: str = "high", mechanisms: str = "train") -> tuple[str, ...]:
    if regime not in REGIMES:
        raise UserError(f"--regime = {regime!r}; allowed: {', '.join(REGIMES)}")
    if mechanisms not in sources.MECHANISM_SETS:
        raise UserError(f"--mechanisms = {mechanisms!r}; allowed: {', '.join(sources.MECHANISM_SETS)}")
    if count < 1:
        raise UserError(f"--count = {count}; expected a positive number of windows")
    if not 100.0 <= fs <= 100_000.0:
        raise UserError(f"--fs = {fs:g}; expected a sampling rate between 100 and 100000 Hz")
    if channels not in (1, 3):
        raise UserError(f"--channels = {channels}; allowed: 1 (uniaxial), 3 (triaxial)")
    if samples < 256:
        raise UserError(f"--samples = {samples}; expected at least 256")
    bad = [f for f in families if f not in KNOWN_FAMILIES]
    if bad or not families:
        raise UserError(f"--classes = {','.join(families)!r}; allowed: {', '.join(KNOWN_FAMILIES)}")
    if not -30.0 <= snr_db[0] <= snr_db[1] <= 80.0:
        raise UserError(f"--snr-db = {snr_db[0]:g}:{snr_db[1]:g}; expected LOW:HIGH within -30:80 dB")
    return tuple(dict.fromkeys(families))


def _rate(regime: str, fs: float | None, samples: int | None) -> tuple[float, int]:
    """The sampling rate and window length asked for, or the regime's when not given."""
    reg = REGIMES.get(regime, REGIMES["high"])
    return (reg.fs if fs is None else float(fs)), (reg.samples if samples is None else int(samples))


def generate_windows_and_mechanisms(count: int, seed: int, sites: list[str] | None = None, fs: float | None = None,
                                    channels: int = 3, samples: int | None = None,
                                    families: list[str] | tuple[str, ...] = CLASSES,
                                    snr_db: tuple[float, float] = (-3.0, 30.0), start: int = 0,
                                    stop: int | None = None, regime: str = "high",
                                    mechanisms: str = "train") -> tuple[WindowSet, np.ndarray]:
    """Windows ``start..stop`` of the dataset fixed by ``seed``, and the mechanism that made each one.

    ``fs``/``samples`` default to the regime's (4000 Hz x 4096 high, 500 Hz x 4096 low); ``mechanisms``
    is the set drawn from: 'train' (held-out mechanisms never appear), 'heldout' (only those), 'all'.
    """
    fs, samples = _rate(regime, fs, samples)
    fams = _check_args(count, fs, channels, samples, families, snr_db, regime, mechanisms)
    site_names = resolve_sites(sites)
    labels, site, times = _plan(seed, count, fams, site_names)
    stop = count if stop is None else stop
    waves = np.empty((stop - start, channels, samples), dtype=np.float32)
    snrs = np.empty(stop - start, dtype=np.float32)
    mechs = []
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        waves[j], meta = synthesize_window(rng, str(labels[i]), str(site[i]), fs, channels, samples,
                                           float(rng.uniform(*snr_db)), regime=regime, mechanisms=mechanisms)
        snrs[j] = meta["snr_db"]
        mechs.append(meta["mechanism"])
    return (WindowSet(waves, labels[start:stop], fs, snrs, site[start:stop], times[start:stop]),
            np.array(mechs, dtype=str))


def generate_windows(count: int, seed: int, sites: list[str] | None = None, fs: float | None = None,
                     channels: int = 3, samples: int | None = None, families: list[str] | tuple[str, ...] = CLASSES,
                     snr_db: tuple[float, float] = (-3.0, 30.0), start: int = 0,
                     stop: int | None = None, regime: str = "high", mechanisms: str = "train") -> WindowSet:
    """Windows ``start..stop`` of the dataset of ``count`` windows fixed by ``seed`` (all by default)."""
    return generate_windows_and_mechanisms(count, seed, sites, fs, channels, samples, families, snr_db, start, stop,
                                           regime, mechanisms)[0]


def _write_shard(path: Path, windows: WindowSet, mechanism: np.ndarray) -> None:
    """A window file with the optional per-window ``mechanism`` strings beside the standard keys."""
    write_npz(path, {"waveforms": np.ascontiguousarray(windows.waveforms, dtype=np.float32),
                     "labels": np.asarray(windows.labels, dtype=str), "fs": np.float64(windows.fs),
                     "snr_db": np.asarray(windows.snr_db, dtype=np.float32),
                     "site": np.asarray(windows.site, dtype=str), "time": np.asarray(windows.time, dtype=str),
                     "mechanism": np.asarray(mechanism, dtype=str)})


def write_window_dataset(out: str | Path, count: int, seed: int, sites: list[str] | None = None,
                         fs: float | None = None, channels: int = 3, samples: int | None = None,
                         families: list[str] | tuple[str, ...] = CLASSES,
                         snr_db: tuple[float, float] = (-3.0, 30.0), shard_size: int = 1000,
                         progress: bool = True, regime: str = "high", mechanisms: str = "train") -> dict:
    """Write a sharded window dataset with its manifest, shard by shard (bounded memory)."""
    fs, samples = _rate(regime, fs, samples)
    fams = _check_args(count, fs, channels, samples, families, snr_db, regime, mechanisms)
    site_names = resolve_sites(sites)
    if shard_size < 1:
        raise UserError(f"--shard-size = {shard_size}; expected a positive number of windows")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not an empty directory; "
                        "choose a new directory (nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    labels, _, _ = _plan(seed, count, fams, site_names)
    shards = []
    drawn: dict[str, dict[str, int]] = {f: {} for f in fams}
    for k, start in enumerate(range(0, count, shard_size)):
        stop = min(count, start + shard_size)
        part, mechs = generate_windows_and_mechanisms(count, seed, list(site_names), fs, channels, samples, fams,
                                                      snr_db, start, stop, regime, mechanisms)
        name = f"shard-{k:05d}.npz"
        _write_shard(out / name, part, mechs)
        counts: dict[str, int] = {}
        for fam, mech in zip(part.labels, mechs, strict=True):
            key = f"{fam}/{mech}"
            counts[key] = counts.get(key, 0) + 1
            drawn[str(fam)][str(mech)] = drawn[str(fam)].get(str(mech), 0) + 1
        shards.append({"file": name, "count": stop - start, "mechanism_counts": dict(sorted(counts.items())),
                       "sha256": hashlib.sha256((out / name).read_bytes()).hexdigest()})
        if progress:
            print(f"  {stop}/{count} windows", file=sys.stderr, flush=True)
    manifest = {
        "format": WINDOWS_FORMAT,
        "generator": {"name": "stopewatch.synthetic", "version": GENERATOR_VERSION},
        "seed": seed, "count": count, "fs": fs, "channels": channels, "samples": samples,
        "regime": regime,
        "channel_names": ["Z", "N", "E"] if channels == 3 else ["axis"],
        "classes": list(fams),
        "class_counts": {f: int(np.sum(labels == f)) for f in fams},
        "mechanisms": {
            "set": mechanisms,
            "drawn_from": {f: [m.name for m in sources.mechanisms_of(f, mechanisms)] for f in fams},
            "heldout": {f: [m.name for m in ms if m.heldout] for f, ms in sources.MECHANISMS.items()},
            "counts": drawn,
            "catalogue": sources.describe_mechanisms(),
            "note": "each window's mechanism is the string array 'mechanism' in its shard",
        },
        "sites": {name: SITES[name].as_dict() if name in SITES else {"region": WIDE_SITES[name],
                                                                     "chain": "drawn per window"}
                  for name in site_names},
        "train_sites": list(TRAIN_SITES), "heldout_sites": list(HELDOUT_SITES),
        "snr_db": list(snr_db),
        "snr_definition": "RMS of the event over its 5-95% energy span / RMS of the background (dB); "
                          "NaN for noise windows",
        "parameter_ranges": parameter_ranges(regime),
        "shards": shards,
    }
    wide = [name for name in site_names if name in WIDE_SITES]
    if wide:  # each window drew its own recording chain from this distribution
        manifest["site_distribution"] = WIDE.as_dict()
        manifest["site_regions"] = {name: WIDE_SITES[name] for name in wide}
    write_manifest(out, manifest)
    return manifest


def write_stream_file(out: str | Path, seconds: float, seed: int, site: str | None = None, fs: float | None = None,
                      channels: int = 3, families: list[str] | tuple[str, ...] = CLASSES,
                      snr_db: tuple[float, float] = (-3.0, 30.0), rate_per_min: float = 6.0,
                      regime: str = "high", mechanisms: str = "train") -> Path:
    """Write a continuous stream (the stream .npz format) with ground-truth onsets, labels and SNRs."""
    from training.synthetic.stream import StreamSynth

    if not 0 < seconds <= 24 * 3600:
        raise UserError(f"--stream = {seconds:g}; expected a duration in seconds up to one day")
    fs, _ = _rate(regime, fs, None)
    _check_args(1, fs, channels, 4096, families, snr_db, regime, mechanisms)
    out = Path(out)
    if out.suffix != ".npz":  # a directory: the stream goes in it as stream.npz
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a directory; give a new .npz file or a directory")
        out.mkdir(parents=True, exist_ok=True)
        out = out / "stream.npz"
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist")
    synth = StreamSynth(fs=fs, channels=channels, site=site, seed=seed, families=families,
                        snr_db=snr_db, rate_per_min=rate_per_min, regime=regime, mechanisms=mechanisms)
    total = int(round(seconds * fs))
    block = int(fs)  # one second at a time, like the board
    data = np.empty((channels, total), dtype=np.float32)
    events: list[dict] = []
    for at in range(0, total, block):
        n = min(block, total - at)
        data[:, at:at + n], new = synth.next_block(n)
        events += new
    events = [e for e in events if e["sample"] < total]
    write_stream(out, Stream(
        data, fs, synth.start_time, np.array(synth.channel_names),
        np.array([e["sample"] for e in events], dtype=np.int64),
        np.array([e["label"] for e in events], dtype=str),
        np.array([e["snr_db"] for e in events], dtype=np.float32)))
    return out
