"""Site profiles: what makes one mine's records look different from another's.

A profile fixes the sensor (geophone natural frequency and damping, or an
accelerometer), the rock's attenuation (Q), the background spectrum, the mains
frequency and hum level, the ADC's quantisation step and clipping level, and the
rate of single-sample spikes. Six named profiles are used for training; two are
held out as unseen sites for the generalisation test.

The named profiles are examples. Training data that must transfer to other
recorders draws every recording from a :class:`SiteDistribution` instead
(``--sites wide``): :func:`draw_chain` turns one ``np.random.Generator`` into a
concrete, hashable :class:`RecordingChain` -- instrument (geophone or
accelerometer, natural frequency, damping, mounting resonance, anti-alias
filter, gain, DC offset, polarity, orientation), background (spectral slope,
band-limited bumps, drifting machinery tones, level drift, channel coherence),
mains (50/60 Hz, level, odd or thyristor harmonics) and digitiser defects
(quantisation, clipping, spikes, dropouts).

Held-out regions. Six axes are split into a training part and a held-out
interval (closed); ``region="train"`` draws never enter a held-out interval,
``region="heldout"`` draws put two or three axes (chosen at random) inside
theirs and keep the others in their training part:

=================== ================== =================== ================================
axis                full range         held-out interval   what the held-out part means
=================== ================== =================== ================================
natural_hz          2-40 Hz (log)      6.5-10 Hz           8 and 10 Hz geophones (geophones only)
aa_corner           0.30-0.92 Nyquist  0.30-0.40           a low anti-alias corner
noise_slope         f^-2 .. f^+1       f^+0.5 .. f^+1      a background rising with frequency
mount_q             1.5-30 (log)       15-30               sharp mounting resonances
mains_harmonic_db   -40..+6 dB         0..+6 dB            harmonics stronger than the fundamental
lsb_sigma           0.05-0.6 (log)     0.45-0.6            the coarsest ADC steps
=================== ================== =================== ================================

``noise_slope`` is the exponent of the background's ground-noise amplitude
spectrum; ``mains_harmonic_db`` the level of the strongest mains harmonic re the
fundamental; ``lsb_sigma`` the ADC step in units of the background RMS.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from edge.errors import UserError


@dataclass(frozen=True)
class SiteProfile:
    """Recording conditions of one mine site (levels in dB are relative to the background RMS)."""

    name: str
    description: str
    sensor: str  # "geophone" (output in m/s) or "accelerometer" (m/s^2)
    natural_hz: float  # geophone natural frequency; ignored for accelerometers
    damping: float  # fraction of critical damping of the geophone
    q_range: tuple[float, float]  # S-wave quality factor of the rock mass
    noise_velocity: float  # background ground-velocity RMS, m/s
    red_corner_hz: float  # corner below which the ground noise rises (ventilation, distant machinery)
    red_db: float  # how much the low-frequency part stands above the white floor
    mains_hz: float  # 50 or 60
    hum_db: float  # mains hum level re background
    lsb_sigma: float  # ADC step in units of the background RMS (0.3+ is coarse: ~10-40 levels)
    clip_db: float  # ADC/amplifier full scale re background RMS
    spike_rate: float  # single-sample spikes per second
    ambient_hz: tuple[float, ...] = field(default_factory=tuple)  # stationary machinery tones
    ambient_db: float = -12.0

    @property
    def units(self) -> str:
        return "m/s" if self.sensor == "geophone" else "m/s^2"

    def as_dict(self) -> dict:
        """A JSON-ready description, for manifests."""
        return asdict(self) | {"units": self.units}


SITES: dict[str, SiteProfile] = {p.name: p for p in (
    SiteProfile("za-deep-gold", "deep tabular gold reef, quiet hard rock", "geophone", 14.0, 0.70,
                (150.0, 400.0), 3e-7, 6.0, 8.0, 50.0, -14.0, 0.08, 72.0, 0.2),
    SiteProfile("cl-block-cave", "block cave under a busy undercut level", "accelerometer", 0.0, 0.0,
                (50.0, 200.0), 1e-6, 12.0, 14.0, 50.0, -8.0, 0.30, 60.0, 1.0, (37.5,), -10.0),
    SiteProfile("au-sublevel-stope", "sublevel open stoping, high-gain coarse ADC", "geophone", 14.0, 0.68,
                (80.0, 300.0), 5e-7, 8.0, 10.0, 50.0, -4.0, 0.45, 66.0, 0.5),
    SiteProfile("cn-coal-longwall", "longwall coal face, soft attenuating strata", "geophone", 4.5, 0.70,
                (40.0, 120.0), 8e-7, 3.0, 16.0, 50.0, -10.0, 0.15, 78.0, 0.1, (24.7, 49.4), -14.0),
    SiteProfile("ca-nickel-deep", "deep nickel mine on 60 Hz power", "geophone", 28.0, 0.72,
                (150.0, 400.0), 4e-7, 10.0, 6.0, 60.0, -6.0, 0.20, 70.0, 0.3),
    SiteProfile("us-hardrock-vein", "narrow-vein hard rock, accelerometers, 60 Hz", "accelerometer", 0.0, 0.0,
                (100.0, 300.0), 6e-7, 5.0, 12.0, 60.0, -12.0, 0.10, 74.0, 0.6, (29.0,), -12.0),
    # Held out: combinations and extremes training never sees.
    SiteProfile("se-sublevel-cave", "sublevel caving, strong hum, very coarse ADC", "accelerometer", 0.0, 0.0,
                (200.0, 400.0), 7e-7, 7.0, 9.0, 50.0, 0.0, 0.60, 62.0, 1.5),
    SiteProfile("pe-cut-and-fill", "cut-and-fill stopes, 4.5 Hz geophones on 60 Hz power", "geophone", 4.5, 0.65,
                (60.0, 200.0), 9e-7, 4.0, 12.0, 60.0, -2.0, 0.35, 68.0, 0.8, (42.0,), -8.0),
)}

TRAIN_SITES: tuple[str, ...] = ("za-deep-gold", "cl-block-cave", "au-sublevel-stope", "cn-coal-longwall",
                                "ca-nickel-deep", "us-hardrock-vein")
HELDOUT_SITES: tuple[str, ...] = ("se-sublevel-cave", "pe-cut-and-fill")


def resolve_sites(names: list[str] | None) -> tuple[str, ...]:
    """Expand ``train``/``heldout``/``all`` and check every name; default: the training sites.

    ``wide`` and ``wide-heldout`` stand for one drawn :class:`RecordingChain` per window
    (training or held-out region of :data:`WIDE`).
    """
    if not names:
        return TRAIN_SITES
    groups = {"train": TRAIN_SITES, "heldout": HELDOUT_SITES, "all": tuple(SITES)}
    out: list[str] = []
    for name in names:
        if name in groups:
            out.extend(groups[name])
        elif name in SITES or name in WIDE_SITES:
            out.append(name)
        else:
            raise UserError(f"--sites: unknown site {name!r}; allowed: train, heldout, all, "
                            f"{', '.join((*SITES, *WIDE_SITES))}")
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------- sites as a distribution
WIDE_SITES: dict[str, str] = {"wide": "train", "wide-heldout": "heldout"}  # site name -> region
REGIONS: tuple[str, ...] = ("train", "heldout")
AA_FAMILIES: tuple[str, ...] = ("butter", "cheby1", "ellip", "fir")
AA_CORNER_STEP = 0.02  # anti-alias corners sit on a grid (fraction of Nyquist), so designs are cached and reused
# Designs per family: IIR (order, passband ripple dB, stopband attenuation dB) or FIR (taps, 0, 0).
AA_DESIGNS: dict[str, tuple[tuple[int, float, float], ...]] = {
    "butter": ((4, 0.0, 0.0), (6, 0.0, 0.0), (8, 0.0, 0.0)),
    "cheby1": ((4, 0.1, 0.0), (6, 0.1, 0.0), (8, 0.1, 0.0), (4, 1.0, 0.0), (6, 1.0, 0.0), (8, 1.0, 0.0)),
    "ellip": ((4, 0.5, 40.0), (6, 0.5, 40.0), (4, 0.5, 80.0), (6, 0.5, 80.0)),
    "fir": ((31, 0.0, 0.0), (63, 0.0, 0.0), (127, 0.0, 0.0)),
}
MAINS_HARMONICS: dict[str, tuple[int, ...]] = {
    "odd": (3, 5, 7, 9, 11, 13),  # saturating transformers, fluorescent ballasts
    "thyristor": (5, 7, 11, 13, 17, 19, 23, 25),  # six-pulse rectifiers and drives: 6k +- 1
    "all": (2, 3, 4, 5, 6, 7, 8),
}


@dataclass(frozen=True)
class Axis:
    """One held-out axis: its full range and the closed held-out interval inside it."""

    name: str
    lo: float
    hi: float
    heldout: tuple[float, float]
    log: bool = False
    step: float = 0.0  # > 0: values on the grid lo, lo + step, ..., hi

    def inside(self, value: float) -> bool:
        """Whether ``value`` lies in the held-out interval."""
        return self.heldout[0] <= value <= self.heldout[1]

    def draw(self, rng: np.random.Generator, heldout: bool) -> float:
        """A value in the held-out interval, or in the rest of the full range (uniform, log-uniform if ``log``)."""
        h_lo, h_hi = self.heldout
        if self.step > 0:
            grid = np.round(np.arange(self.lo, self.hi + self.step / 2, self.step), 6)
            keep = (grid >= h_lo) & (grid <= h_hi)
            choices = grid[keep if heldout else ~keep]
            return float(choices[rng.integers(choices.size)])
        tf = math.log if self.log else float
        lo, hi, a, b = tf(self.lo), tf(self.hi), tf(h_lo), tf(h_hi)
        if heldout:
            u = rng.uniform(a, b)
        else:  # the training part: [lo, a) and (b, hi], by length
            u = rng.uniform(0.0, (a - lo) + (hi - b))
            u = lo + u if u < a - lo else b + (u - (a - lo))
            if a <= u <= b:  # only at a boundary, by rounding: step off it
                u = math.nextafter(a, -math.inf) if u - a < b - u else math.nextafter(b, math.inf)
        return float(math.exp(u) if self.log else u)


HELDOUT_AXES: tuple[Axis, ...] = (
    Axis("natural_hz", 2.0, 40.0, (6.5, 10.0), log=True),
    Axis("aa_corner", 0.30, 0.92, (0.30, 0.40), step=AA_CORNER_STEP),
    Axis("noise_slope", -2.0, 1.0, (0.5, 1.0)),
    Axis("mount_q", 1.5, 30.0, (15.0, 30.0), log=True),
    Axis("mains_harmonic_db", -40.0, 6.0, (0.0, 6.0)),
    Axis("lsb_sigma", 0.05, 0.6, (0.45, 0.6), log=True),
)


@dataclass(frozen=True)
class SiteDistribution:
    """Ranges every recording chain is drawn from; defaults cover the mines' recorders we know of.

    Levels in dB are relative to the background RMS unless named otherwise; ``(lo, hi)`` ranges are
    drawn uniformly, those marked log log-uniformly. The six axes of ``heldout_axes`` carry their own
    full ranges and held-out intervals.
    """

    geophone_share: float = 0.6  # the rest are accelerometers
    damping: tuple[float, float] = (0.3, 1.0)  # geophone fraction of critical damping
    bolted_share: float = 0.5  # bolted to the rock face; the rest grouted in boreholes
    bolted_mount_hz: tuple[float, float] = (100.0, 1000.0)  # log; loose coupling rings low ...
    bolted_gain_db: tuple[float, float] = (6.0, 20.0)  # ... and strongly
    grouted_mount_hz: tuple[float, float] = (600.0, 2000.0)  # log
    grouted_gain_db: tuple[float, float] = (0.0, 6.0)
    aa_family_weights: tuple[float, ...] = (0.3, 0.2, 0.2, 0.3)  # butter, cheby1, ellip, fir
    gain_db: tuple[float, float] = (-20.0, 20.0)  # calibration and unit scaling of the whole record
    channel_gain_db: float = 2.0  # channels differ by up to this much
    dc_offset: tuple[float, float] = (0.0, 20.0)  # |offset| per channel, in background RMS
    reversed_share: float = 0.15  # chance that one channel's polarity is reversed
    orientation_weights: tuple[float, float, float] = (0.4, 0.4, 0.2)  # Z,N,E / Z,1,2 (azimuth) / tilted
    tilt_deg: tuple[float, float] = (2.0, 20.0)  # a "vertical" that is not
    q_low: tuple[float, float] = (40.0, 250.0)  # log; rock S-wave Q range is [q, q * q_span]
    q_span: tuple[float, float] = (1.5, 3.0)
    noise_velocity: tuple[float, float] = (1e-7, 3e-6)  # log; recorded ground-noise RMS, m/s
    bumps: tuple[int, int] = (0, 3)  # band-limited bumps in the background spectrum
    bump_hz: tuple[float, float] = (5.0, 1500.0)  # log
    bump_octaves: tuple[float, float] = (0.2, 1.5)  # Gaussian width on a log2 axis
    bump_db: tuple[float, float] = (3.0, 20.0)
    tones: tuple[int, int] = (0, 3)  # steady machinery lines (fans, pumps, compressors)
    tone_hz: tuple[float, float] = (5.0, 250.0)  # log
    tone_harmonics: tuple[int, int] = (1, 6)
    tone_db: tuple[float, float] = (-30.0, 0.0)
    tone_drift: tuple[float, float] = (0.001, 0.02)  # relative frequency swing ...
    tone_period_s: tuple[float, float] = (20.0, 600.0)  # ... over this period (log)
    level_drift_db: tuple[float, float] = (0.0, 6.0)  # shift changes: the background level swings
    level_period_s: tuple[float, float] = (600.0, 7200.0)  # log
    coherence: tuple[float, float] = (0.0, 0.9)  # correlation of the background between channels
    mains_60_share: float = 0.4
    hum_db: tuple[float, float] = (-30.0, 6.0)
    mains_spectra: tuple[str, ...] = tuple(MAINS_HARMONICS)
    mains_harmonic_decay: tuple[float, float] = (0.5, 1.5)  # harmonics fall off as (h0/h)^decay
    clip_db: tuple[float, float] = (40.0, 80.0)  # full scale re background RMS
    spike_rate: tuple[float, float] = (0.0, 2.0)  # single-sample spikes per second
    dropout_share: float = 0.5  # recorders that lose samples at all
    dropout_rate: tuple[float, float] = (0.2, 3.0)  # dropouts per second, where they happen (log)
    dropout_ms: tuple[float, float] = (1.0, 10.0)
    heldout_axes: tuple[Axis, ...] = HELDOUT_AXES

    def axis(self, name: str) -> Axis:
        """The held-out axis called ``name``."""
        return next(a for a in self.heldout_axes if a.name == name)

    def as_dict(self) -> dict:
        """A JSON-ready description, for manifests."""
        return asdict(self)


WIDE = SiteDistribution()


@dataclass(frozen=True)
class RecordingChain:
    """One concrete recorder drawn from a :class:`SiteDistribution`: hashable, so filters are cached by it.

    Frequencies in Hz, levels in dB re the background RMS, ``aa_corner`` a fraction of Nyquist. Tones are
    ``(hz, harmonic levels dB re the first, level dB, relative drift, drift period s)``; bumps
    ``(hz, octaves, dB)``; mains harmonics ``(h, dB re the fundamental)``. Per-channel tuples hold 3 values
    (the first serves a uniaxial record).
    """

    name: str  # "wide" or "wide-heldout": the window's site label
    region: str
    heldout_axes: tuple[str, ...]  # axes drawn inside their held-out interval
    sensor: str
    natural_hz: float  # 0 for accelerometers
    damping: float
    mount: str  # "bolted" or "grouted"
    mount_hz: float
    mount_q: float
    mount_gain_db: float
    aa_family: str
    aa_order: int  # IIR order, or FIR taps
    aa_ripple_db: float
    aa_stop_db: float
    aa_corner: float
    gain: float
    channel_gain: tuple[float, float, float]
    dc_offset: tuple[float, float, float]  # in background RMS
    polarity: tuple[int, int, int]
    orientation: str  # "ZNE", "Z12" or "tilted"
    azimuth_deg: float  # of channel 1 from north
    tilt_deg: float
    tilt_azimuth_deg: float
    q_range: tuple[float, float]
    noise_velocity: float
    noise_slope: float
    bumps: tuple[tuple[float, float, float], ...]
    tones: tuple[tuple[float, tuple[float, ...], float, float, float], ...]
    level_drift_db: float
    level_period_s: float
    coherence: float
    mains_hz: float
    hum_db: float
    mains_spectrum: str
    mains_harmonic_db: float
    mains_harmonics: tuple[tuple[int, float], ...]
    lsb_sigma: float
    clip_db: float
    spike_rate: float
    dropout_rate: float
    dropout_ms: float
    dropout_hold: bool  # a dropout holds the last value (else reads zeros)

    @property
    def units(self) -> str:
        return "m/s" if self.sensor == "geophone" else "m/s^2"

    @property
    def delay_samples(self) -> int:
        """Group delay of a linear-phase FIR anti-alias filter (IIR: its small delay is not counted)."""
        return (self.aa_order - 1) // 2 if self.aa_family == "fir" else 0

    def axis_values(self) -> dict[str, float]:
        """The value on each held-out axis (natural_hz is NaN for accelerometers)."""
        return {"natural_hz": self.natural_hz if self.sensor == "geophone" else math.nan,
                "aa_corner": self.aa_corner, "noise_slope": self.noise_slope, "mount_q": self.mount_q,
                "mains_harmonic_db": self.mains_harmonic_db, "lsb_sigma": self.lsb_sigma}

    def as_dict(self) -> dict:
        """A JSON-ready description."""
        return asdict(self) | {"units": self.units}


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))


def draw_chain(rng: np.random.Generator, distribution: SiteDistribution = WIDE,
               region: str = "train") -> RecordingChain:
    """Draw one concrete recording chain from ``distribution`` in ``region`` ("train" or "heldout").

    Pure: everything random comes from ``rng``, so the same generator state gives the same chain.
    """
    if region not in REGIONS:
        raise UserError(f"site region = {region!r}; allowed: {', '.join(REGIONS)}")
    d = distribution
    geophone = bool(rng.random() < d.geophone_share)
    eligible = [a.name for a in d.heldout_axes if geophone or a.name != "natural_hz"]
    held: tuple[str, ...] = ()
    if region == "heldout":
        k = int(rng.integers(2, 4))
        held = tuple(sorted(str(a) for a in rng.choice(eligible, size=min(k, len(eligible)), replace=False)))
    value = {a.name: a.draw(rng, a.name in held) for a in d.heldout_axes}

    bolted = bool(rng.random() < d.bolted_share)
    mount_hz = _log_uniform(rng, d.bolted_mount_hz if bolted else d.grouted_mount_hz)
    mount_gain = float(rng.uniform(*(d.bolted_gain_db if bolted else d.grouted_gain_db)))
    weights = np.asarray(d.aa_family_weights, dtype=float)
    family = AA_FAMILIES[int(rng.choice(len(AA_FAMILIES), p=weights / weights.sum()))]
    order, ripple, stop = AA_DESIGNS[family][int(rng.integers(len(AA_DESIGNS[family])))]

    channel_gain = 10.0 ** (rng.uniform(-d.channel_gain_db, d.channel_gain_db, 3) / 20.0)
    dc = rng.uniform(*d.dc_offset, 3) * rng.choice([-1.0, 1.0], 3)
    polarity = np.ones(3, dtype=int)
    if rng.random() < d.reversed_share:
        polarity[int(rng.integers(3))] = -1
    w = np.asarray(d.orientation_weights, dtype=float)
    orientation = ("ZNE", "Z12", "tilted")[int(rng.choice(3, p=w / w.sum()))]
    azimuth = 0.0 if orientation == "ZNE" else float(rng.uniform(0.0, 360.0))
    tilt = float(rng.uniform(*d.tilt_deg)) if orientation == "tilted" else 0.0
    tilt_azimuth = float(rng.uniform(0.0, 360.0)) if orientation == "tilted" else 0.0

    q_lo = _log_uniform(rng, d.q_low)
    bumps = tuple((_log_uniform(rng, d.bump_hz), float(rng.uniform(*d.bump_octaves)), float(rng.uniform(*d.bump_db)))
                  for _ in range(int(rng.integers(d.bumps[0], d.bumps[1] + 1))))
    tones = []
    for _ in range(int(rng.integers(d.tones[0], d.tones[1] + 1))):
        n_harm = int(rng.integers(d.tone_harmonics[0], d.tone_harmonics[1] + 1))
        rel = tuple(0.0 if h == 1 else float(-20.0 * np.log10(h) - rng.uniform(0.0, 10.0))
                    for h in range(1, n_harm + 1))
        tones.append((_log_uniform(rng, d.tone_hz), rel, float(rng.uniform(*d.tone_db)),
                      _log_uniform(rng, d.tone_drift), _log_uniform(rng, d.tone_period_s)))
    spectrum = str(d.mains_spectra[int(rng.integers(len(d.mains_spectra)))])
    decay = float(rng.uniform(*d.mains_harmonic_decay))
    orders = MAINS_HARMONICS[spectrum]
    mains_harmonics = tuple((h, float(value["mains_harmonic_db"] - 20.0 * decay * np.log10(h / orders[0])))
                            for h in orders)
    dropping = bool(rng.random() < d.dropout_share)
    return RecordingChain(
        name="wide" if region == "train" else "wide-heldout", region=region, heldout_axes=held,
        sensor="geophone" if geophone else "accelerometer",
        natural_hz=value["natural_hz"] if geophone else 0.0,
        damping=float(rng.uniform(*d.damping)) if geophone else 0.0,
        mount="bolted" if bolted else "grouted", mount_hz=mount_hz, mount_q=value["mount_q"],
        mount_gain_db=mount_gain, aa_family=family, aa_order=order, aa_ripple_db=ripple, aa_stop_db=stop,
        aa_corner=value["aa_corner"], gain=float(10.0 ** (rng.uniform(*d.gain_db) / 20.0)),
        channel_gain=tuple(float(g) for g in channel_gain), dc_offset=tuple(float(v) for v in dc),
        polarity=tuple(int(p) for p in polarity), orientation=orientation, azimuth_deg=azimuth,
        tilt_deg=tilt, tilt_azimuth_deg=tilt_azimuth,
        q_range=(q_lo, q_lo * float(rng.uniform(*d.q_span))), noise_velocity=_log_uniform(rng, d.noise_velocity),
        noise_slope=value["noise_slope"], bumps=bumps, tones=tuple(tones),
        level_drift_db=float(rng.uniform(*d.level_drift_db)), level_period_s=_log_uniform(rng, d.level_period_s),
        coherence=float(rng.uniform(*d.coherence)),
        mains_hz=60.0 if rng.random() < d.mains_60_share else 50.0, hum_db=float(rng.uniform(*d.hum_db)),
        mains_spectrum=spectrum, mains_harmonic_db=value["mains_harmonic_db"], mains_harmonics=mains_harmonics,
        lsb_sigma=value["lsb_sigma"], clip_db=float(rng.uniform(*d.clip_db)),
        spike_rate=float(rng.uniform(*d.spike_rate)),
        dropout_rate=_log_uniform(rng, d.dropout_rate) if dropping else 0.0,
        dropout_ms=float(rng.uniform(*d.dropout_ms)), dropout_hold=bool(rng.random() < 0.5))
