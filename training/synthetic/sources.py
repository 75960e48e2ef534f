"""Ground-motion physics of each signal family, on a common time grid.

Each family comes in several named mechanisms (a fracture's focal mechanism, a
blast's pattern, a drill's type, ...), drawn at random; some are held out of
training to test generalisation to mechanisms a model never saw. Every source
draws its own parameters from ``rng`` (wide ranges, so a model cannot memorise
one shape) and returns a :class:`Source`: three-component (Z, N, E) signal on
the grid, with ``onset`` the sample of the first energy. A :class:`Regime`
sets magnitudes, distances and time scales for fast boards (>= 2 kHz, small
nearby events) or slow ones (250-1000 Hz, larger events kilometres away).
Amplitudes are relative: the window generator scales each event to its drawn
SNR. Seismic sources are built in the frequency domain, so any sampling rate
works without aliasing; electrical pickup bypasses the sensor's mechanics.

References: Brune (1970) omega-squared source, corner frequency
f_c = 0.37 beta (16 dsigma / (7 M0))^(1/3), M0 = 10^(1.5 Mw + 9.1) N m;
constant-Q attenuation exp(-pi f t*) with Futterman-type dispersion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.signal import lfilter

ZNE = 3  # components: vertical, north, east


@dataclass(frozen=True)
class Grid:
    """A time grid of ``n`` samples at ``fs`` Hz, with its rfft frequencies."""

    fs: float
    n: int
    t: np.ndarray = field(repr=False)
    f: np.ndarray = field(repr=False)

    @classmethod
    def make(cls, fs: float, n: int) -> Grid:
        return cls(fs, n, np.arange(n) / fs, np.fft.rfftfreq(n, 1.0 / fs))


@dataclass
class Source:
    """One signal family's contribution: (3, n) ground motion (or pickup) and what made it."""

    signal: np.ndarray
    onset: int
    through_sensor: bool = True
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- building blocks
def corner_hz(mw: float, stress_drop_pa: float, beta: float) -> float:
    """Brune corner frequency of a source of moment magnitude ``mw``."""
    m0 = 10.0 ** (1.5 * mw + 9.1)
    return 0.37 * beta * (16.0 * stress_drop_pa / (7.0 * m0)) ** (1.0 / 3.0)


def brune_velocity(f: np.ndarray, fc: float) -> np.ndarray:
    """Far-field velocity spectrum of a Brune source with unit low-frequency displacement plateau."""
    return 2j * np.pi * f / (1.0 + 1j * f / fc) ** 2


_DISPERSION: dict[tuple[int, float], np.ndarray] = {}  # per frequency grid: the phase term's log, reused


def attenuation(f: np.ndarray, tstar: float) -> np.ndarray:
    """Constant-Q operator exp(-pi f t*) with the dispersion that keeps it causal (Futterman 1962)."""
    key = (f.size, float(f[-1]))
    disp = _DISPERSION.get(key)
    if disp is None:
        fr = max(float(f[-1]), 1.0)
        disp = np.where(f > 0, np.log(fr / np.maximum(f, 1e-9)), 0.0)
        # -pi f (real part) and -2 f ln(fr/f) (phase) per unit t*: one complex exponent to scale
        disp = -np.pi * f - 2j * f * disp
        if len(_DISPERSION) < 32:
            _DISPERSION[key] = disp
    return np.exp(tstar * disp)


def delays(f: np.ndarray, times: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Spectrum of a train of impulses at ``times`` (s) with ``amps``: sum_k a_k exp(-2 pi i f t_k)."""
    return amps @ np.exp(-2j * np.pi * np.outer(times, f))


def impulses(grid: Grid, times: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Spectrum of impulses at ``times`` rounded to the nearest sample; ``amps`` (k,) or (rows, k).

    Cheaper than :func:`delays` for long trains (drill blows, rockfall impacts), where the
    half-sample timing error is far below the trains' own jitter.
    """
    idx = np.clip(np.round(times * grid.fs).astype(int), 0, grid.n - 1)
    amps = np.atleast_2d(amps)
    x = np.zeros((amps.shape[0], grid.n))
    for row in range(amps.shape[0]):
        np.add.at(x[row], idx, amps[row])
    return np.fft.rfft(x, axis=-1)


def unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(ZNE)
    return v / np.linalg.norm(v)


def s_polarisation(rng: np.random.Generator, ray: np.ndarray) -> np.ndarray:
    """A unit S polarisation perpendicular to ``ray``, at least half of its energy on SH (horizontal)."""
    sh = np.cross([1.0, 0.0, 0.0], ray)  # Z x ray is horizontal
    if np.linalg.norm(sh) < 1e-6:
        sh = np.array([0.0, 1.0, 0.0])
    sh /= np.linalg.norm(sh)
    sv = np.cross(ray, sh)
    psi = rng.uniform(-np.pi / 4, np.pi / 4)
    return np.cos(psi) * sh + np.sin(psi) * sv


def _smooth_noise(rng: np.random.Generator, grid: Grid, shape: np.ndarray, rows: int) -> np.ndarray:
    """Gaussian noise with spectral amplitude ``shape``, each row scaled to unit RMS."""
    # White Gaussian noise has independent complex Gaussian Fourier coefficients: draw them directly.
    nf = grid.f.size
    spec = (rng.standard_normal((rows, nf)) + 1j * rng.standard_normal((rows, nf))) * shape
    x = np.fft.irfft(spec, n=grid.n, axis=-1)
    return x / (np.sqrt(np.mean(x**2, axis=-1, keepdims=True)) + 1e-30)


def _decay_envelope(grid: Grid, start: float, tau: float, rise: float = 0.004) -> np.ndarray:
    dt = grid.t - start
    env = np.where(dt > 0, (1.0 - np.exp(-np.maximum(dt, 0) / rise)) * np.exp(-np.maximum(dt, 0) / tau), 0.0)
    return env


def _decay_train(grid: Grid, times: np.ndarray, amps: np.ndarray, tau: float, rise: float = 0.004) -> np.ndarray:
    """Sum of :func:`_decay_envelope` started at ``times`` with ``amps``, by two one-pole recursions."""
    x = np.zeros(grid.n)
    np.add.at(x, np.clip(np.round(times * grid.fs).astype(int), 0, grid.n - 1), amps)
    slow = lfilter([1.0], [1.0, -np.exp(-1.0 / (tau * grid.fs))], x)
    fast = lfilter([1.0], [1.0, -np.exp(-(1.0 / tau + 1.0 / rise) / grid.fs)], x)
    return slow - fast




def _band(f: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Amplitude of a 4th-order band-pass from ``lo`` to ``hi`` Hz (smooth, zero phase)."""
    return 1.0 / np.sqrt(1.0 + (lo / np.maximum(f, 1e-3)) ** 4) / np.sqrt(1.0 + (f / hi) ** 4)


def _hann_burst(t: np.ndarray, start: float, duration: float) -> np.ndarray:
    """A raised-cosine envelope from ``start`` lasting ``duration`` s (zero outside)."""
    u = (t - start) / duration
    return np.where((u > 0) & (u < 1), 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(u, 0, 1)), 0.0)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(10.0 ** rng.uniform(np.log10(lo), np.log10(hi)))


# --------------------------------------------------------------------------- regimes and context
@dataclass(frozen=True)
class Regime:
    """Magnitudes, distances and time scales that fit one kind of board.

    ``high``: boards at >= 2 kHz on small, near events (Mw -3..1 within 1 km);
    ``low``: boards at 250-1000 Hz on larger events kilometres away, whose corner
    frequencies (5-100 Hz), S-P times (to 1 s and more) and durations (0.5-5 s) are longer.
    """

    name: str
    fs: float  # default sampling rate (Hz) and window length (samples) of the regime
    samples: int
    onset_s: float  # first energy this long after the window opens ...
    onset_jitter_s: float  # ... give or take this much
    mw: tuple[float, float]
    stress_drop_mpa: tuple[float, float]
    fc_hz: tuple[float, float]  # corner frequencies are kept in this band
    distance_m: tuple[float, float]
    coda_tau_s: tuple[float, float]  # plus 0.3 (S-P)
    coda_level: tuple[float, float]  # coda amplitude re the direct waves
    aftershock_gap_s: tuple[float, float]
    blast_mw: tuple[float, float]
    blast_distance_m: tuple[float, float]
    blast_coda_tau_s: tuple[float, float]
    ring_hz: tuple[float, float]  # drill-steel and knock resonances (capped at 0.4 fs)
    slow: float  # how much longer slow processes (bursts, run-ups, swells) last than on a fast board

    def as_dict(self) -> dict:
        """A JSON-ready description, for manifests."""
        return asdict(self)


REGIMES: dict[str, Regime] = {r.name: r for r in (
    Regime("high", 4000.0, 4096, 0.25, 0.075, mw=(-3.0, 1.0), stress_drop_mpa=(0.1, 10.0), fc_hz=(1.0, 20000.0),
           distance_m=(30.0, 1000.0), coda_tau_s=(0.012, 0.05), coda_level=(0.06, 0.2),
           aftershock_gap_s=(0.04, 0.5), blast_mw=(-1.0, 1.5), blast_distance_m=(40.0, 1500.0),
           blast_coda_tau_s=(0.06, 0.3), ring_hz=(250.0, 1800.0), slow=1.0),
    Regime("low", 500.0, 4096, 2.0, 0.5, mw=(-1.0, 2.0), stress_drop_mpa=(0.01, 1.0), fc_hz=(5.0, 100.0),
           distance_m=(200.0, 8000.0), coda_tau_s=(0.2, 1.2), coda_level=(0.15, 0.4),
           aftershock_gap_s=(0.3, 3.0), blast_mw=(0.0, 2.5), blast_distance_m=(200.0, 5000.0),
           blast_coda_tau_s=(0.3, 1.5), ring_hz=(40.0, 200.0), slow=4.0),
)}


@dataclass(frozen=True)
class Context:
    """What a source needs to know of where it is recorded: rock Q, mains frequency, regime."""

    q_range: tuple[float, float] = (100.0, 300.0)
    mains_hz: float = 50.0
    regime: Regime = REGIMES["high"]
    allow_ongoing: bool = True  # persistent sources may already be running when the grid starts


def _ring_hz(rng: np.random.Generator, ctx: Context, grid: Grid, scale: float = 1.0) -> float:
    lo, hi = ctx.regime.ring_hz
    hi = min(hi * scale, 0.4 * grid.fs)
    return float(rng.uniform(min(lo * scale, 0.5 * hi), hi))


# --------------------------------------------------------------------------- microseismic
def _double_couple(rng: np.random.Generator) -> np.ndarray:
    """Moment tensor (Z, N, E) of a shear fault of random strike, dip and rake (unit norm)."""
    strike, dip, rake = rng.uniform(0, 2 * np.pi), np.arccos(rng.uniform(0.0, 1.0)), rng.uniform(-np.pi, np.pi)
    # Fault normal and slip in north-east-down (Aki & Richards), then to Z-up, N, E.
    normal = np.array([-np.sin(dip) * np.sin(strike), np.sin(dip) * np.cos(strike), -np.cos(dip)])
    slip = np.array([np.cos(rake) * np.cos(strike) + np.sin(rake) * np.cos(dip) * np.sin(strike),
                     np.cos(rake) * np.sin(strike) - np.sin(rake) * np.cos(dip) * np.cos(strike),
                     -np.sin(rake) * np.sin(dip)])
    ned_to_zne = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    n, d = ned_to_zne @ normal, ned_to_zne @ slip
    return np.outer(n, d) + np.outer(d, n)


def _closure(rng: np.random.Generator) -> np.ndarray:
    """Moment tensor of an implosive closure: stope convergence or pillar crush, -(a I + b n n^T)."""
    axis = np.array([1.0, 0.0, 0.0]) if rng.random() < 0.6 else np.r_[0.0, unit_vector(rng)[1:]]
    axis /= np.linalg.norm(axis)
    iso, along = rng.uniform(0.5, 1.5), rng.uniform(0.5, 2.0)
    m = -(iso * np.eye(ZNE) + along * np.outer(axis, axis))
    return m / np.max(np.abs(np.linalg.eigvalsh(m)))


def _radiation(moment: np.ndarray, ray: np.ndarray) -> tuple[float, np.ndarray]:
    """Far-field P amplitude along ``ray`` and the S displacement vector: g.M.g and M.g - (g.M.g) g."""
    mg = moment @ ray
    p = float(ray @ mg)
    return p, mg - p * ray


def _rupture(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context, radiation: str) -> Source:
    """One fracture: Brune P and S with ``radiation`` ('random', 'double_couple' or 'implosive'), coda."""
    reg, f = ctx.regime, grid.f
    mw = rng.uniform(*reg.mw)
    stress_drop = _log_uniform(rng, *reg.stress_drop_mpa) * 1e6
    beta = rng.uniform(3000.0, 3500.0)
    alpha = beta * rng.uniform(1.65, 1.8)
    dist = _log_uniform(rng, *reg.distance_m)
    qs = rng.uniform(*ctx.q_range)
    qp = qs * rng.uniform(1.3, 2.0)
    fc_s = float(np.clip(corner_hz(mw, stress_drop, beta), *reg.fc_hz))
    fc_p = fc_s * rng.uniform(1.2, 1.6)
    tp, ts = dist / alpha, dist / beta
    t_sp = ts - tp
    ray = unit_vector(rng)  # source -> sensor; P motion along it is compressional
    meta: dict = {"radiation": radiation}
    if radiation == "random":  # the S/P ratio (alpha/beta)^3 ~ 5 times a radiation-pattern draw
        p_amp, s_vec = 1.0, s_polarisation(rng, ray) * rng.uniform(0.9, 2.0)
    else:
        moment = _double_couple(rng) if radiation == "double_couple" else _closure(rng)
        p_amp, s_vec = _radiation(moment, ray)
    s_vec = s_vec * (alpha / beta) ** 3
    p = np.fft.irfft(brune_velocity(f, fc_p) * attenuation(f, tp / qp) * np.exp(-2j * np.pi * f * onset), n=grid.n)
    s = np.fft.irfft(brune_velocity(f, fc_s) * attenuation(f, ts / qs) * np.exp(-2j * np.pi * f * (onset + t_sp)),
                     n=grid.n)
    coda_shape = np.abs(brune_velocity(f, fc_s) * attenuation(f, ts / qs))
    tau_coda = rng.uniform(*reg.coda_tau_s) + 0.3 * t_sp
    coda = _smooth_noise(rng, grid, coda_shape, ZNE) * _decay_envelope(grid, onset + t_sp, tau_coda)
    direct = max(abs(p_amp) * np.max(np.abs(p)), np.linalg.norm(s_vec) * np.max(np.abs(s)))
    coda *= rng.uniform(*reg.coda_level) * direct
    signal = np.outer(p_amp * ray, p) + np.outer(s_vec, s) + coda
    meta.update(mw=mw, fc_s_hz=fc_s, fc_p_hz=fc_p, distance_m=dist, s_minus_p_s=t_sp, q=qs,
                s_sample=int(round((onset + t_sp) * grid.fs)), coda_tau_s=tau_coda,
                p_amplitude=p_amp, s_amplitude=float(np.linalg.norm(s_vec)), ray=ray.tolist())
    return Source(signal, int(round(onset * grid.fs)), meta=meta)


def microseismic(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Rock fracture: Brune P then larger S (S-P from the distance), attenuated, with a scattered coda.

    The S/P ratio is a random draw around (alpha/beta)^3 (the original benchmark's one mechanism).
    """
    return _rupture(rng, grid, onset, ctx, "random")


def double_couple(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Shear fracture with a real radiation pattern: near S-nodal rays give P-dominant records."""
    return _rupture(rng, grid, onset, ctx, "double_couple")


def implosive(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Non-double-couple mine event (stope closure, pillar crush): strong P, dilatational on every ray."""
    return _rupture(rng, grid, onset, ctx, "implosive")


def _sequence(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context, count: int) -> Source:
    """``count`` fractures of one cluster, the first at ``onset``, later ones smaller or similar."""
    lo, hi = ctx.regime.aftershock_gap_s
    latest = grid.t[-1] - 0.15 * grid.t[-1]
    first = _rupture(rng, grid, onset, ctx, "double_couple" if rng.random() < 0.5 else "random")
    signal, onsets = first.signal, [first.onset]
    at = onset
    for _ in range(count - 1):
        at += rng.uniform(lo, hi)
        if at >= latest:
            break
        ev = _rupture(rng, grid, at, ctx, "double_couple" if rng.random() < 0.5 else "random")
        scale = 10.0 ** rng.uniform(-0.5, 0.0) * np.max(np.abs(first.signal)) / (np.max(np.abs(ev.signal)) + 1e-30)
        signal = signal + scale * ev.signal
        onsets.append(ev.onset)
    meta = dict(first.meta, event_samples=onsets, events=len(onsets))
    return Source(signal, first.onset, meta=meta)


def doublet(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Two fractures in one window (a cluster or an aftershock), the second 0.5-1x the first's amplitude."""
    return _sequence(rng, grid, onset, ctx, 2)


def swarm(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Three to five fractures of a swarm in one window."""
    return _sequence(rng, grid, onset, ctx, int(rng.integers(3, 6)))


# --------------------------------------------------------------------------- blasts
def blast_pattern(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context, holes: int, scatter: float,
                  misfire_p: float = 0.0, air_p: float = 0.0, decks: int = 1) -> Source:
    """Delay-fired charges (P-dominant pulses at 17-100 ms), with misfires, decks and an air blast.

    Misfires and the air blast draw from their own streams, so the same ``rng`` state gives the same
    blast with or without them (``misfire_p``/``air_p`` of 0 or 1 isolate their effect).
    """
    reg, f = ctx.regime, grid.f
    misfire_rng, air_rng = (np.random.default_rng(int(k)) for k in rng.integers(0, 2**63, 2))
    delay = rng.uniform(0.017, 0.100)
    steps = delay * np.clip(1.0 + rng.normal(0.0, scatter, holes - 1), 0.3, None)
    design = onset + np.concatenate([[0.0], np.cumsum(steps)])
    fired = np.ones(holes, dtype=bool)
    if holes >= 3 and misfire_rng.random() < misfire_p:  # cut-offs and dead detonators: charges that never fire
        missing = misfire_rng.choice(np.arange(1, holes), size=int(misfire_rng.integers(1, max(1, holes // 4) + 1)),
                                     replace=False)
        fired[missing] = False
    k = np.arange(holes)
    amps = (1.0 - np.exp(-(k + 1) / rng.uniform(0.7, 2.5))) * rng.uniform(0.75, 1.0, holes)
    keep = fired & (design < grid.t[-1] - 0.05)
    times, amps = design[keep], amps[keep]
    if decks > 1:  # decked holes: each hole's charges fire a few ms apart
        gap = rng.uniform(0.004, 0.012)
        times = np.concatenate([times + d * gap for d in range(decks)])
        amps = np.concatenate([amps * rng.uniform(0.5, 1.0) for _ in range(decks)])
    mw = rng.uniform(*reg.blast_mw)
    beta = rng.uniform(3000.0, 3500.0)
    alpha = beta * rng.uniform(1.65, 1.8)
    dist = _log_uniform(rng, *reg.blast_distance_m)
    qs = rng.uniform(*ctx.q_range)
    qp = qs * rng.uniform(1.3, 2.0)
    fc_p = float(np.clip(corner_hz(mw, 10.0 ** rng.uniform(5.0, 6.5), beta), *reg.fc_hz)) * rng.uniform(1.2, 1.6)
    fc_s = fc_p / rng.uniform(1.2, 1.6)
    tp, ts = dist / alpha, dist / beta
    comb = delays(f, times, amps) if times.size <= 4 else impulses(grid, times, amps)[0]
    p = np.fft.irfft(brune_velocity(f, fc_p) * attenuation(f, tp / qp) * comb, n=grid.n)
    s = np.fft.irfft(rng.uniform(0.2, 0.8) * brune_velocity(f, fc_s) * attenuation(f, ts / qs) * comb
                     * np.exp(-2j * np.pi * f * (ts - tp)), n=grid.n)
    ray = unit_vector(rng)
    # The coda grows with each charge and decays monotonically after the last one.
    tau = rng.uniform(*reg.blast_coda_tau_s)
    env = _decay_train(grid, times, amps, tau)
    coda = _smooth_noise(rng, grid, np.abs(brune_velocity(f, fc_s) * attenuation(f, ts / qs)), ZNE) * env
    p_peak = np.max(np.abs(p))
    coda *= rng.uniform(0.04, 0.12) * p_peak / (np.max(env) + 1e-30)
    signal = np.outer(ray, p) + np.outer(s_polarisation(rng, ray), s) + coda
    meta: dict = {"holes": holes, "charges": int(times.size), "misfires": int(np.sum(~fired)),
                  "delay_s": delay, "delay_scatter": scatter, "decks": decks, "mw": mw, "distance_m": dist,
                  "charge_samples": np.round(np.sort(times) * grid.fs).astype(int).tolist(), "air_blast": False}
    if air_rng.random() < air_p:  # the overpressure reaches the sensor through the drifts, later, at low frequency
        room = grid.t[-1] - 0.1 * grid.t[-1] - onset
        t_air = air_rng.uniform(0.1, 0.6) * room
        f_air = float(np.clip(fc_p / air_rng.uniform(4.0, 10.0), 2.0, 60.0))
        smear = np.exp(-(f / (2.0 * f_air)) ** 2)  # each charge's pulse spreads over many cycles in the air
        air = np.fft.irfft(brune_velocity(f, f_air) * smear * comb * np.exp(-2j * np.pi * f * t_air), n=grid.n)
        along = np.array([1.0, *air_rng.normal(0.0, 0.3, 2)])  # the air-coupled ground wave is mostly vertical
        signal += np.outer(along / np.linalg.norm(along), air * air_rng.uniform(0.15, 0.6) * p_peak
                           / (np.max(np.abs(air)) + 1e-30))
        meta.update(air_blast=True, air_delay_s=t_air, air_hz=f_air,
                    air_sample=int(round((onset + t_air) * grid.fs)))
    return Source(signal, int(round(times.min() * grid.fs)) if times.size else int(round(onset * grid.fs)),
                  meta=meta)


def blast(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """The original benchmark's blast: 2-12 similar P-dominant charges at one delay (3 % scatter)."""
    return blast_pattern(rng, grid, onset, ctx, int(rng.integers(2, 13)), 0.03)


def delay_fired(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Development round: 2-24 holes, wider delay scatter, misfires and sometimes an air blast."""
    return blast_pattern(rng, grid, onset, ctx, int(rng.integers(2, 25)), rng.uniform(0.005, 0.05), 0.3, 0.3)


def production_ring(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Production ring or mass blast: dozens of holes (13-60), misfires, sometimes an air blast."""
    return blast_pattern(rng, grid, onset, ctx, int(rng.integers(13, 61)), rng.uniform(0.005, 0.04), 0.3, 0.3)


def single_charge(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Secondary blasting (a boulder or hang-up): one charge, often with an air blast."""
    return blast_pattern(rng, grid, onset, ctx, 1, 0.0, 0.0, 0.5)


def decked_holes(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Decked holes: each hole's two charges fire 4-12 ms apart, holes at 17-100 ms."""
    return blast_pattern(rng, grid, onset, ctx, int(rng.integers(3, 16)), rng.uniform(0.005, 0.04), 0.2, 0.2, decks=2)


# --------------------------------------------------------------------------- drilling
def _blows(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context, rate: float, jitter: float,
           f_ring: float, tau_ring: float, dist: float, pauses: int = 0, amp_sd: float = 0.15,
           kind: str = "top_hammer") -> Source:
    """A train of drill blows, each a broadband impact with the steel's resonant ringing."""
    f = grid.f
    ongoing = ctx.allow_ongoing and rng.random() < 0.35
    start = rng.uniform(0.0, 1.0 / rate) if ongoing else onset
    n_blows = int((grid.t[-1] - start) * rate * 1.3) + 2
    periods = (1.0 / rate) * np.clip(1.0 + rng.normal(0.0, jitter, n_blows), 0.3, None)
    times = start + np.concatenate([[0.0], np.cumsum(periods[:-1])])
    for _ in range(pauses):  # the operator eases the feed: a pause in the hammering
        at = rng.uniform(start + 0.1, grid.t[-1])
        times = np.where(times > at, times + rng.uniform(0.05, 0.25) * ctx.regime.slow ** 0.5, times)
    times = times[times < grid.t[-1]]
    amps = np.clip(1.0 + rng.normal(0.0, amp_sd, times.size), 0.3, None)
    ring = 1.0 / (1.0 / tau_ring + 2j * np.pi * (f - f_ring)) + 1.0 / (1.0 / tau_ring + 2j * np.pi * (f + f_ring))
    click = rng.uniform(0.2, 1.0) * brune_velocity(f, rng.uniform(2.0, 10.0) * f_ring) * tau_ring / (2 * np.pi * 1000)
    path = attenuation(f, dist / 3200.0 / rng.uniform(*ctx.q_range))
    x = np.fft.irfft(impulses(grid, times, amps)[0] * (ring + click) * path, n=grid.n)
    ray = unit_vector(rng)
    other = s_polarisation(rng, ray)
    lag = int(rng.integers(1, max(2, int(0.002 * grid.fs))))
    signal = np.outer(ray, x) + rng.uniform(0.2, 0.6) * np.outer(other, np.roll(x, lag))
    return Source(signal, int(round(max(start, 0.0) * grid.fs)), meta={
        "kind": kind, "blow_rate_hz": rate, "ring_hz": f_ring, "ongoing": bool(ongoing), "distance_m": dist})


def drilling(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Percussive top-hammer drilling (the original benchmark's): 15-60 blows/s with resonant ringing.

    With ``ctx.allow_ongoing`` a third of the draws are already drilling when the grid starts.
    """
    rate = rng.uniform(15.0, 60.0)
    return _blows(rng, grid, onset, ctx, rate, 0.015, _ring_hz(rng, ctx, grid),
                  rng.uniform(0.0015, min(0.008, 0.4 / rate)), rng.uniform(5.0, 200.0))


def down_the_hole(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Down-the-hole hammer: 10-25 heavier blows/s at the bit, deep in the hole, lower ringing."""
    rate = rng.uniform(10.0, 25.0)
    return _blows(rng, grid, onset, ctx, rate, 0.03, _ring_hz(rng, ctx, grid, 0.5),
                  rng.uniform(0.003, min(0.015, 0.4 / rate)), rng.uniform(20.0, 300.0), amp_sd=0.2,
                  kind="down_the_hole")


def jackleg(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Hand-held jackleg drill: 25-45 blows/s with an irregular rhythm and pauses in the feed."""
    rate = rng.uniform(25.0, 45.0)
    return _blows(rng, grid, onset, ctx, rate, rng.uniform(0.04, 0.1), _ring_hz(rng, ctx, grid),
                  rng.uniform(0.0015, min(0.006, 0.4 / rate)), rng.uniform(5.0, 80.0),
                  pauses=int(rng.integers(1, 4)), amp_sd=0.35, kind="jackleg")


def rotary(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Rotary or diamond drilling: quasi-continuous grinding noise modulated at the rotation rate."""
    f, t = grid.f, grid.t
    ongoing = ctx.allow_ongoing and rng.random() < 0.35
    start = -1.0 if ongoing else onset
    f_rot = rng.uniform(2.0, 20.0)  # rev/s of the rods
    lo, hi = rng.uniform(20.0, 80.0), min(rng.uniform(200.0, 1200.0), 0.42 * grid.fs)
    dist = rng.uniform(5.0, 300.0)
    shape = _band(f, lo, hi) * np.abs(attenuation(f, dist / 3200.0 / rng.uniform(*ctx.q_range)))
    grind = _smooth_noise(rng, grid, shape, 1)[0]
    depth = rng.uniform(0.2, 0.8)
    phase = 2 * np.pi * f_rot * t + rng.uniform(0, 2 * np.pi)
    mod = 1.0 + depth * np.sin(phase) + 0.3 * depth * np.sin(2 * phase + rng.uniform(0, 2 * np.pi))
    x = grind * mod
    n_cut = int(rng.integers(3, 9))  # cutters or diamond segments: a tone at their passing rate
    if n_cut * f_rot < 0.4 * grid.fs:
        x += rng.uniform(0.1, 0.5) * np.sin(n_cut * phase)
    rise = rng.uniform(0.05, 0.3) * ctx.regime.slow
    env = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - start) / rise, 0.0, 1.0))
    ray = unit_vector(rng)
    other = s_polarisation(rng, ray)
    signal = (np.outer(ray, x) + rng.uniform(0.3, 0.8) * np.outer(other, np.roll(x, int(0.003 * grid.fs) + 1))) * env
    return Source(signal, int(round(max(start, 0.0) * grid.fs)), meta={
        "kind": "rotary", "rotation_hz": f_rot, "cutters": n_cut, "band_hz": (lo, hi), "ongoing": bool(ongoing)})


# --------------------------------------------------------------------------- electrical
def _mains(rng: np.random.Generator, t: np.ndarray, mains_hz: float, nyq: float) -> tuple[np.ndarray, float]:
    f0 = mains_hz * (1.0 + rng.normal(0.0, 1e-3))
    x = np.zeros(t.size)
    for h in range(1, 16):
        if h * f0 >= nyq:
            break
        weight = (1.0 if h % 2 else 0.3) * rng.uniform(0.0, 1.0) / np.sqrt(h)
        x += (1.0 if h == 1 else weight) * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
    return x, f0


def _gate(t: np.ndarray, dur: float, rise: float) -> np.ndarray:
    return np.clip(t / rise, 0, 1) * np.clip((dur - t) / rise, 0, 1)


def _ac_coupled(x: np.ndarray, grid: Grid, tau: float) -> np.ndarray:
    """A first-order high-pass (an amplifier's AC coupling): flat tops droop, steps decay."""
    s = 2j * np.pi * grid.f * tau
    return np.fft.irfft(np.fft.rfft(x) * s / (1.0 + s), n=grid.n)


def _common_mode(rng: np.random.Generator, grid: Grid, onset: float, x: np.ndarray, meta: dict,
                 gain_sd: float = 0.02, flip_p: float = 0.0) -> Source:
    """Pickup common to all channels: same waveform, no delay, per-channel gain (and sometimes sign)."""
    gains = 1.0 + rng.normal(0.0, gain_sd, ZNE)
    if rng.random() < flip_p:  # a channel wired with the opposite polarity
        gains[int(rng.integers(ZNE))] *= -1.0
    return Source(np.outer(gains, x), int(round(onset * grid.fs)), through_sensor=False,
                  meta={**meta, "channel_gains": gains.tolist()})


def electrical(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """The original benchmark's pickup: a mains burst, switching transients or a pulse train."""
    t = grid.t - onset
    kind = ("mains_burst", "switching", "pulse_train")[int(rng.integers(3))]
    nyq = 0.45 * grid.fs
    slow = ctx.regime.slow
    if kind == "mains_burst":
        x, f0 = _mains(rng, t, ctx.mains_hz, nyq)
        dur = rng.uniform(0.05, 0.6) * slow
        x *= _gate(t, dur, rng.uniform(0.0005, 0.003))
        meta = {"duration_s": dur, "mains_hz": f0}
    elif kind == "switching":
        x = np.zeros(grid.n)
        starts = np.concatenate([[0.0], rng.uniform(0.005, 0.3 * slow, int(rng.integers(0, 3)))])
        for t0 in starts:
            dt = t - t0
            tau = _log_uniform(rng, 3e-4, 3e-2)
            pulse = np.where(dt >= 0, np.exp(-np.maximum(dt, 0) / tau), 0.0) * rng.choice([-1.0, 1.0])
            if rng.random() < 0.6:
                pulse *= np.cos(2 * np.pi * rng.uniform(min(100.0, 0.3 * nyq), nyq * 0.9) * np.maximum(dt, 0))
            x += rng.uniform(0.3, 1.0) * pulse
        meta = {"transients": int(starts.size)}
    else:
        rep = rng.uniform(min(50.0, nyq / 4), min(1000.0, nyq / 2))
        width = rng.uniform(min(0.0002, 0.2 / rep), min(0.002, 0.45 / rep))
        dur = rng.uniform(0.05, 0.5) * slow
        x = np.where((t >= 0) & (t < dur) & (np.mod(t, 1.0 / rep) < width), 1.0, 0.0)
        if rng.random() < 0.5:  # bipolar trains
            x *= np.where(np.mod(np.floor(t * rep), 2) == 0, 1.0, -1.0)
        meta = {"rep_hz": rep, "width_s": width, "duration_s": dur}
    return _common_mode(rng, grid, onset, x, {"kind": kind, **meta})


def mains_burst(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A burst of mains and harmonics: clean, clipped by a saturated amplifier, or chopped by a thyristor drive."""
    t = grid.t - onset
    x, f0 = _mains(rng, t, ctx.mains_hz, 0.45 * grid.fs)
    style = ("clean", "clipped", "chopped")[int(rng.integers(3))]
    if style == "clipped":
        x = np.clip(x, *(np.array([-1.0, 1.0]) * rng.uniform(0.2, 0.7) * np.max(np.abs(x))))
    elif style == "chopped":  # phase-angle control: each half cycle conducts only after the firing angle
        firing = rng.uniform(0.2, 0.8) * np.pi
        theta = np.mod(2 * np.pi * f0 * t, np.pi)
        x = np.sin(2 * np.pi * f0 * t) * (theta > firing)
        x += rng.uniform(0.0, 0.3) * np.sin(2 * np.pi * 3 * f0 * t) * (theta > firing)  # commutation distortion
    dur = rng.uniform(0.05, 0.6) * ctx.regime.slow
    x *= _gate(t, dur, rng.uniform(0.0005, 0.003))
    return _common_mode(rng, grid, onset, x, {"kind": "mains_burst", "style": style, "duration_s": dur,
                                              "mains_hz": f0}, rng.uniform(0.01, 0.3), 0.2)


def switching(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Switching transients: steps that decay through the AC coupling (0.5-10 Hz corner), or fast spikes."""
    t = grid.t - onset
    style = ("step", "decay")[int(rng.integers(2))]
    x = np.zeros(grid.n)
    starts = np.concatenate([[0.0], rng.uniform(0.005, 0.3 * ctx.regime.slow, int(rng.integers(0, 3)))])
    for t0 in starts:
        dt = np.maximum(t - t0, 0.0)
        tau = _log_uniform(rng, 0.016, 0.3) if style == "step" else _log_uniform(rng, 3e-4, 3e-2)
        x += rng.uniform(0.3, 1.0) * rng.choice([-1.0, 1.0]) * np.where(t >= t0, np.exp(-dt / tau), 0.0)
    return _common_mode(rng, grid, onset, x, {"kind": "switching", "style": style, "transients": int(starts.size)},
                        rng.uniform(0.01, 0.3), 0.2)


def lc_ringing(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A contactor opening into a cable's inductance and capacitance: one or two ringing bursts (Q 5-50)."""
    t = grid.t - onset
    f_lc = rng.uniform(min(80.0, 0.2 * grid.fs), 0.4 * grid.fs)
    q = rng.uniform(5.0, 50.0)
    x = np.zeros(grid.n)
    for t0 in np.concatenate([[0.0], rng.uniform(0.01, 0.2 * ctx.regime.slow, int(rng.integers(0, 2)))]):
        dt = np.maximum(t - t0, 0.0)
        x += (t >= t0) * rng.uniform(0.5, 1.0) * np.exp(-np.pi * f_lc * dt / q) * np.sin(2 * np.pi * f_lc * dt)
    return _common_mode(rng, grid, onset, x, {"kind": "lc_ringing", "ring_hz": f_lc, "q": q},
                        rng.uniform(0.01, 0.3), 0.2)


def pulse_train(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Square or bipolar pulse trains (drives, signalling), drooping through the AC coupling."""
    t = grid.t - onset
    nyq = 0.45 * grid.fs
    rep = rng.uniform(min(20.0, nyq / 8), min(1000.0, nyq / 2))
    duty = rng.uniform(0.05, 0.5)
    dur = rng.uniform(0.05, 0.5) * ctx.regime.slow
    on = (t >= 0) & (t < dur)
    style = ("square", "bipolar")[int(rng.integers(2))]
    x = np.where(on & (np.mod(t * rep, 1.0) < duty), 1.0, 0.0)
    if style == "bipolar":
        x -= np.where(on & (np.mod(t * rep + 0.5, 1.0) < duty), 1.0, 0.0)
    tau = _log_uniform(rng, 0.002, 0.2)
    x = _ac_coupled(x, grid, tau)
    return _common_mode(rng, grid, onset, x, {"kind": "pulse_train", "style": style, "rep_hz": rep,
                                              "duration_s": dur, "coupling_tau_s": tau}, rng.uniform(0.01, 0.3), 0.2)


# --------------------------------------------------------------------------- mechanical
def _harmonics(rng: np.random.Generator, grid: Grid, phase: np.ndarray, f1: float, most: int = 8) -> np.ndarray:
    """Harmonics of a rotating machine's phase (rad) on Z, N, E with their own amplitudes and phases."""
    out = np.zeros((ZNE, grid.n))
    # sin(h phase + p) = Im(z^h) cos p + Re(z^h) sin p with z = e^{i phase}: powers by repeated
    # multiplication, far cheaper than a sine per harmonic and component.
    z1 = np.exp(1j * phase)
    z = np.ones(grid.n, dtype=complex)
    for h in range(1, int(rng.integers(2, most + 1)) + 1):
        if h * f1 >= 0.45 * grid.fs:
            break
        z = z * z1
        amp = rng.uniform(0.3, 1.0) / h ** rng.uniform(0.3, 1.2)
        gain, p = amp * rng.uniform(0.3, 1.0, (ZNE, 1)), rng.uniform(0, 2 * np.pi, (ZNE, 1))
        out += (gain * np.cos(p)) * z.imag + (gain * np.sin(p)) * z.real
    return out


def _rumble(rng: np.random.Generator, grid: Grid, lo: float, hi: float) -> np.ndarray:
    band = _band(grid.f, lo, min(hi, 0.45 * grid.fs))
    mix = rng.uniform(0.2, 0.7)
    return mix * _smooth_noise(rng, grid, band, 1) + (1 - mix) * _smooth_noise(rng, grid, band, ZNE)


def mechanical(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Machinery and vehicles (the original benchmark's): drifting tones and/or rumble, emergent onset."""
    t = grid.t - onset
    rise = rng.uniform(0.15, 0.7) * ctx.regime.slow
    env = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / rise, 0.0, 1.0))
    env *= 1.0 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * grid.t + rng.uniform(0, 2 * np.pi))
    kind = ("tonal", "rumble", "both")[int(rng.integers(3))]
    signal = np.zeros((ZNE, grid.n))
    meta: dict = {"kind": kind, "rise_s": rise}
    if kind in ("tonal", "both"):
        f1 = rng.uniform(8.0, 120.0)
        spin_up = rng.uniform(0.6, 1.0)  # machines come up to speed as they start
        drift = rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * grid.t)
        freq = f1 * (spin_up + (1.0 - spin_up) * np.clip(t / rise, 0.0, 1.0)) * (1.0 + drift)
        signal += _harmonics(rng, grid, 2 * np.pi * np.cumsum(freq) / grid.fs, f1)
        meta["f1_hz"] = f1
    if kind in ("rumble", "both"):
        lo, hi = rng.uniform(10.0, 60.0), rng.uniform(min(120.0, 0.3 * grid.fs), min(700.0, 0.45 * grid.fs))
        signal += rng.uniform(0.5, 1.5) * _rumble(rng, grid, lo, hi)
        meta["band_hz"] = (lo, hi)
    return Source(signal * env, int(round(onset * grid.fs)), meta=meta)


def fan_start(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A fan or pump starting: its blade-pass tone and harmonics rise in pitch and level as it runs up."""
    t = grid.t - onset
    tau = rng.uniform(0.1, 0.5) * ctx.regime.slow
    speed = np.where(t > 0, 1.0 - np.exp(-np.maximum(t, 0) / tau), 0.0)
    f1 = rng.uniform(8.0, 120.0)
    freq = f1 * speed * (1.0 + rng.uniform(0.002, 0.01) * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * grid.t))
    signal = _harmonics(rng, grid, 2 * np.pi * np.cumsum(freq) / grid.fs, f1)
    signal += rng.uniform(0.0, 0.5) * _rumble(rng, grid, rng.uniform(10.0, 40.0), rng.uniform(150.0, 600.0))
    return Source(signal * speed**2, int(round(onset * grid.fs)), meta={"kind": "fan_start", "f1_hz": f1,
                                                                        "run_up_tau_s": tau})


def fan_stop(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A running fan or conveyor switched off: tone and rumble fall in pitch and level from the onset."""
    t = grid.t - onset
    tau = rng.uniform(0.2, 1.0) * ctx.regime.slow
    speed = np.where(t > 0, np.exp(-np.maximum(t, 0) / tau), 1.0)
    f1 = rng.uniform(8.0, 120.0)
    signal = _harmonics(rng, grid, 2 * np.pi * np.cumsum(f1 * speed) / grid.fs, f1)
    signal += rng.uniform(0.0, 0.7) * _rumble(rng, grid, rng.uniform(10.0, 40.0), rng.uniform(150.0, 600.0))
    return Source(signal * speed**2, int(round(onset * grid.fs)), meta={"kind": "fan_stop", "f1_hz": f1,
                                                                        "run_down_tau_s": tau})


def conveyor(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A conveyor starting: belt rumble and idler-roller tones grow as the belt comes up to speed."""
    t = grid.t - onset
    ramp = rng.uniform(0.3, 1.0) * ctx.regime.slow
    speed = np.clip(t / ramp, 0.0, 1.0)
    f_idler = rng.uniform(4.0, 15.0)
    tones = _harmonics(rng, grid, 2 * np.pi * np.cumsum(f_idler * speed) / grid.fs, f_idler, most=12)
    signal = rng.uniform(0.5, 1.5) * _rumble(rng, grid, rng.uniform(8.0, 30.0), rng.uniform(100.0, 400.0))
    signal += rng.uniform(0.2, 0.8) * tones
    return Source(signal * speed ** 1.5, int(round(onset * grid.fs)), meta={"kind": "conveyor", "idler_hz": f_idler,
                                                                            "ramp_s": ramp})


def crusher(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A crusher or rock breaker taking feed: low rumble with irregular impacts of rock, emergent."""
    f, t = grid.f, grid.t - onset
    rise = rng.uniform(0.1, 0.5) * ctx.regime.slow
    env = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / rise, 0.0, 1.0))
    signal = _rumble(rng, grid, rng.uniform(4.0, 15.0), rng.uniform(60.0, 250.0))
    rate = rng.uniform(2.0, 15.0)
    hits = np.sort(rng.uniform(onset, grid.t[-1], int(rng.poisson(rate * max(grid.t[-1] - onset, 0.0))) + 1))
    dirs = np.array([unit_vector(rng) for _ in hits]).T * rng.lognormal(0.0, 0.6, hits.size)
    spec = impulses(grid, hits, dirs) * brune_velocity(f, rng.uniform(20.0, 150.0))
    knocks = np.fft.irfft(spec, n=grid.n, axis=-1)
    signal += rng.uniform(0.3, 1.0) * knocks / (np.max(np.abs(knocks)) + 1e-30) * 3.0
    return Source(signal * env, int(round(onset * grid.fs)), meta={"kind": "crusher", "impacts_per_s": rate})


def vehicle_pass(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A loader or truck driving past: engine firing tone and tyre rumble swell and fade with distance."""
    t = grid.t - onset
    r0, v = rng.uniform(5.0, 30.0), rng.uniform(2.0, 8.0)
    closest = rng.uniform(0.4, 1.0) * max(grid.t[-1] - onset, 0.1)
    # Level goes as 1/r, counted from the distance at the onset (so it rises from nothing there).
    r_onset = np.hypot(r0, v * closest)
    amp = np.clip(r_onset / np.hypot(r0, v * (t - closest)) - 1.0, 0.0, None) * (t > 0)
    f_e = rng.uniform(15.0, 60.0) * (1.0 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * grid.t))
    signal = _harmonics(rng, grid, 2 * np.pi * np.cumsum(f_e) / grid.fs, float(f_e[0]))
    signal += rng.uniform(0.5, 1.5) * _rumble(rng, grid, rng.uniform(5.0, 20.0), rng.uniform(80.0, 300.0))
    return Source(signal * amp, int(round(onset * grid.fs)), meta={"kind": "vehicle_pass", "closest_m": r0,
                                                                   "speed_m_s": v, "closest_s": closest})


def knocks(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Loose liners, rail joints, a chute: knocks every 0.2-2 s, each a short resonant ring, over a hum."""
    f = grid.f
    rate = rng.uniform(0.5, 5.0) / ctx.regime.slow ** 0.5
    times = onset + np.cumsum(np.r_[0.0, rng.uniform(0.7, 1.3, int(grid.t[-1] * rate) + 2) / rate])
    times = times[times < grid.t[-1]]
    f_ring = _ring_hz(rng, ctx, grid, 0.3)
    tau = rng.uniform(0.005, 0.03)
    ring = 1.0 / (1.0 / tau + 2j * np.pi * (f - f_ring)) + 1.0 / (1.0 / tau + 2j * np.pi * (f + f_ring))
    dirs = unit_vector(rng)[:, None] + 0.3 * rng.standard_normal((ZNE, times.size))
    x = np.fft.irfft(impulses(grid, times, dirs * rng.lognormal(0.0, 0.3, times.size)) * ring, n=grid.n, axis=-1)
    f1 = rng.uniform(8.0, 60.0)
    hum = _harmonics(rng, grid, 2 * np.pi * f1 * grid.t, f1, most=3) * (grid.t > onset)
    signal = x / (np.max(np.abs(x)) + 1e-30) + rng.uniform(0.02, 0.15) * hum
    return Source(signal, int(round(onset * grid.fs)), meta={"kind": "knocks", "knocks_per_s": rate,
                                                             "ring_hz": f_ring})


# --------------------------------------------------------------------------- noise (what a trigger fires on)
def background(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """The site's background alone (the window maker adds, 30 % of the time, a transient 10-20 dB below it)."""
    del rng, ctx
    return Source(np.zeros((ZNE, grid.n)), int(round(onset * grid.fs)), meta={"level_db": None})


def noise_burst(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A burst of incoherent ground noise (a passing air door, a nearby crew), 0-8 dB over the background."""
    dur = rng.uniform(0.05, 0.4) * ctx.regime.slow
    shape = _band(grid.f, rng.uniform(5.0, 50.0), rng.uniform(0.1, 0.45) * grid.fs)
    x = _smooth_noise(rng, grid, shape, ZNE) * _hann_burst(grid.t, onset, dur)
    return Source(x, int(round(onset * grid.fs)), meta={"level_db": rng.uniform(0.0, 8.0), "duration_s": dur})


def spikes(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """One or two isolated spikes (1-3 samples) from the electronics: on one channel or on all."""
    del ctx
    x = np.zeros((ZNE, grid.n))
    at = [onset] + ([float(rng.uniform(grid.t[0], grid.t[-1]))] if rng.random() < 0.5 else [])
    for t0 in at:
        i, w = int(round(t0 * grid.fs)), int(rng.integers(1, 4))
        rows = slice(None) if rng.random() < 0.3 else int(rng.integers(ZNE))
        x[rows, i:i + w] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
    return Source(x, int(round(onset * grid.fs)), through_sensor=False,
                  meta={"level_db": rng.uniform(14.0, 32.0), "level": "peak", "spikes": len(at)})


def ventilation_gust(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A ventilation gust: a low-frequency swell of mostly coherent ground motion, 0-6 dB over the background."""
    dur = rng.uniform(0.4, 0.9) * ctx.regime.slow
    lo = rng.uniform(1.0, 4.0) / ctx.regime.slow ** 0.5
    shape = _band(grid.f, lo, lo * rng.uniform(3.0, 8.0))
    mix = rng.uniform(0.5, 0.9)
    x = mix * _smooth_noise(rng, grid, shape, 1) + (1 - mix) * _smooth_noise(rng, grid, shape, ZNE)
    return Source(x * _hann_burst(grid.t, onset, dur), int(round(onset * grid.fs)),
                  meta={"level_db": rng.uniform(0.0, 6.0), "duration_s": dur, "band_hz": (lo, lo * 8)})


def small_transient(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A fracture far below engineering interest: 10-20 dB under the background."""
    src = microseismic(rng, grid, onset, ctx)
    src.meta = {"level_db": rng.uniform(-20.0, -10.0)}
    return src


# --------------------------------------------------------------------------- unseen sources (evaluation only)
def rockfall(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Rockfall / ore-pass impacts (evaluation only): irregular, emergent, lower-frequency impacts."""
    f = grid.f
    dur = rng.uniform(0.3, 1.0) * ctx.regime.slow
    n_hits = max(3, int(rng.poisson(rng.uniform(8.0, 40.0) * dur)))
    times = np.sort(onset + rng.uniform(0.0, dur, n_hits))
    times = times[times < grid.t[-1]]
    peak = rng.uniform(0.3, 0.7)
    shape = np.interp((times - onset) / dur, [0, peak, 1], [0.2, 1.0, 0.1])
    amps = shape * rng.lognormal(0.0, 0.8, times.size)
    dirs = np.array([unit_vector(rng) for _ in times]).T  # each block hits from a new direction
    fc = rng.uniform(20.0, 150.0)
    tstar = rng.uniform(50.0, 500.0) / 3200.0 / rng.uniform(*ctx.q_range)
    spec = impulses(grid, times, dirs * amps) * (brune_velocity(f, fc) * attenuation(f, tstar))
    return Source(np.fft.irfft(spec, n=grid.n, axis=-1), int(round(onset * grid.fs)),
                  meta={"impacts": int(times.size), "duration_s": dur, "fc_hz": fc})


def orepass(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """Ore running down a pass (evaluation only): a roar of 60-300 impacts/s that builds and fades."""
    f = grid.f
    dur = rng.uniform(0.5, 1.5) * ctx.regime.slow
    times = np.sort(onset + rng.uniform(0.0, dur, max(10, int(rng.uniform(60.0, 300.0) * dur))))
    times = times[times < grid.t[-1]]
    amps = np.sin(np.pi * (times - onset) / dur) ** 0.5 * rng.lognormal(0.0, 0.5, times.size)
    axis = unit_vector(rng)  # the pass has one direction from the sensor: impacts share a polarisation
    dirs = axis[:, None] + 0.5 * rng.standard_normal((ZNE, times.size))
    tstar = rng.uniform(20.0, 300.0) / 3200.0 / rng.uniform(*ctx.q_range)
    spec = impulses(grid, times, dirs * amps) * brune_velocity(f, rng.uniform(40.0, 250.0)) * attenuation(f, tstar)
    return Source(np.fft.irfft(spec, n=grid.n, axis=-1), int(round(onset * grid.fs)),
                  meta={"impacts": int(times.size), "duration_s": dur})


def test_pulse(rng: np.random.Generator, grid: Grid, onset: float, ctx: Context) -> Source:
    """A sensor test pulse (evaluation only): a calibration step on and off, the same on every channel.

    Ground velocity that steps is what the coil's drive current amounts to: the geophone answers with
    its own damped natural oscillation, identical on all three components.
    """
    del ctx
    width = rng.uniform(0.05, 0.3)
    x = ((grid.t >= onset) & (grid.t < onset + width)).astype(float)
    gains = rng.uniform(0.9, 1.1, ZNE)
    return Source(np.outer(gains, x), int(round(onset * grid.fs)), meta={"width_s": width})


# --------------------------------------------------------------------------- the mechanism registry
SourceFn = Callable[[np.random.Generator, Grid, float, Context], Source]


@dataclass(frozen=True)
class Mechanism:
    """One named way a family makes its signal; ``heldout`` ones are never drawn for training."""

    name: str
    make: SourceFn
    weight: float = 1.0
    heldout: bool = False

    def describe(self) -> str:
        return (self.make.__doc__ or "").strip().splitlines()[0]


MECHANISMS: dict[str, tuple[Mechanism, ...]] = {
    "microseismic": (Mechanism("random_radiation", microseismic), Mechanism("double_couple", double_couple),
                     Mechanism("implosive", implosive, 0.6), Mechanism("doublet", doublet, 0.6),
                     Mechanism("swarm", swarm, heldout=True)),
    "blast": (Mechanism("delay_fired_classic", blast), Mechanism("delay_fired", delay_fired),
              Mechanism("production_ring", production_ring), Mechanism("single_charge", single_charge, 0.4),
              Mechanism("decked_holes", decked_holes, heldout=True)),
    "drilling": (Mechanism("top_hammer", drilling, 1.5), Mechanism("down_the_hole", down_the_hole),
                 Mechanism("rotary", rotary), Mechanism("jackleg", jackleg, heldout=True)),
    "electrical": (Mechanism("classic", electrical), Mechanism("mains_burst", mains_burst),
                   Mechanism("switching", switching), Mechanism("pulse_train", pulse_train),
                   Mechanism("lc_ringing", lc_ringing, heldout=True)),
    "mechanical": (Mechanism("classic", mechanical, 1.5), Mechanism("fan_start", fan_start),
                   Mechanism("fan_stop", fan_stop, 0.5), Mechanism("conveyor", conveyor),
                   Mechanism("crusher", crusher), Mechanism("knocks", knocks, 0.5),
                   Mechanism("vehicle_pass", vehicle_pass, heldout=True)),
    "noise": (Mechanism("background", background, 2.0), Mechanism("noise_burst", noise_burst),
              Mechanism("spikes", spikes), Mechanism("small_transient", small_transient, 0.5),
              Mechanism("ventilation_gust", ventilation_gust, heldout=True)),
    # Families a deployed model will meet unseen: evaluation only, never in training.
    "rockfall": (Mechanism("rockfall", rockfall),),
    "orepass": (Mechanism("orepass", orepass),),
    "test_pulse": (Mechanism("test_pulse", test_pulse),),
}
EVALUATION_ONLY: tuple[str, ...] = ("rockfall", "orepass", "test_pulse")
MECHANISM_SETS: tuple[str, ...] = ("train", "heldout", "all")


def mechanisms_of(family: str, which: str = "train") -> tuple[Mechanism, ...]:
    """The mechanisms of ``family`` drawn under ``which`` ('train', 'heldout' or 'all').

    Evaluation-only families are unseen as a whole, so all their mechanisms count under every set.
    ``which`` may also name one mechanism of ``family`` (to study it alone).
    """
    options = MECHANISMS[family]
    named = tuple(m for m in options if m.name == which)
    if named:
        return named
    if which == "all" or family in EVALUATION_ONLY:
        return options
    return tuple(m for m in options if m.heldout == (which == "heldout"))


def draw(family: str, rng: np.random.Generator, grid: Grid, onset: float, ctx: Context,
         which: str = "train") -> Source:
    """Draw one mechanism of ``family`` from the set ``which`` and make its source (meta names it)."""
    options = mechanisms_of(family, which)
    weights = np.array([m.weight for m in options])
    mech = options[int(rng.choice(len(options), p=weights / weights.sum()))] if len(options) > 1 else options[0]
    src = mech.make(rng, grid, onset, ctx)
    src.meta["mechanism"] = mech.name
    return src


def describe_mechanisms() -> dict:
    """Every family's mechanisms with their weight, held-out flag and a one-line description (manifests)."""
    return {fam: {m.name: {"weight": m.weight, "heldout": m.heldout, "what": m.describe()} for m in ms}
            for fam, ms in MECHANISMS.items()}
